"""Safe output files: refuse to overwrite without force, write to a temp file and rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ptools.errors import PtoolsError


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Validate an output path before any work is done, so a long job does not fail at the end."""
    path = Path(path)
    if path.exists() and not force:
        raise PtoolsError(f"{path}: already exists", hint="pass --force to overwrite it")
    if path.is_dir():
        raise PtoolsError(f"{path}: is a directory, expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise PtoolsError(f"{path}: folder {parent} does not exist", hint="create it first")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp path in the destination's folder; rename it over `path` only if the block succeeds.

    The temp file lives in the same folder so the final `os.replace` is atomic on POSIX and Windows;
    on any exception (including KeyboardInterrupt) it is removed and `path` is left untouched.
    """
    path = check_output_path(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, force: bool = False) -> Path:
    with atomic_path(path, force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_torch_save(obj: object, path: str | os.PathLike, force: bool = False) -> Path:
    """`torch.save` through `atomic_path`.

    Saved through a file object, so the zip's inner folder is named "archive" rather than after the
    temp file (torch names it after the file's stem otherwise).
    """
    import torch

    with atomic_path(path, force) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)
    return Path(path)
