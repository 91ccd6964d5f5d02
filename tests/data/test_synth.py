"""The synthetic set: layout, exact masks, determinism, safe replacement."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from ptools.data.synth import MARKER, make_sample, synthesize
from ptools.errors import PtoolsError


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.png")}


def test_layout_and_exact_masks(tmp_path):
    root = synthesize(tmp_path / "set", n=8, size=32, seed=1)
    assert (root / MARKER).is_file()
    labels = ["scratch", "crack", "spot", "stain"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(labels)
    for label in labels:
        defects = sorted((root / label / "defect").iterdir())
        assert len(defects) == 2
        for d in defects:
            normal = np.asarray(Image.open(root / label / "normal" / d.name))
            defect = np.asarray(Image.open(d))
            mask = np.asarray(Image.open(root / label / "defect_segmentation" / d.name))
            assert normal.shape == defect.shape == (32, 32, 3) and mask.shape == (32, 32)
            assert set(np.unique(mask).tolist()) == {0, 255}
            on = mask > 0
            # The normal is the same surface: identical outside the mask, changed inside it.
            assert np.array_equal(normal[~on], defect[~on])
            assert (np.abs(normal[on].astype(int) - defect[on]).max(axis=-1) > 0).mean() > 0.9


def test_deterministic_for_a_seed_and_worker_count(tmp_path):
    a = _digest(synthesize(tmp_path / "a", n=6, size=24, seed=7))
    b = _digest(synthesize(tmp_path / "b", n=6, size=24, seed=7, workers=2))
    c = _digest(synthesize(tmp_path / "c", n=6, size=24, seed=8))
    assert a == b
    assert a != c and a.keys() == c.keys()


def test_every_kind_draws_a_mask():
    for label in ("scratch", "crack", "spot", "stain", "hole"):
        for i in range(3):
            normal, defect, mask = make_sample(0, i, 48, label)
            assert mask.sum() >= 4 and not mask.all()


def test_refuses_to_overwrite_and_replaces_only_its_own(tmp_path):
    root = synthesize(tmp_path / "set", n=2, size=16, labels=["crack"])
    with pytest.raises(PtoolsError, match="already exists"):
        synthesize(root, n=2, size=16)
    synthesize(root, n=3, size=16, labels=["spot"], force=True)
    assert sorted(p.name for p in root.iterdir()) == sorted([MARKER, "spot"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "photo.jpg").write_bytes(b"precious")
    with pytest.raises(PtoolsError, match="refusing"):
        synthesize(mine, n=2, size=16, force=True)
    assert (mine / "photo.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "set"]  # no temp folders left


def test_bad_arguments(tmp_path):
    with pytest.raises(PtoolsError, match="unknown defect kind"):
        synthesize(tmp_path / "x", n=2, labels=["scratch", "banana"])
    with pytest.raises(PtoolsError, match="--n"):
        synthesize(tmp_path / "x", n=0)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PtoolsError, match="is a file, not a folder"):
        synthesize(tmp_path / "afile" / "x", n=1)


def test_missing_parents_are_created_with_the_umask_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        root = synthesize(tmp_path / "data" / "synth", n=2, size=16, labels=["crack"])
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755  # mkdtemp alone would leave 0700
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o755
    image = next((root / "crack" / "defect").iterdir())
    assert stat.S_IMODE(image.stat().st_mode) == 0o644
