"""Keras fixtures written by real Keras -> converted -> hand-written torch ports reproduce Keras' outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ptools.cli import app
from ptools.convert.api import ConvertOptions, plan
from tests.convert.ports import FixturePort, RenamedPort

KERAS = Path(__file__).resolve().parents[1] / "fixtures" / "keras"
# (file, saved inputs/outputs); .weights.h5 has no config.json, so the Flatten shape comes from a rule.
CASES = [
    ("legacy_model.h5", "legacy_model_io.npz"),
    ("k3_model.keras", "k3_model_io.npz"),
    ("k3.weights.h5", "k3_weights_io.npz"),
]


def _rules(tmp_path: Path) -> Path:
    p = tmp_path / "rules.json"
    p.write_text(
        json.dumps(
            {"rules": [{"pattern": "head/kernel", "transform": "dense_after_flatten", "flatten_shape": [4, 2, 3]}]}
        )
    )
    return p


def _run(model: torch.nn.Module, io: np.lib.npyio.NpzFile) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        img = torch.from_numpy(io["img"]).permute(0, 3, 1, 2)  # NHWC -> NCHW
        return model(img, torch.from_numpy(io["tok"]).long())


@pytest.mark.parametrize("port", [FixturePort, RenamedPort])
@pytest.mark.parametrize(("name", "io_name"), CASES)
def test_port_matches_keras_outputs(tmp_path: Path, name: str, io_name: str, port: type) -> None:
    rules = _rules(tmp_path) if name.endswith(".weights.h5") else None
    model = port()
    target = tmp_path / "ref.pt"
    torch.save(model.state_dict(), target)
    p = plan(KERAS / name, ConvertOptions(rules=rules, template=target))
    assert p.ok, (p.unfilled, p.mismatched, p.ambiguous)
    hows = {p.how[id(i)] for i in p.written}
    assert hows <= ({"name", "rule"} if port is FixturePort else {"order", "unique-shape"})
    sd = {t.key: torch.from_numpy(np.array(t.make())) for t in p.out_tensors()}
    model.load_state_dict(sd, strict=True)
    io = np.load(KERAS / io_name)
    y_img, y_seq = _run(model, io)
    assert float((y_img - torch.from_numpy(io["y_img"])).abs().max()) <= 1e-5
    assert float((y_seq - torch.from_numpy(io["y_seq"])).abs().max()) <= 1e-5


def test_weights_h5_without_flatten_shape_is_wrong(tmp_path: Path) -> None:
    # Without config.json nothing says `head` follows a Flatten: the plan refuses it, and rightly so.
    model = FixturePort()
    p = plan(KERAS / "k3.weights.h5", ConvertOptions(template=None))
    assert not p.ok and [i.sources for i in p.undetermined] == [("head/kernel",)]
    sd = {t.key: torch.from_numpy(np.array(t.make())) for t in p.out_tensors()}
    model.load_state_dict(sd)
    io = np.load(KERAS / "k3_weights_io.npz")
    y_img, _ = _run(model, io)
    assert float((y_img - torch.from_numpy(io["y_img"])).abs().max()) > 1e-2


def test_cli_check_output(runner, tmp_path: Path) -> None:
    io = np.load(KERAS / "legacy_model_io.npz")
    np.savez(tmp_path / "x.npz", img=io["img"], tok=io["tok"])
    np.savez(tmp_path / "y.npz", y_img=io["y_img"], y_seq=io["y_seq"])
    out = tmp_path / "port.safetensors"
    args = [
        "convert",
        str(KERAS / "legacy_model.h5"),
        str(out),
        "--model",
        "tests.convert.ports:RenamedPort",
        "--check-output",
        "--input",
        str(tmp_path / "x.npz"),
        "--expected",
        str(tmp_path / "y.npz"),
        "--tolerance",
        "1e-5",
        "--json",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "ptools.convert/1"
    assert doc["check_output"]["ok"] and doc["check_output"]["max_abs_error"] <= 1e-5
    assert doc["check_output"]["inputs_transposed_nhwc_to_nchw"] == [True, False]
    notes = {(n["layer"], n["setting"]): n["value"] for n in doc["notes"]}
    assert notes[("bn", "eps")] == pytest.approx(1e-3)
    assert notes[("conv", "padding")] == "same"
    assert notes[("deconv", "bias")] is False
    # Perturbed expectations: the same run must now fail with exit 1.
    np.savez(tmp_path / "y.npz", y_img=io["y_img"] + 0.01, y_seq=io["y_seq"])
    r = runner.invoke(app, [*args[:2], str(tmp_path / "port2.safetensors"), *args[3:]])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["check_output"]["ok"] is False and doc["written"] is False
    assert not (tmp_path / "port2.safetensors").exists()


def test_sharded_keras3_weights(tmp_path: Path) -> None:
    # X.weights.json + 3 shard files; d1's kernel and bias live in different shards.
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8, eps=1e-3), torch.nn.Linear(8, 3))
    ref = tmp_path / "ref.pt"
    torch.save(model.state_dict(), ref)
    # Weights only: d1's 6 inputs might be a flattened (3, 2) input, whose order a template cannot tell.
    p = plan(KERAS / "k3_sharded.weights.json", ConvertOptions(template=ref))
    assert not p.ok and [i.sources for i in p.undetermined] == [("d1/kernel",)]
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"pattern": "d1/kernel", "transform": "transpose"}]}))
    p = plan(KERAS / "k3_sharded.weights.json", ConvertOptions(template=ref, rules=rules))
    assert p.ok and {p.how[id(i)] for i in p.written} == {"order"}
    model.load_state_dict({t.key: torch.from_numpy(np.array(t.make())) for t in p.out_tensors()})
    io = np.load(KERAS / "k3_sharded_io.npz")
    model.eval()
    with torch.no_grad():
        y = model(torch.from_numpy(io["x"]))
    assert float((y - torch.from_numpy(io["y"])).abs().max()) <= 1e-5


def test_sharded_index_with_missing_shard_exit_2(runner, tmp_path: Path) -> None:
    import shutil

    for f in KERAS.glob("k3_sharded*"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "k3_sharded_00001.weights.h5").unlink()
    r = runner.invoke(app, ["convert", str(tmp_path / "k3_sharded.weights.json"), "--dry-run"])
    assert r.exit_code == 2 and "k3_sharded_00001.weights.h5 is missing" in r.stderr
