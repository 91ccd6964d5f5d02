"""The TF bundle reader against checkpoints written by real TensorFlow 2.21 (tests/fixtures/tf)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ptools.checkpoint.base import open_checkpoint
from ptools.checkpoint.tf.bundle import TFBundleReader
from ptools.checkpoint.tf.proto import read_varint
from ptools.checkpoint.tf.table import FOOTER_SIZE, iter_block, read_block
from ptools.errors import PtoolsError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tf"
BUNDLES = ["tf1_saver", "tf2_dtypes", "tf2_keras3", "tf2_keras_adam", "tf2_sliced"]


def expected(name: str) -> tuple[dict, dict]:
    with np.load(FIX / f"{name}.expected.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((FIX / f"{name}.expected.json").read_text())


@pytest.mark.parametrize("name", BUNDLES)
def test_every_tensor_matches_tensorflow(name: str) -> None:
    arrays, facts = expected(name)
    reader = open_checkpoint(FIX / name)
    assert isinstance(reader, TFBundleReader)
    reader.verify = True  # every data CRC checked too
    with reader:
        assert reader.keys() == sorted(facts["dtypes"])
        infos = {t.key: t for t in reader.tensors()}
        for key, want in arrays.items():
            raw, dtype = reader.read_raw(key)
            assert dtype == facts["dtypes"][key], key
            assert infos[key].dtype == dtype
            assert list(raw.shape) == facts["shapes"][key] == list(infos[key].shape), key
            if dtype == "string":
                assert [bytes(x) for x in raw.reshape(-1)] == [bytes(x) for x in want.reshape(-1)], key
            else:
                assert raw.dtype.itemsize == want.dtype.itemsize, key
                assert np.array_equal(raw.view(want.dtype), want), key  # bit-exact (bfloat16 as uint16 bits)


def test_bfloat16_and_float16_values() -> None:
    arrays, _ = expected("tf2_dtypes")
    reader = TFBundleReader(FIX / "tf2_dtypes")
    bits = arrays["bf16/.ATTRIBUTES/VARIABLE_VALUE"]
    values = reader.read("bf16/.ATTRIBUTES/VARIABLE_VALUE")
    assert values.dtype == np.float32
    assert np.array_equal(values.view(np.uint32) >> 16, bits.astype(np.uint32))
    assert np.array_equal(values.view(np.uint32) & 0xFFFF, np.zeros_like(values, dtype=np.uint32))
    f16 = reader.read("f16/.ATTRIBUTES/VARIABLE_VALUE")
    assert f16.dtype == np.float16
    # Both came from the same float32 values: bfloat16 keeps ~3 significant digits, float16 ~3.
    np.testing.assert_allclose(values, f16.astype(np.float32), rtol=1e-2)


def test_string_tensor_with_two_byte_length() -> None:
    reader = TFBundleReader(FIX / "tf2_dtypes", verify=True)
    assert reader.read("one_word/.ATTRIBUTES/VARIABLE_VALUE")[()] == b"x" * 200
    words = reader.read("words/.ATTRIBUTES/VARIABLE_VALUE")
    assert words.shape == (4,) and words[2] == b"\x00\xff bytes" and words[3].decode() == "ünïcode"


@pytest.mark.parametrize("name", ["tf2_keras_adam", "tf2_keras3", "tf2_sliced", "tf2_dtypes"])
def test_object_graph_full_names(name: str) -> None:
    _, facts = expected(name)
    reader = TFBundleReader(FIX / name)
    by_key = {v.key: v for v in reader.variables(include_optimizer=True)}
    for key, full_name in facts["full_names"].items():
        assert by_key[key].name == full_name, key


@pytest.mark.parametrize("name", ["tf2_keras_adam", "tf2_keras3"])
def test_keras_weights_are_the_model_weights(name: str) -> None:
    _, facts = expected(name)
    reader = TFBundleReader(FIX / name)
    weights = reader.variables()
    assert sorted(v.name for v in weights) == facts["model_weights"]
    assert all(v.role == "weight" for v in weights)


def test_legacy_optimizer_slots_follow_the_object_graph() -> None:
    _, facts = expected("tf2_keras_adam")
    reader = TFBundleReader(FIX / "tf2_keras_adam")
    variables = {v.key: v for v in reader.variables(include_optimizer=True)}
    slots = {k: v for k, v in variables.items() if v.role == "slot"}
    assert set(slots) == set(facts["slots"])
    for key, ref in facts["slots"].items():
        assert slots[key].slot_name == ref["slot_name"]
        assert slots[key].slot_of == facts["full_names"][ref["original_key"]]
        assert slots[key].shape == variables[ref["original_key"]].shape
    assert variables["optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"].role == "counter"
    assert variables["optimizer/learning_rate/.ATTRIBUTES/VARIABLE_VALUE"].role == "optimizer"
    assert variables["layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"].path == "layer_with_weights-0/kernel"


def test_keras3_weights_reached_through_the_optimizer_are_weights() -> None:
    reader = TFBundleReader(FIX / "tf2_keras3")
    variables = {v.key: v for v in reader.variables(include_optimizer=True)}
    first = variables["optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE"]
    assert first.role == "weight" and first.path == "optimizer/_trainable_variables/0"
    assert variables["save_counter/.ATTRIBUTES/VARIABLE_VALUE"].role == "counter"
    assert variables["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"].role == "counter"
    weights = {v.name: v for v in variables.values() if v.role == "weight"}
    slots = [v for v in variables.values() if v.role == "slot"]
    trainable = {n for n in weights if not n.endswith(("moving_mean", "moving_variance"))}
    assert {(v.slot_of, v.slot_name) for v in slots} == {(n, s) for n in trainable for s in ("momentum", "velocity")}
    for v in slots:
        assert v.shape == weights[v.slot_of].shape


def test_tf1_names_slots_counters_and_ema() -> None:
    arrays, _ = expected("tf1_saver")
    reader = TFBundleReader(FIX / "tf1_saver")
    assert reader.metadata()["naming"] == "tf1-names"
    weights = reader.variables()
    assert [v.name for v in weights] == ["generator/dense/bias", "generator/dense/kernel", "generator/emb/table"]
    everything = {v.key: v for v in reader.variables(include_optimizer=True)}
    assert everything["global_step"].role == "counter"
    assert everything["beta1_power"].role == "optimizer"
    adam = everything["generator/dense/kernel/Adam"]
    assert (adam.role, adam.slot_of, adam.slot_name) == ("slot", "generator/dense/kernel", "m")
    assert everything["generator/dense/kernel/Adam_1"].slot_name == "v"
    assert not any(k.endswith("ExponentialMovingAverage") for k in everything)
    ema = {v.name: v for v in reader.variables(ema=True)}
    assert ema["generator/dense/kernel"].key == "generator/dense/kernel/ExponentialMovingAverage"
    assert ema["generator/dense/kernel"].role == "ema"
    assert ema["generator/emb/table"].key == "generator/emb/table"  # no shadow: the weight itself
    shadow = reader.read(ema["generator/dense/kernel"].key)
    assert np.array_equal(shadow, arrays["generator/dense/kernel/ExponentialMovingAverage"])
    assert not np.array_equal(shadow, reader.read("generator/dense/kernel"))


def test_sliced_variables_are_reassembled() -> None:
    reader = TFBundleReader(FIX / "tf2_sliced", verify=True)
    assert reader.header.num_shards == 2
    entry = reader.entry("big/.ATTRIBUTES/VARIABLE_VALUE")
    assert len(entry.slices) > 1
    shards = {reader._slice_entries[k].shard_id for k in reader._slice_entries}
    assert shards == {0, 1}  # the slices really are spread over both data files
    big = reader.read("big/.ATTRIBUTES/VARIABLE_VALUE")
    assert np.array_equal(big, np.arange(512, dtype=np.float32).reshape(64, 8) / 7)
    tf1 = TFBundleReader(FIX / "tf1_saver")
    arrays, _ = expected("tf1_saver")
    assert tf1.entry("generator/emb/table").slices
    assert np.array_equal(tf1.read("generator/emb/table"), arrays["generator/emb/table"])


def test_open_by_prefix_index_data_folder_and_checkpoint_file(tmp_path: Path) -> None:
    # The `checkpoint` file names an absolute path from the machine that saved it.
    for f in FIX.glob("tf1_saver.*"):
        if f.suffix in (".index",) or ".data-" in f.name:
            shutil.copy(f, tmp_path / f.name.replace("tf1_saver", "model.ckpt-2"))
    shutil.copy(FIX / "tf1_saver.checkpoint", tmp_path / "checkpoint")
    prefix = tmp_path / "model.ckpt-2"
    for path in [
        prefix,
        Path(f"{prefix}.index"),
        Path(f"{prefix}.data-00000-of-00001"),
        tmp_path,
        tmp_path / "checkpoint",
    ]:
        reader = open_checkpoint(path)
        assert isinstance(reader, TFBundleReader), path
        assert reader.prefix == prefix
        assert reader.read("global_step") == 2


def test_folder_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "gone.ckpt"\n')
    with pytest.raises(PtoolsError, match="no TensorFlow index file"):
        open_checkpoint(tmp_path)


def _data_block_count(index: bytes) -> int:
    _, pos = read_varint(index[-FOOTER_SIZE:], 0)
    _, pos = read_varint(index[-FOOTER_SIZE:], pos)
    off, pos = read_varint(index[-FOOTER_SIZE:], pos)
    size, _ = read_varint(index[-FOOTER_SIZE:], pos)
    return len(iter_block(read_block(index, off, size, "index"), "index"))


def test_multi_block_index_from_tensorflow(tmp_path: Path) -> None:
    info = json.loads((FIX / "multi_block.expected.json").read_text())
    with tarfile.open(FIX / "multi_block.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    index = (tmp_path / "multi.ckpt.index").read_bytes()
    assert _data_block_count(index) >= 2
    reader = open_checkpoint(tmp_path / "multi.ckpt")
    keys = reader.keys()
    assert len(keys) == info["count"]
    assert keys == sorted(info["key_format"].format(i=i) for i in range(info["count"]))
    for i in (0, 1, 2345, info["count"] - 1):
        assert reader.read(info["key_format"].format(i=i)) == np.float32(i)
    values = [float(reader.read(k)) for k in keys]
    assert values == [float(i) for i in range(info["count"])]
