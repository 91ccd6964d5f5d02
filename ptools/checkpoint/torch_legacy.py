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
from ptools.checkpoint.pickle_structure import PickleContents, build
from ptools.checkpoint.restricted_pickle import ScanResult, restricted_load
from ptools.checkpoint.torch_zip import tensor_from_storage
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_MAGIC_BYTES = MAGIC_NUMBER.to_bytes(10, "little")
_PROTO0_GLOBAL = re.compile(rb"^c[A-Za-z_][\w.]*\n[A-Za-z_][\w.]*\n")


def sniff_legacy(path: Path, head: bytes) -> bool:
    # pickle.dumps(MAGIC_NUMBER, protocol>=2): PROTO n, LONG1 10 bytes, the number, STOP.
    return len(head) >= 15 and head[0] == 0x80 and head[2:4] == b"\x8a\x0a" and head[4:14] == _MAGIC_BYTES


def sniff_pickle(path: Path, head: bytes) -> bool:
    """A bare pickle (protocol 2-5, or a protocol-0 stream opening with a GLOBAL, as hand-made exploits do)."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    return bool(_PROTO0_GLOBAL.match(head))


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
        try:
            f = open(path, "rb")  # noqa: SIM115
        except OSError as e:
            raise PtoolsError(f"{path}: cannot read ({e.strerror})") from None
        with f:
            # Files up to 256 MiB are read whole: bytes let the unpickler screen damaged streams first.
            blob: Any = f.read() if path.stat().st_size <= 256 << 20 else None
            pos = 0
            steps = ("magic number", "protocol version", "sys_info", "object", "storage keys")
            values: list[Any] = []
            for step in steps:
                part = restricted_load(
                    blob if blob is not None else f,
                    offset=pos,
                    source=f"legacy {step}",
                    legacy_ids=step == "object",
                    result=ScanResult(),
                )
                pos = part.end or 0
                self.scan.merge(part)
                if step == "object":
                    self.scan.obj, self.scan.storages, self.scan.error = part.obj, part.storages, part.error
                if part.error:
                    if not self.scan.unsafe:
                        raise PtoolsError(
                            f"{path}: corrupted legacy torch file ({step}: {part.error})",
                            hint="download the file again",
                        )
                    self.scan.error = f"{step}: {part.error}"
                    break
                values.append(part.obj)
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
        from ptools.checkpoint.torch_objects import tensor_to_numpy

        return tensor_to_numpy(t)

    def _torch_load(self) -> dict[str, Any]:
        import warnings

        import torch

        from ptools.checkpoint.torch_objects import flatten_torch

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
        try:
            with open(path, "rb") as f:
                # Small files go in as bytes, which lets the unpickler screen damaged streams first.
                small = path.stat().st_size <= 256 << 20
                self.scan = restricted_load(f.read() if small else f, source="pickle")
        except OSError as e:
            raise PtoolsError(f"{path}: cannot read ({e.strerror})") from None
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
