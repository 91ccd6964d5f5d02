"""Files made by other people's tools (tests/fixtures/convert, by make_convert_fixtures.py with real TF):
each converts and reproduces TensorFlow's outputs, or exits 1 naming what the file leaves undetermined."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ptools.checkpoint.keras_h5 import associate_legacy_weights, keras_model_layers
from ptools.cli import app
from ptools.convert.api import ConvertOptions, plan
from tests.convert import ports_convert as ports

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "convert"


def _max_error(p, model: torch.nn.Module, io_name: str, nhwc: bool = True) -> float:
    sd = {t.key: torch.from_numpy(np.array(t.make())) for t in p.out_tensors()}
    model.load_state_dict(sd, strict=True)
    io = np.load(FIX / io_name)
    x = torch.from_numpy(io["x"])
    if nhwc:
        x = x.permute(0, 3, 1, 2)
    model.eval()
    with torch.no_grad():
        y = model(x)
    return float((y - torch.from_numpy(io["y"])).abs().max())


def test_associate_legacy_weights_across_naming_schemes() -> None:
    cfg = {
        "class_name": "Functional",
        "config": {
            "layers": [
                {"class_name": "Conv2D", "config": {"name": "conv2d_1"}},
                {
                    "class_name": "Sequential",
                    "config": {"name": "block", "layers": [{"class_name": "Dense", "config": {"name": "inner"}}]},
                },  # fmt: skip
                {"class_name": "LSTM", "config": {"name": "lstm"}},
            ]
        },
    }
    refs = associate_legacy_weights(
        ["conv2d_1", "block", "lstm"],
        {
            "conv2d_1": ["conv2d_1_1/kernel:0", "conv2d_1_1/bias:0"],  # Keras 2.0.x scope suffix
            "block": ["inner_1/kernel:0"],  # nested model, inner layer under a suffixed scope
            "lstm": ["lstm/lstm_cell/kernel"],  # Keras 3: no :0
        },
        cfg,
    )
    assert [(r.layer, r.var) for r in refs] == [
        ("conv2d_1", "kernel"),
        ("conv2d_1", "bias"),
        ("inner", "kernel"),
        ("lstm", "lstm_cell/kernel"),
    ]
    # Without a config, a group whose scopes are not its own name (+ _N) is a nested model.
    refs = associate_legacy_weights(["seq", "d"], {"seq": ["a/kernel:0", "b/bias:0"], "d": ["d_3/kernel:0"]}, None)
    assert [(r.layer, r.var) for r in refs] == [("a", "kernel"), ("b", "bias"), ("d", "kernel")]


def test_keras20_style_scopes_are_associated_with_their_config() -> None:
    _, layers = keras_model_layers(FIX / "k20_style.h5")
    by_name = {layer.name: layer for layer in layers}
    assert by_name["conv2d_1"].class_name == "Conv2D" and by_name["conv2d_1"].stored_as == "conv2d_1_1"
    assert by_name["batch_normalization_1"].config["epsilon"] == pytest.approx(0.01)
    assert by_name["max_pooling2d_1"].class_name == "MaxPooling2D"  # weightless layers are listed too
    p = plan(FIX / "k20_style.h5", ConvertOptions())
    assert p.ok and not any(m.class_inferred for m in p.source.layers.values())
    notes = {(n.layer, n.setting): n for n in p.notes}
    assert notes[("batch_normalization_1", "eps")].value == pytest.approx(0.01)
    assert "not recorded" not in notes[("batch_normalization_1", "eps")].message
    assert notes[("dense_1", "flatten")].value == [3, 2, 6]
    assert _max_error(p, ports.K20Style(), "k20_style_io.npz") <= 1e-5


def test_keras20_style_with_model_named_after_layers(runner, tmp_path: Path) -> None:
    out = tmp_path / "k20.safetensors"
    args = ["convert", str(FIX / "k20_style.h5"), str(out), "--model", "tests.convert.ports_convert:K20Style"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {row["match"] for row in doc["tensors"]} == {"name"}
