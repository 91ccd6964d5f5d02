"""benchmarks/augment_value.py: the parts that make its figures right (no training here: seconds).

The user's data is drawn without touching held-out images, copy-paste pastes exactly the defect's pixels,
IoU counts agree with an independent confusion-matrix computation, and a held-out image smuggled into
any arm stops the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import augment_value as av  # noqa: E402


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> av.Source:
    """A small built-in-style source: 40 pool pairs per label, 6 + 6 held-out samples per label."""
    from ptools.data import synthesize

    root = tmp_path_factory.mktemp("av")
    labels = ["crack", "scratch", "spot", "stain"]
    synthesize(root / "pool", n=160, size=av.SIZE, labels=labels, seed=31)
    synthesize(root / "heldout", n=48, size=av.SIZE, labels=labels, seed=32)
    old = av.HELDOUT_PER_LABEL
    av.HELDOUT_PER_LABEL = 6
    try:
        return av.split_source("test", labels, root / "pool", root / "heldout")
    finally:
        av.HELDOUT_PER_LABEL = old


def test_user_data_is_nested_by_k_and_never_a_normal_of_the_pool(source):
    small, large, other = av.user_data(source, 3, 0), av.user_data(source, 8, 0), av.user_data(source, 3, 1)
    for label in source.labels:
        h_small = av.pixel_hashes(small.pairs.defect[label])
        h_large = av.pixel_hashes(large.pairs.defect[label])
        assert len(h_small) == 3 and len(h_large) == 8 and h_small <= h_large  # K = 3 pairs among K = 8
        assert h_small != av.pixel_hashes(other.pairs.defect[label])  # another seed, other pairs
    pair_normals = av.pixel_hashes(np.concatenate(list(large.pairs.normal.values())))
    assert not pair_normals & av.pixel_hashes(large.normals)  # the normal pool is other surfaces
    with pytest.raises(SystemExit, match="only"):
        av.user_data(source, 40, 0)  # more pairs than the pool has (after the normals it keeps)


def test_copy_paste_pastes_the_defect_pixels_inside_the_mask_onto_a_pool_normal(source):
    data = av.user_data(source, 4, 0)
    out = av.copy_paste(data, source.labels, 12, seed=3)
    normals = {av.pixel_hashes([n]).pop(): n for n in data.normals}
    for label in source.labels:
        assert len(out.defect[label]) == 12
        src_areas = sorted(int(m.sum()) for m in data.pairs.mask[label])
        for img, mask, target in zip(out.defect[label], out.mask[label], out.normal[label], strict=True):
            assert av.pixel_hashes([target]).pop() in normals  # the background is a pool normal
            assert np.array_equal(img[~mask], target[~mask])  # untouched outside the mask
            assert int(mask.sum()) in src_areas  # flips, turns and the shift keep the whole mask
            # Inside the mask: a real defect's pixels (one of the K, turned and shifted), not the target's.
            assert not np.array_equal(img[mask], target[mask])
    assert av.copy_paste(data, source.labels, 12, seed=3).defect["spot"].tobytes() == out.defect["spot"].tobytes()


def test_iou_counts_agree_with_a_confusion_matrix():
    rng = np.random.default_rng(20240)
    for _ in range(20):
        classes = int(rng.integers(2, 6))
        pred = rng.integers(classes, size=(3, 9, 11))
        truth = rng.integers(classes, size=(3, 9, 11))
        inter, union = av.iou_counts(pred, truth, classes)
        confusion = np.bincount(truth.ravel() * classes + pred.ravel(), minlength=classes**2).reshape(classes, -1)
        tp = confusion.diagonal()
        assert np.array_equal(inter, tp)
        assert np.array_equal(union, confusion.sum(0) + confusion.sum(1) - tp)


def test_a_held_out_image_in_any_arm_stops_the_run(source):
    heldout = av.pixel_hashes(np.concatenate([*source.heldout.defect.values(), source.heldout_normals]))
    data = av.user_data(source, 3, 0)
    x, y, c = av.stack_pairs(data.pairs, source.labels)
    task = av.Task("real", 3, 0, source.labels, x, y, c, data.normals)
    av.check_no_leakage([task], heldout)  # clean: passes
    for field in ("real_x", "normals", "extra_x"):
        bad = av.Task("real", 3, 0, source.labels, x, y, c, data.normals)
        smuggled = source.heldout.defect["stain"][2] if field != "normals" else source.heldout_normals[1]
        arrays = {"real_x": x, "normals": data.normals, "extra_x": x}
        setattr(bad, field, np.concatenate([arrays[field], smuggled[None]]))
        with pytest.raises(av.LeakageError, match="1 held-out"):
            av.check_no_leakage([bad], heldout)
    trained = av.Pairs({"spot": source.heldout.defect["spot"][:1]}, {}, {"spot": data.normals[:1]}, {})
    with pytest.raises(av.LeakageError, match="generator g"):
        av.check_no_leakage([trained], heldout, "generator g")


def write_grouped_set(root: Path, labels: list[str], groups: int, per_group: int) -> None:
    """A seed-layout set whose file names sort by surface group (as the photo set's do: `crack_brick_00016`);
    a group is readable from the pixels too (its grey level), and every image is unique (one corner pixel)."""
    from PIL import Image

    for label in labels:
        for sub in ("normal", "defect", "defect_segmentation"):
            (root / label / sub).mkdir(parents=True)
        for g in range(groups):
            for j in range(per_group):
                normal = np.full((av.SIZE, av.SIZE, 3), 40 + 50 * g, np.uint8)
                normal[0, 0] = (j, g, labels.index(label))
                mask = np.zeros((av.SIZE, av.SIZE), np.uint8)
                mask[20:30, 20:30] = 255
                defect = normal.copy()
                defect[mask > 0] = 250
                name = f"{label}_g{g}_{j:05d}.png"
                Image.fromarray(normal).save(root / label / "normal" / name)
                Image.fromarray(defect).save(root / label / "defect" / name)
                Image.fromarray(mask).save(root / label / "defect_segmentation" / name)


def test_every_split_draws_from_every_surface_whatever_the_file_order(tmp_path, monkeypatch):
    # File order grouped by surface once gave the photo set held-out defects on two surfaces, held-out
    # normals on the other two, and a normal pool of one surface: every split must be a fair draw.
    labels = ["spot", "stain"]
    write_grouped_set(tmp_path / "pool", labels, groups=4, per_group=30)
    write_grouped_set(tmp_path / "heldout", labels, groups=4, per_group=30)
    monkeypatch.setattr(av, "HELDOUT_PER_LABEL", 60)
    monkeypatch.setattr(av, "NORMALS_PER_LABEL", 30)
    source = av.split_source("grouped", labels, tmp_path / "pool", tmp_path / "heldout")

    def groups_of(images: np.ndarray) -> np.ndarray:
        return np.bincount((images[:, 5, 5, 0].astype(int) - 40) // 50, minlength=4)

    data = av.user_data(source, 20, 0)
    for label in labels:
        assert groups_of(source.heldout.defect[label]).min() >= 5, label  # 60 of 120: every surface
        assert groups_of(data.pairs.defect[label]).min() >= 1, label
    assert groups_of(source.heldout_normals).min() >= 5
    assert groups_of(data.normals).min() >= 5  # 60 pool normals
    # The pairs stay pairs through the shuffle: a defect equals its normal outside its mask, files agree.
    for label in labels:
        for d, n, m, (fn, fd, fm) in zip(
            *(getattr(source.pool, p)[label] for p in ("defect", "normal", "mask", "files")), strict=True
        ):
            assert np.array_equal(d[~m], n[~m]) and m.sum() == 100
            assert fn.name == fd.name == fm.name
            assert (n[0, 0, 0], n[0, 0, 1]) == (int(fn.stem.split("_")[2]), int(fn.stem.split("_")[1][1:]))


def test_grid_outlines_each_class_in_its_dataset_preview_colour(tmp_path):
    from PIL import Image

    from ptools.data.preview import label_colours

    labels = ["crack", "spot"]
    img = np.full((1, av.SIZE, av.SIZE, 3), 100, np.uint8)
    classes = np.zeros((1, av.SIZE, av.SIZE), np.uint8)
    classes[0, 10:20, 10:20] = 1  # crack
    classes[0, 40:50, 40:50] = 2  # spot
    av.save_grid(tmp_path / "g.png", [("row", img, classes)], labels)
    grid = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    shown = grid[2 : 2 + av.SIZE, 2 * 2 + av.SIZE : 2 * 2 + 2 * av.SIZE]  # second tile, after 2-px padding
    colours = label_colours(labels)
    assert tuple(shown[10, 15]) == colours["crack"] and tuple(shown[40, 45]) == colours["spot"]  # the outlines
    assert tuple(shown[15, 15]) == (100, 100, 100) and tuple(shown[30, 30]) == (100, 100, 100)  # inside, outside
    assert f"spot rgb{colours['spot']}" in (tmp_path / "g.txt").read_text()  # the key names the colours
