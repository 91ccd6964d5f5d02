"""`ptools port` as a command: outputs, --check-output, --json, unsupported layers, usage errors."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ptools.cli import app
from tests.conftest import run_ptools

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PORT = FIXTURES / "port"


def split_io(name: str, folder: Path) -> tuple[Path, Path]:
    data = np.load(PORT / f"{name.replace('.', '_')}_io.npz")
    inp, out = folder / "in.npz", folder / "out.npz"
    np.savez(inp, **{k: data[k] for k in data.files if k.startswith("in")})
    np.savez(out, **{k: data[k] for k in data.files if k.startswith("out")})
    return inp, out


def test_port_writes_module_weights_and_report(runner, tmp_path: Path) -> None:
    inp, out = split_io("unet_k20.h5", tmp_path)
    dst = tmp_path / "unet"
    r = runner.invoke(
        app, ["port", str(PORT / "unet_k20.h5"), str(dst), "--name", "UNet", "--check-output", str(inp), str(out)]
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in dst.iterdir()) == ["model.py", "report.json", "weights.safetensors"]
    assert "class UNet(nn.Module):" in (dst / "model.py").read_text()
    assert "check-output: max abs error" in r.stdout and "ok" in r.stdout
    rep = json.loads((dst / "report.json").read_text())
    rows = {row["layer"]: row for row in rep["layers"]}
    assert rows["up1"]["modules"] == ['self.up1 = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)']
    assert rows["cat2"]["forward"] == ["cat2 = torch.cat([up2, enc2], dim=1)"]
    assert rep["check_output"]["max_abs_error"] <= 1e-5
    # Piped output: one line per layer, never wrapped.
    assert sum(1 for ln in r.stdout.splitlines() if "\t" in ln) == len(rep["layers"])


def test_json_and_existing_output(runner, tmp_path: Path) -> None:
    dst = tmp_path / "x"
    r = runner.invoke(app, ["port", str(PORT / "textnet.keras"), str(dst), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "ptools.port/1" and doc["written"] and doc["class_name"] == "Textnet"
    assert doc["inputs"] == [{"name": "tokens", "shape": [7], "channels_first": False}]
    bi = next(row for row in doc["layers"] if row["layer"] == "bilstm")
    assert "bilstm.weight_ih_l0_reverse" in bi["weights"]
    before = (dst / "model.py").read_bytes()
    r = runner.invoke(app, ["port", str(PORT / "unet.keras"), str(dst)])
    assert r.exit_code == 2 and "already exists" in r.stderr and "--force" in r.stderr
    assert (dst / "model.py").read_bytes() == before
    r = runner.invoke(app, ["port", str(PORT / "unet.keras"), str(dst), "--force"])
    assert r.exit_code == 0 and "class Unet" in (dst / "model.py").read_text()


def test_check_output_failure_writes_nothing(runner, tmp_path: Path) -> None:
    inp, out = split_io("xception.keras", tmp_path)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.load(out)["out0"] + 0.01)
    dst = tmp_path / "x"
    r = runner.invoke(app, ["port", str(PORT / "xception.keras"), str(dst), "--check-output", str(inp), str(wrong)])
    assert r.exit_code == 1, r.output
    assert "too large" in r.stdout and not dst.exists()


def _edited_keras(tmp_path: Path, edit) -> Path:
    """A copy of unet.keras with its config.json changed by `edit`."""
    src = zipfile.ZipFile(PORT / "unet.keras")
    cfg = json.loads(src.read("config.json"))
    edit({layer["name"]: layer for layer in cfg["config"]["layers"]})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for item in src.infolist():
            z.writestr(item, json.dumps(cfg) if item.filename == "config.json" else src.read(item))
    path = tmp_path / "edited.keras"
    path.write_bytes(buf.getvalue())
    return path


def test_unsupported_layers_are_listed_with_their_place(runner, tmp_path: Path) -> None:
    def edit(layers):
        layers["bottleneck_act"]["class_name"] = "ThresholdedReLU"
        layers["pad"]["class_name"] = "ZeroPadding3D"  # downstream: its class alone is checked

    path = _edited_keras(tmp_path, edit)
    dst = tmp_path / "out"
    r = runner.invoke(app, ["port", str(path), str(dst)])
    assert r.exit_code == 1, r.output
    assert "2 layer(s) have no exact PyTorch form" in r.stdout
    assert "bottleneck_act (ThresholdedReLU), layer 6, after bottleneck" in r.stdout
    assert "pad (ZeroPadding3D)" in r.stdout
    assert not dst.exists()
    r = runner.invoke(app, ["port", str(path), str(dst), "--json"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and not doc["written"]
    assert [u["layer"] for u in doc["unsupported"]] == ["bottleneck_act", "pad"]


def test_bad_inputs_exit_2(runner, tmp_path: Path) -> None:
    import torch

    text = tmp_path / "notes.h5"
    text.write_text("not a model")
    torch_file = tmp_path / "model.keras"
    torch.save({"w": torch.zeros(2)}, torch_file)
    cases = [
        ([str(tmp_path / "nope.h5"), str(tmp_path / "o")], "no such file"),
        ([str(FIXTURES / "keras" / "k3.weights.h5"), str(tmp_path / "o")], "no model architecture"),
        ([str(PORT / "unet.keras"), str(tmp_path / "o"), "--name", "9bad"], "not a Python class name"),
        ([str(FIXTURES / "convert" / "saved_model_metrics"), str(tmp_path / "o")], "no keras_metadata.pb"),
        ([str(text), str(tmp_path / "o")], "not a Keras model file"),
        ([str(torch_file), str(tmp_path / "o")], "looks like a PyTorch checkpoint"),
    ]
    for args, message in cases:
        r = runner.invoke(app, ["port", *args])
        assert r.exit_code == 2, (args, r.output)
        assert message in r.stderr, (args, r.stderr)


def test_help_does_not_import_torch() -> None:
    r = run_ptools("port", "--help", check_modules=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "HEAVY="


def test_unsupported_settings_are_named(tmp_path: Path) -> None:
    from ptools.port.api import build

    cases = [
        ("up1", "interpolation", "bicubic", "UpSampling2D interpolation='bicubic'"),
        ("enc2", "activation", "my_custom_act", "activation 'my_custom_act'"),
        (
            "crop",
            "data_format",
            "channels_first",
            "data_format='channels_first' (only channels_last models are ported)",
        ),
    ]
    for layer, key, value, reason in cases:

        def edit(layers, layer=layer, key=key, value=value):
            layers[layer]["config"][key] = value

        p = build(_edited_keras(tmp_path, edit))
        assert [(u["layer"], u["reason"]) for u in p.unsupported] == [(layer, reason)]
        assert p.code == ""
