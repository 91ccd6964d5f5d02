"""Write TensorFlow V2 checkpoints (TensorBundle) from numpy arrays, readable by `tf.train.load_checkpoint`.

Data is streamed to the shard files as tensors are added (one tensor in memory at a time); the index
entries are kept (they are small) and written as an SSTable, sorted, on `finish()`. Used by the tests
(corruption, multi-block indexes, slices) and by benchmarks that need big bundles without TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ptools.checkpoint.tf import crc32c
from ptools.checkpoint.tf.bundle import _DTYPE_CODES, OBJECT_GRAPH_KEY, TF_DTYPES, data_filename
from ptools.checkpoint.tf.proto import (
    BundleEntry,
    Extent,
    TrackableNode,
    encode_entry,
    encode_header,
    encode_object_graph,
    put_varint,
    slice_key,
)
from ptools.checkpoint.tf.table import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_RESTART_INTERVAL,
    NO_COMPRESSION,
    SNAPPY,
    build_table,
)

__all__ = ["TFBundleWriter", "TrackableNode", "object_graph_for"]

_NUMPY_TO_TF = {
    "float32": 1,
    "float64": 2,
    "int32": 3,
    "uint8": 4,
    "int16": 5,
    "int8": 6,
    "complex64": 8,
    "int64": 9,
    "bool": 10,
    "uint16": 17,
    "complex128": 18,
    "float16": 19,
    "uint32": 22,
    "uint64": 23,
}


class TFBundleWriter:
    """Build `PREFIX.index` + `PREFIX.data-0000i-of-0000N`. Use as a context manager or call `finish()`.

    `add(key, array)` writes a dense tensor (pass `dtype="bfloat16"` with uint16 bits, or float32 values
    to be rounded to bfloat16); string tensors take an array or list of bytes/str. `add_sliced` stores a
    partitioned variable as TF does (a full-name entry listing slices + one entry per slice).
    """

    def __init__(
        self,
        prefix: str | Path,
        *,
        num_shards: int = 1,
        block_size: int = DEFAULT_BLOCK_SIZE,
        restart_interval: int = DEFAULT_RESTART_INTERVAL,
        compression: str = "none",
    ) -> None:
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        if compression not in ("none", "snappy"):
            raise ValueError("compression must be 'none' or 'snappy'")
        self.prefix = str(prefix)
        self.num_shards = num_shards
        self.block_size = block_size
        self.restart_interval = restart_interval
        self.compression = SNAPPY if compression == "snappy" else NO_COMPRESSION
        self._entries: dict[bytes, BundleEntry] = {}
        self._files: list[BinaryIO] = []
        self._offsets = [0] * num_shards
        self._next_shard = 0
        self._done = False
        for i in range(num_shards):
            self._files.append(open(data_filename(self.prefix, i, num_shards), "wb"))  # noqa: SIM115

    def __enter__(self) -> TFBundleWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    # -- adding tensors ---------------------------------------------------------------------------

    def _pick_shard(self, shard: int | None) -> int:
        if shard is None:  # round-robin keeps shards similar in size
            shard = self._next_shard
            self._next_shard = (self._next_shard + 1) % self.num_shards
        if not 0 <= shard < self.num_shards:
            raise ValueError(f"shard {shard} out of range 0..{self.num_shards - 1}")
        return shard

    def _append(self, shard: int, payload: Any) -> tuple[int, int]:
        offset = self._offsets[shard]
        if isinstance(payload, np.ndarray):
            payload = payload.reshape(-1).view(np.uint8)  # memoryview.cast refuses zero-size shapes
        mv = memoryview(payload)
        self._files[shard].write(mv)
        self._offsets[shard] += len(mv)
        return offset, len(mv)

    def _key(self, key: str | bytes) -> bytes:
        k = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
        if not k:
            raise ValueError("the empty key is reserved for the bundle header")
        if k in self._entries:
            raise ValueError(f"duplicate key {key!r}")
        return k

    @staticmethod
    def _dense_bits(array: Any, dtype: str | None) -> tuple[int, np.ndarray]:
        arr = np.asarray(array)
        if dtype == "bfloat16":
            if arr.dtype == np.uint16:
                bits = arr
            else:  # round float32 to nearest-even bfloat16, as tf.cast does (NaN kept quiet)
                f = _contiguous(arr, np.dtype(np.float32)).view(np.uint32)
                rounded = ((f + 0x7FFF + ((f >> 16) & 1)) >> 16).astype(np.uint16)
                bits = np.where(np.isnan(arr.astype(np.float32)), np.uint16(0x7FC0), rounded)
            return 14, _contiguous(bits, np.dtype("<u2"))
        if dtype is not None:
            code = _DTYPE_CODES.get(dtype)
            if code is None or TF_DTYPES[code][1] is None:
                raise ValueError(f"unsupported dtype {dtype!r}")
            npdt = np.dtype(TF_DTYPES[code][1])
            if arr.dtype.itemsize != npdt.itemsize:
                arr = arr.astype(npdt)
            return code, _contiguous(arr, arr.dtype).view(npdt)
        code = _NUMPY_TO_TF.get(arr.dtype.name)
        if code is None:
            raise ValueError(f"no TensorFlow dtype for numpy {arr.dtype}")
        npdt = np.dtype(TF_DTYPES[code][1])
        return code, _contiguous(arr, npdt)

    def add(self, key: str | bytes, array: Any, *, dtype: str | None = None, shard: int | None = None) -> None:
        """Write one tensor now (data goes straight to its shard file)."""
        k = self._key(key)
        if dtype == "string" or (dtype is None and _is_string_data(array)):
            self._entries[k] = self._string_entry(array, self._pick_shard(shard))
            return
        self._entries[k] = self._dense_entry(array, dtype, self._pick_shard(shard))

    def _dense_entry(self, array: Any, dtype: str | None, sid: int) -> BundleEntry:
        code, bits = self._dense_bits(array, dtype)
        offset, size = self._append(sid, bits)
        return BundleEntry(
            dtype=code,
            shape=tuple(bits.shape),
            shard_id=sid,
            offset=offset,
            size=size,
            crc32c=crc32c.mask(crc32c.value(bits)),
            has_crc=True,
        )

    def _string_entry(self, array: Any, sid: int) -> BundleEntry:
        arr = np.asarray(array, dtype=object)
        items = [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in arr.reshape(-1)]
        lengths = b"".join(put_varint(len(x)) for x in items)
        len_u32 = b"".join(len(x).to_bytes(4 if len(x) <= 0xFFFFFFFF else 8, "little") for x in items)
        len_crc = crc32c.mask(crc32c.value(len_u32)).to_bytes(4, "little")
        body = b"".join(items)
        crc = crc32c.extend(crc32c.value(len_u32 + len_crc), body)
        offset, size = self._append(sid, lengths + len_crc + body)
        return BundleEntry(
            dtype=7,
            shape=tuple(arr.shape),
            shard_id=sid,
            offset=offset,
            size=size,
            crc32c=crc32c.mask(crc),
            has_crc=True,
        )

    def add_sliced(
        self,
        key: str,
        full_shape: tuple[int, ...],
        slices: list[tuple[list[Extent], Any]],
        *,
        dtype: str | None = None,
        shards: list[int] | None = None,
    ) -> None:
        """A partitioned variable: `slices` = [(extents, array)], extents [(start, length or -1)] per dim."""
        k = self._key(key)
        code = None
        for i, (extents, array) in enumerate(slices):
            skey = slice_key(key, extents)
            if skey in self._entries:
                raise ValueError(f"duplicate slice {extents} of {key}")
            entry = self._dense_entry(array, dtype, self._pick_shard(shards[i] if shards else None))
            code = entry.dtype if code is None else code
            self._entries[skey] = entry
        if code is None:
            raise ValueError("add_sliced needs at least one slice")
        self._entries[k] = BundleEntry(dtype=code, shape=tuple(full_shape), slices=[list(e) for e, _ in slices])

    def declare_sliced(self, key: str, full_shape: tuple[int, ...], slices: list[list[Extent]], dtype: str) -> None:
        """Only the full-name entry of a partitioned variable (its slices added with `add(slice_key(...))`)."""
        code = _DTYPE_CODES.get(dtype)
        if code is None:
            raise ValueError(f"unsupported dtype {dtype!r}")
        self._entries[self._key(key)] = BundleEntry(
            dtype=code, shape=tuple(full_shape), slices=[list(e) for e in slices]
        )

    def add_object_graph(self, nodes: list[TrackableNode]) -> None:
        """Store a TrackableObjectGraph (TF2 object-based naming) under `_CHECKPOINTABLE_OBJECT_GRAPH`."""
        self.add(OBJECT_GRAPH_KEY, np.array(encode_object_graph(nodes), dtype=object), dtype="string")

    # -- finishing --------------------------------------------------------------------------------

    def finish(self) -> None:
        """Close the shards and write the index (the index last, so a crash leaves no valid-looking bundle)."""
        if self._done:
            return
        self._done = True
        for f in self._files:
            f.close()
        pairs = [(b"", encode_header(self.num_shards))]
        pairs += [(k, encode_entry(self._entries[k])) for k in sorted(self._entries)]
        table = build_table(
            pairs, block_size=self.block_size, restart_interval=self.restart_interval, compression=self.compression
        )
        tmp = self.prefix + ".index.tmp"
        with open(tmp, "wb") as f:
            f.write(table)
        os.replace(tmp, self.prefix + ".index")

    def abort(self) -> None:
        """Remove what was written."""
        self._done = True
        for i, f in enumerate(self._files):
            f.close()
            try:
                os.unlink(data_filename(self.prefix, i, self.num_shards))
            except OSError:
                pass


def _is_string_data(array: Any) -> bool:
    if isinstance(array, (bytes, str)):
        return True
    if isinstance(array, np.ndarray):
        return array.dtype.kind in ("O", "S", "U")
    if isinstance(array, (list, tuple)) and array:
        return all(isinstance(x, (bytes, str)) for x in np.asarray(array, dtype=object).reshape(-1))
    return False


def object_graph_for(variables: dict[str, str], slots: dict[str, dict[str, str]] | None = None) -> list[TrackableNode]:
    """A minimal TF2-style object graph: {object path "a/b/kernel": full_name} (+ optimizer slots).

    Each path component becomes a node; leaves carry one VARIABLE_VALUE attribute whose checkpoint key is
    the path + "/.ATTRIBUTES/VARIABLE_VALUE" (what TF writes for a variable reached by that path).
    `slots` = {variable path: {slot name: slot full_name}} adds an "optimizer" child with slot variables,
    keyed `<var path>/.OPTIMIZER_SLOT/optimizer/<slot>/.ATTRIBUTES/VARIABLE_VALUE`.
    """
    from ptools.checkpoint.tf.proto import SerializedTensor, SlotReference

    nodes = [TrackableNode()]
    by_path: dict[str, int] = {"": 0}

    def node_for(path: str) -> int:
        if path in by_path:
            return by_path[path]
        parent, _, local = path.rpartition("/")
        pid = node_for(parent)
        nodes.append(TrackableNode())
        nid = len(nodes) - 1
        nodes[pid].children.append((nid, local))
        by_path[path] = nid
        return nid

    for path, full_name in variables.items():
        nid = node_for(path)
        key = f"{path}/.ATTRIBUTES/VARIABLE_VALUE"
        nodes[nid].attributes.append(SerializedTensor("VARIABLE_VALUE", full_name, key))
    if slots:
        opt = node_for("optimizer")
        for path, named in slots.items():
            for slot, full_name in named.items():
                nodes.append(TrackableNode())
                sid = len(nodes) - 1
                key = f"{path}/.OPTIMIZER_SLOT/optimizer/{slot}/.ATTRIBUTES/VARIABLE_VALUE"
                nodes[sid].attributes.append(SerializedTensor("VARIABLE_VALUE", full_name, key))
                nodes[opt].slot_variables.append(SlotReference(by_path[path], slot, sid))
    return nodes


def _contiguous(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # np.ascontiguousarray would turn 0-d scalars into shape (1,).
    out = np.asarray(arr, dtype=dtype)
    return out if out.flags.c_contiguous else out.copy(order="C")
