"""TensorFlow TensorBundle ("V2") checkpoints read with numpy only: `PREFIX.index` + `PREFIX.data-*` shards.

The index SSTable is read and CRC-checked whole (it is small); data shards are memory-mapped and one
tensor is materialised at a time. `read()` returns values (bfloat16 widened to float32, exactly);
`read_raw()` the stored bits as a numpy view (bfloat16 as uint16); `variables()` explains what each key is
(weight, optimizer slot, counter, EMA shadow) from the TF2 object graph or TF1 naming conventions.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptools.checkpoint.base import MAX_DIM, CheckpointReader, TensorInfo
from ptools.checkpoint.tf import crc32c
from ptools.checkpoint.tf.proto import (
    BundleEntry,
    BundleHeader,
    ProtoError,
    parse_entry,
    parse_header,
    read_varint,
    slice_key,
)
from ptools.checkpoint.tf.table import MAGIC_BYTES, TableError, read_table
from ptools.errors import PtoolsError

__all__ = [
    "OBJECT_GRAPH_KEY",
    "TF_DTYPES",
    "TFBundleReader",
    "VariableInfo",
    "open_reader",
    "resolve_prefix",
    "sniff",
]

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"

# types.proto DataType -> (ptools dtype name, numpy dtype of the stored bits). None: not a dense tensor.
TF_DTYPES: dict[int, tuple[str, str | None]] = {
    1: ("float32", "<f4"),
    2: ("float64", "<f8"),
    3: ("int32", "<i4"),
    4: ("uint8", "u1"),
    5: ("int16", "<i2"),
    6: ("int8", "i1"),
    7: ("string", None),
    8: ("complex64", "<c8"),
    9: ("int64", "<i8"),
    10: ("bool", "?"),
    11: ("qint8", "i1"),
    12: ("quint8", "u1"),
    13: ("qint32", "<i4"),
    14: ("bfloat16", "<u2"),
    15: ("qint16", "<i2"),
    16: ("quint16", "<u2"),
    17: ("uint16", "<u2"),
    18: ("complex128", "<c16"),
    19: ("float16", "<f2"),
    20: ("resource", None),
    21: ("variant", None),
    22: ("uint32", "<u4"),
    23: ("uint64", "<u8"),
    24: ("float8_e5m2", "u1"),
    25: ("float8_e4m3fn", "u1"),
    26: ("float8_e4m3fnuz", "u1"),
    27: ("float8_e4m3b11fnuz", "u1"),
    28: ("float8_e5m2fnuz", "u1"),
}
_DTYPE_CODES = {name: code for code, (name, _) in TF_DTYPES.items()}
_DATA_RE = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<num>\d{5})$")


@dataclass(frozen=True)
class VariableInfo:
    """What one checkpoint key holds, in the terms a converter needs."""

    key: str  # checkpoint key to pass to `read()`
    name: str  # variable name: TF2 `full_name` ("dense/kernel") or the TF1 op name; for EMA, the weight's name
    role: str  # "weight" | "slot" | "counter" | "optimizer" | "ema" | "metric"
    shape: tuple[int, ...]
    dtype: str
    path: str = ""  # TF2 object path ("layer_with_weights-0/kernel"); the key itself for TF1
    slot_of: str | None = None  # for slots: the `name` of the variable the slot belongs to
    slot_name: str | None = None  # for slots: "m", "v", "momentum", ...


def data_filename(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


# --- locating the prefix -------------------------------------------------------------------------


def _checkpoint_file_target(ckpt_file: Path) -> Path | None:
    """The prefix named by a `checkpoint` text proto, resolved on this machine (None if unreadable)."""
    try:
        text = ckpt_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
    if not m:
        return None
    try:
        raw = _c_unescape(m.group(1))
    except ValueError as e:
        raise PtoolsError(f"{ckpt_file}: model_checkpoint_path is not a valid text-proto string ({e})") from None
    if "\0" in raw:
        raise PtoolsError(f"{ckpt_file}: model_checkpoint_path holds a NUL character")
    folder = ckpt_file.parent
    candidates = [Path(raw)] if os.path.isabs(raw) else [folder / raw]
    # Written on another machine: the absolute path is stale, the files sit beside the `checkpoint` file.
    candidates.append(folder / Path(raw.replace("\\", "/")).name)
    for c in candidates:
        if Path(str(c) + ".index").is_file():
            return c
    return candidates[-1]


_C_ESCAPES = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, '"': 34, "'": 39, "?": 63}


def _c_unescape(text: str) -> str:
    """A text-proto string body (C escapes: \\n, \\", octal \\NNN, hex \\xHH) as the UTF-8 text TF wrote."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt in _C_ESCAPES:
            out.append(_C_ESCAPES[nxt])
            i += 2
        elif nxt and nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", text[i + 1 :]).group()  # type: ignore[union-attr]
            out.append(int(digits, 8) & 0xFF)
            i += 1 + len(digits)
        elif nxt in ("x", "X"):
            m = re.match(r"[0-9a-fA-F]{1,2}", text[i + 2 :])
            if m is None:
                raise ValueError(f"\\{nxt} without hex digits at character {i}")
            out.append(int(m.group(), 16))
            i += 2 + len(m.group())
        else:
            raise ValueError(f"unknown escape \\{nxt or '(end)'} at character {i}")
    return out.decode("utf-8", "surrogateescape")


def resolve_prefix(path: str | Path) -> Path:
    """The bundle prefix for a prefix, a `.index` or `.data-*` file, a `checkpoint` file or a folder."""
    p = Path(path)
    if p.is_dir():
        ckpt = p / "checkpoint"
        if ckpt.is_file():
            target = _checkpoint_file_target(ckpt)
            if target is None:
                raise PtoolsError(f"{ckpt}: no model_checkpoint_path in this checkpoint state file")
            return target
        indexes = sorted(p.glob("*.index"))
        if len(indexes) == 1:
            return Path(str(indexes[0])[: -len(".index")])
        if (p / "variables" / "variables.index").is_file():  # SavedModel folder
            return p / "variables" / "variables"
        if indexes:
            names = ", ".join(i.name for i in indexes[:5])
            raise PtoolsError(
                f"{p}: several checkpoints in this folder ({names})", hint="pass one prefix or .index file"
            )
        raise PtoolsError(f"{p}: no TensorFlow checkpoint in this folder (no `checkpoint` file or *.index)")
    if p.name == "checkpoint" and p.is_file():
        target = _checkpoint_file_target(p)
        if target is None:
            raise PtoolsError(f"{p}: no model_checkpoint_path in this checkpoint state file")
        return target
    s = str(p)
    if s.endswith(".index"):
        return Path(s[: -len(".index")])
    m = _DATA_RE.match(s)
    if m:
        return Path(m.group("prefix"))
    return p


def sniff(path: Path, head: bytes) -> bool:
    """True for anything `resolve_prefix` understands that leads to a TensorBundle."""
    try:
        if path.is_dir():
            return (
                (path / "checkpoint").is_file()
                or any(path.glob("*.index"))
                or (path / "variables" / "variables.index").is_file()
            )
        if path.name == "checkpoint" and path.is_file():
            return b"model_checkpoint_path" in head
        if path.is_file() and head.startswith(b"\x00\x00") and _ends_with_magic(path):
            return True  # an SSTable whose first key is "" (the bundle header)
        m = _DATA_RE.match(str(path))
        if m and Path(m.group("prefix") + ".index").is_file():
            return True
        return not path.exists() and Path(str(path) + ".index").is_file()
    except OSError:
        return False


def _ends_with_magic(path: Path) -> bool:
    try:
        size = path.stat().st_size
        if size < 48:
            return False
        with open(path, "rb") as f:
            f.seek(size - 8)
            return f.read(8) == MAGIC_BYTES
    except OSError:
        return False


def open_reader(path: Path) -> TFBundleReader:
    return TFBundleReader(path)


# --- the reader -------------------------------------------------------------------------------------


class TFBundleReader(CheckpointReader):
    """A TensorFlow V2 checkpoint. `verify=True` also checks every tensor's data CRC32C when read."""

    format = "tf-bundle"

    def __init__(self, path: str | Path, *, verify: bool = False) -> None:
        super().__init__(Path(path))
        self.verify = verify
        self.prefix = resolve_prefix(path)
        self.index_path = Path(str(self.prefix) + ".index")
        if not self.index_path.is_file() and self.prefix.is_file() and _ends_with_magic(self.prefix):
            raise PtoolsError(
                f"{path}: a single-file TensorFlow table: either a pre-1.0 (V1) checkpoint, which is not "
                "supported, or a V2 index renamed without its `.index` suffix",
                hint="re-save with TensorFlow >= 1.0, or restore the PREFIX.index / PREFIX.data-* names",
            )
        if not self.index_path.is_file():
            raise PtoolsError(
                f"{path}: no TensorFlow index file {self.index_path}",
                hint="pass the checkpoint prefix (model.ckpt), its .index file or the folder holding it",
            )
        try:
            data = self.index_path.read_bytes()
        except OSError as e:
            raise PtoolsError(f"{self.index_path}: cannot read ({e.strerror})") from None
        try:
            pairs = read_table(data)
        except TableError as e:
            raise PtoolsError(f"{self.index_path}: corrupt TensorFlow index: {e}") from None
        if not pairs or pairs[0][0] != b"":
            raise PtoolsError(f"{self.index_path}: corrupt TensorFlow index: no bundle header (empty first key)")
        try:
            self.header: BundleHeader = parse_header(pairs[0][1])
        except ProtoError as e:
            raise PtoolsError(f"{self.index_path}: corrupt bundle header: {e}") from None
        self._check_header()
        self._entries: dict[str, BundleEntry] = {}
        self._slice_entries: dict[bytes, BundleEntry] = {}
        for key, value in pairs[1:]:
            try:
                entry = parse_entry(value)
            except ProtoError as e:
                raise PtoolsError(f"{self.index_path}: corrupt entry for {key[:80]!r}: {e}") from None
            if key.startswith(b"\x00"):  # OrderedCode slice keys of partitioned variables
                self._slice_entries[key] = entry
            else:
                self._entries[key.decode("utf-8", "surrogateescape")] = entry
        self._check_entries()
        self._shards: dict[int, np.ndarray] = {}
        self._graph: Any = None
        self._variables: list[VariableInfo] | None = None

    # -- structure checks ------------------------------------------------------------------------

    def _check_header(self) -> None:
        h = self.header
        if h.endianness != 0:
            raise PtoolsError(f"{self.index_path}: big-endian TensorFlow checkpoints are not supported")
        if h.num_shards < 1 or h.num_shards > 99999:
            raise PtoolsError(f"{self.index_path}: corrupt bundle header: num_shards = {h.num_shards}")
        if h.min_consumer > 1:
            raise PtoolsError(
                f"{self.index_path}: written by a newer TensorFlow bundle format "
                f"(min_consumer {h.min_consumer}, this reader implements version 1)"
            )
        for i in range(h.num_shards):
            f = Path(data_filename(str(self.prefix), i, h.num_shards))
            if not f.is_file():
                raise PtoolsError(
                    f"{self.index_path}: missing data shard {f.name} (the header says {h.num_shards} shard(s))"
                )

    def _check_entries(self) -> None:
        for key, e in list(self._entries.items()) + [(repr(k), e) for k, e in self._slice_entries.items()]:
            if any(d > MAX_DIM for d in e.shape) or len(e.shape) > 64:
                raise PtoolsError(f"{self.index_path}: entry {key} has an impossible shape {list(e.shape)[:8]}")
            if e.slices:
                continue
            if not 0 <= e.shard_id < self.header.num_shards:
                raise PtoolsError(
                    f"{self.index_path}: entry {key} points at shard {e.shard_id} of {self.header.num_shards}"
                )
            if e.offset < 0 or e.size < 0 or any(d < 0 for d in e.shape):
                raise PtoolsError(f"{self.index_path}: entry {key} has a negative offset, size or dimension")

    # -- data access -------------------------------------------------------------------------------

    def _shard(self, i: int) -> np.ndarray:
        arr = self._shards.get(i)
        if arr is None:
            f = data_filename(str(self.prefix), i, self.header.num_shards)
            try:
                size = os.path.getsize(f)
                arr = np.memmap(f, dtype=np.uint8, mode="r") if size else np.zeros(0, dtype=np.uint8)
            except OSError as e:
                raise PtoolsError(f"{f}: cannot read ({e.strerror})") from None
            self._shards[i] = arr
        return arr

    def _raw(self, key: str, e: BundleEntry) -> np.ndarray:
        shard = self._shard(e.shard_id)
        if e.offset + e.size > shard.size:
            f = data_filename(str(self.prefix), e.shard_id, self.header.num_shards)
            raise PtoolsError(
                f"{f}: data shard is truncated: tensor {key} needs bytes {e.offset}..{e.offset + e.size}, "
                f"the file has {shard.size}"
            )
        return np.asarray(shard[e.offset : e.offset + e.size])

    def _check_stored(self, key: str, e: BundleEntry, nbytes: int) -> None:
        """The entry's bytes exist in its shard: checked before anything of that size is allocated."""
        if not 0 <= e.shard_id < self.header.num_shards:
            raise PtoolsError(
                f"{self.index_path}: entry {key} points at shard {e.shard_id} of {self.header.num_shards}"
            )
        if e.size != nbytes:
            raise PtoolsError(f"{self.index_path}: entry {key} says {e.size} bytes, its shape needs {nbytes}")
        shard = self._shard(e.shard_id)
        if e.offset < 0 or e.offset + e.size > shard.size:
            f = data_filename(str(self.prefix), e.shard_id, self.header.num_shards)
            raise PtoolsError(
                f"{f}: data shard is truncated: tensor {key} needs bytes {e.offset}..{e.offset + e.size}, "
                f"the file has {shard.size}"
            )

    def _check_crc(self, key: str, e: BundleEntry, actual: int) -> None:
        if crc32c.unmask(e.crc32c) != actual:
            f = data_filename(str(self.prefix), e.shard_id, self.header.num_shards)
            raise PtoolsError(
                f"{f}: CRC32C mismatch for tensor {key} (stored {crc32c.unmask(e.crc32c):#010x}, "
                f"computed {actual:#010x}): the data file is corrupt"
            )

    def _dtype(self, key: str, e: BundleEntry) -> tuple[str, str | None]:
        if e.dtype not in TF_DTYPES:
            raise PtoolsError(f"{self.index_path}: tensor {key} has an unsupported TensorFlow dtype (enum {e.dtype})")
        return TF_DTYPES[e.dtype]

    def _read_dense(self, key: str, e: BundleEntry) -> np.ndarray:
        name, npdt = self._dtype(key, e)
        if npdt is None:
            raise PtoolsError(f"{self.index_path}: tensor {key} is a {name} tensor, which holds no array data")
        dt = np.dtype(npdt)
        numel = math.prod(e.shape)
        if e.size != numel * dt.itemsize:
            raise PtoolsError(
                f"{self.index_path}: entry {key} says {e.size} bytes, but shape {list(e.shape)} of {name} "
                f"needs {numel * dt.itemsize}"
            )
        raw = self._raw(key, e)
        if self.verify:
            self._check_crc(key, e, crc32c.value(raw))
        return raw.view(dt).reshape(e.shape)

    def _read_strings(self, key: str, e: BundleEntry) -> np.ndarray:
        # [varint64 len]*N [masked crc32c of the lengths] [bytes]*N  (tensor_bundle.cc WriteStringTensor)
        raw = bytes(self._raw(key, e))
        numel = math.prod(e.shape)
        where = f"{self.index_path.name}: string tensor {key}"
        lengths: list[int] = []
        pos = 0
        try:
            for _ in range(numel):
                n, pos = read_varint(raw, pos)
                lengths.append(n)
        except ProtoError:
            raise PtoolsError(f"{where}: truncated or corrupt string lengths") from None
        len_bytes = b"".join(n.to_bytes(4 if n <= 0xFFFFFFFF else 8, "little") for n in lengths)
        if pos + 4 > len(raw):
            raise PtoolsError(f"{where}: truncated (no length checksum)")
        stored = raw[pos : pos + 4]
        if crc32c.unmask(int.from_bytes(stored, "little")) != crc32c.value(len_bytes):
            raise PtoolsError(f"{where}: CRC32C mismatch in the string lengths: the checkpoint is corrupt")
        pos += 4
        if pos + sum(lengths) != len(raw):
            raise PtoolsError(f"{where}: lengths add up to {pos + sum(lengths)} bytes, the entry holds {len(raw)}")
        # Strings are small metadata (the object graph): always check their CRC, it costs nothing.
        self._check_crc(key, e, crc32c.value(len_bytes + raw[pos - 4 :]))
        out = np.empty(numel, dtype=object)
        for i, n in enumerate(lengths):
            out[i] = raw[pos : pos + n]
            pos += n
        return out.reshape(e.shape)

    def _read_sliced(self, key: str, e: BundleEntry) -> np.ndarray:
        name, npdt = self._dtype(key, e)
        if npdt is None:
            raise PtoolsError(f"{self.index_path}: sliced {name} tensor {key} is not supported")
        # Check every slice against the index before allocating: a bad shape must not cost memory.
        parts = []
        covered = 0
        for extents in e.slices:
            if len(extents) != len(e.shape):
                raise PtoolsError(
                    f"{self.index_path}: slice of {key} has {len(extents)} extents for rank {len(e.shape)}"
                )
            index = []
            want = []
            for (start, length), dim in zip(extents, e.shape, strict=True):
                stop = dim if length < 0 else start + length
                if not 0 <= start <= stop <= dim:
                    raise PtoolsError(f"{self.index_path}: slice {extents} of {key} lies outside shape {list(e.shape)}")
                index.append(slice(start, stop))
                want.append(stop - start)
            se = self._slice_entries.get(slice_key(key, extents))
            if se is None:
                raise PtoolsError(f"{self.index_path}: slice {extents} of partitioned tensor {key} is missing")
            if tuple(se.shape) != tuple(want) or se.dtype != e.dtype:
                raise PtoolsError(
                    f"{self.index_path}: slice {extents} of {key} has shape {list(se.shape)}, expected {want}"
                )
            self._check_stored(f"{key}{extents}", se, math.prod(want) * np.dtype(npdt).itemsize)
            parts.append((tuple(index), extents, se))
            covered += math.prod(want)
        total = math.prod(e.shape)
        if covered != total:
            raise PtoolsError(f"{self.index_path}: the slices of {key} cover {covered} of {total} elements")
        full = np.zeros(e.shape, dtype=np.dtype(npdt))
        for index, extents, se in parts:
            full[index] = self._read_dense(f"{key}{extents}", se)
        return full

    def read_raw(self, key: str) -> tuple[np.ndarray, str]:
        """The stored values and their dtype name: bfloat16 as uint16 bits, float8 as uint8 (exact).

        Numeric data is a read-only view of the memory-mapped shard (no copy) unless the variable is
        sliced (then the slices are assembled into a new array). Strings: an object array of bytes.
        The bits of a bfloat16 tensor become torch.bfloat16 with `torch.from_numpy(a.view(np.int16))
        .view(torch.bfloat16)`.
        """
        e = self._entries.get(key)
        if e is None:
            raise PtoolsError(f"{self.prefix}: no tensor named {key!r} in this checkpoint")
        name, _ = self._dtype(key, e)
        if e.slices:
            return self._read_sliced(key, e), name
        if name == "string":
            return self._read_strings(key, e), name
        return self._read_dense(key, e), name

    def read(self, key: str) -> np.ndarray:
        """One tensor as values numpy computes with: bfloat16 and float8 widened to float32 (exactly)."""
        arr, name = self.read_raw(key)
        if name == "bfloat16":  # its bits are the top half of a float32
            return (arr.astype(np.uint32) << 16).view(np.float32)
        if name.startswith("float8"):
            from ptools.checkpoint.dtypes import decode

            return decode(arr, name)
        return arr

    # -- listing -------------------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Every checkpoint key (sorted, as in the index), excluding the header and slice entries."""
        return list(self._entries)

    def entry(self, key: str) -> BundleEntry:
        return self._entries[key]

    def dtype_of(self, key: str) -> str:
        e = self._entries[key]
        return TF_DTYPES.get(e.dtype, (f"tf_dtype_{e.dtype}", None))[0]

    def tensors(self) -> list[TensorInfo]:
        roles = {v.key: v for v in self._all_variables()}
        out = []
        for key, e in self._entries.items():
            dtype = self.dtype_of(key)
            npdt = TF_DTYPES.get(e.dtype, ("", None))[1]
            numel = math.prod(e.shape)
            nbytes = numel * np.dtype(npdt).itemsize if npdt else (0 if e.slices else e.size)
            extra: dict[str, Any] = {"shard": e.shard_id, "offset": e.offset}
            if e.slices:
                extra = {"slices": len(e.slices)}
            v = roles.get(key)
            if v is not None:
                extra.update(name=v.name, role=v.role)
                if v.slot_of:
                    extra.update(slot_of=v.slot_of, slot_name=v.slot_name)
            out.append(TensorInfo(key=key, dtype=dtype, shape=tuple(e.shape), nbytes=nbytes, extra=extra))
        return out

    def metadata(self) -> dict[str, Any]:
        return {
            "prefix": str(self.prefix),
            "num_shards": self.header.num_shards,
            "bundle_version": self.header.producer,
            "naming": "tf2-object-graph" if OBJECT_GRAPH_KEY in self._entries else "tf1-names",
            "sliced_tensors": sum(1 for e in self._entries.values() if e.slices),
        }

    # -- variables -----------------------------------------------------------------------------------

    def object_graph(self) -> Any:
        """The parsed TrackableObjectGraph (list of nodes), or None for TF1 name-based checkpoints."""
        if self._graph is None and OBJECT_GRAPH_KEY in self._entries:
            from ptools.checkpoint.tf.proto import parse_object_graph

            blob = self.read(OBJECT_GRAPH_KEY).reshape(-1)
            if blob.size != 1:
                raise PtoolsError(f"{self.index_path}: {OBJECT_GRAPH_KEY} is not a scalar string")
            try:
                self._graph = parse_object_graph(blob[0])
            except ProtoError as e:
                raise PtoolsError(f"{self.index_path}: corrupt object graph: {e}") from None
        return self._graph

    def _all_variables(self) -> list[VariableInfo]:
        if self._variables is None:
            from ptools.checkpoint.tf.vars import classify

            self._variables = classify(self)
        return self._variables

    def variables(self, include_optimizer: bool = False, ema: bool = False) -> list[VariableInfo]:
        """The checkpoint's variables with their roles, in key order.

        By default only model weights ("weight"; EMA shadows and optimizer state left out). With
        `include_optimizer`, slots, counters and other optimizer state are added. With `ema`, a weight
        that has an ExponentialMovingAverage shadow is replaced by the shadow (role "ema", `name` still
        the weight's name, `key` the shadow's key).
        """
        from ptools.checkpoint.tf.vars import select

        return select(self._all_variables(), include_optimizer=include_optimizer, ema=ema)

    def close(self) -> None:
        self._shards.clear()  # memmaps close once no array views remain
