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


def test_missing_parent_folder_is_a_clear_error(tmp_path):
    with pytest.raises(PtoolsError, match="does not exist"):
        atomic_write_bytes(tmp_path / "no" / "out.pt", b"x")


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
