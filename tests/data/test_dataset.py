"""DefectDataset over the three layouts: pairing, labels, control maps, unpaired draws, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ptools.data import DefectDataset, denormalize, normalize
from ptools.data.layouts import scan
from ptools.errors import PtoolsError
from tests.data.helpers import SIZE, csv_layout, folders_layout, seed_layout, stem_code


def _grey(t: torch.Tensor) -> int:
    return round(float(denormalize(t)[0].mean()) * 255)


def test_seed_layout_pairs_by_stem_not_by_order(tmp_path):
    root = seed_layout(tmp_path, {"scratch": ["b", "a", "zz"], "crack": ["m"]})
    # An extra normal that sorts first would shift a pairing done by position.
    (root / "scratch" / "normal" / "0extra.png").write_bytes((root / "scratch" / "normal" / "a.png").read_bytes())
    # Another extension for the partner: pairing is by stem, whatever the extension.
    Image.open(root / "crack" / "normal" / "m.png").save(root / "crack" / "normal" / "m.jpg", quality=100)
    (root / "crack" / "normal" / "m.png").unlink()
    ds = DefectDataset(root, image_size=SIZE)
    assert ds.layout == "seed" and ds.paired
    assert ds.labels == ["crack", "scratch"] and ds.num_classes == 3
    assert len(ds) == 4
    for i, sample in enumerate(ds.samples):
        item = ds[i]
        assert sample.normal.stem == sample.defect.stem
        assert abs(_grey(item["normal"]) - stem_code(sample.stem)) <= 2
        assert round(float(denormalize(item["defect"])[0].mean()) * 255) == stem_code(sample.stem)


def test_sample_tensors_and_control_map(tmp_path):
    ds = DefectDataset(seed_layout(tmp_path, {"crack": ["a"], "stain": ["b"]}), image_size=SIZE)
    item = ds[1]  # stain
    assert item["index"] == 1
    assert item["normal"].shape == item["defect"].shape == (3, SIZE, SIZE)
    assert item["normal"].dtype == torch.float32 and item["normal"].device.type == "cpu"
    assert item["normal"].min() >= -1 and item["normal"].max() <= 1
    assert item["mask"].shape == (1, SIZE, SIZE)
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["mask"][0, 4:10, 4:10].all() and item["mask"].sum() == 36
    assert item["defect_labels"].tolist() == [0.0, 0.0, 1.0]
    assert item["normal_labels"].tolist() == [1.0, 0.0, 0.0]
    control = item["control"]
    assert control.shape == (3, SIZE, SIZE)
    assert torch.equal(control[2], item["mask"][0])  # the mask sits in its label's channel
    assert control[1].sum() == 0
    assert torch.equal(control[0], 1 - item["mask"][0])
    assert torch.equal(control.sum(0), torch.ones(SIZE, SIZE))
    assert bool(item["has_mask"])


def test_missing_mask_gives_image_level_channel(tmp_path):
    root = seed_layout(tmp_path, {"crack": ["a"]})
    (root / "crack" / "defect_segmentation" / "a.png").unlink()
    item = DefectDataset(root, image_size=SIZE)[0]
    assert item["mask"].sum() == 0 and not bool(item["has_mask"])
    assert item["control"][1].min() == 1 and item["control"][0].max() == 0


def test_folders_layout_unpaired_draws(tmp_path):
    ds = DefectDataset(folders_layout(tmp_path), image_size=SIZE)
    assert ds.layout == "folders" and not ds.paired
    assert ds.labels == ["crack", "stain"] and len(ds) == 3 and len(ds.normals) == 5
    with_mask = next(i for i, s in enumerate(ds.samples) if s.stem == "c0")
    no_mask = next(i for i, s in enumerate(ds.samples) if s.stem == "s0")
    assert ds[with_mask]["mask"].sum() == 36
    assert torch.equal(ds[no_mask]["control"][2], torch.ones(SIZE, SIZE))  # image-level label
    # The normal drawn for a sample is a function of (seed, epoch, index): stable, and varied by epoch.
    assert torch.equal(ds[(0, 3)]["normal"], ds[(0, 3)]["normal"])
    draws = {ds.normal_for(0, epoch).name for epoch in range(20)}
    assert len(draws) >= 3
    ds.set_epoch(7)
    assert torch.equal(ds[0]["normal"], ds[(0, 7)]["normal"])
    other = DefectDataset(tmp_path, image_size=SIZE, seed=1)
    assert [other.normal_for(0, e) for e in range(20)] != [ds.normal_for(0, e) for e in range(20)]


def test_csv_manifest_multilabel_and_relative_paths(tmp_path):
    root = csv_layout(tmp_path)
    for where in (root, root / "data.csv"):
        ds = DefectDataset(where, image_size=SIZE)
        assert ds.layout == "csv" and not ds.paired
        assert ds.labels == ["dent", "rust"] and len(ds.normals) == 3 and len(ds) == 2
    b = next(i for i, s in enumerate(ds.samples) if s.stem == "b")
    item = ds[b]
    assert item["defect_labels"].tolist() == [0.0, 1.0, 1.0]
    # One mask for a multi-label row goes into every listed label's channel (0/1 masks are read too).
    assert torch.equal(item["control"][1], item["mask"][0]) and torch.equal(item["control"][2], item["mask"][0])
    assert item["mask"].sum() == 36
    assert torch.equal(item["control"][0], 1 - item["mask"][0])


def test_pinned_label_order_and_unknown_labels(tmp_path):
    root = seed_layout(tmp_path, {"crack": ["a"], "stain": ["b"]})
    ds = DefectDataset(root, image_size=SIZE, labels=["stain", "crack", "extra"])
    assert ds.num_classes == 4 and ds[0]["defect_labels"].tolist() == [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(PtoolsError, match="crack"):
        DefectDataset(root, image_size=SIZE, labels=["stain"])


def test_not_a_dataset(tmp_path):
    with pytest.raises(PtoolsError, match="not a dataset") as e:
        DefectDataset(tmp_path)
    assert e.value.exit_code == 2
    with pytest.raises(PtoolsError, match="no such"):
        scan(tmp_path / "missing")


def test_augmentation_keeps_mask_on_image_content(tmp_path):
    """The mask is drawn from the image (red where mask) so after any crop/flip/resize it must still match."""
    rng = np.random.default_rng(0)
    size = 48
    for sub in ("normal", "defect", "defect_segmentation"):
        (tmp_path / "blob" / sub).mkdir(parents=True)
    for k in range(3):
        mask = np.zeros((size, size), bool)
        # Blocky, asymmetric content so a flip or crop that differs between image and mask shows up.
        for _ in range(4):
            y, x = rng.integers(0, size - 12, 2)
            h, w = rng.integers(6, 12, 2)
            mask[y : y + h, x : x + w] = True
        img = np.zeros((size, size, 3), np.uint8)
        img[..., 1] = 60
        img[mask, 0] = 255
        Image.fromarray(img).save(tmp_path / "blob" / "defect" / f"s{k}.png")
        Image.fromarray(img[..., [1, 1, 1]]).save(tmp_path / "blob" / "normal" / f"s{k}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "blob" / "defect_segmentation" / f"s{k}.png")
    ds = DefectDataset(tmp_path, image_size=32, augment=True, seed=3)
    plain = DefectDataset(tmp_path, image_size=32)
    changed = 0
    for epoch in range(6):
        for i in range(len(ds)):
            item = ds[(i, epoch)]
            red = denormalize(item["defect"])[0] > 0.5
            mask = item["mask"][0] > 0.5
            assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}  # nearest: still binary
            # Interpolation may blur the image's edges, so disagreement is allowed only on the mask's border.
            m = mask[None, None].float()
            border = (torch.nn.functional.max_pool2d(m, 3, 1, 1) != -torch.nn.functional.max_pool2d(-m, 3, 1, 1))[0, 0]
            wrong = (red != mask) & ~border
            assert not wrong.any(), (epoch, i, int(wrong.sum()))
            assert (red == mask).float().mean() > 0.85
            assert torch.equal(item["control"][1], item["mask"][0])
            changed += not torch.equal(item["mask"], plain[i]["mask"])
    assert changed >= 12  # the augmentation really moved things
    # Deterministic per (seed, epoch, index), and it leaves the caller's global RNG alone.
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = ds[(1, 2)]
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert torch.equal(a["defect"], ds[(1, 2)]["defect"])


def test_normalize_roundtrip():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    y = normalize(x)
    assert y.min() == -1 and y.max() == 1
    assert torch.equal((denormalize(y) * 255).round().to(torch.uint8), x)
    assert torch.allclose(normalize(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))


def test_palette_and_01_masks(tmp_path):
    root = seed_layout(tmp_path, {"crack": ["a", "b"]})
    pal = Image.new("P", (SIZE, SIZE), 0)
    pal.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)  # index 1 is dark red: luminance 38
    pal.paste(1, (4, 4, 10, 10))
    pal.save(root / "crack" / "defect_segmentation" / "a.png")
    for i in range(2):
        assert DefectDataset(root, image_size=SIZE)[i]["mask"].sum() == 36


def test_thin_masks_survive_augmentation(tmp_path):
    """A 1 px line on a source no larger than the output: crops only upsample, so the mask keeps it."""
    for sub in ("normal", "defect", "defect_segmentation"):
        (tmp_path / "crack" / sub).mkdir(parents=True)
    img = np.zeros((32, 32, 3), np.uint8)
    img[13, :, 0] = 255
    mask = (img[..., 0] > 0).astype(np.uint8) * 255
    Image.fromarray(img).save(tmp_path / "crack" / "defect" / "a.png")
    Image.fromarray(np.zeros_like(img)).save(tmp_path / "crack" / "normal" / "a.png")
    Image.fromarray(mask).save(tmp_path / "crack" / "defect_segmentation" / "a.png")
    ds = DefectDataset(tmp_path, image_size=32, augment=True)
    seen = 0
    for epoch in range(30):
        item = ds[(0, epoch)]
        if denormalize(item["defect"])[0].max() < 0.5:
            continue  # the crop left the line out
        seen += 1
        assert item["mask"][0].any(dim=0).all(), epoch  # the line still crosses every column
    assert seen >= 10


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_control_maps_property(labels, seed):
    """For any labels and masks: label channels hold the mask (or ones), channel 0 is 1 - their union."""
    from ptools.data.dataset import control_maps

    b = len(labels)
    gen = torch.Generator().manual_seed(seed)
    multi_hot = torch.zeros(b, 4)
    multi_hot[:, 1:] = torch.tensor(labels, dtype=torch.float32)
    mask = (torch.rand(b, 1, 5, 5, generator=gen) > 0.5).float()
    has_mask = torch.rand(b, generator=gen) > 0.5
    control = control_maps(multi_hot, mask, has_mask)
    for i in range(b):
        spatial = mask[i, 0] if has_mask[i] else torch.ones(5, 5)
        for c in range(1, 4):
            assert torch.equal(control[i, c], spatial if labels[i][c - 1] else torch.zeros(5, 5))
        assert torch.equal(control[i, 0], 1 - control[i, 1:].amax(0))
