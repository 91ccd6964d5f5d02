"""Atomic writes: nothing the user had is lost, no partial file is left behind."""

from __future__ import annotations

import pytest

from ptools.errors import PtoolsError
from ptools.files import atomic_path, atomic_write_bytes


def test_refuses_to_overwrite_without_force(tmp_path):
    target = tmp_path / "out.pt"
    target.write_bytes(b"precious")
    with pytest.raises(PtoolsError, match="already exists"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"precious"


def test_force_replaces(tmp_path):
    target = tmp_path / "out.pt"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new", force=True)
    assert target.read_bytes() == b"new"


def test_failure_leaves_neither_partial_file_nor_temp(tmp_path):
    target = tmp_path / "out.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target, force=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]


def test_missing_parent_folders_are_created(tmp_path):
    target = atomic_write_bytes(tmp_path / "no" / "such" / "out.pt", b"x")
    assert target.read_bytes() == b"x"


def test_a_file_in_place_of_the_parent_is_a_clear_error(tmp_path):
    (tmp_path / "blocker").write_bytes(b"")
    with pytest.raises(PtoolsError, match="blocker is a file, not a folder"):
        atomic_write_bytes(tmp_path / "blocker" / "sub" / "out.pt", b"x")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_get_the_permissions_open_would_give(tmp_path, umask):
    """mkstemp makes 0600 files: renamed into place they would be unreadable to the group."""
    import os
    import stat

    from ptools.files import atomic_torch_save

    old = os.umask(umask)
    try:
        plain = tmp_path / "plain"
        with open(plain, "w"):
            pass
        written = atomic_write_bytes(tmp_path / "out.bin", b"x")
        saved = atomic_torch_save({}, tmp_path / "new" / "model.pt")
    finally:
        os.umask(old)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~umask
    assert stat.S_IMODE(written.stat().st_mode) == expected
    assert stat.S_IMODE(saved.stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o777 & ~umask


def test_atomic_torch_save_names_the_archive_after_nothing_temporary(tmp_path):
    import zipfile

    import torch

    from ptools.files import atomic_torch_save

    target = atomic_torch_save({"w": torch.ones(2)}, tmp_path / "model.pt")
    names = zipfile.ZipFile(target).namelist()
    assert all(n.startswith("archive/") for n in names), names
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    with pytest.raises(PtoolsError, match="already exists"):
        atomic_torch_save({}, target)
