"""TF bundles (written with ptools' numpy bundle writer, TF2 object-graph and TF1 naming) -> PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint.tf.writer import TFBundleWriter, object_graph_for
from ptools.cli import app
from ptools.convert.api import ConvertOptions, plan
from tests.convert.ports import FixturePort

KERAS = Path(__file__).resolve().parents[1] / "fixtures" / "keras"
FLATTEN_RULE = {"pattern": "head/kernel", "transform": "dense_after_flatten", "flatten_shape": [4, 2, 3]}


def _keras_weights() -> dict[str, np.ndarray]:
    with open_checkpoint(KERAS / "legacy_model.h5") as r:
        return {t.key: r.read(t.key) for t in r.tensors()}


def _tf2_bundle(folder: Path, weights: dict[str, np.ndarray]) -> Path:
    """tf.keras `save_weights`-style: object paths layer_with_weights-N/..., full_name = Keras name, Adam slots."""
    prefix = folder / "ckpt-1"
    layers: list[str] = []
    paths: dict[str, str] = {}
    for name in weights:
        layer = name.split("/")[0]
        if layer not in layers:
            layers.append(layer)
        paths[f"model/layer_with_weights-{layers.index(layer)}/{name.split('/')[-1]}"] = name
    slots = {p: {"m": f"Adam/{n}/m", "v": f"Adam/{n}/v"} for p, n in list(paths.items())[:3]}
    with TFBundleWriter(prefix) as w:
        for p, n in paths.items():
            w.add(f"{p}/.ATTRIBUTES/VARIABLE_VALUE", weights[n])
        for p, named in slots.items():
            for slot in named:
                w.add(
                    f"{p}/.OPTIMIZER_SLOT/optimizer/{slot}/.ATTRIBUTES/VARIABLE_VALUE", np.ones_like(weights[paths[p]])
                )
        w.add("save_counter/.ATTRIBUTES/VARIABLE_VALUE", np.array(1, np.int64))
        w.add_object_graph(object_graph_for(paths, slots))
    (folder / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/ckpt-1"\n')
    return prefix


def test_tf2_object_graph_bundle_reproduces_keras(tmp_path: Path) -> None:
    weights = _keras_weights()
    _tf2_bundle(tmp_path, weights)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [FLATTEN_RULE]}))
    model = FixturePort()
    ref = tmp_path / "ref.pt"
    torch.save(model.state_dict(), ref)
    p = plan(tmp_path, ConvertOptions(rules=rules, template=ref))  # a folder with a `checkpoint` file
    assert p.ok, (p.unfilled, p.mismatched, p.ambiguous, [i.target for i in p.unmatched_items])
    assert {s.role for s in p.skipped} >= {"optimizer", "counter"}
    classes = {m.name: m.class_name for m in p.source.layers.values()}
    assert classes["dw"] == "DepthwiseConv2D" and classes["gru"] == "GRU" and classes["lstm"] == "LSTM"
    assert classes["deconv"] == "Conv2DTranspose" and classes["bn"] == "BatchNormalization"
    model.load_state_dict({t.key: torch.from_numpy(np.array(t.make())) for t in p.out_tensors()})
    io = np.load(KERAS / "legacy_model_io.npz")
    model.eval()
    with torch.no_grad():
        y_img, y_seq = model(torch.from_numpy(io["img"]).permute(0, 3, 1, 2), torch.from_numpy(io["tok"]).long())
    assert float((y_img - torch.from_numpy(io["y_img"])).abs().max()) <= 1e-5
    assert float((y_seq - torch.from_numpy(io["y_seq"])).abs().max()) <= 1e-5


def _tf1_bundle(folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    v = {
        "gen/conv2d/kernel": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
        "gen/conv2d/bias": rng.standard_normal(4).astype(np.float32),
        "gen/dense/kernel": rng.standard_normal((4, 3)).astype(np.float32),
        "gen/rnn/lstm_cell/kernel": rng.standard_normal((3 + 2, 8)).astype(np.float32),
        "gen/rnn/lstm_cell/bias": rng.standard_normal(8).astype(np.float32),
    }
    prefix = folder / "model.ckpt-7"
    with TFBundleWriter(prefix) as w:
        for k, a in v.items():
            w.add(k, a)
            w.add(f"{k}/Adam", a * 0)
            w.add(f"{k}/Adam_1", a * 0)
            w.add(f"{k}/ExponentialMovingAverage", a + 1)
        w.add("beta1_power", np.float32(0.9))
        w.add("global_step", np.int64(7))
    return prefix, v


def test_tf1_names_slots_ema_and_lstm_cell(tmp_path: Path) -> None:
    prefix, v = _tf1_bundle(tmp_path)
    p = plan(prefix, ConvertOptions())
    sd = {t.key: np.array(t.make()) for t in p.out_tensors()}
    assert set(sd) == {
        "gen.conv2d.weight",
        "gen.conv2d.bias",
        "gen.dense.weight",
        "gen.rnn.lstm_cell.weight_ih_l0",
        "gen.rnn.lstm_cell.weight_hh_l0",
        "gen.rnn.lstm_cell.bias_ih_l0",
        "gen.rnn.lstm_cell.bias_hh_l0",
    }
    np.testing.assert_array_equal(sd["gen.conv2d.weight"], v["gen/conv2d/kernel"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(sd["gen.dense.weight"], v["gen/dense/kernel"].T)
    b = v["gen/rnn/lstm_cell/bias"]  # i, j, f, o -> i, f, g, o with forget_bias 1 on f
    np.testing.assert_allclose(sd["gen.rnn.lstm_cell.bias_ih_l0"], np.concatenate([b[0:2], b[4:6] + 1, b[2:4], b[6:8]]))
    skipped = {s.key: s.role for s in p.skipped}
    assert skipped["global_step"] == "counter" and skipped["gen/conv2d/kernel/Adam_1"] == "optimizer"
    assert skipped["gen/conv2d/kernel/ExponentialMovingAverage"] == "ema"

    ema = plan(prefix, ConvertOptions(ema=True))
    sd_ema = {t.key: np.array(t.make()) for t in ema.out_tensors()}
    np.testing.assert_array_equal(sd_ema["gen.conv2d.bias"], v["gen/conv2d/bias"] + 1)
    assert set(sd_ema) == set(sd)

    opt = plan(prefix, ConvertOptions(include_optimizer=True))
    keys = {t.key for t in opt.out_tensors()}
    assert "gen.conv2d.kernel.Adam_1" in keys and "global_step" in keys and "beta1_power" in keys


def test_cli_converts_tf_bundle_and_refuses_overwrite(runner, tmp_path: Path) -> None:
    prefix, v = _tf1_bundle(tmp_path)
    out = tmp_path / "out.safetensors"
    r = runner.invoke(app, ["convert", str(prefix) + ".index", str(out), "--verify", "--json"])
    assert r.exit_code == 0, r.output
    from safetensors.numpy import load_file

    got = load_file(out)
    np.testing.assert_array_equal(got["gen.conv2d.bias"], v["gen/conv2d/bias"])
    r = runner.invoke(app, ["convert", str(prefix), str(out)])
    assert r.exit_code == 2 and "already exists" in r.stderr
    r = runner.invoke(app, ["convert", str(prefix), str(out), "--force", "--ema"])
    assert r.exit_code == 0
    np.testing.assert_array_equal(load_file(out)["gen.conv2d.bias"], v["gen/conv2d/bias"] + 1)


@pytest.mark.parametrize("where", ["data", "index"])
def test_corrupt_bundle_exit_2_names_the_problem(runner, tmp_path: Path, where: str) -> None:
    prefix, _ = _tf1_bundle(tmp_path)
    target = Path(f"{prefix}.data-00000-of-00001") if where == "data" else Path(f"{prefix}.index")
    raw = bytearray(target.read_bytes())
    raw[10 if where == "data" else len(raw) // 3] ^= 0xFF  # data: inside gen/conv2d/kernel, the first tensor
    target.write_bytes(bytes(raw))
    r = runner.invoke(app, ["convert", str(prefix), str(tmp_path / "o.safetensors"), "--verify"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert "crc" in r.stderr.lower() or "corrupt" in r.stderr.lower()
    assert not (tmp_path / "o.safetensors").exists()
