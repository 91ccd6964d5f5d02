"""The numpy TensorBundle writer: byte-identical to TensorFlow's output, and round trips through the reader."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptools.checkpoint.tf.bundle import TF_DTYPES, TFBundleReader, data_filename
from ptools.checkpoint.tf.writer import TFBundleWriter, object_graph_for

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tf"


def rewrite(reader: TFBundleReader, prefix: Path) -> None:
    """Write every entry of `reader` again, in TF's data order, with our writer."""
    dense = [(k, e) for k, e in reader._slice_entries.items()]
    dense += [(k, e) for k, e in reader._entries.items() if not e.slices]
    dense.sort(key=lambda ke: (ke[1].shard_id, ke[1].offset))
    with TFBundleWriter(prefix, num_shards=reader.header.num_shards) as w:
        for key, e in dense:
            if isinstance(key, bytes):
                raw, dtype = reader._read_dense(repr(key), e), TF_DTYPES[e.dtype][0]
            else:
                raw, dtype = reader.read_raw(key)
            w.add(key, raw, dtype=dtype, shard=e.shard_id)
        for key, e in reader._entries.items():
            if e.slices:
                w.declare_sliced(key, e.shape, e.slices, reader.dtype_of(key))


@pytest.mark.parametrize("name", ["tf1_saver", "tf2_dtypes", "tf2_keras3", "tf2_keras_adam", "tf2_sliced", "multi"])
def test_writer_reproduces_tensorflow_files_byte_for_byte(name: str, tmp_path: Path) -> None:
    if name == "multi":
        with tarfile.open(FIX / "multi_block.tar.gz") as tar:
            tar.extractall(tmp_path / "tf", filter="data")
        src = tmp_path / "tf" / "multi.ckpt"
    else:
        src = FIX / name
    reader = TFBundleReader(src)
    rewrite(reader, tmp_path / "ours")
    assert (tmp_path / "ours.index").read_bytes() == Path(f"{src}.index").read_bytes()
    n = reader.header.num_shards
    for i in range(n):
        ours = Path(data_filename(str(tmp_path / "ours"), i, n)).read_bytes()
        assert ours == Path(data_filename(str(src), i, n)).read_bytes()


NUMERIC = ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "bool", "complex64", "complex128"]  # fmt: skip


def test_round_trip_every_dtype_shards_and_strings(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    want: dict[str, np.ndarray] = {}
    with TFBundleWriter(tmp_path / "ck", num_shards=3, compression="snappy", block_size=512) as w:
        for i, dt in enumerate(NUMERIC):
            arr = (rng.normal(size=(2, 3)) * 50).astype(dt)
            want[f"t/{dt}"] = arr
            w.add(f"t/{dt}", arr, shard=i % 3)
        want["scalar"] = np.array(2.5, dtype=np.float64)
        w.add("scalar", np.float64(2.5))
        want["empty"] = np.zeros((0, 4), np.float32)
        w.add("empty", want["empty"])
        want["strings"] = np.array([[b"a", b""], [b"\x00\xff", "é".encode()]], dtype=object)
        w.add("strings", want["strings"])
        bits = rng.integers(0, 2**16, size=(3, 3), dtype=np.uint16) & 0x7F7F  # finite bfloat16 patterns
        want["bf16"] = bits
        w.add("bf16", bits, dtype="bfloat16")
    reader = TFBundleReader(tmp_path / "ck", verify=True)
    assert reader.header.num_shards == 3
    for key, arr in want.items():
        got, dtype = reader.read_raw(key)
        assert got.shape == arr.shape, key
        if key == "strings":
            assert got.tolist() == arr.tolist()
        else:
            assert np.array_equal(got, arr), key
    assert reader.dtype_of("bf16") == "bfloat16"
    assert reader.read("scalar").shape == ()


def test_bfloat16_from_float32_rounds_to_nearest_even(tmp_path: Path) -> None:
    vals = np.array([1.0, 1.00390625, 1.01171875, -2.5, 3.39e38, np.inf, np.nan], dtype=np.float32)
    with TFBundleWriter(tmp_path / "ck") as w:
        w.add("x", vals, dtype="bfloat16")
    got = TFBundleReader(tmp_path / "ck").read("x")
    # 1+2^-8 is a tie -> even (1.0); 1+3*2^-8 is a tie -> even (1+2^-6); 3.39e38 rounds to the largest finite.
    assert got[:4].tolist() == [1.0, 1.0, 1.015625, -2.5]
    assert np.isfinite(got[4]) and got[5] == np.inf and np.isnan(got[6])


def test_thousands_of_variables_make_a_multi_block_index(tmp_path: Path) -> None:
    n = 3000
    with TFBundleWriter(tmp_path / "ck", block_size=8192, restart_interval=7) as w:
        for i in range(n):
            w.add(f"layer_{i:05d}/w", np.full((2,), i, dtype=np.int32))
    index = (tmp_path / "ck.index").read_bytes()
    from tests.checkpoint.test_tf_bundle import _data_block_count

    assert _data_block_count(index) > 5
    reader = TFBundleReader(tmp_path / "ck")
    assert len(reader.keys()) == n
    assert all(reader.read(f"layer_{i:05d}/w").tolist() == [i, i] for i in range(0, n, 97))


def test_sliced_variable_round_trip_over_two_shards(tmp_path: Path) -> None:
    full = np.arange(10 * 6, dtype=np.float32).reshape(10, 6)
    with TFBundleWriter(tmp_path / "ck", num_shards=2) as w:
        w.add_sliced(
            "part",
            (10, 6),
            [([(0, 3), (0, -1)], full[:3]), ([(3, 7), (0, 2)], full[3:, :2]), ([(3, 7), (2, 4)], full[3:, 2:])],
            shards=[0, 1, 1],
        )
    reader = TFBundleReader(tmp_path / "ck", verify=True)
    assert reader.keys() == ["part"]
    assert np.array_equal(reader.read("part"), full)
    assert reader.tensors()[0].extra["slices"] == 3


def test_object_graph_writer_gives_names_and_slots(tmp_path: Path) -> None:
    with TFBundleWriter(tmp_path / "ck") as w:
        w.add("enc/conv/kernel/.ATTRIBUTES/VARIABLE_VALUE", np.ones((3, 3, 1, 2), np.float32))
        w.add(
            "enc/conv/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE", np.zeros((3, 3, 1, 2), np.float32)
        )
        w.add_object_graph(
            object_graph_for({"enc/conv/kernel": "encoder/conv/kernel"}, slots={"enc/conv/kernel": {"m": "Adam/m"}})
        )
    reader = TFBundleReader(tmp_path / "ck")
    assert reader.metadata()["naming"] == "tf2-object-graph"
    weights = reader.variables()
    assert [(v.name, v.path) for v in weights] == [("encoder/conv/kernel", "enc/conv/kernel")]
    slot = [v for v in reader.variables(include_optimizer=True) if v.role == "slot"]
    assert [(v.slot_of, v.slot_name) for v in slot] == [("encoder/conv/kernel", "m")]


def test_writer_rejects_duplicates_and_bad_dtypes(tmp_path: Path) -> None:
    w = TFBundleWriter(tmp_path / "ck")
    w.add("a", np.zeros(2))
    with pytest.raises(ValueError, match="duplicate"):
        w.add("a", np.zeros(2))
    with pytest.raises(ValueError, match="reserved"):
        w.add("", np.zeros(2))
    with pytest.raises(ValueError, match="no TensorFlow dtype"):
        w.add("b", np.zeros(2, dtype="datetime64[s]"))
    w.abort()
    assert not list(tmp_path.iterdir())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=40, unique=True),
    block_size=st.integers(16, 600),
    restart=st.integers(1, 20),
    snappy=st.booleans(),
)
def test_any_keys_any_block_layout_round_trip(tmp_path: Path, keys, block_size, restart, snappy) -> None:
    prefix = tmp_path / f"h{abs(hash((tuple(keys), block_size, restart, snappy)))}"
    with TFBundleWriter(prefix, block_size=block_size, restart_interval=restart,
                        compression="snappy" if snappy else "none") as w:  # fmt: skip
        for i, k in enumerate(keys):
            w.add(k, np.array([i], dtype=np.int64))
    reader = TFBundleReader(prefix, verify=True)
    # Keys starting with a zero byte are taken for slice keys, exactly as TensorFlow does.
    visible = sorted(k for k in keys if not k.startswith(b"\x00"))
    assert [k.encode("utf-8", "surrogateescape") for k in reader.keys()] == visible
    for i, k in enumerate(keys):
        if not k.startswith(b"\x00"):
            assert reader.read(k.decode("utf-8", "surrogateescape")).tolist() == [i]


def test_keras3_use_ema_average_is_an_ema_shadow(tmp_path: Path) -> None:
    # Names as Keras 3.15 writes them for Adam(use_ema=True) under tf.train.Checkpoint(model=, optimizer=).
    kernel, average = np.ones((3, 2), np.float32), np.full((3, 2), 0.5, np.float32)
    paths = {
        "model/_operations/0/kernel": "sequential/d/kernel",
        "optimizer/_variables/1": "adam/sequential_d_kernel_average",
        "optimizer/_variables/2": "adam/sequential_d_kernel_momentum",
        "optimizer/_iterations": "adam/iteration",
    }
    with TFBundleWriter(tmp_path / "ck") as w:
        for path, value in zip(paths, [kernel, average, kernel * 0, np.int64(1)], strict=True):
            w.add(f"{path}/.ATTRIBUTES/VARIABLE_VALUE", value)
        w.add_object_graph(object_graph_for(paths))
    reader = TFBundleReader(tmp_path / "ck")
    assert [(v.name, v.role) for v in reader.variables()] == [("sequential/d/kernel", "weight")]
    (ema,) = reader.variables(ema=True)
    assert (ema.name, ema.role, ema.key) == (
        "sequential/d/kernel",
        "ema",
        "optimizer/_variables/1/.ATTRIBUTES/VARIABLE_VALUE",
    )
    assert np.array_equal(reader.read(ema.key), average)
    roles = {v.name: (v.role, v.slot_of, v.slot_name) for v in reader.variables(include_optimizer=True)}
    assert roles["adam/sequential_d_kernel_momentum"] == ("slot", "sequential/d/kernel", "momentum")
    assert roles["adam/iteration"][0] == "counter"
