"""Legacy (pre-1.6, non-zip) torch files and bare pickles: scanned with the restricted unpickler first.

A legacy file is a sequence of pickles: magic number, protocol version, sys_info, the object (tensors as
persistent ids), the list of storage keys, then the raw storages. The structure and the security report
come from the restricted unpickler; tensor data is read through `torch.load(weights_only=True)` (legacy
files cannot be memory-mapped by torch), and only when the scan found nothing unsafe.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.checkpoint._text import oneline
from ptools.checkpoint.base import CheckpointReader, TensorInfo
from ptools.checkpoint.dtypes import itemsize
from ptools.checkpoint.pickle.restricted import (
    SUSPICIOUS,
    GlobalRef,
    ScanResult,
    add_static_globals,
    restricted_load,
)
from ptools.checkpoint.pickle.static_scan import looks_like_pickle_head, scan_region, scan_stream
from ptools.checkpoint.pickle.structure import PickleContents, build
from ptools.checkpoint.torch.zip import tensor_from_storage
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_MAGIC_BYTES = MAGIC_NUMBER.to_bytes(10, "little")
_PROTO0_GLOBAL = re.compile(rb"^c[A-Za-z_][\w.]*\n[A-Za-z_][\w.]*\n")


def sniff_legacy(path: Path, head: bytes) -> bool:
    """A first pickle whose value is torch's magic number, however it is spelled (LONG1, LONG4, text LONG...)."""
    # The usual spelling, pickle.dumps(MAGIC_NUMBER, protocol=2): PROTO n, LONG1 10 bytes, the number, STOP.
    if len(head) >= 15 and head[0] == 0x80 and head[2:4] == b"\x8a\x0a" and head[4:14] == _MAGIC_BYTES:
        return True
    first = scan_stream(head, 0)
    if first.end is None or first.globals or first.opcodes > 8:
        return False
    return restricted_load(head[: first.end], static=first).obj == MAGIC_NUMBER


def sniff_pickle(path: Path, head: bytes) -> bool:
    """Any pickle, whatever its protocol and first opcode: the head parses to STOP, names a global, or parses
    cleanly to the end of the 4 KiB it came in (a long pickle). Text and other formats break early."""
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return True
    if _PROTO0_GLOBAL.match(head):
        return True
    probe = scan_stream(head, 0)
    if _first_global_unimportable(probe):
        # Text such as `import os` or `class Net(...)` reads as INST/GLOBAL with a module name no import
        # can find: a loader stops there, before anything ran. Source files and notes are not pickles.
        return False
    if probe.end is not None or probe.globals:
        return probe.opcodes > 1 or bool(probe.globals)
    if len(head) < 4096 or probe.anomalies or not (probe.error or "").startswith("truncated stream"):
        return False
    if probe.error_at >= len(head) - 64:
        return True
    # An opcode whose argument runs past the 4 KiB window (a first pickle that opens with a long string):
    # what the whole stream is decides, not the window.
    blob = _map(path)
    try:
        whole = scan_stream(blob, 0)
    finally:
        if hasattr(blob, "close"):
            blob.close()
    return whole.anomalies == 0 and (whole.end is not None or bool(whole.globals)) and whole.opcodes > 1


def _first_global_unimportable(probe: Any) -> bool:
    """Whether the first global the stream names (the first thing a loader would import) cannot be imported."""
    if not probe.offsets:
        return False
    (module, name), _ = min(probe.offsets.items(), key=lambda kv: kv[1][0])
    if module.startswith("<"):
        return False  # computed or from the extension registry: not a spelled-out name
    return not (all(p.isidentifier() for p in module.split(".")) and all(p.isidentifier() for p in name.split(".")))


_NESTED_REASON = "a pickle inside tensor data (torch never writes one)"


def _map(path: Path) -> Any:
    """The file's bytes, memory-mapped (read whole when it cannot be mapped)."""
    import mmap

    try:
        with open(path, "rb") as f:
            try:
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError):
                return f.read()
    except OSError as e:
        raise PtoolsError(f"{path}: cannot read ({e.strerror})") from None


class _PickleFileReader(CheckpointReader):
    """Common parts: the scan, the structure built from it, findings."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.scan = ScanResult()
        self.contents = PickleContents()
        self._meta: dict[str, Any] = {}

    def tensors(self) -> list[TensorInfo]:
        return list(self.contents.infos.values())

    def structure(self) -> Any:
        return self.contents.structure

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def pickle_globals(self) -> list[dict[str, Any]]:
        return [g.as_dict() for g in self.scan.globals.values()]

    def findings(self) -> list[dict[str, Any]]:
        return [g for g in self.pickle_globals() if g["grade"] != "safe"]


class TorchLegacyReader(_PickleFileReader):
    format = "torch-legacy"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._loaded: dict[str, Any] | None = None
        blob = _map(path)
        pos = 0
        steps = ("magic number", "protocol version", "sys_info", "object", "storage keys")
        values: list[Any] = []
        broken = None
        for step in steps:
            static = scan_stream(blob, pos)
            part = restricted_load(
                blob, offset=pos, static=static, source=f"legacy {step}", legacy_ids=step == "object"
            )
            self.scan.merge(part)
            if step == "object":
                self.scan.obj, self.scan.storages = part.obj, part.storages
            if part.error and broken is None:
                broken = f"{step}: {part.error}"
            values.append(part.obj)
            if static.end is None:
                # torch.load stops here; a lenient reader might not: the rest is swept for globals.
                streams = scan_region(blob, static.error_at + 1)
                add_static_globals(self.scan, streams, f"legacy file after the {step}", False)
                break
            # A stand-in that raised stops the loader, not the scan: the next pickle starts at static.end.
            pos = static.end
        else:
            keys = values[4] if isinstance(values[4], list) else []
            self._scan_storages(blob, pos, keys)
        if hasattr(blob, "close"):
            blob.close()
        if broken:
            self.scan.error = broken
            if not self.scan.unsafe:
                raise PtoolsError(f"{path}: corrupted legacy torch file ({broken})", hint="download the file again")
        sys_info = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
        self.contents = build(self.scan)
        self._meta = {
            "reader": "restricted unpickler (structure, no torch); tensor data via torch.load(weights_only=True)",
            "protocol_version": values[1] if len(values) > 1 else None,
            "little_endian": sys_info.get("little_endian"),
            "storages": len(self.scan.storages),
        }
        if self.scan.error:
            self._meta["pickle_error"] = self.scan.error

    def _scan_storages(self, blob: Any, pos: int, keys: list[Any]) -> None:
        """Raw storages follow the pickles (8-byte element count, then the bytes): any that holds a pickle
        is scanned, and whatever follows the last one is scanned as further pickles."""
        end = len(blob)
        for key in keys:
            ref = self.scan.storages.get(str(key))
            if ref is None or pos + 8 > end:
                return
            numel = int.from_bytes(blob[pos : pos + 8], "little")
            size = numel * itemsize(ref.dtype)
            start, pos = pos + 8, pos + 8 + size
            if pos > end:
                return
            if looks_like_pickle_head(bytes(blob[start : start + 64])):
                streams = scan_region(blob, start, pos)
                if any(s.globals for s in streams):
                    where = f"storage {key}"
                    self.scan.globals.setdefault(
                        ("<nested pickle>", where),
                        GlobalRef("<nested pickle>", where, SUSPICIOUS, _NESTED_REASON, 1, [where], source=where),
                    )
                    add_static_globals(self.scan, streams, f"nested pickle in {where}", False)
        if pos < end:
            add_static_globals(self.scan, scan_region(blob, pos), "bytes after the storages", False)

    def read(self, key: str) -> np.ndarray:
        if key not in self.contents.infos:
            raise PtoolsError(f"{self.path}: no tensor {key!r}")
        if self.findings():
            raise PtoolsError(
                f"{self.path}: not loading tensor data: the file references globals outside the allow-list",
                hint="see `ptools inspect --scan`",
                exit_code=1,
            )
        ref = self.contents.refs[key]
        if ref.kind == "numpy":
            return tensor_from_storage(ref, key, self.path, None)[0]
        if self._loaded is None:
            self._loaded = self._torch_load()
        t = self._loaded.get(key)
        if t is None:
            raise PtoolsError(f"{self.path}: torch.load did not produce tensor {key!r}")
        from ptools.checkpoint.torch.objects import tensor_to_numpy

        return tensor_to_numpy(t)

    def _torch_load(self) -> dict[str, Any]:
        import warnings

        import torch

        from ptools.checkpoint.torch.objects import flatten_torch

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's protocol notices; errors still raise
                obj = torch.load(str(self.path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise PtoolsError(f"{self.path}: torch.load(weights_only=True) failed ({oneline(e)})") from None
        return flatten_torch(obj)[2]


class PickleReader(_PickleFileReader):
    """A bare pickle file (not a torch checkpoint format): summarised and scanned, never loaded."""

    format = "pickle"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        blob = _map(path)
        # Every pickle in the file (one after another, trailing bytes after STOP), then the first one loaded.
        streams = scan_region(blob, 0)
        self.scan = restricted_load(blob, source="pickle", static=streams[0])
        if len(streams) > 1:
            add_static_globals(self.scan, streams[1:], "a pickle after the first one", False)
        if hasattr(blob, "close"):
            blob.close()
        if self.scan.error and not self.scan.unsafe:
            raise PtoolsError(f"{path}: corrupted or truncated pickle ({self.scan.error})")
        self.contents = build(self.scan)
        self._meta = {"reader": "restricted unpickler (no torch); a bare pickle, not a torch.save file"}
        if self.scan.error:
            self._meta["pickle_error"] = self.scan.error

    def read(self, key: str) -> np.ndarray:
        ref = self.contents.refs.get(key)
        if ref is None:
            raise PtoolsError(f"{self.path}: no tensor {key!r}")
        if ref.kind != "numpy":
            raise PtoolsError(f"{self.path}: {key}: a bare pickle holds no tensor data")
        return tensor_from_storage(ref, key, self.path, None)[0]


_TAR_MEMBERS = {"pickle", "storages", "tensors", "sys_info"}


def sniff_tar(path: Path, head: bytes) -> bool:
    """torch's oldest format: a tar of `sys_info`, `storages`, `tensors` and `pickle` (all read by pickle.load)."""
    if len(head) < 512 or head[257:262] != b"ustar":
        return False
    name = head[:100].split(b"\0", 1)[0].decode("latin-1")
    if name in _TAR_MEMBERS:
        return True
    import tarfile

    try:
        with tarfile.open(path, "r:") as tar:
            return any(m.name in _TAR_MEMBERS for m in tar.getmembers()[:64])
    except Exception:
        return False


class TorchTarReader(_PickleFileReader):
    """The pre-0.4 tar format: every member's pickles are scanned; `pickle` gives the structure; no data is read."""

    format = "torch-tar"

    def __init__(self, path: Path) -> None:
        import tarfile

        from ptools.checkpoint.torch.zip import size_limit

        super().__init__(path)
        limit = size_limit(path)
        members: list[str] = []
        try:
            with tarfile.open(path, "r:") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    members.append(m.name)
                    if m.size > limit:
                        self.scan.notes.append(f"{m.name}: {m.size} bytes, not scanned")
                        continue
                    f = tar.extractfile(m)
                    data = f.read(m.size) if f is not None else b""
                    streams = scan_region(data, 0)
                    if m.name == "pickle" and streams:
                        part = restricted_load(data, static=streams[0], source="tar member pickle")
                        self.scan.obj, self.scan.error = part.obj, part.error
                        self.scan.merge(part)
                        streams = streams[1:]
                    add_static_globals(self.scan, streams, f"tar member {m.name}", False)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise PtoolsError(f"{path}: truncated or corrupted tar archive ({oneline(e)})") from None
        if self.scan.error and not self.scan.unsafe:
            raise PtoolsError(f"{path}: corrupted pickle in the tar archive ({self.scan.error})")
        self.contents = build(self.scan)
        self.contents.infos.clear()  # tensors are persistent ids into the `tensors` member: not read
        self._meta = {
            "reader": "restricted unpickler on every tar member (torch's pre-0.4 tar format; tensor data not read)",
            "members": ", ".join(members[:8]),
        }
        if self.scan.error:
            self._meta["pickle_error"] = self.scan.error

    def read(self, key: str) -> np.ndarray:
        raise PtoolsError(f"{self.path}: tensor data of torch's old tar format is not read")
