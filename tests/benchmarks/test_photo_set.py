"""benchmarks/photo_set.py without scikit-image: stand-in photos whose pixels tell where they came from."""

from __future__ import annotations

import numpy as np
import photo_set
import pytest
from PIL import Image

from ptools.data import check_dataset


def _photos(seed: int = 5) -> dict[str, np.ndarray]:
    """Two 512 x 512 textured stand-ins: random texture, and smooth stripes (a brick-like grey cast)."""
    rng = np.random.default_rng(seed)
    noise = np.clip(0.5 + 0.2 * rng.standard_normal((512, 512, 1)), 0, 1) * np.array([0.9, 0.8, 0.7])
    yy, xx = np.mgrid[0:512, 0:512] / 512
    stripes = (0.5 + 0.3 * np.sin(40 * yy + 3 * xx))[..., None] * np.array([1.0, 0.75, 0.6])
    return {"noise": noise.astype(np.float32), "stripes": stripes.astype(np.float32)}


def test_the_heldout_split_comes_from_columns_the_train_and_judge_splits_never_read():
    # Left of the split line the photo is dark, right of it bright: a crop tells its columns apart.
    x0 = photo_set.REGIONS["heldout"][0]
    assert photo_set.REGIONS["train"][1] <= x0 and photo_set.REGIONS["judge"][1] <= x0
    photo = np.full((512, 512, 3), 0.2, np.float32)
    photo[:, x0:] = 0.8
    photos = {"flat": photo}
    for split, expect in (("train", 0.2), ("judge", 0.2), ("heldout", 0.8)):
        for i in range(25):
            normal, _, _, _ = photo_set.photo_sample(11, split, i, 32, "spot", photos)
            # gain jitter is at most ~13%; the two sides differ 4x
            assert abs(normal.mean() / 255 - expect) < 0.12, (split, i, normal.mean())


def test_crop_boxes_stay_inside_their_region():
    rng = np.random.default_rng(123)
    for split, (x0, x1) in photo_set.REGIONS.items():
        for _ in range(500):
            top, left, side = photo_set.crop_box(rng, (512, 512), split)
            assert x0 <= left and left + side <= x1 and 0 <= top and top + side <= 512
            assert photo_set.CROP_RANGE[0] <= side <= photo_set.CROP_RANGE[1]


@pytest.mark.parametrize("label", photo_set.LABELS)
def test_every_defect_changes_its_mask_only_and_visibly(label):
    photos = _photos()
    changed_inside = []
    for i in range(12):
        normal, defect, mask, _ = photo_set.photo_sample(3, "train", i, 64, label, photos)
        assert mask.dtype == bool and 4 <= mask.sum() < mask.size
        assert np.array_equal(normal[~mask], defect[~mask])  # outside the mask: bit for bit
        diff = np.abs(defect.astype(int) - normal.astype(int)).max(axis=2)
        changed_inside.append((diff[mask] > 6).mean())
    assert np.mean(changed_inside) > 0.5, changed_inside


def test_cracks_darken_scratches_lighten_and_stains_keep_the_texture():
    photos = _photos()
    crack = [photo_set.photo_sample(4, "train", i, 64, "crack", photos) for i in range(10)]
    scratch = [photo_set.photo_sample(4, "train", i, 64, "scratch", photos) for i in range(10)]
    assert all(d[m].mean() < n[m].mean() for n, d, m, _ in crack)
    assert all(d[m].mean() > n[m].mean() for n, d, m, _ in scratch)
    for i in range(10):
        normal, defect, mask, _ = photo_set.photo_sample(4, "train", i, 64, "stain", photos)
        a, b = normal[mask].astype(float).ravel(), defect[mask].astype(float).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.6  # a multiplicative tint: the surface shows through


def test_build_writes_a_seed_layout_set_that_dataset_check_accepts(tmp_path):
    photos = _photos()
    out = photo_set.build_photo_set(tmp_path / "set", "heldout", n_per_label=3, size=32, seed=9, photos=photos)
    report = check_dataset(out)
    assert report.ok and not report.problems, report.problems
    for label in photo_set.LABELS:
        stems = sorted(p.stem for p in (out / label / "defect").iterdir())
        assert len(stems) == 3
        for sub in ("normal", "defect_segmentation"):
            assert sorted(p.stem for p in (out / label / sub).iterdir()) == stems
        mask = np.asarray(Image.open(out / label / "defect_segmentation" / f"{stems[0]}.png"))
        assert set(np.unique(mask)) <= {0, 255}
    # the same call gives the same bytes; another seed other pictures
    again = photo_set.build_photo_set(tmp_path / "again", "heldout", n_per_label=3, size=32, seed=9, photos=photos)
    other = photo_set.build_photo_set(tmp_path / "other", "heldout", n_per_label=3, size=32, seed=10, photos=photos)
    name = next((out / "crack" / "defect").iterdir()).name
    assert (out / "crack/defect" / name).read_bytes() == (again / "crack/defect" / name).read_bytes()
    assert (out / "crack/defect" / name).read_bytes() != (other / "crack/defect" / name).read_bytes()


def test_build_refuses_a_folder_it_did_not_make_and_replaces_its_own_only_with_force(tmp_path):
    photos = _photos()
    mine = tmp_path / "mine"
    (mine / "keep.txt").parent.mkdir()
    (mine / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not made by photo_set.py"):
        photo_set.build_photo_set(mine, n_per_label=1, size=16, photos=photos, force=True)
    assert (mine / "keep.txt").read_text() == "user data"
    out = photo_set.build_photo_set(tmp_path / "set", n_per_label=1, size=16, photos=photos)
    with pytest.raises(ValueError, match="--force"):
        photo_set.build_photo_set(out, n_per_label=1, size=16, photos=photos)
    photo_set.build_photo_set(out, n_per_label=2, size=16, photos=photos, force=True)
    assert len(list((out / "spot" / "defect").iterdir())) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("mine")
    assert photo_set.main([str(tmp_path / "x"), "--n-per-label", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "photo_set:" in err
    assert photo_set.main([str(tmp_path / "y"), "--labels", "dent"]) == 2
