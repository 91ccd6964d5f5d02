"""`convert --model` with the module `ptools port` emitted as the target: the target decides the layout.

Files from tests/fixtures/make_convert_fixtures.py and make_port_fixtures.py (real Keras 3 / tf_keras). The
port flattens in TF's (H, W, C) order, a hand-written port may flatten NCHW; either way the converted
weights must reproduce Keras, whatever the file's config or a --map rule assumed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ptools.cli import app
from ptools.port import api as port_api
from tests.convert import ports_convert as ports

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _io(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a fixture: convert fixtures keep x/y, port fixtures in0/out0."""
    name = path.name.replace(".", "_") + "_io.npz"
    if not (path.parent / name).exists():  # older convert fixtures: <stem>_io.npz
        name = path.name.split(".")[0] + "_io.npz"
    data = np.load(path.parent / name)
    if "x" in data:
        return data["x"], data["y"]
    return data["in0"], data["out0"]


def _port(src: Path, out: Path) -> port_api.Port:
    p = port_api.build(src)
    assert p.ok, p.unsupported
    port_api.write(p, out)
    return p


def _run(model: torch.nn.Module, weights: Path, p: port_api.Port, x: np.ndarray) -> np.ndarray:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(weights), strict=True)
    v = p.inputs[0]
    t = torch.from_numpy(np.moveaxis(x, -1, 1).copy() if v.cf else x)
    with torch.no_grad():
        y = model.eval()(t)
    return np.moveaxis(y.numpy(), 1, -1) if p.outputs[0].cf else y.numpy()


FLATTEN = [
    "convert/k20_style.h5",  # Keras 2.0-style file, Conv -> MaxPool -> Conv -> Flatten -> Dense
    "convert/flatten_seq.keras",  # Dense on a sequence -> Flatten: a channels-last map in the port too
    "convert/flatten_seq_tfk.h5",
    "convert/flatten_cube.keras",  # a 4x4x4 map: its shape cannot tell NCHW from NHWC
    "convert/flatten_cube_tfk.h5",
    "port/mobilenet.keras",
    "port/mobilenet_tfk.h5",
    "port/mobilenet_k20.h5",
]


@pytest.mark.parametrize("rel", FLATTEN)
def test_the_ported_module_as_target_gets_its_own_flatten_order(runner, tmp_path: Path, rel: str) -> None:
    # Before: rows reordered for an NCHW flatten although the port flattens NHWC (max error 8.8 on k20_style).
    src = FIX / rel
    p = _port(src, tmp_path / "port")
    target = f"{tmp_path / 'port' / 'model.py'}:{p.class_name}"
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["convert", str(src), str(out), "--model", target, "--json"])
    assert r.exit_code == 0, r.output
    rows = [row for row in json.loads(r.stdout)["tensors"] if row["decided_by"] == "--model trace"]
    assert rows, "the Dense after the Flatten is settled by tracing the target"
    x, y = _io(src)
    model = port_api._import_module(tmp_path / "port" / "model.py", p.class_name)
    assert np.abs(_run(model, out, p, x) - y).max() <= 1e-5


def test_a_map_rule_for_an_nchw_flatten_gives_way_to_the_traced_target(runner, tmp_path: Path) -> None:
    src = FIX / "convert" / "k20_style.h5"
    p = _port(src, tmp_path / "port")
    rules = tmp_path / "rules.json"
    rule = {"pattern": "dense_1/kernel", "transform": "dense_after_flatten", "flatten_shape": [3, 2, 6]}
    rules.write_text(json.dumps({"rules": [rule]}))
    out = tmp_path / "w.safetensors"
    target = f"{tmp_path / 'port' / 'model.py'}:{p.class_name}"
    r = runner.invoke(app, ["convert", str(src), str(out), "--model", target, "--map", str(rules), "--json"])
    assert r.exit_code == 0, r.output
    dense = next(row for row in json.loads(r.stdout)["tensors"] if row["source"] == ["dense_1/kernel"])
    assert "overridden by the target" in dense["transform"]
    x, y = _io(src)
    model = port_api._import_module(tmp_path / "port" / "model.py", p.class_name)
    assert np.abs(_run(model, out, p, x) - y).max() <= 1e-5
    # The same rule without a target keeps the NCHW order it states (right for an NCHW-flattening port).
    out2 = tmp_path / "w2.safetensors"
    r = runner.invoke(app, ["convert", str(src), str(out2), "--map", str(rules)])
    assert r.exit_code == 0, r.output
    assert np.abs(_run(ports.K20Style(), out2, p, x) - y).max() <= 1e-5


def test_an_nchw_flattening_target_still_gets_nchw_rows(runner, tmp_path: Path) -> None:
    src = FIX / "convert" / "k20_style.h5"
    p = port_api.build(src)
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["convert", str(src), str(out), "--model", "tests.convert.ports_convert:K20Style"])
    assert r.exit_code == 0, r.output
    x, y = _io(src)
    assert np.abs(_run(ports.K20Style(), out, p, x) - y).max() <= 1e-5


def test_a_target_that_cannot_be_traced_leaves_the_flatten_order_open(runner, tmp_path: Path) -> None:
    # The config says a Flatten feeds dense_1, but the target takes NHWC input, so the config's input
    # shape (as NCHW) does not run it: nothing is written until --input-size says how to call it.
    src = FIX / "convert" / "k20_style.h5"
    out = tmp_path / "w.safetensors"
    model = "tests.convert.ports_convert:K20StyleNHWCInput"
    r = runner.invoke(app, ["convert", str(src), str(out), "--model", model])
    assert r.exit_code == 1 and not out.exists()
    text = " ".join(r.stdout.split())
    assert "dense_1/kernel" in text and "--input-size" in text
    r = runner.invoke(app, ["convert", str(src), str(out), "--model", model, "--input-size", "10x8x3"])
    assert r.exit_code == 0, r.output
    x, y = _io(src)
    m = ports.K20StyleNHWCInput()
    from safetensors.torch import load_file

    m.load_state_dict(load_file(out), strict=True)
    with torch.no_grad():
        got = m.eval()(torch.from_numpy(x)).numpy()
    assert np.abs(got - y).max() <= 1e-5


def _sd_error(weights: Path, model: torch.nn.Module, x: np.ndarray, y: np.ndarray, nhwc: bool) -> float:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(weights), strict=True)
    t = torch.from_numpy(np.moveaxis(x, -1, 1).copy() if nhwc else x)
    with torch.no_grad():
        return float(np.abs(model.eval()(t).numpy() - y).max())


WRAPPERS = [
    ("wrappers.keras", "wrappers_keras_io.npz"),
    ("wrappers.weights.h5", "wrappers_keras_io.npz"),  # Keras 3 weights only: classes from group names
    ("wrappers_tfk.h5", "wrappers_tfk_h5_io.npz"),
    ("wrappers_tfk_weights.h5", "wrappers_tfk_h5_io.npz"),
    ("wrappers_tfk_ckpt", "wrappers_tfk_h5_io.npz"),  # TF2 checkpoint: forward_/backward_ scopes folded
]


@pytest.mark.parametrize(("name", "io"), WRAPPERS)
def test_weights_inside_wrappers_convert_without_a_target(runner, tmp_path: Path, name: str, io: str) -> None:
    # Before: tf_keras Bidirectional wrote the backward LSTM under the forward names and dropped the forward
    # one; Keras 3 wrote `vars.0` tensors untransposed; SimpleRNN's recurrent kernel was not transposed.
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["convert", str(FIX / "convert" / name), str(out), "--json"])
    assert r.exit_code == 0, r.output
    keys = {row["target"] for row in json.loads(r.stdout)["tensors"]}
    assert {"bilstm.weight_ih_l0", "bilstm.weight_ih_l0_reverse", "td.weight", "norm_mean"} <= keys
    data = np.load(FIX / "convert" / io)
    assert _sd_error(out, ports.Wrappers(), data["x"], data["y"], nhwc=False) <= 1e-5


@pytest.mark.parametrize("name", ["nested.keras", "nested_tfk.h5"])
def test_a_nested_base_model_keeps_its_path_and_its_config(runner, tmp_path: Path, name: str) -> None:
    # Before (Keras 3): `base.layers.b_bn.*` without the nested config, so BN's epsilon was "not recorded"
    # and the conv kernel an open Conv-or-depthwise question (exit 1).
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["convert", str(FIX / "convert" / name), str(out), "--json"])
    assert r.exit_code == 0, r.output
    data = np.load(FIX / "convert" / (name.replace(".", "_") + "_io.npz"))
    assert _sd_error(out, ports.Transfer(), data["x"], data["y"], nhwc=True) <= 1e-5
    out2 = tmp_path / "w2.safetensors"
    r = runner.invoke(
        app, ["convert", str(FIX / "convert" / name), str(out2), "--model", "tests.convert.ports_convert:Transfer"]
    )
    assert r.exit_code == 0, r.output
    assert _sd_error(out2, ports.Transfer(), data["x"], data["y"], nhwc=True) <= 1e-5


@pytest.mark.parametrize("name", ["mha.keras", "mha_tfk.h5"])
def test_weights_of_a_class_without_a_rule_are_not_guessed(runner, tmp_path: Path, name: str) -> None:
    # Before: MultiHeadAttention's rank-3 kernels were permuted like Conv1D kernels, exit 0.
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["convert", str(FIX / "convert" / name), str(out), "--json"])
    assert r.exit_code == 1 and not out.exists()
    doc = json.loads(r.stdout)
    open_ = {s for u in doc["undetermined"] for s in u["source"]}
    assert any(s.startswith("mha/query/") for s in open_)  # kernel (tf_keras) or vars/0 (Keras 3)
    assert all(u["kind"] == "unmapped" and "MultiHeadAttention" in u["why"] for u in doc["undetermined"])
    assert not any("head" in s for s in open_)  # the Dense after it is converted as usual
    rules = tmp_path / "skip.json"
    rules.write_text(json.dumps({"rules": [{"pattern": "mha/.*", "skip": True}]}))
    r = runner.invoke(app, ["convert", str(FIX / "convert" / name), str(out), "--map", str(rules)])
    assert r.exit_code == 0, r.output


PORT_FILES = ["prep.keras", "prep_tfk.h5", "textnet_savedmodel", "xception_savedmodel", "seq2seq_tfk.h5", "misc.keras"]


@pytest.mark.parametrize("name", PORT_FILES)
def test_port_fixtures_convert_into_their_own_port(runner, tmp_path: Path, name: str) -> None:
    # Normalization buffers (1, C, 1, 1) in the port take the file's (C,) vector by a reshape; a SavedModel's
    # keras_metadata.pb gives convert the layer classes and settings (before: BN eps "not recorded").
    from tests.port.test_fixtures import io_of, load_module, run_keras_layout

    src = FIX / "port" / name
    p = _port(src, tmp_path / "port")
    out = tmp_path / "w.safetensors"
    target = f"{tmp_path / 'port' / 'model.py'}:{p.class_name}"
    r = runner.invoke(app, ["convert", str(src), str(out), "--model", target, "--json"])
    assert r.exit_code == 0, r.output
    shutil.copy(out, tmp_path / "port" / "weights.safetensors")
    model = load_module(tmp_path / "port", p.class_name)
    xs, ys = io_of(name)
    for got, want in zip(run_keras_layout(p, model, xs), ys, strict=True):
        assert np.abs(got - want).max() <= 1e-5


def test_a_saved_model_brings_its_keras_config() -> None:
    from ptools.convert.api import ConvertOptions, plan

    p = plan(FIX / "port" / "xception_savedmodel", ConvertOptions())
    assert p.ok
    assert (
        p.source.layers["sep1_bn"].class_name == "BatchNormalization" and not p.source.layers["sep1_bn"].class_inferred
    )
    eps = {n.layer: n.value for n in p.notes if n.setting == "eps"}
    assert eps["sep1_bn"] == pytest.approx(1e-5) and eps["stem_bn"] == pytest.approx(1e-3)


@pytest.mark.parametrize("name", ["flatten_parts.keras", "flatten_parts_tfk.h5"])
def test_per_feature_weights_and_concatenated_flattens_follow_the_flatten_order(
    runner, tmp_path: Path, name: str
) -> None:
    # Before: BatchNorm/LayerNorm/PReLU after a Flatten kept TF's (H, W, C) feature order, and a Dense fed
    # by Concatenate([vector, Flatten]) was transposed as is: wrong for an NCHW flatten, exit 0.
    from safetensors.torch import load_file

    src = FIX / "convert" / name
    data = np.load(FIX / "convert" / (name.replace(".", "_") + "_io.npz"))
    x = (torch.from_numpy(data["img"]).permute(0, 3, 1, 2), torch.from_numpy(data["vec"]))
    for extra in ([], ["--model", "tests.convert.ports_convert:FlattenParts"]):
        out = tmp_path / f"w{len(extra)}.safetensors"
        r = runner.invoke(app, ["convert", str(src), str(out), *extra])
        assert r.exit_code == 0, r.output
        model = ports.FlattenParts().eval()
        model.load_state_dict(load_file(out), strict=True)
        with torch.no_grad():
            assert np.abs(model(*x).numpy() - data["y"]).max() <= 1e-5
    # The port flattens NHWC: the same file converted for it keeps TF's order.
    p = _port(src, tmp_path / "port")
    out = tmp_path / "p.safetensors"
    r = runner.invoke(
        app, ["convert", str(src), str(out), "--model", f"{tmp_path / 'port' / 'model.py'}:{p.class_name}"]
    )
    assert r.exit_code == 0, r.output
    model = port_api._import_module(tmp_path / "port" / "model.py", p.class_name)
    model.load_state_dict(load_file(out), strict=True)
    args = [
        torch.from_numpy(np.moveaxis(data["img"], -1, 1).copy()) if v.name.startswith("img") else x[1] for v in p.inputs
    ]
    with torch.no_grad():
        assert np.abs(model.eval()(*args).numpy() - data["y"]).max() <= 1e-5


def test_weights_only_flatten_parts_are_open_questions(runner, tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["convert", str(FIX / "convert" / "flatten_parts_tfk_weights.h5"), str(out), "--json"])
    assert r.exit_code == 1 and not out.exists()
    open_ = {s for u in json.loads(r.stdout)["undetermined"] for s in u["source"]}
    assert "head/kernel" in open_ and "bn/gamma" in open_ and "ln/gamma" in open_


# LayerNormalization(axis=[1, 2]) on a (2, 2) Conv1D output: gamma (L, C) also loads strictly where (C, L) is
# wanted. Before: copied as stored, exit 0 (fuzz seed 47213 model 348: the port's channels-first LayerNorm got
# it transposed, with and without --model).
LN_AXES = [("ln_axes_tfk.h5", []), ("ln_axes_tfk_weights.h5", ["--input-size", "3x4"])]  # the port takes (N, C, L)


@pytest.mark.parametrize(("name", "size"), LN_AXES)
def test_a_layernorm_over_several_axes_is_left_to_the_target(runner, tmp_path: Path, name: str, size: list) -> None:
    src = FIX / "convert" / name
    out = tmp_path / "plain.safetensors"
    r = runner.invoke(app, ["convert", str(src), str(out), "--json"])
    assert r.exit_code == 1 and not out.exists(), r.output
    asks = {s: u["kind"] for u in json.loads(r.stdout)["undetermined"] for s in u["source"]}
    assert asks == {"ln/gamma": "norm_axes", "ln/beta": "norm_axes"}
    # The port normalises the conv's channels-first output: traced, it gets (C, L) and reproduces Keras.
    p = _port(FIX / "convert" / "ln_axes_tfk.h5", tmp_path / "port")
    target = f"{tmp_path / 'port' / 'model.py'}:{p.class_name}"
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["convert", str(src), str(out), "--model", target, *size, "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["source"][0]: row for row in json.loads(r.stdout)["tensors"]}
    assert rows["ln/gamma"]["decided_by"] == "--model trace" and rows["ln/gamma"]["transform"] == "permute(1,0)"
    x, y = _io(FIX / "convert" / "ln_axes_tfk.h5")
    model = port_api._import_module(tmp_path / "port" / "model.py", p.class_name)
    assert np.abs(_run(model, out, p, x) - y).max() <= 1e-5


def test_a_channels_last_layernorm_target_needs_a_rule(runner, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    src = FIX / "convert" / "ln_axes_tfk.h5"
    out = tmp_path / "w.safetensors"
    target = "tests.convert.ports_convert:LnAxesCL"
    r = runner.invoke(app, ["convert", str(src), str(out), "--model", target, "--json"])
    assert r.exit_code == 1 and not out.exists(), r.output  # the trace cannot orient a transposed view
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"pattern": "ln/(gamma|beta)", "transform": "copy"}]))
    r = runner.invoke(app, ["convert", str(src), str(out), "--model", target, "--map", str(rules)])
    assert r.exit_code == 0, r.output
    model = ports.LnAxesCL().eval()
    model.load_state_dict(load_file(out), strict=True)
    x, y = _io(src)
    with torch.no_grad():
        assert np.abs(model(torch.from_numpy(x)).numpy() - y).max() <= 1e-5


@pytest.mark.parametrize("name", ["flatten_ops.keras", "flatten_ops_tfk.h5"])
def test_flatten_order_followed_through_operations_and_into_a_nested_model(runner, tmp_path: Path, name: str) -> None:
    # Before (tf_keras): `(elu(flat) - flat) / 2` is a TFOpLambda with `flat` in its call kwargs, which convert
    # did not follow: the nested Dense got TF's (H, W, C) rows for an NCHW flatten, exit 0 (fuzz seed 47213
    # model 420). Cropping2D after `img - 0.5` must also give the flattened shape (5, 4, 3).
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["convert", str(FIX / "convert" / name), str(out), "--json"])
    assert r.exit_code == 0, r.output
    rows = {t["target"]: t for t in json.loads(r.stdout)["tensors"]}
    assert rows["block.inner.weight"]["transform"].startswith("dense_after_flatten(5, 4, 3)")
    assert rows["head.weight"]["transform"] == "transpose"  # fed by the Dense: a plain vector
    x, y = _io(FIX / "convert" / name)
    assert _sd_error(out, ports.FlattenOps(), x, y, nhwc=True) <= 1e-5


def test_flatten_through_an_operation_convert_cannot_follow_is_an_open_question(runner, tmp_path: Path) -> None:
    # Flatten -> tf.math.cumsum -> Dense: whether the Dense's rows are the Flatten's order depends on how the
    # PyTorch model computes the cumsum; before, the rows were written as a plain vector's, exit 0.
    src = FIX / "convert" / "flatten_cumsum_tfk.h5"
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["convert", str(src), str(out), "--json"])
    assert r.exit_code == 1 and not out.exists()
    (u,) = json.loads(r.stdout)["undetermined"]
    assert u["source"] == ["head/kernel"] and u["kind"] == "flatten" and "`tf.math.cumsum`" in u["why"]
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"pattern": "head/kernel", "transform": "transpose"}]}))
    r = runner.invoke(app, ["convert", str(src), str(out), "--map", str(rules)])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("name", ["flatten_emb.keras", "flatten_emb_tfk.h5"])
def test_flatten_of_an_embedding_is_open_without_a_target(runner, tmp_path: Path, name: str) -> None:
    # Embedding -> Flatten -> Reshape((35,)) -> BatchNorm -> x * 0.5 -> Dense. Before, plain convert reordered
    # the BatchNorm's features and the Dense's rows for an NCL flatten, exit 0 (fuzz seed 61487 model 74); but
    # nn.Embedding gives (N, L, C) and a port flattens that as TF does: only the target can say.
    src = FIX / "convert" / name
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["convert", str(src), str(out), "--json"])
    assert r.exit_code == 1 and not out.exists(), r.output
    open_ = {"/".join(u["source"]): u for u in json.loads(r.stdout)["undetermined"]}
    assert set(open_) == {"bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance", "head/kernel"}
    assert all("`emb` (Embedding)" in u["why"] and "--model" in u["settle"] for u in open_.values())
    x, y = _io(src)
    p = _port(src, tmp_path / "port")
    tokens = torch.from_numpy(x.astype(np.int64))

    def error(weights: Path) -> float:
        from safetensors.torch import load_file

        model = port_api._import_module(tmp_path / "port" / "model.py", p.class_name)
        model.load_state_dict(load_file(weights), strict=True)
        with torch.no_grad():
            return float(np.abs(model.eval()(tokens).numpy() - y).max())

    # The rules the refusal names (TF's order, for a port that flattens (N, L, C)) reproduce Keras ...
    rules = tmp_path / "rules.json"
    rule = [{"pattern": "bn/.*", "transform": "copy"}, {"pattern": "head/kernel", "transform": "transpose"}]
    rules.write_text(json.dumps({"rules": rule}))
    r = runner.invoke(app, ["convert", str(src), str(out), "--map", str(rules)])
    assert r.exit_code == 0, r.output
    assert error(out) <= 1e-5
    # ... and so does the ported module as --model, its trace deciding.
    out2 = tmp_path / "w2.safetensors"
    target = f"{tmp_path / 'port' / 'model.py'}:{p.class_name}"
    r = runner.invoke(app, ["convert", str(src), str(out2), "--model", target, "--json"])
    assert r.exit_code == 0, r.output
    assert error(out2) <= 1e-5


def test_traced_conv_map_outranks_the_files_channel_guess(runner, tmp_path: Path) -> None:
    # Weights only: the conv nearest the Dense in the file is `narrow` (3 channels, which divide its 108
    # inputs), but the Flatten flattens `wide` (9 channels). The traced port flattens wide's (9, 4, 3) output
    # channels-last; read with the guessed 3 channels that map looked channels-last already (its last dim is 3)
    # and the rows were reordered, wrong with exit 0 (fuzz seed 61487 model 369, Conv3D, error 2.3).
    p = _port(FIX / "convert" / "flatten_guess_tfk.h5", tmp_path / "port")
    src = FIX / "convert" / "flatten_guess_tfk_weights.h5"
    out = tmp_path / "w.safetensors"
    target = f"{tmp_path / 'port' / 'model.py'}:{p.class_name}"
    r = runner.invoke(app, ["convert", str(src), str(out), "--model", target, "--input-size", "2x4x3", "--json"])
    assert r.exit_code == 0, r.output
    rows = {t["target"]: t for t in json.loads(r.stdout)["tensors"]}
    assert rows["head.weight"]["decided_by"] == "--model trace"
    x, y = _io(FIX / "convert" / "flatten_guess_tfk.h5")
    import importlib.util

    spec = importlib.util.spec_from_file_location("flatten_guess_port", tmp_path / "port" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = getattr(mod, p.class_name)()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(out), strict=True)
    with torch.no_grad():
        got = model.eval()(torch.from_numpy(np.moveaxis(x, -1, 1).copy()))[0].numpy()
    assert float(np.abs(got - y).max()) <= 1e-5
