"""Damaged TF bundles: every flipped byte or truncation is a PtoolsError naming the problem, never a crash."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptools.checkpoint.base import open_checkpoint
from ptools.checkpoint.tf import crc32c
from ptools.checkpoint.tf.bundle import TFBundleReader
from ptools.checkpoint.tf.proto import encode_header
from ptools.checkpoint.tf.table import FOOTER_SIZE, build_table
from ptools.checkpoint.tf.writer import TFBundleWriter
from ptools.errors import PtoolsError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tf"


def read_everything(path: Path, verify: bool = True) -> dict[str, list]:
    reader = open_checkpoint(path)
    assert isinstance(reader, TFBundleReader)
    reader.verify = verify
    out = {k: np.asarray(reader.read(k)).tolist() for k in reader.keys()}
    out["__variables__"] = [(v.key, v.name, v.role) for v in reader.variables(include_optimizer=True, ema=True)]
    return out


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two data blocks, a string tensor, an object graph, slices and two shards: every structure in one."""
    from ptools.checkpoint.tf.writer import object_graph_for

    d = tmp_path_factory.mktemp("bundle")
    with TFBundleWriter(d / "ck", num_shards=2, block_size=200) as w:
        for i in range(12):
            w.add(f"v{i:02d}/.ATTRIBUTES/VARIABLE_VALUE", np.arange(i, i + 3, dtype=np.float32), shard=i % 2)
        w.add("words/.ATTRIBUTES/VARIABLE_VALUE", np.array([b"ab", b"cde"], dtype=object))
        w.add_sliced("part/.ATTRIBUTES/VARIABLE_VALUE", (4,), [([(0, 2)], np.ones(2)), ([(2, 2)], np.zeros(2))])
        w.add_object_graph(object_graph_for({f"v{i:02d}": f"layer/v{i}" for i in range(12)}))
    return d


def copy_bundle(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst / "ck"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipped_index_byte_is_detected(small_bundle: Path, tmp_path: Path, data: st.DataObject) -> None:
    index = (small_bundle / "ck.index").read_bytes()
    pos = data.draw(st.integers(0, len(index) - 1), label="pos")
    bit = data.draw(st.integers(1, 255), label="xor")
    target = copy_bundle(small_bundle, tmp_path / f"c{pos}_{bit}")
    damaged = bytearray(index)
    damaged[pos] ^= bit
    Path(f"{target}.index").write_bytes(bytes(damaged))
    footer_start = len(index) - FOOTER_SIZE
    if pos < footer_start:  # inside a block or its trailer: the block CRC catches it
        with pytest.raises(PtoolsError, match=r"CRC32C mismatch|unknown compression|corrupt"):
            read_everything(target)
        return
    try:
        got = read_everything(target)
    except PtoolsError as e:
        assert "ck.index" in str(e)
    else:  # only the footer's zero padding may change without consequence, as in TensorFlow
        assert read_everything(small_bundle) == got


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_index_is_detected(small_bundle: Path, tmp_path: Path, data: st.DataObject) -> None:
    index = (small_bundle / "ck.index").read_bytes()
    keep = data.draw(st.integers(0, len(index) - 1), label="keep")
    target = copy_bundle(small_bundle, tmp_path / f"t{keep}")
    Path(f"{target}.index").write_bytes(index[:keep])
    with pytest.raises(PtoolsError, match=r"magic|too short|empty file|lies outside|CRC32C"):
        read_everything(target)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipped_data_byte_fails_verification(small_bundle: Path, tmp_path: Path, data: st.DataObject) -> None:
    shard = data.draw(st.sampled_from(["ck.data-00000-of-00002", "ck.data-00001-of-00002"]), label="shard")
    blob = (small_bundle / shard).read_bytes()
    pos = data.draw(st.integers(0, len(blob) - 1), label="pos")
    bit = data.draw(st.integers(1, 255), label="xor")
    target = copy_bundle(small_bundle, tmp_path / f"d{shard[-7]}_{pos}_{bit}")
    damaged = bytearray(blob)
    damaged[pos] ^= bit
    (target.parent / shard).write_bytes(bytes(damaged))
    with pytest.raises(PtoolsError, match=r"CRC32C mismatch|corrupt|lengths add up"):
        read_everything(target, verify=True)


def test_data_damage_without_verify_reads_garbage_but_never_crashes(small_bundle: Path, tmp_path: Path) -> None:
    target = copy_bundle(small_bundle, tmp_path / "nv")
    shard = target.parent / "ck.data-00000-of-00002"
    blob = bytearray(shard.read_bytes())
    blob[0] ^= 0xFF  # first byte of v00, a float
    shard.write_bytes(bytes(blob))
    reader = TFBundleReader(target)
    assert reader.read("v00/.ATTRIBUTES/VARIABLE_VALUE")[0] != 0.0
    with pytest.raises(PtoolsError, match=r"CRC32C mismatch for tensor v00"):
        TFBundleReader(target, verify=True).read("v00/.ATTRIBUTES/VARIABLE_VALUE")


def test_string_tensors_are_always_checked(tmp_path: Path) -> None:
    for f in FIX.glob("tf2_sliced.*"):
        shutil.copy(f, tmp_path / f.name)
    reader = TFBundleReader(tmp_path / "tf2_sliced")
    e = reader.entry("_CHECKPOINTABLE_OBJECT_GRAPH")
    shard = tmp_path / f"tf2_sliced.data-{e.shard_id:05d}-of-00002"
    blob = bytearray(shard.read_bytes())
    blob[e.offset + e.size - 1] ^= 0x01  # last byte of the serialized graph
    shard.write_bytes(bytes(blob))
    with pytest.raises(PtoolsError, match="CRC32C mismatch for tensor _CHECKPOINTABLE_OBJECT_GRAPH"):
        TFBundleReader(tmp_path / "tf2_sliced").variables()


def test_truncated_data_shard_names_the_tensor(small_bundle: Path, tmp_path: Path) -> None:
    target = copy_bundle(small_bundle, tmp_path / "td")
    shard = target.parent / "ck.data-00001-of-00002"
    shard.write_bytes(shard.read_bytes()[:10])
    reader = TFBundleReader(target)
    with pytest.raises(PtoolsError, match=r"data shard is truncated: tensor \S+ needs bytes"):
        for k in reader.keys():
            reader.read(k)


def test_missing_shard_is_reported_on_open(small_bundle: Path, tmp_path: Path) -> None:
    target = copy_bundle(small_bundle, tmp_path / "ms")
    (target.parent / "ck.data-00001-of-00002").unlink()
    with pytest.raises(PtoolsError, match=r"missing data shard ck.data-00001-of-00002 \(the header says 2"):
        open_checkpoint(target)


def _bundle_with_index(tmp_path: Path, pairs: list[tuple[bytes, bytes]], **kw: object) -> Path:
    (tmp_path / "x.data-00000-of-00001").write_bytes(b"\x00" * 64)
    (tmp_path / "x.index").write_bytes(build_table(pairs, **kw))  # type: ignore[arg-type]
    return tmp_path / "x"


def test_structure_errors_in_a_well_checksummed_index(tmp_path: Path) -> None:
    header = encode_header(1)
    # An entry value that is not a protobuf.
    p = _bundle_with_index(tmp_path, [(b"", header), (b"a", b"\xff\xff\xff")])
    with pytest.raises(PtoolsError, match="corrupt entry for b'a'"):
        TFBundleReader(p)
    # No header entry.
    p = _bundle_with_index(tmp_path, [(b"a", b"")])
    with pytest.raises(PtoolsError, match="no bundle header"):
        TFBundleReader(p)
    # Big-endian bundles.
    p = _bundle_with_index(tmp_path, [(b"", header + b"\x10\x01")])
    with pytest.raises(PtoolsError, match="big-endian"):
        TFBundleReader(p)
    # A size that disagrees with dtype and shape; an unknown dtype; an entry past the end of its shard.
    bad = b"\x08\x01\x12\x04\x12\x02\x08\x03\x28\x08"  # float32, shape [3], size 8
    p = _bundle_with_index(
        tmp_path,
        [(b"", header), (b"a", bad), (b"b", b"\x08\x63"), (b"c", b"\x08\x04\x12\x05\x12\x03\x08\xc8\x01\x28\xc8\x01")],
    )
    reader = TFBundleReader(p)
    with pytest.raises(PtoolsError, match="says 8 bytes, but shape \\[3\\] of float32 needs 12"):
        reader.read("a")
    with pytest.raises(PtoolsError, match="unsupported TensorFlow dtype \\(enum 99\\)"):
        reader.read("b")
    with pytest.raises(
        PtoolsError, match="x.data-00000-of-00001: data shard is truncated: tensor c needs bytes 0..200"
    ):
        reader.read("c")
    assert [t.key for t in reader.tensors()] == ["a", "b", "c"]  # listing never reads data


def test_corrupt_snappy_block_with_valid_crc(tmp_path: Path) -> None:
    with TFBundleWriter(tmp_path / "ck", compression="snappy") as w:
        for i in range(40):
            w.add(f"same/prefix/variable_{i:03d}", np.zeros(1, np.float32))
    index = bytearray((tmp_path / "ck.index").read_bytes())
    assert index[:4] != b"\x00\x00\x06\x08"  # the first block really is compressed
    # Break the compressed stream (declared length), then re-seal the block CRC so only snappy can object.
    from ptools.checkpoint.tf.proto import read_varint

    footer = bytes(index[-FOOTER_SIZE:])
    _, p = read_varint(footer, 0)
    _, p = read_varint(footer, p)
    idx_off, p = read_varint(footer, p)
    idx_size, _ = read_varint(footer, p)
    from ptools.checkpoint.tf.table import iter_block

    handle = iter_block(bytes(index[idx_off : idx_off + idx_size]), "index")[0][1]
    off, p = read_varint(handle, 0)
    size, _ = read_varint(handle, p)
    assert index[off + size] == 1  # snappy
    index[off] ^= 0x05  # the uncompressed-length varint
    crc = crc32c.extend(crc32c.value(bytes(index[off : off + size])), b"\x01")
    index[off + size + 1 : off + size + 5] = struct.pack("<I", crc32c.mask(crc))
    (tmp_path / "ck.index").write_bytes(bytes(index))
    with pytest.raises(PtoolsError, match="bad snappy data in data block 0"):
        TFBundleReader(tmp_path / "ck")


def test_not_a_bundle_is_not_claimed(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\x00\x00" + b"junk" * 30)
    with pytest.raises(PtoolsError) as e:
        open_checkpoint(f)
    assert "unrecognised format" in str(e.value)


def test_single_file_table_is_explained(tmp_path: Path) -> None:
    shutil.copy(FIX / "tf1_saver.index", tmp_path / "model.ckpt")  # what a V1 checkpoint looks like from outside
    with pytest.raises(PtoolsError, match="single-file TensorFlow table"):
        open_checkpoint(tmp_path / "model.ckpt")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_object_graph_with_valid_crc_never_crashes(tmp_path: Path, data: st.DataObject) -> None:
    from ptools.checkpoint.tf.proto import encode_object_graph
    from ptools.checkpoint.tf.writer import object_graph_for

    graph = bytearray(
        encode_object_graph(object_graph_for({"a/k": "a/kernel", "b/k": "b/kernel"}, slots={"a/k": {"m": "opt/m"}}))
    )
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        graph[data.draw(st.integers(0, len(graph) - 1), label="pos")] ^= data.draw(st.integers(1, 255), label="xor")
    prefix = tmp_path / f"g{abs(hash(bytes(graph)))}"
    with TFBundleWriter(prefix) as w:  # the writer seals the damage with a correct CRC: only parsing can object
        w.add("a/k/.ATTRIBUTES/VARIABLE_VALUE", np.zeros(2, np.float32))
        w.add("_CHECKPOINTABLE_OBJECT_GRAPH", np.array(bytes(graph), dtype=object), dtype="string")
    reader = TFBundleReader(prefix)
    try:
        variables = reader.variables(include_optimizer=True)
    except PtoolsError as e:
        assert "object graph" in str(e)
    else:
        assert all(v.key in reader.keys() for v in variables)


def test_sliced_variable_structure_errors(tmp_path: Path) -> None:
    with TFBundleWriter(tmp_path / "ck") as w:
        w.add_sliced("holes", (4, 2), [([(0, 1), (0, -1)], np.ones((1, 2), np.float32))])
        w.declare_sliced("missing", (4,), [[(0, 4)]], "float32")
        w.declare_sliced("outside", (4,), [[(2, 4)]], "float32")
        w.declare_sliced("huge", (2**40, 2**40), [[(0, 1), (0, 1)]], "float32")
    reader = TFBundleReader(tmp_path / "ck")
    with pytest.raises(PtoolsError, match="the slices of holes cover 2 of 8 elements"):
        reader.read("holes")
    with pytest.raises(PtoolsError, match=r"slice \[\(0, 4\)\] of partitioned tensor missing is missing"):
        reader.read("missing")
    with pytest.raises(PtoolsError, match="lies outside shape"):
        reader.read("outside")
    with pytest.raises(PtoolsError, match="is missing"):  # checked before any allocation
        reader.read("huge")


def test_layer_slots_of_a_hostile_object_graph() -> None:
    # Cycles, shared subtrees, ids out of range and non-ASCII digits in `_operations` names: the model's layer
    # list is still read in order, each node claimed once, and nothing raises.
    import random

    from ptools.checkpoint.tf.proto import SerializedTensor, TrackableNode
    from ptools.checkpoint.tf.vars import layer_slots

    def var(key: str) -> TrackableNode:
        return TrackableNode(attributes=[SerializedTensor("VARIABLE_VALUE", key, key)])

    graph = [
        TrackableNode(children=[(1, "model")]),
        TrackableNode(children=[(2, "_operations"), (0, "root")]),
        TrackableNode(children=[(4, "1"), (3, "0"), (5, "²"), (99, "2"), (4, "3")]),
        TrackableNode(children=[(6, "_kernel"), (1, "loop")]),
        TrackableNode(children=[]),
        var("stray"),
        var("k0"),
    ]
    assert layer_slots(graph) == [["k0"], [], [], []]
    rng = random.Random(40961)
    for _ in range(300):
        n = rng.randint(1, 30)
        names = ["layer-0", "layer-7", "_operations", "0", "1", "kernel", "x", "layer-٣"]
        nodes = [
            TrackableNode(children=[(rng.randint(-2, n + 2), rng.choice(names)) for _ in range(rng.randint(0, 4))])
            for _ in range(n)
        ]
        slots = layer_slots(nodes)
        assert slots is None or all(isinstance(s, list) for s in slots)
