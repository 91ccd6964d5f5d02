"""The reader interface every checkpoint format implements, and detection of a file's format by content.

Readers must import without torch: they parse bytes (zip, pickle opcodes, JSON headers, SSTables, HDF5)
and return numpy arrays only when asked for data.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np


# No real tensor has a dimension this large (a float32 vector of 2**40 is 4 TiB); a bigger one, even in a
# tensor with a 0 elsewhere in its shape, is a damaged or crafted header (numpy cannot even make it).
MAX_DIM = 1 << 40


@dataclass(frozen=True)
class TensorInfo:
    """What the file says about one tensor, without reading its data."""

    key: str  # flat key, '.'-joined path inside the checkpoint ("model.encoder.0.weight")
    dtype: str  # numpy-style name: float32, float16, bfloat16, int64, bool, string, ...
    shape: tuple[int, ...]
    nbytes: int  # bytes of this tensor's view (numel * itemsize); 0 for strings of unknown size
    storage: str | None = None  # storage identity: equal values mean shared (tied) memory
    storage_offset: int = 0  # element offset into that storage
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # format-specific details

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class CheckpointReader(abc.ABC):
    """One open checkpoint. Construct through `open_checkpoint`; use as a context manager."""

    format: str = "unknown"  # short name shown to users: "torch-zip", "safetensors", "tf-bundle", ...

    def __init__(self, path: Path) -> None:
        self.path = path
        self.views: list[Any] = []  # other loaders' readings of the same bytes (`loaders.other_views`)

    @abc.abstractmethod
    def tensors(self) -> list[TensorInfo]:
        """Every tensor, in file order."""

    def structure(self) -> Any:
        """The nested object the file holds (dicts/lists with TensorInfo leaves and plain values).

        Flat formats return {key: TensorInfo}.
        """
        return {t.key: t for t in self.tensors()}

    def metadata(self) -> dict[str, Any]:
        """Format-level facts worth showing (safetensors __metadata__, torch byteorder, TF version...)."""
        return {}

    def findings(self) -> list[dict[str, Any]]:
        """Security findings (unsafe globals and where they are); empty for formats that cannot run code."""
        return []

    def pickle_globals(self) -> list[dict[str, Any]]:
        """Every global a pickle in the file names, graded (safe/suspicious/dangerous); [] without pickles."""
        return []

    @abc.abstractmethod
    def read(self, key: str) -> np.ndarray:
        """The data of one tensor as a numpy array (memory-mapped where the format allows)."""

    def read_raw(self, key: str) -> tuple[np.ndarray, str]:
        """The stored values unconverted, and the dtype name to decode them with (`checkpoint.dtypes.decode`).

        Lets statistics convert bfloat16/float8 chunk by chunk instead of copying a whole tensor; the
        default is `read(key)`, already decoded.
        """
        arr = self.read(key)
        return arr, str(arr.dtype)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors())


Sniffer = Callable[[Path, bytes], bool]
Opener = Callable[[Path], CheckpointReader]

# (name, sniffer, opener), tried in order. A sniffer sees the path and the first 4 KiB and must not raise.
_FORMATS: list[tuple[str, Sniffer, Opener]] = []
_builtin_loaded = False


def register_format(name: str, sniffer: Sniffer, opener: Opener) -> None:
    """Add a format. Readers register themselves from `ptools.checkpoint.loaders`."""
    _FORMATS.append((name, sniffer, opener))


def _load_builtin_formats() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
        from ptools.checkpoint.loaders import register_builtin

        register_builtin()


def diagnose_not_a_checkpoint(path: Path, head: bytes) -> str:
    """A specific reason for files that are clearly not checkpoints at all."""
    if not head:
        return "empty file (0 bytes)"
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return "a Git LFS pointer, not the checkpoint itself (run `git lfs pull`)"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<?xml")):
        return "an HTML/XML page, not a checkpoint (the download probably returned an error page)"
    what = "not a PyTorch, safetensors, numpy, TensorFlow or Keras checkpoint"
    if _is_text(head):
        kind = "Python source" if path.suffix == ".py" or _PY_START.match(head) else "a text file"
        return f"unrecognised format ({kind}, {what})"
    return f"unrecognised format ({what})"


# First tokens of Python source: `model.py` given where `model.pt` was meant is an easy slip.
_PY_START = re.compile(rb"\s*(#!|\"\"\"|import |from \S+ import |class |def |@|if __name__)")


def _is_text(head: bytes) -> bool:
    """UTF-8 without control bytes other than tabs and line ends."""
    for cut in (0, 1, 2, 3):  # the 4 KiB window may end inside a character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    return all(c >= " " or c in "\t\n\r\f" for c in text)


def open_checkpoint(path: str | Path) -> CheckpointReader:
    """Detect the format by content (never by extension) and open the file."""
    _load_builtin_formats()
    path = Path(path)
    if not path.exists() and not _has_sibling_bundle(path):
        raise PtoolsError(f"{path}: no such file")
    head = b""
    if path.exists() and not path.is_file() and not path.is_dir():
        # Opening a FIFO for reading blocks until a writer comes; a device may never end.
        raise PtoolsError(f"{path}: not a regular file (a FIFO, socket or device), not a checkpoint")
    if path.is_file():
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError as e:
            raise PtoolsError(f"{path}: cannot read ({e.strerror})") from None
    for _name, sniffer, opener in _FORMATS:
        try:
            claimed = sniffer(path, head)
        except Exception:  # a sniffer tripping over damaged bytes means "not mine", not a crash
            claimed = False
        if claimed:
            try:
                reader = opener(path)
            except PtoolsError as e:
                return _flagged_or(path, e)
            if path.is_file():
                from ptools.checkpoint.loaders import other_views

                reader.views = other_views(path, reader.format)
            return reader
    if path.is_dir():
        raise PtoolsError(f"{path}: a directory without a checkpoint this tool can read (TF bundle, SavedModel)")
    return _flagged_or(path, PtoolsError(f"{path}: {diagnose_not_a_checkpoint(path, head)}"))


class UnreadableReader(CheckpointReader):
    """A file no reader could open, but that a common loader would still run code from: reported, not passed."""

    format = "unreadable"

    def __init__(self, path: Path, error: PtoolsError, views: list[Any]) -> None:
        super().__init__(path)
        self.error = error
        self.views = views

    def tensors(self) -> list[TensorInfo]:
        return []

    def metadata(self) -> dict[str, Any]:
        return {"reader": "none could open it", "error": self.error.message}

    def read(self, key: str) -> np.ndarray:
        raise PtoolsError(f"{self.path}: {self.error.message}")


def _flagged_or(path: Path, error: PtoolsError) -> CheckpointReader:
    """Raises the error, unless another loader of these bytes would reach an unsafe global: then a reader
    carrying the error and those findings (past what the readers understand, a file is flagged, not passed)."""
    if path.is_file():
        from ptools.checkpoint.loaders import other_views

        views = other_views(path, "")
        if any(g["grade"] != "safe" for v in views for g in v.globals):
            return UnreadableReader(path, error, views)
    raise error


def _has_sibling_bundle(path: Path) -> bool:
    # TF checkpoints are named by a prefix with no file of that exact name (model.ckpt -> model.ckpt.index).
    return Path(str(path) + ".index").exists()
