"""Which bytes each common loader reads from a file (so the scan sees them), and which reader opens it.

- `TorchArchive`: a zip as `torch.load` reads it. torch's reader is miniz inside `PyTorchStreamReader`, not
  Python's zipfile, and the two disagree; every rule below was read in miniz 3.0.2 and
  `caffe2/serialize/inline_container.cc` and checked against `torch.load(weights_only=True)` on torch 2.14
  with benign twins (tests/checkpoint/test_loader_views.py):
  * the end-of-central-directory record is the last `PK\\x05\\x06` with at least 22 bytes after it, searched
    backwards in 4 KiB steps up to about 69 KiB from the end (zipfile: 64 KiB + 22, and it gives up on a
    signature with fewer than 22 bytes after it); its comment length is never checked;
  * a zip64 locator right before it whose record has the right signature replaces the counts, size and
    offset of the central directory, whatever the 32-bit record says; offsets are never shifted for bytes
    prepended to the archive (zipfile shifts them);
  * the archive folder is the first central-directory entry's name up to its first `/`; every record is
    looked up as `folder/name`, case-insensitively (ASCII), by a binary search over the names heap-sorted
    case-insensitively, so of two entries with the same name the sort decides which one is read;
  * the central directory's method, sizes and local-header offset are used; the local header gives only the
    data offset (its own name and extra lengths), its name is never compared with the directory's;
  * CRCs are never checked; a deflated record is the first `size` bytes the stream inflates to (a longer
    stream is cut, a damaged one leaves the rest of the buffer uninitialised); a record with the DOS
    directory attribute or no compressed bytes is never read at all (its buffer stays uninitialised).
- `other_views`: every other reading of the file's bytes by a common loader, scanned whatever reader opened
  it: the bytes from offset 0 as pickles (`pickle.load`, and `torch.load` for anything not starting like a
  zip), a zip after a prefix (zipfile), a tar (torch.load's legacy tar path), an HDF5 superblock after a
  user block of any size (h5py, Keras); `base.open_checkpoint` attaches them to the reader, and a file no
  reader opens is still flagged when one of them reaches an unsafe global. Past the stream cap, pickles
  are swept and the cut reported (`<scan limit>`), never passed.
- `register_builtin`: every reader's sniffer, most specific first (`base.open_checkpoint` tries them in order).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ptools.checkpoint.torch.zip_members import ZipError, inflate_prefix

# ------------------------------------------------------------------------------------- torch's zip reader

_EOCD_SIG = b"PK\x05\x06"
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL_SIG = b"PK\x03\x04"
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_RECORD_SIG = b"PK\x06\x06"
_U32 = 0xFFFFFFFF
_SEARCH_STEP = 4096  # miniz reads the tail in 4 KiB blocks, stepping back 4093 bytes each time
_SEARCH_LIMIT = 0xFFFF + 22  # it gives up once a missed block starts this far from the end
_MAX_ENTRIES = 1 << 20  # a checkpoint of a million records is not one this tool will list
MIN_VERSION, MAX_VERSION = 1, 10  # the record versions torch 2.14 accepts (`version` / `.data/version`)
_DIRECTORY_ATTRIBUTE = 0x10


def _lower(name: bytes) -> bytes:
    return name.lower()  # bytes.lower() folds ASCII only, as MZ_TOLOWER does


@dataclass
class TorchEntry:
    """One central-directory entry as miniz reads it (zip64 fields applied the way `file_stat` applies them)."""

    index: int
    name: bytes
    method: int
    flags: int
    comp_size: int
    size: int
    local_offset: int
    external_attr: int
    stat_error: str | None = None  # what `mz_zip_reader_file_stat` would fail with when the record is read

    @property
    def is_directory(self) -> bool:
        return self.name.endswith(b"/") or bool(self.external_attr & _DIRECTORY_ATTRIBUTE)


@dataclass
class TorchRecord:
    """The bytes torch gets for a record, and how many trailing bytes of its buffer would be uninitialised."""

    entry: TorchEntry
    data: bytes
    uninitialised: int = 0


def _find_eocd(buf: Any, size: int) -> int:
    """miniz's backwards search; raises where torch cannot find (or cannot even seek to) the record."""
    if size < 22:
        raise ZipError("too small to be a zip archive")
    cur = max(size - _SEARCH_STEP, 0)
    while True:
        if cur < 0:
            # miniz steps back with unsigned arithmetic: the next read starts before the file (EINVAL).
            raise ZipError("torch's reader seeks before the start of the file looking for the central directory")
        block = bytes(buf[cur : cur + min(_SEARCH_STEP, size - cur)])
        i = len(block) - 4
        while i >= 0:
            i = block.rfind(_EOCD_SIG, 0, i + 4)
            if i < 0:
                break
            if size - (cur + i) >= 22:
                return cur + i
            i -= 1
        if cur == 0 or size - cur >= _SEARCH_LIMIT:
            raise ZipError("no end-of-central-directory record where torch's reader looks for it")
        cur -= _SEARCH_STEP - 3


def _zip64_values(extra: bytes, size: int, comp: int, offset: int) -> tuple[int, int, int]:
    """`mz_zip_file_stat_internal`: the zip64 field fills the 32-bit fields that are 0xFFFFFFFF, in order."""
    rem, pos = len(extra), 0
    while rem:
        if rem < 4:
            raise ZipError("damaged extra field")
        fid, fsize = struct.unpack_from("<HH", extra, pos)
        if fsize + 4 > rem:
            raise ZipError("damaged extra field")
        if fid == 1:
            body = extra[pos + 4 : pos + 4 + fsize]
            j = 0
            vals = []
            for v in (size, comp, offset):
                if v == _U32:
                    if len(body) - j < 8:
                        raise ZipError("damaged zip64 extra field")
                    v = struct.unpack_from("<Q", body, j)[0]
                    j += 8
                vals.append(v)
            return vals[0], vals[1], vals[2]
        pos += 4 + fsize
        rem -= 4 + fsize
    return size, comp, offset


class TorchArchive:
    """A zip archive as `torch.load` reads it (see the module docstring for the rules).

    Construction fails with `ZipError` where `PyTorchStreamReader` would fail to open the archive.
    """

    def __init__(self, buf: Any) -> None:
        self._buf = buf
        self.size = size = len(buf)
        eocd = _find_eocd(buf, size)
        rec = bytes(buf[eocd : eocd + 22])
        _, this_disk, cd_disk, on_disk, total, cd_size, cd_offset, _ = struct.unpack("<4sHHHHIIH", rec)
        if eocd >= 20 + 56:
            loc = bytes(buf[eocd - 20 : eocd])
            if loc[:4] == _ZIP64_LOCATOR_SIG:
                rec64_at, disks = struct.unpack_from("<QI", loc, 8)
                if rec64_at > size - 56:
                    raise ZipError("the zip64 locator points past the end of the file")
                rec64 = bytes(buf[rec64_at : rec64_at + 56])
                if len(rec64) == 56 and rec64[:4] == _ZIP64_RECORD_SIG:
                    rec_size, _, _, this_disk, cd_disk, on_disk, total, cd_size, cd_offset = struct.unpack_from(
                        "<QHHIIQQQQ", rec64, 4
                    )
                    if rec_size < 44:
                        raise ZipError("damaged zip64 end-of-central-directory record")
                    if disks != 1:
                        raise ZipError("a multi-disk archive (zip64 locator), which torch refuses")
                    if total > _U32 or on_disk > _U32 or cd_size > _U32:
                        raise ZipError("a zip64 central directory larger than torch's reader accepts")
        if total != on_disk or ((this_disk | cd_disk) != 0 and (this_disk != 1 or cd_disk != 1)):
            raise ZipError("a multi-disk archive, which torch refuses")
        if cd_size < total * 46 or cd_offset + cd_size > size:
            raise ZipError("the central directory is damaged or outside the file")
        if total > _MAX_ENTRIES:
            raise ZipError(f"{total} entries, more than this tool lists")
        self.entries = self._read_central(bytes(buf[cd_offset : cd_offset + cd_size]), total, cd_offset, this_disk)
        if not self.entries:
            raise ZipError("archive does not contain any files")
        first = self.entries[0].name
        slash = first.find(b"/")
        if slash < 0:
            raise ZipError(f"file in archive is not in a subdirectory: {first.decode('utf-8', 'replace')}")
        self.prefix = first[: slash + 1]
        self._keys = [_lower(e.name) for e in self.entries]
        self._by_key: dict[bytes, list[int]] = {}
        for i, k in enumerate(self._keys):
            self._by_key.setdefault(k, []).append(i)
        self._sorted: list[int] | None = None

    def _read_central(self, cd: bytes, total: int, cd_offset: int, this_disk: int) -> list[TorchEntry]:
        """`mz_zip_reader_read_central_dir`'s per-entry checks, then `file_stat`'s view of each entry."""
        entries: list[TorchEntry] = []
        p, n = 0, len(cd)
        for i in range(total):
            if n < 46 or cd[p : p + 4] != _CENTRAL_SIG:
                raise ZipError("damaged central directory entry")
            (flags, method, method_and_time) = struct.unpack_from("<HH", cd, p + 8) + struct.unpack_from(
                "<I", cd, p + 10
            )
            comp, size, fn, ext, com, disk = struct.unpack_from("<IIHHHH", cd, p + 20)
            ext_attr, offset = struct.unpack_from("<II", cd, p + 38)
            decomp, comp_v, offset_v = size, comp, offset
            if ext and max(comp, size, offset) == _U32:
                if 46 + fn + ext > n:
                    extra = bytes(self._buf[cd_offset + 46 + fn : cd_offset + 46 + fn + ext])  # miniz's own read
                else:
                    extra = cd[p + 46 + fn : p + 46 + fn + ext]
                decomp, comp_v, offset_v = _validation_zip64(extra, size, comp, offset)
            if comp_v != _U32 and decomp != _U32:
                # miniz reads the method as 32 bits (method + time): a stored entry with a time skips this check.
                if (method_and_time == 0 and decomp != comp_v) or (decomp and not comp_v):
                    raise ZipError("a stored entry whose sizes differ, or a deflated one with no data")
            if disk == 0xFFFF or (disk != this_disk and disk != 1):
                raise ZipError("a multi-disk archive, which torch refuses")
            if comp_v != _U32 and offset_v + 30 + comp_v > self.size:
                raise ZipError("an entry's data runs past the end of the file")
            if flags & 0x2000:
                raise ZipError("an encrypted central directory, which torch refuses")
            total_header = 46 + fn + ext + com
            if total_header > n:
                raise ZipError("damaged central directory entry")
            name = cd[p + 46 : p + 46 + fn]
            stat_error = None
            if max(comp, size, offset) == _U32 and ext:
                try:
                    size, comp, offset = _zip64_values(cd[p + 46 + fn : p + 46 + fn + ext], size, comp, offset)
                except ZipError as e:
                    stat_error = str(e)
            if method not in (0, 8):
                stat_error = f"unsupported compression method {method}"
            elif flags & (1 | 0x40):
                stat_error = "encrypted"
            elif flags & 0x20:
                stat_error = "a compressed patch entry"
            entries.append(TorchEntry(i, name, method, flags, comp, size, offset, ext_attr, stat_error))
            n -= total_header
            p += total_header
        return entries

    # -- lookups
    def _sorted_indices(self) -> list[int]:
        """miniz's heap sort of the lowercased names, step for step: it decides which duplicate is found."""
        if self._sorted is None:
            self._sorted = _miniz_heap_sort(self._keys)
        return self._sorted

    def locate(self, record: str | bytes) -> TorchEntry | None:
        """The entry `getRecord(record)` reads: `folder/record`, C-string, case-insensitive, binary search."""
        name = self.prefix + (record.encode("utf-8") if isinstance(record, str) else record)
        nul = name.find(b"\0")
        key = _lower(name if nul < 0 else name[:nul])
        hits = self._by_key.get(key)
        if not hits:
            return None
        if len(hits) == 1:
            return self.entries[hits[0]]
        order = self._sorted_indices()
        lo, hi = 0, len(order) - 1
        while lo <= hi:
            mid = lo + ((hi - lo) >> 1)
            k = self._keys[order[mid]]
            if k == key:
                return self.entries[order[mid]]
            if k < key:
                lo = mid + 1
            else:
                hi = mid - 1
        return None  # unreachable for a name that is present; kept for safety

    def duplicates(self, entry: TorchEntry) -> list[TorchEntry]:
        """Every entry whose name equals this one's case-insensitively (itself included)."""
        return [self.entries[i] for i in self._by_key.get(self._keys[entry.index], [])]

    def all_records_error(self) -> str | None:
        """`getAllRecords` (torch.load calls it to look for TorchScript) fails on a name outside the folder."""
        want = self.prefix
        for e in self.entries:
            name = e.name[:511]
            if not _c_prefix_equal(name, want):
                return f"file in archive is not in a subdirectory {want.decode('utf-8', 'replace')}"
        return None

    def records(self) -> list[str]:
        """The record names torch lists (folder stripped), as `getAllRecords` returns them."""
        out = []
        for e in self.entries:
            name = e.name[:511]
            nul = name.find(b"\0")
            name = name if nul < 0 else name[:nul]
            out.append(name[len(self.prefix) :].decode("utf-8", "replace"))
        return out

    # -- reading
    def data_offset(self, entry: TorchEntry) -> int:
        """Where the entry's bytes start: after its local header's own name and extra fields."""
        header = bytes(self._buf[entry.local_offset : entry.local_offset + 30])
        if len(header) < 30 or header[:4] != _LOCAL_SIG:
            raise ZipError("bad local header")
        fn, ext = struct.unpack_from("<HH", header, 26)
        start = entry.local_offset + 30 + fn + ext
        if start + entry.comp_size > self.size:
            raise ZipError("the data runs past the end of the file")
        return start

    def read(self, entry: TorchEntry, limit: int) -> TorchRecord:
        """The bytes `getRecord` hands to the unpickler (never more than `limit`, which must cover `size`)."""
        if entry.stat_error:
            raise ZipError(entry.stat_error)
        if entry.size > limit:
            raise ZipError(f"declares {entry.size} bytes, more than this file could hold ({limit})")
        if entry.is_directory or not entry.comp_size:
            return TorchRecord(entry, b"", entry.size)
        start = self.data_offset(entry)
        if entry.method == 0:
            data = bytes(self._buf[start : start + entry.size])
            if len(data) < entry.size:
                raise ZipError("the data runs past the end of the file")
            return TorchRecord(entry, data)
        data, ended = inflate_prefix(self._buf, start, entry.comp_size, entry.size)
        if ended and len(data) != entry.size:
            raise ZipError(f"inflates to {len(data)} bytes, not the declared {entry.size}")
        return TorchRecord(entry, data, entry.size - len(data))


def _validation_zip64(extra: bytes, size: int, comp: int, offset: int) -> tuple[int, int, int]:
    """The central-directory pass's own (laxer) zip64 parse: sizes are read relative to the whole extra."""
    rem, pos = len(extra), 0
    while rem:
        if rem < 4:
            raise ZipError("damaged extra field")
        fid, fsize = struct.unpack_from("<HH", extra, pos)
        if fsize + 4 > rem:
            raise ZipError("damaged extra field")
        if fid == 1:
            break
        pos += 4 + fsize
        rem -= 4 + fsize
    if rem >= 4:
        rem -= 4
        pos += 4
        vals = []
        for v in (size, comp, offset):
            if v == _U32 and rem >= 8:
                v = struct.unpack_from("<Q", extra, pos)[0]
                rem -= 8
                pos += 8
            vals.append(v)
        return vals[0], vals[1], vals[2]
    return size, comp, offset


def _c_prefix_equal(name: bytes, prefix: bytes) -> bool:
    """strncmp(name, prefix, len(prefix)) == 0, stopping at a NUL in both."""
    for i, b in enumerate(prefix):
        a = name[i] if i < len(name) else 0
        if a != b:
            return False
        if a == 0:
            return True
    return True


def _miniz_heap_sort(keys: list[bytes]) -> list[int]:
    size = len(keys)
    idx = list(range(size))
    if size <= 1:
        return idx

    def sift(root: int, end: int) -> None:
        while True:
            child = (root << 1) + 1
            if child >= end:
                return
            if child + 1 < end and keys[idx[child]] < keys[idx[child + 1]]:
                child += 1
            if not keys[idx[root]] < keys[idx[child]]:
                return
            idx[root], idx[child] = idx[child], idx[root]
            root = child

    start = (size - 2) >> 1
    while True:
        sift(start, size)
        if not start:
            break
        start -= 1
    end = size - 1
    while end > 0:
        idx[end], idx[0] = idx[0], idx[end]
        sift(0, end)
        end -= 1
    return idx


def parse_version(data: bytes) -> int | None:
    """std::stoull as PyTorchStreamReader applies it to the `version` record; None where torch refuses it."""
    text = data.decode("latin-1").lstrip(" \t\n\r\f\v")
    sign = ""
    if text[:1] in "+-" and text[:1]:
        sign, text = text[0], text[1:]
    digits = ""
    for ch in text:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    if not digits or len(digits) > 20:
        return None
    value = int(digits)
    if sign == "-":
        return None  # wraps to a huge number (or reads as negative): below or above the supported range
    return value if MIN_VERSION <= value <= MAX_VERSION else None


# ----------------------------------------------------------------------------------------------- registry


def register_builtin() -> None:
    """Every reader's sniffer with `base.register_format`, most specific first."""
    from ptools.checkpoint import npy, safetensors_reader, sharded, trainer_folder
    from ptools.checkpoint.base import register_format
    from ptools.checkpoint.keras import h5 as keras_h5  # h5py is imported only when a file is opened
    from ptools.checkpoint.torch import legacy as torch_legacy  # no torch at import
    from ptools.checkpoint.torch import package as torch_package
    from ptools.checkpoint.torch import zip as torch_zip

    # A Hugging Face Trainer checkpoint-N/ folder: the model beside optimizer.pt, rng_state.pth... (before
    # "sharded": such a folder may hold a sharded model's index too).
    register_format("trainer-folder", trainer_folder.sniff, trainer_folder.open_reader)
    register_format("sharded", sharded.sniff, sharded.open_reader)  # an *.index.json weight map, or its folder

    register_format("safetensors", safetensors_reader.sniff, safetensors_reader.open_reader)
    # Before the pickle sniffers: the .npy magic starts with 0x93, which is also a pickle opcode.
    register_format("npy", npy.sniff_npy, npy.open_npy)
    # Before torch-zip: a package may hold a data.pkl resource, but its own source is what runs on load.
    register_format("torch-package", torch_package.sniff, torch_package.open_reader)
    register_format("torch-zip", torch_zip.sniff, torch_zip.open_reader)  # TorchScript archives too
    # A zip of .npy arrays (torch and Keras archives are theirs); before the pickle sniffers ("PK" parses as opcodes).
    register_format("npz", npy.sniff_npz, npy.open_npz)
    register_format("keras-zip", keras_h5.sniff_keras_zip, keras_h5.open_reader)
    register_format("torch-legacy", torch_legacy.sniff_legacy, torch_legacy.TorchLegacyReader)
    register_format("torch-tar", torch_legacy.sniff_tar, torch_legacy.TorchTarReader)
    register_format("pickle", torch_legacy.sniff_pickle, torch_legacy.PickleReader)

    register_format("keras-h5", keras_h5.sniff_h5, keras_h5.open_reader)
    register_format("keras-shards", keras_h5.sniff_keras_shards, keras_h5.open_reader)

    def tf_bundle():  # noqa: ANN202
        # Imported on first use: it pulls in numpy (~0.2 s), which `inspect` of torch/safetensors never needs.
        from ptools.checkpoint.tf import bundle

        return bundle

    register_format("tf-bundle", lambda p, h: tf_bundle().sniff(p, h), lambda p: tf_bundle().open_reader(p))

    # Last: any other zip gets a specific error (truncated, or a zip holding no checkpoint) instead of "unrecognised".
    register_format("zip", torch_zip.sniff_any_zip, torch_zip.open_reader)


# ------------------------------------------------------------------------------- every other interpretation

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TAIL = 70 << 10  # where any zip reader looks for the end-of-central-directory record (torch: ~69 KiB)


def hdf5_superblock(buf: Any) -> int | None:
    """Where the HDF5 library finds the superblock: offset 0, then 512, 1024, 2048, ... (a user block before it)."""
    size = len(buf)
    offset = 0
    while offset + 8 <= size:
        if bytes(buf[offset : offset + 8]) == _HDF5_SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def reached_streams(buf: Any, start: int = 0) -> list[Any]:
    """The pickles a loader calling pickle.load again and again unpickles from `start`: each one that parses
    to STOP, and the opcodes of the first broken one up to where a real unpickler stops (they run too)."""
    from ptools.checkpoint.pickle.static_scan import MAX_STREAMS, StreamScan, scan_stream, sweep

    streams = []
    pos, end = start, len(buf)
    while pos < end:
        if len(streams) >= MAX_STREAMS:
            rest = StreamScan(start=pos, error=f"more than {MAX_STREAMS} pickles one after another", limited=True)
            for module, name, at in sweep(buf, pos, end):
                rest.add_global(module, name, at)
                rest.swept = True
            streams.append(rest)
            break
        s = scan_stream(buf, pos, end)
        streams.append(s)
        if s.end is None or s.anomalies:
            break
        pos = s.end
    return streams


@dataclass
class View:
    """One loader's reading of the file and what the scan found there."""

    loader: str  # who reads it that way: "pickle.load / torch.load", "zipfile", "h5py / Keras", "tarfile"
    how: str  # what that reading is ("the bytes from offset 0 as a pickle", "a zip found by its end record")
    globals: list[dict[str, Any]]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"loader": self.loader, "how": self.how, "globals": len(self.globals), "notes": self.notes}


def other_views(path: Any, primary: str) -> list[View]:
    """Every reading of these bytes by a common loader other than the one `primary` (the reader ptools opened
    the file with) stands for, with the globals each would reach. Only readings that reach a global count."""
    from ptools.checkpoint.torch.zip_members import FileBytes

    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError:
        return []
    views: list[View] = []
    try:
        buf = FileBytes(f.fileno())
        head = bytes(buf[0:8])
        if primary not in _PICKLE_FROM_START and not head.startswith(_LOCAL_SIG) and len(buf):
            view = _pickle_view(f)
            if view is not None:
                views.append(view)
        if primary not in _ZIP_READERS and _EOCD_SIG in bytes(buf[max(0, len(buf) - _TAIL) :]):
            view = _zip_view(buf, path)
            if view is not None:
                views.append(view)
        if primary not in _TAR_READERS and bytes(buf[257:262]) == b"ustar":
            view = _tar_view(path)
            if view is not None:
                views.append(view)
        if primary not in _HDF5_READERS and hdf5_superblock(buf) is not None:
            view = _hdf5_view(path)
            if view is not None:
                views.append(view)
    finally:
        f.close()
    return views


# Readers whose own scan already covers a reading (ptools' format names).
_PICKLE_FROM_START = {"torch-legacy", "pickle", "torch-unsafe"}
_ZIP_READERS = {"torch-zip", "torchscript", "keras-zip", "zip", "npz", "torch-package"}
_TAR_READERS = {"torch-tar"}
_HDF5_READERS = {"keras-h5"}


def _graded(result: Any, loader: str) -> list[dict[str, Any]]:
    """The globals of a static scan, their places said as this loader reaches them."""
    out = []
    for g in result.globals.values():
        d = g.as_dict()
        d["where"] = [f"{loader}: {w.replace(' (not reached by the loader)', '')}" for w in d["where"]]
        out.append(d)
    return out


def _until_it_raises(s: Any) -> Any:
    """The stream with only the globals a real unpickler reaches before the first opcode it would raise on (a
    stack underflow: an .npy file's magic starts with STACK_GLOBAL on an empty stack, which runs nothing)."""
    if s.first_anomaly is None:
        return s
    for key in [k for k, offs in s.offsets.items() if min(offs) >= s.first_anomaly]:
        del s.globals[key], s.offsets[key]
    return s


def _pickle_view(f: Any) -> View | None:
    import mmap

    try:
        buf: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    try:
        streams = [_until_it_raises(s) for s in reached_streams(buf, 0)]
    finally:
        buf.close()
    if not any(s.globals or s.limited for s in streams):
        return None
    from ptools.checkpoint.pickle.restricted import ScanResult, add_static_globals

    result = ScanResult()
    add_static_globals(result, streams, "pickle from offset 0", False)
    loader = "pickle.load / torch.load"
    how = "the bytes from offset 0 as pickles (torch.load unpickles any file that does not start like a zip)"
    return View(loader, how, _graded(result, loader), [])


def _zip_view(buf: Any, path: Any) -> View | None:
    """A zip anywhere in the file (zipfile finds one after a prefix; torch's reader one by absolute offsets)."""
    from ptools.checkpoint.pickle.restricted import ScanResult, add_static_globals
    from ptools.checkpoint.pickle.static_scan import looks_like_pickle_head, scan_region
    from ptools.checkpoint.torch.zip import every_member, size_limit
    from ptools.checkpoint.torch.zip_members import member_head, read_member

    members = every_member(buf, path)
    result = ScanResult()
    limit = size_limit(path)
    for m in members:
        if not m.name.lower().endswith(("pkl", ".pickle")) and not looks_like_pickle_head(member_head(buf, m)):
            continue
        try:
            data = read_member(buf, m, limit)
        except ZipError as e:
            result.notes.append(f"zip member {m.name}: {e}")
            continue
        streams = scan_region(data)
        if any(s.globals for s in streams):
            add_static_globals(result, streams, f"zip member {m.name}", False)
    if not result.globals:
        return None
    loader = "zipfile / numpy.load"
    how = "the zip archive inside the file, found by its end record (zip readers accept bytes before it)"
    return View(loader, how, _graded(result, loader), result.notes)


def _tar_view(path: Any) -> View | None:
    """torch.load tries tarfile first on any file that does not start like a zip (weights_only=False)."""
    import tarfile

    from ptools.checkpoint.pickle.restricted import ScanResult, add_static_globals
    from ptools.checkpoint.pickle.static_scan import scan_region
    from ptools.checkpoint.torch.zip import size_limit

    result = ScanResult()
    limit = size_limit(path)
    try:
        with tarfile.open(path, "r:") as tar:
            for i, m in enumerate(tar):
                if i >= 4096:
                    break
                if not m.isfile() or m.size > limit:
                    continue
                f = tar.extractfile(m)
                data = f.read(m.size) if f is not None else b""
                streams = scan_region(data, 0)
                if any(s.globals for s in streams):
                    add_static_globals(result, streams, f"tar member {m.name}", False)
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return None
    if not result.globals:
        return None
    loader = "torch.load (tar) / tarfile"
    how = "a tar archive: torch.load(weights_only=False) tries tarfile first on a file that is not a zip"
    return View(loader, how, _graded(result, loader), [])


def _hdf5_view(path: Any) -> View | None:
    """h5py opens a file whose superblock follows a user block: Keras reads its model config."""
    from ptools.checkpoint.keras.h5 import KerasReader
    from ptools.errors import PtoolsError

    try:
        with KerasReader(path) as reader:
            found = reader.pickle_globals()
    except PtoolsError:
        return None  # not a Keras file: h5py alone runs nothing (pickled attributes: PyTables, not read here)
    if not found:
        return None
    loader = "h5py / Keras"
    how = "an HDF5 file (its superblock after a user block): Keras reads its model config"
    return View(loader, how, [{**g, "where": [f"{loader}: {w}" for w in g["where"]]} for g in found], [])
