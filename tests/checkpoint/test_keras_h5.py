"""The Keras reader: legacy .h5 (chunked attrs, ':0' or not), Keras 3 .weights.h5 / .keras, detection."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint.keras.h5 import KerasReader, to_snake_case
from ptools.errors import PtoolsError

KERAS = Path(__file__).resolve().parents[1] / "fixtures" / "keras"


def test_legacy_full_model_keys_classes_and_no_suffix() -> None:
    with open_checkpoint(KERAS / "legacy_model.h5") as r:
        assert r.format == "keras-h5"
        keys = [t.key for t in r.tensors()]
        assert keys[:3] == ["conv/kernel", "conv/bias", "bn/gamma"]
        assert "lstm/lstm_cell/recurrent_kernel" in keys and not any(":" in k for k in keys)
        classes = {lay.name: lay.class_name for lay in r.layers()}
        assert classes["dw"] == "DepthwiseConv2D" and classes["gru"] == "GRU"
        assert r.metadata()["keras_version"].startswith("2.")
        assert r.read("gru/gru_cell/bias").shape == (2, 12)


def test_keras3_archive_and_weights_file_agree_on_names() -> None:
    with open_checkpoint(KERAS / "k3_model.keras") as a, open_checkpoint(KERAS / "k3.weights.h5") as w:
        assert a.format == w.format == "keras-v3"
        assert sorted(t.key for t in a.tensors()) == sorted(t.key for t in w.tensors())
        layers = {lay.name: lay for lay in a.layers()}
        assert layers["flat"].input_shape == (None, 4, 2, 3)  # from build_config in config.json
        assert layers["bn"].config["epsilon"] == pytest.approx(1e-3)


def _legacy_weights_file(path: Path, suffix: str, chunk: bool) -> None:
    """A weights-only legacy h5 as Keras writes it (names with or without ':0'), maybe with chunked attrs."""
    with h5py.File(path, "w") as f:
        names = [b"d1", b"d2"]
        if chunk:
            f.attrs["layer_names0"] = np.array(names[:1])
            f.attrs["layer_names1"] = np.array(names[1:])
        else:
            f.attrs["layer_names"] = np.array(names)
        for i, lname in enumerate(["d1", "d2"]):
            g = f.create_group(lname)
            wn = [f"{lname}/kernel{suffix}".encode(), f"{lname}/bias{suffix}".encode()]
            if chunk:
                g.attrs["weight_names0"] = np.array(wn[:1])
                g.attrs["weight_names1"] = np.array(wn[1:])
            else:
                g.attrs["weight_names"] = np.array(wn)
            g.create_dataset(wn[0].decode(), data=np.full((3, 2), i, np.float32))
            g.create_dataset(wn[1].decode(), data=np.arange(2, dtype=np.float32) + i)


@pytest.mark.parametrize("suffix", [":0", ""])
@pytest.mark.parametrize("chunk", [False, True])
def test_legacy_weights_only_variants(tmp_path: Path, suffix: str, chunk: bool) -> None:
    p = tmp_path / "w.h5"
    _legacy_weights_file(p, suffix, chunk)
    with open_checkpoint(p) as r:
        assert [t.key for t in r.tensors()] == ["d1/kernel", "d1/bias", "d2/kernel", "d2/bias"]
        np.testing.assert_array_equal(r.read("d2/bias"), [1.0, 2.0])


def test_weights_h5_numeric_var_order_unknown_class_and_bf16(tmp_path: Path) -> None:
    p = tmp_path / "x.weights.h5"
    with h5py.File(p, "w") as f:
        v = f.create_group("layers/my_block/vars")
        v.attrs["name"] = "blk"
        for i in range(12):
            v.create_dataset(str(i), data=np.full((2,), i, np.float32))
        d = f.create_group("layers/dense/vars")
        bits = (np.array([1.5, -2.0], np.float32).view(np.uint32) >> 16).astype(np.uint16)
        ds = d.create_dataset("0", data=bits)
        ds.attrs["dtype"] = "bfloat16"
    with open_checkpoint(p) as r:
        keys = [t.key for t in r.tensors()]
        assert keys[:12] == [f"blk/vars/{i}" for i in range(12)]  # "10" after "9"
        np.testing.assert_array_equal(r.read("blk/vars/10"), [10, 10])
        info = {t.key: t for t in r.tensors()}["dense/kernel"]  # one var, no config: bias-less Dense
        assert info.dtype == "bfloat16"
        np.testing.assert_array_equal(r.read("dense/kernel"), [1.5, -2.0])


def test_detection_by_content(tmp_path: Path) -> None:
    renamed = tmp_path / "model.bin"
    shutil.copy(KERAS / "k3_model.keras", renamed)
    with open_checkpoint(renamed) as r:
        assert r.format == "keras-v3"
    ub = tmp_path / "userblock.h5"
    with h5py.File(ub, "w", userblock_size=512) as f:
        f.attrs["layer_names"] = np.array([], dtype="S1")
    with open_checkpoint(ub) as r:
        assert r.tensors() == []


def test_errors_name_the_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("x", data=np.zeros(2))
    with pytest.raises(PtoolsError, match="without Keras weights"):
        KerasReader(plain)
    npz_keras = tmp_path / "m.keras"
    with zipfile.ZipFile(npz_keras, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.npz", b"")
    with pytest.raises(PtoolsError, match="m.keras: model.weights.npz: "):  # read like Keras reads it, and empty
        open_checkpoint(npz_keras)


def test_snake_case_matches_keras_group_names() -> None:
    assert to_snake_case("Conv2DTranspose") == "conv2d_transpose"
    assert to_snake_case("BatchNormalization") == "batch_normalization"
    assert to_snake_case("ReLU") == "re_lu"


def test_optimizer_weights_are_tagged(tmp_path: Path) -> None:
    from ptools.convert.api import ConvertOptions, plan

    legacy = tmp_path / "opt.h5"
    _legacy_weights_file(legacy, ":0", chunk=False)
    with h5py.File(legacy, "a") as f:  # a weights-only file + optimizer state, as tf.keras writes it
        g = f.create_group("optimizer_weights")
        names = [b"Adam/iter:0", b"Adam/m/d1/kernel:0"]
        g.attrs["weight_names"] = np.array(names)
        g.create_dataset("Adam/iter:0", data=np.int64(3))
        g.create_dataset("Adam/m/d1/kernel:0", data=np.zeros((3, 2), np.float32))
    with open_checkpoint(legacy) as r:
        roles = {t.key: t.extra["role"] for t in r.tensors()}
    assert roles["optimizer/Adam/iter"] == "counter" and roles["optimizer/Adam/m/d1/kernel"] == "optimizer"
    assert {t.key for t in plan(legacy, ConvertOptions()).out_tensors()} == {
        "d1.weight",
        "d1.bias",
        "d2.weight",
        "d2.bias",
    }
    with_opt = {t.key for t in plan(legacy, ConvertOptions(include_optimizer=True)).out_tensors()}
    assert "optimizer.Adam.m.d1.kernel" in with_opt and "optimizer.Adam.iter" in with_opt


def test_nested_model_layers_become_their_own_layers(tmp_path: Path) -> None:
    from ptools.convert.api import ConvertOptions, plan

    p = tmp_path / "nested.h5"
    with h5py.File(p, "w") as f:  # a Sequential "backbone" inside a model: inner names, no layer prefix
        f.attrs["layer_names"] = np.array([b"backbone"])
        g = f.create_group("backbone")
        names = [b"c1/kernel:0", b"c1/bias:0", b"c2/kernel:0", b"c2/bias:0"]
        g.attrs["weight_names"] = np.array(names)
        for n in names:
            shape = (3, 3, 2, 2) if b"kernel" in n else (2,)
            g.create_dataset(n.decode(), data=np.ones(shape, np.float32))
    keys = {t.key: t.shape for t in plan(p, ConvertOptions()).out_tensors()}
    assert keys == {"c1.weight": (2, 2, 3, 3), "c1.bias": (2,), "c2.weight": (2, 2, 3, 3), "c2.bias": (2,)}


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
READ_ALIKE = [
    KERAS / "k3_model.keras",
    KERAS / "k3.weights.h5",
    KERAS / "k3_sharded.weights.json",
    KERAS / "legacy_model.h5",
    FIXTURES / "port" / "textnet_tfk.h5",
    FIXTURES / "port" / "xception_k20.h5",
    FIXTURES / "convert" / "wrappers.keras",
]


@pytest.mark.parametrize("path", READ_ALIKE, ids=lambda p: p.name)
def test_the_probe_childs_index_reads_what_hdf5_reads(path: Path) -> None:
    # The parent takes the forked child's index and reads plain datasets at the byte offsets it found,
    # without parsing the HDF5 structure itself: names, layers and every value as h5py gives them.
    with KerasReader(path, probe=False) as direct, KerasReader(path) as probed:
        assert [(t.key, t.dtype, t.shape) for t in probed.tensors()] == [
            (t.key, t.dtype, t.shape) for t in direct.tensors()
        ]
        assert [(k.name, k.class_name, k.variables) for k in probed.layers()] == [
            (k.name, k.class_name, k.variables) for k in direct.layers()
        ]
        assert probed.model_config == direct.model_config and probed.metadata() == direct.metadata()
        for t in direct.tensors():
            a, b = probed.read_raw(t.key), direct.read_raw(t.key)
            assert a[1] == b[1] and a[0].dtype == b[0].dtype and np.array_equal(a[0], b[0])
        assert probed._h5 is None  # no HDF5 parsing in this process
        assert all(probed._locations.values())


def test_a_dataset_the_child_cannot_place_is_read_through_hdf5(tmp_path: Path) -> None:
    p = tmp_path / "c.weights.h5"
    with h5py.File(p, "w") as f:
        f.create_group("layers/dense/vars").create_dataset("0", data=np.arange(12, dtype=">f4").reshape(3, 4))
        f["layers/dense/vars"].create_dataset("1", data=np.arange(4.0, dtype="f4"), chunks=(2,), compression="gzip")
    with KerasReader(p) as r:
        assert r._locations["dense/kernel"] is not None and r._locations["dense/bias"] is None
        np.testing.assert_array_equal(r.read("dense/kernel"), np.arange(12).reshape(3, 4))  # big-endian, by offset
        np.testing.assert_array_equal(r.read("dense/bias"), np.arange(4.0))  # chunked + gzip: through h5py
        assert r.read("dense/kernel").dtype == np.float32


def test_a_damaged_keras_member_fails_its_crc(tmp_path: Path) -> None:
    data = bytearray((KERAS / "k3_model.keras").read_bytes())
    with zipfile.ZipFile(KERAS / "k3_model.keras") as z:
        info = z.getinfo("model.weights.h5")
    data[info.header_offset + 200] ^= 0xFF  # inside the stored member's bytes
    (tmp_path / "bad.keras").write_bytes(data)
    with pytest.raises(PtoolsError, match=r"bad\.keras: model\.weights\.h5 is corrupt \(zip CRC-32"):
        KerasReader(tmp_path / "bad.keras")


def test_layer_names_holding_a_slash_keep_their_weights() -> None:
    """tf_keras' MobileNetV3 names a BN layer "Conv/BatchNorm": its h5 group sits inside the group of the layer
    "Conv" (model_weights/Conv/BatchNorm/Conv/BatchNorm/gamma:0), and its weights are its own, not Conv's."""
    path = Path(__file__).resolve().parents[1] / "fixtures" / "port" / "slashnames_tfk.h5"
    with KerasReader(path) as reader:
        keys = {t.key: t.shape for t in reader.tensors()}
    assert keys["Conv/kernel"] == (3, 3, 3, 8)
    assert keys["Conv/BatchNorm/gamma"] == (8,) and keys["Conv/BatchNorm/moving_variance"] == (8,)
    assert keys["expanded_conv/depthwise/BatchNorm/beta"] == (8,)
    assert not any("BatchNorm/BatchNorm" in k or k.startswith("Conv/Conv") for k in keys)
