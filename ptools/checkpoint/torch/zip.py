"""PyTorch zip checkpoints (torch.save since 1.6), read without torch: restricted unpickling + memory-mapped storages.

Layout: `<name>/data.pkl` (the object, tensors as persistent ids), `<name>/data/<key>` (one member per
storage, stored uncompressed and aligned so it can be mapped), `<name>/byteorder`, `<name>/version`.
TorchScript archives use the same container plus `code/` and `constants.pkl`; they are read the same way
(their code is never run: `torch.jit.load` would run the archive's own `__setstate__` methods).
Before anything is loaded, every member of the archive (`zip_members`: duplicate names and local-only
entries included) is scanned statically for pickles.
"""

from __future__ import annotations

import mmap
import struct
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.checkpoint._text import oneline
from ptools.checkpoint.base import MAX_DIM, CheckpointReader, TensorInfo
from ptools.checkpoint.dtypes import decode, itemsize, raw_numpy_dtype
from ptools.checkpoint.loaders import TorchArchive, TorchEntry, parse_version
from ptools.checkpoint.pickle.restricted import (
    DANGEROUS,
    SUSPICIOUS,
    GlobalRef,
    ScanResult,
    TensorRef,
    add_static_globals,
    looks_like_pickle,
    restricted_load,
)
from ptools.checkpoint.pickle.static_scan import looks_like_pickle_head, scan_region
from ptools.checkpoint.pickle.structure import PickleContents, build
from ptools.checkpoint.torch.zip_members import FileBytes, Member, ZipError, list_members, member_head
from ptools.checkpoint.torch.zip_members import read_member as read_zip_member
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np

_ZIP_MAGIC = b"PK\x03\x04"
_MAX_PICKLE_BYTES = 1 << 30  # a data.pkl larger than this is not a real checkpoint (or a zip bomb)


def size_limit(path: Path) -> int:
    """The most bytes one inflated member may take: the promise is max(4*S, 512 MiB) for a file of S bytes."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return max(256 << 20, 2 * size)


_NESTED_SCAN_LIMIT = 64 << 20  # scan byte storages up to this size for hidden pickles
_MAX_LISTED = 1 << 20  # members listed per archive, every reading together


def sniff(path: Path, head: bytes) -> bool:
    if not head.startswith(_ZIP_MAGIC) or len(head) < 30:
        return False
    name_len = struct.unpack_from("<H", head, 26)[0]
    first = head[30 : 30 + name_len].decode("utf-8", "replace")
    if first.endswith(("/data.pkl", "/.format_version", "/byteorder", "/version")) or "/data/" in first:
        return True
    # The first member is not a torch one: look at the directory (cheap; Keras zips fall through).
    try:
        with zipfile.ZipFile(path) as zf:
            return find_prefix(zf.namelist()) is not None
    except Exception:
        return False


def find_prefix(names: list[str]) -> str | None:
    """The archive folder that holds data.pkl ("archive", or the saved file's stem)."""
    candidates = [n[: -len("data.pkl")] for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
    if not candidates:
        return None
    return min(candidates, key=len)


def open_reader(path: Path) -> CheckpointReader:
    """The archive as torch.load reads it; as Python's zipfile reads it only where torch cannot open it."""
    view, torch_error = _torch_view(path)
    if view is None:
        view = _zipfile_view(path, torch_error)
    names = view.names()
    if any(n.startswith("code/") for n in names) or view.has("constants.pkl"):
        return open_torchscript(path, view)
    return TorchZipReader(path, view)


def open_torchscript(path: Path, view: ArchiveView) -> TorchZipReader:
    """A TorchScript archive through the restricted unpickler: its code is listed, never compiled or run."""
    reader = TorchZipReader(path, view, torchscript=True)
    reader.format = "torchscript"
    code = sorted(n for n in view.names() if n.startswith("code/") and n.endswith(".py"))
    reader._meta["reader"] = "restricted unpickler (data.pkl, constants.pkl); TorchScript code is never run"
    reader._meta["code_files"] = f"{len(code)} ({', '.join(code[:3])}{', ...' if len(code) > 3 else ''})"
    reader.code_files = code
    _grade_script_code(reader, view, path)
    return reader


def _grade_script_code(reader: TorchZipReader, view: ArchiveView, path: Path) -> None:
    """The archive's code, graded for file I/O (`script_code`); `__setstate__` methods run on load."""
    from ptools.checkpoint.torch.script_code import MAX_CODE_BYTES, MAX_FILES, grade_code, setstate_methods

    files: dict[str, bytes] = {}
    for name in view.names():
        if name.startswith("code/") and name.endswith(".py") and len(files) < MAX_FILES:
            try:
                files[name] = view.read(name, path, limit=MAX_CODE_BYTES)
            except PtoolsError as e:
                reader.scan.notes.append(f"{name}: {e.message}")
    findings, notes = grade_code(files)
    reader._code_findings = findings
    reader.scan.notes.extend(notes)
    on_load = setstate_methods(files)
    if on_load:
        reader._meta["runs_on_load"] = ", ".join(on_load[:5]) + (", ..." if len(on_load) > 5 else "")


class ArchiveView:
    """The records of a torch zip under its folder, as one loader resolves them."""

    how = ""  # which loader's rules: shown as the reader's `zip_reader` metadata
    prefix = ""  # the archive folder with its slash ("archive/")

    def names(self) -> list[str]:
        raise NotImplementedError

    def has(self, record: str) -> bool:
        raise NotImplementedError

    def size(self, record: str) -> int:
        raise NotImplementedError

    def header_offset(self, record: str) -> int:
        raise NotImplementedError

    def read(self, record: str, path: Path, limit: int = _MAX_PICKLE_BYTES) -> bytes:
        raise NotImplementedError

    def stored_offset(self, record: str, path: Path) -> int | None:
        """Where a stored (uncompressed, mappable) record's bytes start; None for a compressed one."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class TorchView(ArchiveView):
    """Records resolved by torch's own rules (`loaders.TorchArchive`): what torch.load would unpickle and map."""

    how = "torch.load's rules (miniz: central directory, case-insensitive names, no CRC check)"

    def __init__(self, path: Path, archive: TorchArchive, f: Any) -> None:
        self.archive = self._archive = archive
        self._file, self._path = f, path
        self.prefix = archive.prefix.decode("utf-8", "replace")
        self.uninitialised: list[str] = []  # records torch would read into an uninitialised buffer

    def names(self) -> list[str]:
        return self._archive.records()

    def _entry(self, record: str) -> TorchEntry:
        entry = self._archive.locate(record)
        if entry is None:
            raise PtoolsError(oneline(f"{self._path}: {record} is missing from the archive (truncated or corrupted)"))
        return entry

    def has(self, record: str) -> bool:
        return self._archive.locate(record) is not None

    def size(self, record: str) -> int:
        return self._entry(record).size

    def header_offset(self, record: str) -> int:
        return self._entry(record).local_offset

    def read(self, record: str, path: Path, limit: int = _MAX_PICKLE_BYTES) -> bytes:
        entry = self._entry(record)
        limit = min(limit, size_limit(path))
        if entry.size > limit:
            raise PtoolsError(oneline(f"{path}: {record} is {entry.size} bytes, too large for a checkpoint pickle"))
        try:
            got = self._archive.read(entry, limit)
        except ZipError as e:
            raise PtoolsError(oneline(f"{path}: {record} cannot be read as torch reads it ({e})")) from None
        if got.uninitialised and record not in self.uninitialised:
            self.uninitialised.append(record)
        return got.data

    def stored_offset(self, record: str, path: Path) -> int | None:
        entry = self._entry(record)
        if entry.method != 0 or entry.is_directory or not entry.comp_size or entry.stat_error:
            return None
        try:
            return self._archive.data_offset(entry)
        except ZipError as e:
            raise PtoolsError(oneline(f"{path}: {record}: {e} (corrupted zip)")) from None

    def close(self) -> None:
        self._file.close()


class ZipfileView(ArchiveView):
    """Records as Python's zipfile resolves them (the last central entry of a name wins, CRCs checked)."""

    how = "Python's zipfile"

    def __init__(self, zf: zipfile.ZipFile, prefix: str) -> None:
        self._zf, self.prefix = zf, prefix

    def names(self) -> list[str]:
        return [n[len(self.prefix) :] for n in self._zf.namelist() if n.startswith(self.prefix)]

    def has(self, record: str) -> bool:
        return self.prefix + record in self._zf.NameToInfo

    def size(self, record: str) -> int:
        return self._zf.getinfo(self.prefix + record).file_size

    def header_offset(self, record: str) -> int:
        return self._zf.getinfo(self.prefix + record).header_offset

    def read(self, record: str, path: Path, limit: int = _MAX_PICKLE_BYTES) -> bytes:
        return read_member(self._zf, self.prefix + record, path, limit)

    def stored_offset(self, record: str, path: Path) -> int | None:
        info = self._zf.getinfo(self.prefix + record)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as f:
            return member_data_offset(FileBytes(f.fileno()), info, path)

    def close(self) -> None:
        self._zf.close()


def _torch_view(path: Path) -> tuple[TorchView | None, str | None]:
    """The archive by torch's rules, or (None, why torch.load would not read it)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - kept by the view
    except OSError as e:
        raise PtoolsError(f"{path}: cannot read ({e.strerror})") from None
    try:
        archive = TorchArchive(FileBytes(f.fileno()))
        view = TorchView(path, archive, f)
        why = _torch_refuses(archive, view, path)
    except ZipError as e:
        f.close()
        return None, str(e)
    except PtoolsError as e:
        f.close()
        return None, e.message
    if why is not None:
        view.close()
        return None, why
    return view, None


def _torch_refuses(archive: TorchArchive, view: TorchView, path: Path) -> str | None:
    """What PyTorchStreamReader and torch.load check before they unpickle data.pkl (None: they go ahead)."""
    if view.has(".data/serialization_id"):
        view.read(".data/serialization_id", path, limit=1 << 20)
    record = ".data/version" if view.has(".data/version") else "version"
    if not view.has(record):
        return "the archive has no version record"
    if parse_version(view.read(record, path, limit=1 << 20)) is None:
        return "its version record is not one torch accepts"
    why = archive.all_records_error()
    if why is not None:
        return why
    if not view.has("data.pkl"):
        return "no data.pkl in the archive folder"
    return None


def _zipfile_view(path: Path, torch_error: str | None) -> ZipfileView:
    zf = _open_zip(path, torch_error)
    prefix = find_prefix(zf.namelist())
    if prefix is None:
        zf.close()
        why = f"; torch.load cannot open it either: {torch_error}" if torch_error else ""
        raise PtoolsError(oneline(f"{path}: a zip archive, but not a PyTorch checkpoint (no data.pkl inside{why})"))
    view = ZipfileView(zf, prefix)
    if torch_error:
        view.how = f"Python's zipfile (torch.load cannot open this archive: {torch_error})"
    return view


def _open_zip(path: Path, torch_error: str | None = None) -> zipfile.ZipFile:
    why = f"; torch.load cannot open it either: {torch_error}" if torch_error else ""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise PtoolsError(
            oneline(f"{path}: truncated or corrupted zip archive ({oneline(e)}{why})"),
            hint="download or copy the file again",
        ) from None
    except Exception as e:  # zipfile also raises NotImplementedError, ValueError, EOFError on damaged headers
        raise PtoolsError(oneline(f"{path}: cannot read the zip archive ({oneline(e)}{why})")) from None


def read_member(zf: zipfile.ZipFile, name: str, path: Path, limit: int = _MAX_PICKLE_BYTES) -> bytes:
    info = zf.getinfo(name)
    limit = min(limit, size_limit(path))
    if info.file_size > limit:
        raise PtoolsError(f"{path}: {name} is {info.file_size} bytes, too large for a checkpoint pickle")
    if info.compress_type == zipfile.ZIP_DEFLATED:
        # zipfile would inflate whatever the stream holds; stop at the declared size instead (zip bombs).
        member = Member(name, 8, info.compress_size, info.file_size, info.header_offset, None, "central")
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                local = member_data_offset(mm, info, path)
                member.data_offset = local
                return read_zip_member(mm, member, limit)
        except ZipError as e:
            raise PtoolsError(f"{path}: {oneline(str(e))}") from None
        except (OSError, ValueError) as e:
            raise PtoolsError(f"{path}: {name} cannot be read ({oneline(e)})") from None
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise PtoolsError(
            f"{path}: {name} is truncated or corrupted ({oneline(e)})", hint="download the file again"
        ) from None
    except Exception as e:  # zlib.error and friends
        raise PtoolsError(f"{path}: {name} cannot be decompressed ({oneline(e)})") from None


def scan_zip_pickles(view: ArchiveView, path: Path, *, torchscript: bool = False) -> tuple[ScanResult, list[str]]:
    """Restricted-unpickle data.pkl (the one torch.load would unpickle), after a static scan of every pickle
    in every member as any zip reader could find it."""
    main = restricted_load(view.read("data.pkl", path), source="data.pkl", torchscript=torchscript)
    chosen = view.header_offset("data.pkl")
    archive = view.archive if isinstance(view, TorchView) else None
    others = scan_all_members(path, main, view.prefix, chosen, torchscript=torchscript, archive=archive)
    return main, others


def every_member(buf: FileBytes, path: Path, archive: TorchArchive | None = None) -> list[Member]:
    """Members by every reading: zipfile-style central directory and local-header walk (`list_members`),
    torch's central directory (which may be another one: zip64, search window) and Python's zipfile's.
    `archive`: torch's reading when the caller has it already."""
    members = list_members(buf)
    seen = {(m.header_offset, m.method, m.comp_size, m.size) for m in members}

    def new(offset: int, method: int, comp: int, size: int) -> bool:
        key = (offset, method, comp, size)
        if key in seen or len(members) >= _MAX_LISTED:
            return False
        seen.add(key)
        return True

    if archive is None:
        try:
            archive = TorchArchive(buf)
        except ZipError:
            archive = None
    for e in archive.entries if archive is not None else []:
        if new(e.local_offset, e.method, e.comp_size, e.size):  # the local header is read only for a new one
            try:
                start: int | None = archive.data_offset(e)
            except ZipError:
                start = None
            name = e.name.decode("utf-8", "replace")
            members.append(Member(name, e.method, e.comp_size, e.size, e.local_offset, start, "torch"))
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()[:_MAX_LISTED]
    except Exception:  # zipfile refuses the archive: the other readings stand
        infos = []
    for info in infos:
        if new(info.header_offset, info.compress_type, info.compress_size, info.file_size):
            try:
                start = member_data_offset(buf, info, path)
            except PtoolsError:
                start = None
            sizes = (info.compress_size, info.file_size)
            members.append(Member(info.filename, info.compress_type, *sizes, info.header_offset, start, "zipfile"))
    return members


def scan_all_members(
    path: Path, result: ScanResult, prefix: str, loaded: int, *, torchscript: bool, archive: TorchArchive | None = None
) -> list[str]:
    """Every pickle in every member (central and local entries, duplicates too), added to `result`.

    The member at header offset `loaded` went through the restricted loader already; only what follows its
    first pickle is added from it. Returns the other members that held pickles.
    """
    others: list[str] = []
    limit = size_limit(path)
    try:
        f = open(path, "rb")  # noqa: SIM115
        mm = FileBytes(f.fileno())
    except (OSError, ValueError):
        return others
    try:
        members = every_member(mm, path, archive)
        counts: dict[str, int] = {}
        for m in members:
            if m.origin != "local":
                counts[m.name.lower()] = counts.get(m.name.lower(), 0) + 1
        for m in members:
            lowered = m.name.lower()
            by_name = lowered.endswith(("pkl", ".pickle"))
            if not by_name and not looks_like_pickle_head(member_head(mm, m)):
                continue
            label = m.name[len(prefix) :] if lowered.startswith(prefix.lower()) else m.name
            if label.lower().startswith("data/"):
                label = f"storage {label[5:]}"
            if counts.get(lowered, 0) > 1:
                label += f" (one of {counts[lowered]} members with this name)"
            if m.origin == "local":
                label += " (local header only, not in the central directory)"
            elif m.origin != "central":
                label += f" (as {'torch' if m.origin == 'torch' else 'zipfile'} reads the archive)"
            is_loaded = m.header_offset == loaded and m.origin != "local"
            try:
                data = read_zip_member(mm, m, limit)
            except ZipError as e:
                if is_loaded:
                    continue
                result.notes.append(f"{label}: {e}")
                continue
            if is_loaded:
                # The loaded pickle itself is already in `result`: scan only what follows it.
                first = result.static
                start = len(data) if first is None else first.end if first.end is not None else first.error_at + 1
                streams = scan_region(data, start) if start < len(data) else []
            else:
                streams = scan_region(data)
            if not is_loaded and not by_name and any(s.globals for s in streams):  # no global runs nothing
                result.globals.setdefault(
                    ("<nested pickle>", label),
                    GlobalRef(
                        "<nested pickle>",
                        label,
                        SUSPICIOUS,
                        "a pickle inside tensor data (torch never writes one)",
                        count=1,
                        where=[label],
                        source=label,
                    ),
                )
            if any(s.globals for s in streams):
                add_static_globals(result, streams, label, torchscript)
                if not is_loaded and not lowered.endswith(".debug_pkl") and label not in others:
                    others.append(label)
    finally:
        f.close()
    return others


class TorchZipReader(CheckpointReader):
    """torch.save zip archives; tensors are numpy views of the mapped file."""

    format = "torch-zip"
    code_files: list[str] = []  # TorchScript archives: the code/ files (listed, never run)
    _code_findings: list[dict[str, Any]] = []  # TorchScript archives: file I/O in the code (`script_code`)

    def __init__(self, path: Path, view: ArchiveView, *, torchscript: bool = False) -> None:
        super().__init__(path)
        self._view = view
        self._mm: mmap.mmap | None = None
        self._file: Any = None
        self._offsets: dict[str, int | None] = {}
        self.byteorder = self._small_text("byteorder") or "little"
        if self.byteorder not in ("little", "big"):
            raise PtoolsError(oneline(f"{path}: unknown byteorder {self.byteorder!r} in the archive"))
        self.scan, self._other_pickles = scan_zip_pickles(view, path, torchscript=torchscript)
        for record in getattr(view, "uninitialised", []):
            self.scan.globals.setdefault(
                ("<uninitialised record>", record),
                GlobalRef(
                    "<uninitialised record>",
                    record,
                    SUSPICIOUS if record != "data.pkl" else DANGEROUS,
                    "torch reads this record into a buffer it never fills (directory attribute, no data or a "
                    "damaged stream): whatever was in that memory is unpickled or used as tensor data",
                    count=1,
                    where=[record],
                    source=record,
                ),
            )
        if self.scan.error and not self.scan.unsafe:
            raise PtoolsError(
                oneline(f"{path}: corrupted data.pkl ({self.scan.error})"), hint="download the file again"
            )
        self.contents: PickleContents = build(self.scan)
        try:
            self._check_storages()
        except PtoolsError:
            if not self.scan.unsafe:
                raise
            # A hostile file: still report its globals; the missing data only matters for reads.
        self._nested: list[GlobalRef] = []
        self._scan_nested_pickles()
        self._meta = {
            "reader": "restricted unpickler (no torch), storages memory-mapped",
            "zip_reader": view.how,
            "archive": view.prefix.rstrip("/"),
            "byteorder": self.byteorder,
            "version": self._small_text("version"),
            "format_version": self._small_text(".format_version"),
            "storage_alignment": self._small_text(".storage_alignment"),
            "pickle_protocol": self.scan.protocol,
            "storages": len(self.scan.storages),
        }
        if self._other_pickles:
            self._meta["other_pickles"] = self._other_pickles
        if self.scan.error:
            self._meta["pickle_error"] = self.scan.error

    def _small_text(self, name: str) -> str | None:
        if not self._view.has(name):
            return None
        try:
            return self._view.read(name, self.path, limit=4096).decode("utf-8", "replace").strip()
        except PtoolsError:
            return None

    def _check_storages(self) -> None:
        for key, ref in self.scan.storages.items():
            record = f"data/{key}"
            if not self._view.has(record):
                msg = f"{self.path}: storage {key} is missing from the archive (truncated or corrupted)"
                raise PtoolsError(oneline(msg))
            need = ref.numel * itemsize(ref.dtype)
            have = self._view.size(record)
            if have < need:
                raise PtoolsError(oneline(f"{self.path}: storage {key} holds {have} bytes but its tensors need {need}"))

    # -- reader interface
    def tensors(self) -> list[TensorInfo]:
        return list(self.contents.infos.values())

    def structure(self) -> Any:
        return self.contents.structure

    def metadata(self) -> dict[str, Any]:
        return {k: v for k, v in self._meta.items() if v is not None}

    def pickle_globals(self) -> list[dict[str, Any]]:
        return [g.as_dict() for g in [*self.scan.globals.values(), *self._nested]] + list(self._code_findings)

    def findings(self) -> list[dict[str, Any]]:
        return [g for g in self.pickle_globals() if g["grade"] != "safe"]

    def read(self, key: str) -> np.ndarray:
        raw, dtype = self.read_raw(key)
        return decode(raw, dtype)

    def read_raw(self, key: str) -> tuple[np.ndarray, str]:
        ref = self.contents.refs.get(key)
        if ref is None:
            raise PtoolsError(f"{self.path}: no tensor {key!r}")
        return tensor_from_storage(ref, key, self.path, self._storage_buffer, self.byteorder)

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # numpy views still alive; the map closes when they go
                pass
            self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._view.close()

    # -- storages
    def _storage_buffer(self, storage_key: str) -> tuple[Any, int, int]:
        """(buffer, byte offset of the storage in it, storage bytes)."""
        record = f"data/{storage_key}"
        if not self._view.has(record):
            raise PtoolsError(oneline(f"{self.path}: storage {storage_key} is missing from the archive"))
        size = self._view.size(record)
        if storage_key not in self._offsets:
            self._offsets[storage_key] = self._view.stored_offset(record, self.path)
        offset = self._offsets[storage_key]
        if offset is None:
            # Compressed (someone re-zipped the archive) or never filled by torch: read it as torch would.
            data = self._view.read(record, self.path, limit=1 << 62)
            if len(data) < size:
                msg = f"{self.path}: storage {storage_key} holds {len(data)} of its {size} bytes (torch never fills it)"
                raise PtoolsError(oneline(msg))
            return data, 0, size
        if offset + size > self._file_size():
            raise PtoolsError(oneline(f"{self.path}: storage {storage_key} runs past the end of the file (truncated)"))
        if self._mm is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open for the mapping's lifetime
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mm, offset, size

    def _file_size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def _scan_nested_pickles(self) -> None:
        """`bytes` values in the structure that start like a pickle are scanned too (torch never writes one)."""
        # Storages were scanned with every other member (`scan_all_members`); bytes values are scanned here.
        candidates: list[tuple[str, bytes]] = list(self.contents.embedded_bytes)
        for where, data in candidates:
            if not looks_like_pickle(data[:2]):
                continue
            nested = restricted_load(data, source=f"nested pickle in {where}")
            if not nested.globals:  # plain data (numbers, strings, containers): nothing in it can run
                continue
            self._nested.append(
                GlobalRef(
                    "<nested pickle>",
                    where,
                    SUSPICIOUS,
                    "a pickle hidden inside tensor data or bytes (torch never writes one)",
                    count=1,
                    where=[where],
                    source="data",
                )
            )
            for g in nested.globals.values():
                g.source = f"nested pickle in {where}"
                self._nested.append(g)


def member_data_offset(buf: Any, info: zipfile.ZipInfo, path: Path) -> int:
    """Where a stored member's bytes start: after its local header, whose extra field can differ from the
    central directory's copy, so it is read from the local header itself."""
    start = info.header_offset
    header = bytes(buf[start : start + 30])
    if len(header) < 30 or header[:4] != _ZIP_MAGIC:
        raise PtoolsError(f"{path}: bad local header for {info.filename} (corrupted zip)")
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    offset = start + 30 + name_len + extra_len
    if offset + info.file_size > len(buf):
        raise PtoolsError(f"{path}: {info.filename} runs past the end of the file (truncated)")
    return offset


def tensor_from_storage(
    ref: TensorRef, key: str, path: Path, storage_buffer: Any, byteorder: str = "little"
) -> tuple[np.ndarray, str]:
    """A zero-copy numpy view of one tensor inside its storage bytes (shape, stride, offset applied)."""
    import numpy as np

    dtype = ref.tensor_dtype
    if ref.kind == "numpy" and ref.array is not None:
        try:
            return ref.array.numpy(), ref.array.dtype_name
        except Exception as e:
            raise PtoolsError(f"{path}: {key}: numpy array data not readable ({oneline(e)})") from None
    if ref.storage is None:
        raise PtoolsError(f"{path}: {key} has no data in the file ({ref.kind} tensor)")
    buf, start, size = storage_buffer(ref.storage.key)
    raw_dt = raw_numpy_dtype(dtype, byteorder)
    count = size // raw_dt.itemsize
    storage = np.frombuffer(buf, dtype=raw_dt, count=count, offset=start)
    if len(ref.shape) > 64 or any(not isinstance(d, int) or not 0 <= d <= MAX_DIM for d in ref.shape):
        raise PtoolsError(f"{path}: {key} has an impossible shape {list(ref.shape)[:8]} (corrupted checkpoint)")
    numel = 1
    for d in ref.shape:
        numel *= d
    stride = ref.stride if ref.stride is not None else _contiguous_stride(ref.shape)
    if len(stride) != len(ref.shape) or any(not isinstance(s, int) for s in stride):
        raise PtoolsError(f"{path}: {key} has strides {list(stride)[:8]} for shape {list(ref.shape)[:8]} (corrupted)")
    offset = ref.offset + (ref.storage.view[1] if ref.storage.view else 0)
    if numel * raw_dt.itemsize >= 1 << 62:  # numpy cannot describe it, even as a view repeating one value
        raise PtoolsError(f"{path}: {key} claims {numel} elements, more than any array can hold (corrupted checkpoint)")
    if numel == 0:
        return np.zeros(ref.shape, dtype=raw_dt), dtype
    last = offset + sum((d - 1) * s for d, s in zip(ref.shape, stride, strict=False))
    if offset < 0 or last >= count or any(s < 0 for s in stride):
        raise PtoolsError(f"{path}: {key} points outside its storage (corrupted checkpoint)")
    item = raw_dt.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=ref.shape, strides=tuple(s * item for s in stride), writeable=False
    )
    return view, dtype


def _contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride, acc = [], 1
    for d in reversed(shape):
        stride.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(stride))


def sniff_any_zip(path: Path, head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC)
