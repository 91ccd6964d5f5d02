"""`ptools port` on the graphs people build around layers: nested models, operations on tensors, several
inputs, preprocessing; and the refusals (each naming its layer)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ptools.cli import app
from ptools.errors import PtoolsError
from ptools.port import api
from ptools.port.weights import FileWeights

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")
PORT = Path(__file__).resolve().parents[1] / "fixtures" / "port"


def test_inputs_and_outputs_follow_the_model_order() -> None:
    """Model([c, b, a], [head, diff]) with a, b, c defined in that order: forward(c, b, a) -> (head, diff)."""
    for name in ("twoin.keras", "twoin_tfk.h5"):
        p = api.build(PORT / name)
        assert [v.name for v in p.inputs] == ["last_defined", "image", "first_defined"], name
        assert [v.name for v in p.outputs] == ["head", "diff"], name


def test_check_output_with_several_inputs(runner, tmp_path: Path) -> None:
    data = np.load(PORT / "twoin_keras_io.npz")
    inp, out = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inp, **{k: data[k] for k in data.files if k.startswith("in")})
    np.savez(out, **{k: data[k] for k in data.files if k.startswith("out")})
    r = runner.invoke(
        app, ["port", str(PORT / "twoin.keras"), str(tmp_path / "o"), "--check-output", str(inp), str(out), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["check_output"]["max_abs_error"] <= 1e-5


def test_nested_models_become_classes() -> None:
    p = api.build(PORT / "transfer.keras")
    assert "class Base(nn.Module):" in p.code and "class DataAugmentation(nn.Module):" in p.code
    assert "self.base = Base()" in p.code and "base = self.base(subtract_1)" in p.code
    assert p.code.index("class Base(") < p.code.index("class Transfer(")  # defined before use
    assert "base.block_1_depthwise.weight" in p.state and "base.bn_Conv1.running_var" in p.state
    rows = {r.layer: r for r in p.rows}
    assert rows["base/block_1_depthwise"].weights == ["base.block_1_depthwise.weight"]
    assert rows["base"].modules == ["self.base = Base()"]
    # The same frozen base as the first layer of a Sequential, in both families.
    for name in ("transfer_seq.keras", "transfer_seq_tfk.h5"):
        code = api.build(PORT / name).code
        assert "self.feature_extractor = FeatureExtractor()" in code, name


def test_a_shared_nested_model_is_one_module_called_twice() -> None:
    for name in ("siamese.keras", "siamese_tfk.h5"):
        p = api.build(PORT / name)
        assert p.code.count("self.encoder = Encoder()") == 1
        assert "self.encoder(left)" in p.code and "self.encoder(right)" in p.code
        assert "class Inner(nn.Module):" in p.code and "self.inner = Inner()" in p.code  # nested two deep
        assert "encoder.inner.inner_a.weight" in p.state


def _edit_h5_config(src: Path, dst: Path, edit) -> Path:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        edit({layer["name"]: layer for layer in cfg["config"]["layers"]})
        f.attrs["model_config"] = json.dumps(cfg).encode()
    return dst


def _edit_keras_config(src: Path, dst: Path, edit) -> Path:
    z = zipfile.ZipFile(src)
    cfg = json.loads(z.read("config.json"))
    edit({layer["name"]: layer for layer in cfg["config"]["layers"]})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for item in z.infolist():
            out.writestr(item, json.dumps(cfg) if item.filename == "config.json" else z.read(item))
    dst.write_bytes(buf.getvalue())
    return dst


def test_unknown_operations_are_refused_by_name(runner, tmp_path: Path) -> None:
    def tf_edit(layers):
        layers["tf.math.sqrt"]["config"]["function"] = "math.lgamma"

    def k3_edit(layers):
        layers["sqrt"]["class_name"] = "Lgamma"

    tf_file = _edit_h5_config(PORT / "arith_tfk.h5", tmp_path / "a.h5", tf_edit)
    p = api.build(tf_file)
    assert [(u["layer"], u["class"], u["reason"]) for u in p.unsupported] == [
        ("tf.math.sqrt", "TFOpLambda tf.math.lgamma", "TF function tf.math.lgamma has no PyTorch port here")
    ]
    k3_file = _edit_keras_config(PORT / "arith.keras", tmp_path / "a.keras", k3_edit)
    p = api.build(k3_file)
    assert [(u["layer"], u["reason"]) for u in p.unsupported] == [
        ("sqrt", "keras.ops operation Lgamma has no PyTorch port here")
    ]
    r = runner.invoke(app, ["port", str(tf_file), str(tmp_path / "o")])
    assert r.exit_code == 1 and "tf.math.sqrt (TFOpLambda tf.math.lgamma)" in r.stdout, r.output


def test_training_true_is_refused_in_tf_keras(tmp_path: Path) -> None:
    """tf_keras keeps a call's training=True at inference (BatchNormalization on batch statistics): refused.
    Keras 3 writes training=True for every augmentation layer and overrides it at inference: ported."""

    def edit(layers):
        layers["base"]["inbound_nodes"][0][0][3]["training"] = True

    p = api.build(_edit_h5_config(PORT / "transfer_tfk.h5", tmp_path / "t.h5", edit))
    assert [(u["layer"], u["reason"]) for u in p.unsupported] == [
        ("base", "called with training=True (Keras then runs it in training mode at inference)")
    ]
    assert api.build(PORT / "prep2.keras").ok  # its RandomFlip node says training=True


def test_keras3_nested_weights_without_layer_names(tmp_path: Path) -> None:
    """Keras 3 files without the `name` attribute of each vars group: nested layers are found by their
    group names (class, numbered in model order), and give the same tensors."""
    z = zipfile.ZipFile(PORT / "transfer.keras")
    raw = io.BytesIO(z.read("model.weights.h5"))
    with h5py.File(raw, "r+") as f:
        f.visit(lambda n: f[n].attrs.__delitem__("name") if "name" in f[n].attrs and n.count("/") > 2 else None)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for item in z.infolist():
            out.writestr(item, raw.getvalue() if item.filename == "model.weights.h5" else z.read(item))
    (tmp_path / "t.keras").write_bytes(buf.getvalue())
    a, b = api.build(PORT / "transfer.keras"), api.build(tmp_path / "t.keras")
    assert a.state.keys() == b.state.keys() and all(np.array_equal(a.state[k], b.state[k]) for k in a.state)


def test_weights_two_layers_would_share_are_refused() -> None:
    w = FileWeights({("conv",): [("kernel", np.zeros(1))]}, "leaf")
    assert w.get(("enc_a", "conv")) is not None
    with pytest.raises(PtoolsError, match="both match the weights stored as conv"):
        w.get(("enc_b", "conv"))


def test_weights_no_layer_uses_are_refused(tmp_path: Path) -> None:
    """Stored weights of a layer the config does not have are not silently dropped."""
    z = zipfile.ZipFile(PORT / "transfer.keras")
    raw = io.BytesIO(z.read("model.weights.h5"))
    with h5py.File(raw, "r+") as f:
        g = f.create_group("layers/dense_9/vars")
        g.attrs["name"] = "ghost"
        g["0"] = np.zeros((8, 3), np.float32)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for item in z.infolist():
            out.writestr(item, raw.getvalue() if item.filename == "model.weights.h5" else z.read(item))
    (tmp_path / "t.keras").write_bytes(buf.getvalue())
    with pytest.raises(PtoolsError, match="weights stored for ghost are not used by any layer"):
        api.build(tmp_path / "t.keras")
