"""numpy `.npy` and `.npz` files: headers parsed here (bounded), numeric arrays memory-mapped, object arrays scanned.

`numpy.load` reads a `.npy` header (a Python literal dict: descr, fortran_order, shape) and then either the
raw array bytes or, for a dtype holding Python objects, one pickle (`allow_pickle=True` unpickles it; Keras
versions that save `model.weights.npz` load it that way). An `.npz` is a zip of `.npy` members. Numeric
arrays are read without any pickle; every object array's pickle goes through the static scan and the
restricted unpickler, so the report grades exactly what `allow_pickle=True` would run.
"""

from __future__ import annotations

import ast
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.checkpoint._text import oneline
from ptools.checkpoint.base import MAX_DIM, CheckpointReader, TensorInfo
from ptools.checkpoint.pickle.restricted import (
    NumpyArrayData,
    ScanResult,
    add_static_globals,
    join_path,
    restricted_load,
)
from ptools.checkpoint.pickle.static_scan import StreamScan, scan_region, sweep
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np

MAGIC = b"\x93NUMPY"
# numpy refuses headers over 10000 bytes unless told otherwise; structured dtypes with many fields can
# need more, so allow some room but never parse megabytes of literal.
MAX_HEADER = 1 << 20
_MAX_MEMBERS = 100_000
_ZIP = b"PK\x03\x04"


@dataclass
class NpyHeader:
    """What a `.npy` header says, and where the data starts (relative to the array's first byte)."""

    version: tuple[int, int]
    descr: Any
    fortran: bool
    shape: tuple[int, ...]
    data_offset: int
    dtype: Any = None  # numpy dtype

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def has_object(self) -> bool:
        return bool(self.dtype is not None and self.dtype.hasobject)


class NpyError(Exception):
    """A header numpy would refuse (or that this reader refuses), in words."""


def parse_header(head: bytes) -> NpyHeader:
    """The header at the start of `head` (enough bytes for it: callers pass up to MAX_HEADER + 12)."""
    import numpy as np

    if not head.startswith(MAGIC):
        raise NpyError("not a .npy array (no \\x93NUMPY magic)")
    if len(head) < 10:
        raise NpyError("truncated .npy header")
    major, minor = head[6], head[7]
    if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
        raise NpyError(f"unknown .npy format version {major}.{minor}")
    if major == 1:
        (hlen,) = struct.unpack_from("<H", head, 8)
        start = 10
    else:
        if len(head) < 12:
            raise NpyError("truncated .npy header")
        (hlen,) = struct.unpack_from("<I", head, 8)
        start = 12
    if hlen > MAX_HEADER:
        raise NpyError(f"header of {hlen} bytes (more than {MAX_HEADER}): not a real array header")
    raw = head[start : start + hlen]
    if len(raw) < hlen:
        raise NpyError("truncated .npy header")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
    except UnicodeDecodeError:
        raise NpyError("header is not valid UTF-8") from None
    try:
        # A literal only (what numpy's own parser accepts): nothing is evaluated.
        value = ast.literal_eval(text.strip().rstrip("L"))
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as e:
        raise NpyError(f"header is not a Python literal ({oneline(e)})") from None
    if not isinstance(value, dict) or set(value) != {"descr", "fortran_order", "shape"}:
        raise NpyError("header is not a dict of descr, fortran_order and shape")
    shape, fortran, descr = value["shape"], value["fortran_order"], value["descr"]
    if not isinstance(shape, tuple) or len(shape) > 64:
        raise NpyError(f"bad shape {oneline(repr(shape))}")
    if any(type(d) is not int or not 0 <= d <= MAX_DIM for d in shape):
        raise NpyError(f"bad shape {oneline(repr(shape))}")
    if not isinstance(fortran, bool):
        raise NpyError(f"bad fortran_order {oneline(repr(fortran))}")
    try:
        dtype = np.lib.format.descr_to_dtype(descr)
    except Exception as e:  # numpy raises TypeError, ValueError, KeyError... for a bad descr
        raise NpyError(f"bad dtype descr {oneline(repr(descr))[:120]} ({oneline(e)})") from None
    return NpyHeader((major, minor), descr, fortran, tuple(shape), start + hlen, dtype)


def dtype_name(dtype: Any) -> str:
    """ptools' dtype names (torch spelling where there is one): float32, int64, bool; others numpy's."""
    if dtype.hasobject:
        return "object"
    if dtype.fields is not None:
        return "structured"
    if dtype.kind in "biufc":
        return dtype.newbyteorder("=").name if dtype.byteorder not in "=|" else dtype.name
    return str(dtype.newbyteorder("=")) if dtype.byteorder not in "=|" else str(dtype)


@dataclass
class ArrayEntry:
    """One array of the file: its header, where its bytes are, and how they are packed."""

    name: str  # the key numpy gives it ("arr" for a .npy, the member name without .npy in an .npz)
    member: str | None  # zip member name (None for a bare .npy)
    header: NpyHeader
    start: int  # absolute offset of the array's first byte (header included) in the buffer it lives in
    stored: bool = True  # False: a deflated zip member (read by inflating, not mapped)
    size: int = 0  # bytes available after the header
    notes: list[str] = field(default_factory=list)


def sniff_npy(path: Path, head: bytes) -> bool:
    return head.startswith(MAGIC)


def sniff_npz(path: Path, head: bytes) -> bool:
    """A zip whose members are .npy arrays (what numpy.savez writes), whatever the file is called."""
    if not head.startswith(_ZIP):
        return False
    from ptools.checkpoint.torch.zip_members import FileBytes, list_members, member_head

    try:
        with open(path, "rb") as f:
            buf = FileBytes(f.fileno())
            members = list_members(buf)
            if not members:
                return False
            # torch archives (data.pkl) and Keras archives (config.json) are theirs; a zip with .npy arrays is ours.
            names = [m.name for m in members]
            if any(n.endswith("data.pkl") or n == "config.json" or n.endswith(".data/version") for n in names):
                return False
            return any(member_head(buf, m, 8).startswith(MAGIC) for m in members[:64])
    except (OSError, ValueError):
        return False


def _scan_object_pickle(buf: Any, entry: ArrayEntry, start: int, end: int, result: ScanResult) -> Any:
    """The pickle numpy.load(allow_pickle=True) would load for an object array, restricted; every pickle
    after it scanned statically too. Returns what the restricted loader built (or None)."""
    label = f"object array {entry.name}"
    streams = scan_region(buf, start, end)
    if not streams:
        return None
    part = restricted_load(buf, offset=start, static=streams[0], source=label)
    result.merge(part)
    if part.error and not part.unsafe:
        entry.notes.append(f"its pickle does not load ({part.error})")
    if len(streams) > 1:
        add_static_globals(result, streams[1:], f"{label} (after its pickle)", False)
    return part.obj


class NumpyReader(CheckpointReader):
    """`.npy` (one array, key `arr`... named after the file) or `.npz` (one key per member)."""

    def __init__(self, path: Path, *, npz: bool, data: bytes | None = None) -> None:
        super().__init__(path)
        self.format = "npz" if npz else "npy"
        self.scan = ScanResult()
        self.entries: dict[str, ArrayEntry] = {}
        self._objects: dict[str, Any] = {}  # name -> what the restricted unpickler built for an object array
        self._embedded: dict[str, NumpyArrayData] = {}  # arrays inside object arrays (Keras' npz weights)
        self._file: Any = None
        self._mm: Any = None
        self._members: dict[str, Any] = {}
        try:
            if data is not None:
                self._mm = data
            else:
                self._file = open(path, "rb")  # noqa: SIM115 - kept open for the mapping's lifetime
                size = self._file.seek(0, 2)
                self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as e:
            self.close()
            raise PtoolsError(f"{path}: cannot read ({e.strerror})") from None
        try:
            if npz:
                self._open_npz()
            else:
                self._open_npy()
        except BaseException:
            self.close()
            raise
        self._infos = self._index()

    # -- opening
    def _open_npy(self) -> None:
        buf = self._mm
        try:
            header = parse_header(bytes(buf[: MAX_HEADER + 12]))
        except NpyError as e:
            if self._sweep(buf, 0, "bytes of a damaged .npy", str(e)):
                return
            raise PtoolsError(f"{self.path}: {e}") from None
        entry = ArrayEntry(self.path.stem or "arr", None, header, 0, True, len(buf) - header.data_offset)
        self.entries[entry.name] = entry
        if header.has_object:
            self._objects[entry.name] = _scan_object_pickle(buf, entry, header.data_offset, len(buf), self.scan)
        else:
            self._check_size(entry)

    def _open_npz(self) -> None:
        from ptools.checkpoint.torch.zip_members import ZipError, list_members, member_head, read_member

        buf = self._mm
        members = list_members(buf)
        if not members:
            raise PtoolsError(f"{self.path}: truncated or corrupted zip archive (no members found)")
        if len(members) > _MAX_MEMBERS:
            raise PtoolsError(f"{self.path}: {len(members)} members, more than an .npz of arrays holds")
        limit = _inflate_limit(len(buf))
        counts: dict[str, int] = {}
        for m in members:
            counts[m.name] = counts.get(m.name, 0) + 1
        # numpy (through zipfile) reads the last central entry of a name; every other copy is scanned too.
        chosen = {m.name: m for m in members if m.origin == "central"}
        for m in members:
            head = member_head(buf, m, 16)
            if not head.startswith(MAGIC):
                continue  # numpy hands such members back as bytes: never unpickled
            name = m.name[:-4] if m.name.endswith(".npy") else m.name
            label = name if chosen.get(m.name) is m else f"{name} (another copy of {m.name} in the archive)"
            data: Any = buf
            try:
                if m.method == 0 and m.data_offset is not None:
                    end = m.data_offset + min(m.size, m.comp_size)
                    if end > len(buf):
                        raise ZipError(f"{m.name} runs past the end of the file (truncated)")
                    data, base, stored = buf, m.data_offset, True
                else:
                    data, base, stored = read_member(buf, m, limit), 0, False
                    end = len(data)
                header = parse_header(bytes(data[base : min(end, base + MAX_HEADER + 12)]))
            except (ZipError, NpyError) as e:
                # numpy would refuse this member; anything pickle-shaped in it is still scanned.
                swept = self._sweep(data, (m.data_offset or 0) if data is buf else 0, f"{m.name} (damaged)", str(e))
                if chosen.get(m.name) is m and not swept:
                    raise PtoolsError(f"{self.path}: {m.name}: {e}") from None
                continue
            entry = ArrayEntry(label, m.name, header, base, stored, end - base - header.data_offset)
            if header.has_object:
                obj = _scan_object_pickle(data, entry, base + header.data_offset, end, self.scan)
                if chosen.get(m.name) is m:
                    self._objects[label] = obj
            if chosen.get(m.name) is not m:
                continue
            if not header.has_object:
                self._check_size(entry)
            self.entries[label] = entry
            if not stored:
                self._members[label] = data
        if not self.entries and not self.scan.globals:
            raise PtoolsError(f"{self.path}: a zip archive without .npy arrays (not an .npz of arrays)")

    def _sweep(self, buf: Any, start: int, source: str, why: str) -> bool:
        """Bytes numpy refuses hide nothing from the report: any global named in them is graded (True then)."""
        found = sweep(buf, start, min(len(buf), start + (64 << 20)))  # names spelled out, not the magic's 0x93
        if not found:
            return False
        stream = StreamScan(start=start, error=why, swept=True)
        for module, name, at in found:
            stream.add_global(module, name, at)
        add_static_globals(self.scan, [stream], source, False)
        self.scan.error = self.scan.error or why
        return True

    def _check_size(self, entry: ArrayEntry) -> None:
        h = entry.header
        need = h.numel * h.dtype.itemsize
        if need > entry.size:
            where = f"{entry.member}: " if entry.member else ""
            raise PtoolsError(
                f"{self.path}: {where}array of shape {list(h.shape)[:8]} {dtype_name(h.dtype)} needs {need} bytes, "
                f"the file holds {max(entry.size, 0)} (truncated or a corrupt header)"
            )

    # -- indexing
    def _index(self) -> list[TensorInfo]:
        infos: list[TensorInfo] = []
        for name, e in self.entries.items():
            h = e.header
            extra: dict[str, Any] = {"fortran_order": h.fortran, "npy_version": f"{h.version[0]}.{h.version[1]}"}
            if e.member:
                extra["member"] = e.member
            if h.dtype.byteorder == ">":
                extra["byteorder"] = "big"
            if h.has_object:
                extra["kind"] = "object array (numpy.load needs allow_pickle=True, which unpickles it)"
                infos.append(TensorInfo(name, "object", h.shape, 0, extra=extra))
                self._add_embedded(name, self._objects.get(name), infos)
                continue
            if h.dtype.fields is not None:
                for fname in h.dtype.names:
                    fdt, _ = h.dtype.fields[fname][:2]
                    key = f"{name}.{fname}"
                    shape = h.shape + fdt.shape
                    base = fdt.base
                    nbytes = h.numel * fdt.itemsize
                    infos.append(TensorInfo(key, dtype_name(base), shape, nbytes, extra={**extra, "field": fname}))
                continue
            infos.append(TensorInfo(name, dtype_name(h.dtype), h.shape, h.numel * h.dtype.itemsize, extra=extra))
        return infos

    def _add_embedded(self, name: str, obj: Any, infos: list[TensorInfo]) -> None:
        """Numeric arrays inside an object array (Keras' npz weights: a 0-d array holding a dict of arrays)."""
        stack: list[tuple[str, Any, int]] = [(name, obj, 0)]
        while stack and len(self._embedded) < 100_000:
            path, node, depth = stack.pop()
            if depth > 32:
                continue
            if isinstance(node, NumpyArrayData):
                if isinstance(node.raw, (bytes, bytearray)) and node.dtype is not None:
                    try:
                        dt = node.dtype.numpy()
                    except Exception:  # an unknown dtype spec: not an array we can describe
                        continue
                    if dt.hasobject or dt.fields is not None:
                        continue
                    numel = 1
                    for d in node.shape:
                        numel *= d
                    if numel * dt.itemsize != len(node.raw):
                        continue
                    if path != name:
                        self._embedded[path] = node
                        extra = {"kind": "in an object array (read from its pickle by the restricted unpickler)"}
                        infos.append(TensorInfo(path, dtype_name(dt), node.shape, len(node.raw), extra=extra))
                elif isinstance(node.raw, list):
                    single = len(node.raw) == 1 and not node.shape  # a 0-d object array: its one value
                    for i, v in enumerate(node.raw[:100_000]):
                        stack.append((path if single else join_path(path, i), v, depth + 1))
            elif isinstance(node, dict):  # pushed in reverse: popped (and listed) in the dict's order
                for k, v in reversed(list(node.items())[:100_000]):
                    stack.append((join_path(path, k), v, depth + 1))
            elif isinstance(node, (list, tuple)):
                for i, v in reversed(list(enumerate(node[:100_000]))):
                    stack.append((join_path(path, i), v, depth + 1))

    # -- reader interface
    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"reader": "header parsed by ptools; numeric arrays memory-mapped, never unpickled"}
        objects = [n for n, e in self.entries.items() if e.header.has_object]
        if objects:
            meta["object_arrays"] = (
                f"{', '.join(objects[:5])}{', ...' if len(objects) > 5 else ''}: numpy.load needs allow_pickle=True "
                "for them, which unpickles them (their pickles are scanned)"
            )
        if self.scan.error:
            meta["pickle_error"] = self.scan.error
        return meta

    def pickle_globals(self) -> list[dict[str, Any]]:
        return [g.as_dict() for g in self.scan.globals.values()]

    def findings(self) -> list[dict[str, Any]]:
        return [g for g in self.pickle_globals() if g["grade"] != "safe"]

    def read(self, key: str) -> np.ndarray:
        from ptools.checkpoint.dtypes import decode

        raw, dtype = self.read_raw(key)
        return decode(raw, dtype)

    def read_raw(self, key: str) -> tuple[np.ndarray, str]:
        import numpy as np

        if key in self._embedded:
            arr = self._embedded[key].numpy()
            return arr, dtype_name(arr.dtype)
        entry, fname = self.entries.get(key), None
        if entry is None and "." in key:
            base, _, fname = key.rpartition(".")
            entry = self.entries.get(base)
            if entry is None or entry.header.dtype.fields is None or fname not in entry.header.dtype.names:
                entry = None
        if entry is None:
            raise PtoolsError(f"{self.path}: no array {key!r}")
        h = entry.header
        if h.has_object:
            raise PtoolsError(
                f"{self.path}: {key} is an object array: its values are a pickle, never loaded (numbers inside it "
                "are listed as their own keys)"
            )
        if h.dtype.fields is not None and fname is None:
            raise PtoolsError(f"{self.path}: {key} is a structured array: read its fields ({key}.<field>)")
        buf = self._mm if entry.stored else self._members[key if fname is None else key.rpartition(".")[0]]
        offset = entry.start + h.data_offset
        if h.numel == 0:
            arr = np.zeros(h.shape, dtype=h.dtype)
        else:
            flat = np.frombuffer(buf, dtype=h.dtype, count=h.numel, offset=offset)
            arr = flat.reshape(h.shape, order="F" if h.fortran else "C")
        if fname is not None:
            arr = arr[fname]
        return arr, dtype_name(arr.dtype)

    def close(self) -> None:
        self._members.clear()
        if self._mm is not None and isinstance(self._mm, mmap.mmap):
            try:
                self._mm.close()
            except BufferError:  # numpy views still alive; the map closes when they go
                pass
        self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _inflate_limit(file_size: int) -> int:
    # The promise of every command: memory within max(4*S, 512 MiB) for a file of S bytes.
    return max(256 << 20, 2 * file_size)


def open_npy(path: Path) -> NumpyReader:
    return NumpyReader(path, npz=False)


def open_npz(path: Path) -> NumpyReader:
    return NumpyReader(path, npz=True)
