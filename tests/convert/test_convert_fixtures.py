"""Files made by other people's tools (tests/fixtures/convert, by make_convert_fixtures.py with real TF):
each converts and reproduces TensorFlow's outputs, or exits 1 naming what the file leaves undetermined."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ptools.checkpoint.keras.h5 import associate_legacy_weights, keras_model_layers
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
    assert notes[("max_pooling2d_1", "padding")].message.startswith("ptools.nn.MaxPool2dSame((3, 3), (2, 2))")
    assert notes[("activation_1", "activation")].message == "nn.ReLU()"
    assert _max_error(p, ports.K20Style(), "k20_style_io.npz") <= 1e-5


def test_keras20_style_with_model_named_after_layers(runner, tmp_path: Path) -> None:
    out = tmp_path / "k20.safetensors"
    args = ["convert", str(FIX / "k20_style.h5"), str(out), "--model", "tests.convert.ports_convert:K20Style"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {row["match"] for row in doc["tensors"]} == {"name"}


def _cli(runner, *args: str):
    return runner.invoke(app, ["convert", *[str(a) for a in args]])


def _written_error(path: Path, model: torch.nn.Module, io_name: str, nhwc: bool = True) -> float:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    io = np.load(FIX / io_name)
    x = torch.from_numpy(io["x"])
    with torch.no_grad():
        y = model(x.permute(0, 3, 1, 2) if nhwc else x)
    return float((y - torch.from_numpy(io["y"])).abs().max())


def test_keras20_style_port_named_after_scopes_gets_the_systematic_rename(runner, tmp_path: Path) -> None:
    out = tmp_path / "k20.safetensors"
    r = _cli(runner, FIX / "k20_style.h5", out, "--model", "tests.convert.ports_convert:K20StyleScopes", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {row["match"] for row in doc["tensors"]} == {"rename"}
    assert doc["renames"][0]["kind"] == "suffix+" and doc["renames"][0]["tensors"] == 13
    assert _written_error(out, ports.K20StyleScopes(), "k20_style_io.npz") <= 1e-5
    r = _cli(runner, FIX / "k20_style.h5", "--dry-run", "--model", "tests.convert.ports_convert:K20StyleScopes")
    assert "renamed to match the target: '_1' appended to each layer name" in r.stdout


FLATTEN_FILES = ["tf2_flatten", "k2_flatten_weights.h5", "k2_flatten.weights.h5"]


@pytest.mark.parametrize("name", FLATTEN_FILES)
def test_dense_after_conv_without_config_is_refused(runner, tmp_path: Path, name: str) -> None:
    out = tmp_path / "o.safetensors"
    r = _cli(runner, FIX / name, out)
    assert r.exit_code == 1, r.output
    assert not out.exists()
    text = " ".join(r.stdout.split())
    assert "layout undetermined" in text and "dense/kernel: its 45 inputs are 3 channels x 15 positions" in text
    assert "(H, W, C)" in text and "--model" in text and '"transform": "dense_after_flatten"' in text
    doc = json.loads(_cli(runner, FIX / name, "--dry-run", "--json").stdout)
    assert [u["source"] for u in doc["undetermined"]] == [["dense/kernel"]]
    assert doc["ok"] is False


@pytest.mark.parametrize("name", FLATTEN_FILES)
@pytest.mark.parametrize("port", ["Flatten", "FlattenNHWC"])
def test_flatten_order_taken_from_the_traced_target(runner, tmp_path: Path, name: str, port: str) -> None:
    out = tmp_path / "o.safetensors"
    r = _cli(runner, FIX / name, out, "--model", f"tests.convert.ports_convert:{port}", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    dense = next(row for row in doc["tensors"] if row["source"] == ["dense/kernel"])
    assert dense["decided_by"] == "--model trace"
    assert _written_error(out, getattr(ports, port)(), "flatten_io.npz") <= 1e-5


def test_flatten_trace_needs_an_input_and_not_a_template(runner, tmp_path: Path) -> None:
    src = FIX / "tf2_flatten"
    r = _cli(runner, src, tmp_path / "a.safetensors", "--model", "tests.convert.ports_convert:FlattenNoExample")
    assert r.exit_code == 1 and "--input-size CxHxW" in " ".join(r.stdout.split())
    out = tmp_path / "b.safetensors"
    r = _cli(runner, src, out, "--model", "tests.convert.ports_convert:FlattenNoExample", "--input-size", "2x7x5")
    assert r.exit_code == 0, r.output
    assert _written_error(out, ports.Flatten(), "flatten_io.npz") <= 1e-5
    ref = tmp_path / "ref.pt"
    torch.save(ports.Flatten().state_dict(), ref)
    r = _cli(runner, src, tmp_path / "c.safetensors", "--template", ref)
    assert r.exit_code == 1 and "layout undetermined" in r.stdout
    r = _cli(runner, src, "--dry-run", "--input-size", "2x7x5")
    assert r.exit_code == 2 and "--input-size belongs to --model" in r.stderr


def test_flatten_settled_by_a_map_rule(runner, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {"rules": [{"pattern": "dense/kernel", "transform": "dense_after_flatten", "flatten_shape": [5, 3, 3]}]}
        )
    )
    out = tmp_path / "o.safetensors"
    r = _cli(runner, FIX / "tf2_flatten", out, "--map", rules)
    assert r.exit_code == 0, r.output
    assert _written_error(out, ports.Flatten(), "flatten_io.npz") <= 1e-5


def test_gap_port_traced_as_a_vector_input_is_not_permuted(tmp_path: Path) -> None:
    # Same shapes, but the port feeds its Linear a pooled vector: the trace says "no flatten of a map".
    p = plan(FIX / "tf2_flatten", ConvertOptions(model="tests.convert.ports_convert:FlattenGap"))
    dense = next(i for i in p.items if i.sources == ("dense/kernel",))
    assert p.ok and dense.transform == "transpose" and dense.decided_by == "--model trace"


@pytest.mark.parametrize("name", ["k3_depthwise", "k3_depthwise_weights_legacy.h5"])
def test_keras3_kernel_without_class_is_refused_then_settled_by_target_shape(runner, tmp_path: Path, name) -> None:
    r = _cli(runner, FIX / name, tmp_path / "x.safetensors")
    assert r.exit_code == 1, r.output
    text = " ".join(r.stdout.split())
    assert "dw/kernel: Keras 3 names both a Conv kernel" in text and "(8, 1, 3, 3) depthwise" in text
    out = tmp_path / "o.safetensors"
    r = _cli(runner, FIX / name, out, "--model", "tests.convert.ports_convert:K3Depthwise", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["source"][0]: row for row in json.loads(r.stdout)["tensors"]}
    assert rows["dw/kernel"]["transform"].startswith("depthwise") and "target shape" in rows["dw/kernel"]["decided_by"]
    assert _written_error(out, ports.K3Depthwise(), "k3_depthwise_io.npz") <= 1e-5


def test_keras3_object_graph_and_config_decide_the_kernel_kind() -> None:
    p = plan(FIX / "k3_depthwise", ConvertOptions())
    undetermined = [i.sources[0] for i in p.items if i.undetermined is not None]
    assert undetermined == ["dw/kernel"]  # conv/pw are tracked as `_kernel` (Keras 3 Conv): determined
    p = plan(FIX / "k3_depthwise_legacy.h5", ConvertOptions())  # the config names DepthwiseConv2D
    assert p.ok
    assert _max_error(p, ports.K3Depthwise(), "k3_depthwise_io.npz") <= 1e-5


def test_tf1_layernorms_matched_per_kind_in_auto_name_order(runner, tmp_path: Path) -> None:
    out = tmp_path / "o.safetensors"
    # dense's 4 inputs could be a flattened 2x2 map: the traced target (given its input size) says a vector.
    model = "tests.convert.ports_convert:TF1LayerNorm"
    r = _cli(runner, FIX / "tf1_layernorm", out, "--model", model, "--json")
    assert r.exit_code == 1 and [u["source"] for u in json.loads(r.stdout)["undetermined"]] == [["model/dense/kernel"]]
    r = _cli(runner, FIX / "tf1_layernorm", out, "--model", model, "--input-size", "4", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["source"][0]: row for row in json.loads(r.stdout)["tensors"]}
    assert rows["model/layer_normalization_1/gamma"]["target"] == "ln2.weight"
    assert rows["model/dense_2/kernel"]["target"] == "fc3.weight"
    assert _written_error(out, ports.TF1LayerNorm(), "tf1_layernorm_io.npz", nhwc=False) <= 1e-5


def test_saved_model_metric_state_is_counted_apart(runner, tmp_path: Path) -> None:
    out = tmp_path / "o.safetensors"
    r = _cli(runner, FIX / "saved_model_metrics", out, "--model", "tests.convert.ports_convert:MetricsModel", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [row["target"] for row in doc["tensors"]] == ["d1.weight", "d1.bias", "d2.weight", "d2.bias"]
    roles = [s["role"] for s in doc["skipped"]]
    assert roles.count("metric") == 6
    assert _written_error(out, ports.MetricsModel(), "saved_model_metrics_io.npz", nhwc=False) <= 1e-5
    r = _cli(runner, FIX / "saved_model_metrics", "--dry-run")
    assert r.exit_code == 0 and "6 metric (never written" in r.stdout


def test_piped_report_is_one_line_per_row(runner) -> None:
    r = _cli(runner, FIX / "k20_style.h5", "--dry-run", "--model", "tests.convert.ports_convert:K20StyleScopes")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["source", "target"]) + 1
    end = next(i for i, ln in enumerate(lines) if i > start and ln.startswith("settings to change"))
    rows = lines[start:end]  # the report's rows: plain columns when piped
    assert len([ln for ln in rows if "batch_normalization_1" in ln and "rename" in ln]) == 5
    assert sum(1 for ln in rows if "rename" in ln) == 13  # every tensor row is one line: nothing folded
    assert any(
        "batch_normalization_1/moving_variance" in ln and "batch_normalization_1_1.running_var" in ln for ln in rows
    )


class _Chain(torch.nn.Module):
    """The torch twin of the chain_* fixtures: d1 -> (NCHW map (4, 1, 2) flattened | tanh) -> head."""

    def __init__(self, reshape: bool) -> None:
        super().__init__()
        self.reshape = reshape
        self.d1, self.head = torch.nn.Linear(5, 8), torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.d1(x)
        # Keras' Reshape((1, 2, 4)) is an NHWC map; a PyTorch port holds it NCHW, then flattens that.
        h = h.view(-1, 1, 2, 4).permute(0, 3, 1, 2).flatten(1) if self.reshape else torch.tanh(h)
        return self.head(h)


CHAIN_FILES = ["tfk_weights.h5", "tfk_ckpt", "k3.weights.h5", "k3_ckpt"]


def _chain_file(name: str, fmt: str) -> Path:
    return FIX / (f"{name}_{fmt}" if "." in fmt else f"{name}_{fmt}.index")


@pytest.mark.parametrize("fmt", CHAIN_FILES)
def test_weights_only_vector_reshaped_and_flattened_is_an_open_question(runner, tmp_path: Path, fmt: str) -> None:
    # Dense(8) -> Reshape((1, 2, 4)) -> Flatten -> Dense, weights only: head's 8 inputs match d1's 8 outputs,
    # so a chain rule alone would write its rows as stored (the vector's order), which is wrong for a port
    # that holds the map NCHW; the layers between them are all that tells, and the file cannot settle it.
    src, family = _chain_file("chain_reshape", fmt), fmt[:3].rstrip("_.")
    p = plan(src, ConvertOptions())
    assert not p.ok and [i.sources[0].rsplit("/", 2)[-2] for i in p.undetermined] == ["head"]
    r = runner.invoke(app, ["convert", str(src), str(tmp_path / "w.safetensors"), "--json"])
    assert r.exit_code == 1 and not (tmp_path / "w.safetensors").exists()
    why = json.loads(r.stdout)["undetermined"][0]["why"]
    said = ("`to_map`, `flat`", "2 layers without weights", "`flatten`, `reshape`")  # by name, place, class
    assert "8 outputs of `" in why and any(s in why for s in said)
    # The rule the message suggests settles it, and the result reproduces Keras through an NCHW port.
    head = p.undetermined[0].sources[0]
    rules = tmp_path / "rules.json"
    rule = {"pattern": head, "transform": "dense_after_flatten", "flatten_shape": [1, 2, 4]}
    rules.write_text(json.dumps({"rules": [rule]}))
    p = plan(src, ConvertOptions(rules=rules))
    assert p.ok
    assert _max_error(p, _Chain(reshape=True), f"chain_reshape_{family}_io.npz", nhwc=False) <= 1e-5


@pytest.mark.parametrize("fmt", CHAIN_FILES)
def test_weights_only_vector_through_dropout_and_activation(fmt: str) -> None:
    # Dense -> Dropout -> Activation -> Dense: names (legacy .h5, Keras 3 groups) say the vector stays a vector;
    # a TF2 checkpoint numbers two unnamed layers between them, which could be a Reshape and a Flatten.
    src, family = _chain_file("chain_mlp", fmt), fmt[:3].rstrip("_.")
    p = plan(src, ConvertOptions())
    if fmt.endswith("ckpt"):
        assert not p.ok and "2 layers without weights between them" in p.undetermined[0].undetermined.why
        return
    assert p.ok, [i.undetermined for i in p.undetermined]
    assert _max_error(p, _Chain(reshape=False), f"chain_mlp_{family}_io.npz", nhwc=False) <= 1e-5


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("dropout_3", "vector"),
        ("leaky_re_lu", "vector"),
        ("tf.math.multiply_2", "vector"),
        ("flatten_1", "flatten"),
        ("max_pooling2d_4", "maps"),
        ("reshape_3", "reshape"),
        ("lambda", "reshape"),
        ("my_head_act", "reshape"),  # a name the user chose says nothing
    ],
)
def test_weightless_layer_kinds_by_keras_names(name: str, kind: str) -> None:
    from ptools.convert.questions import _weightless_kind

    assert _weightless_kind(name) == kind
