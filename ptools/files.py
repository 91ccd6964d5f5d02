"""Safe output files: refuse to overwrite without force, write to a temp file and rename.

Outputs get the permissions a plain `open(path, "w")` would give (0666 or 0777 minus the umask): the
temp files and folders of `tempfile` are private (0600/0700), and renaming one into place would keep that.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ptools.errors import PtoolsError


def current_umask() -> int:
    """The process umask. Linux shows it in /proc; elsewhere reading it means setting it and back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """What `open(path, "w")` creates a file with: 0666 minus the umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """What `mkdir` creates a folder with: 0777 minus the umask."""
    return 0o777 & ~current_umask()


def make_public(path: str | os.PathLike, folder: bool = False) -> None:
    """Give a `tempfile` file or folder the permissions a plain open/mkdir would have given it."""
    os.chmod(path, folder_mode() if folder else file_mode())


def check_parent(path: Path) -> None:
    """Fail early when a missing parent folder could not be created (a file stands in the way)."""
    parent = path.parent if str(path.parent) else Path(".")
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise PtoolsError(f"{path}: {ancestor} is a file, not a folder")


def ensure_parent(path: str | os.PathLike) -> Path:
    """Create the missing parent folders of an output (as `mkdir -p` does); return the parent."""
    path = Path(path)
    check_parent(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PtoolsError(f"{path}: cannot create folder {parent} ({e.strerror})") from None
    return parent


def not_writable(path: Path, e: OSError) -> PtoolsError:
    """The one-line error for an output that cannot be written: the user's path, never a temp file's name."""
    reason = e.strerror or type(e).__name__
    return PtoolsError(f"{path}: cannot write here ({reason})", hint="choose a folder you can write to")


def probe_writable(path: str | os.PathLike, beside: bool = False) -> Path:
    """Fail now, naming `path`, when its folder (or the nearest existing one above it) takes no new file.

    `beside`: probe the parent even when `path` is a folder (it is to be replaced by one built beside it).
    A real probe (a temp file made and removed), not `os.access`: root passes access() on read-only mounts.
    """
    path = Path(path)
    check_parent(path)
    folder = path if path.is_dir() and not beside else path.parent if str(path.parent) else Path(".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ptools-probe.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise not_writable(path, e) from None
    os.close(fd)
    os.unlink(tmp)
    return path


def output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create (as `mkdir -p`) a folder that outputs go into, and check that it takes files; one line if not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PtoolsError(f"{flag} {path}: exists and is not a folder", hint="give a folder for the outputs")
    check_parent(path / "x")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise not_writable(path, e) from None
    return probe_writable(path)


def temp_folder_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A hidden temp folder in `path`'s parent (for a folder built aside and renamed into place)."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent))
    except OSError as e:
        raise not_writable(path, e) from None


def claim_folder(folder: Path, force: bool, marker: str, made_by: str, name: str | None = None) -> bool:
    """Whether `folder` may take a new output folder: missing, empty, or (with `force`) one that `made_by`
    wrote, as the `marker` file it leaves in every folder it writes shows. True when an earlier output
    is there to be replaced. `--force` never replaces a folder without the marker: it may be someone's data.
    """
    name = name or str(folder)
    if not folder.exists():
        check_parent(folder)
        _probe_named(folder, name)
        return False
    if not folder.is_dir():
        raise PtoolsError(f"{name}: exists and is not a folder")
    if not any(folder.iterdir()):
        _probe_named(folder, name)
        return False
    if not force:
        raise PtoolsError(f"{name}: already exists and is not empty", hint="pass --force to replace it")
    if not (folder / marker).is_file():
        raise PtoolsError(
            f"{name}: not written by `{made_by}` (no {marker}); refusing to replace it",
            hint="choose another folder or remove it yourself",
        )
    _probe_named(folder, name)
    return True


def _probe_named(folder: Path, name: str) -> None:
    """The new folder is built beside `folder` and renamed into place: its parent must take files."""
    try:
        probe_writable(folder, beside=True)
    except PtoolsError as e:
        raise PtoolsError(e.message.replace(str(folder), name, 1), hint=e.hint) from None


def check_output_path(path: str | os.PathLike, force: bool = False, probe: bool = True) -> Path:
    """Validate an output path before any work is done, so a long job does not fail at the end.

    A missing parent folder is fine: `atomic_path` creates it when the output is written. `probe`: check
    that the folder (or the nearest existing one above it) takes new files.
    """
    path = Path(path)
    if path.exists() and not force:
        raise PtoolsError(f"{path}: already exists", hint="pass --force to overwrite it")
    if path.is_dir():
        raise PtoolsError(f"{path}: is a directory, expected a file path")
    check_parent(path)
    if probe:
        probe_writable(path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp path in the destination's folder; rename it over `path` only if the block succeeds.

    The temp file lives in the same folder so the final `os.replace` is atomic on POSIX and Windows;
    on any exception (including KeyboardInterrupt) it is removed and `path` is left untouched. Missing
    parent folders are created; the file gets the umask's permissions, not mkstemp's private 0600.
    """
    path = check_output_path(path, force, probe=False)  # the temp file below is the probe
    ensure_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise not_writable(path, e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        make_public(tmp_path)
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(e, OSError) and e.filename in (str(tmp_path), tmp_path):
            raise not_writable(path, e) from None  # disk full, quota: name the output, not the temp file
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
