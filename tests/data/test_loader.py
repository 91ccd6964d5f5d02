"""make_loader and ResumableSampler: reproducible order, exact mid-epoch resume, sharding, workers."""

from __future__ import annotations

import pytest
import torch

from ptools.data import DefectDataset, make_loader
from ptools.data.loader import ResumableSampler
from ptools.errors import PtoolsError
from tests.data.helpers import SIZE, folders_layout, seed_layout

STEMS = {"crack": [f"c{i}" for i in range(7)], "stain": [f"s{i}" for i in range(6)]}


@pytest.fixture
def dataset(tmp_path) -> DefectDataset:
    return DefectDataset(seed_layout(tmp_path, STEMS), image_size=SIZE, augment=True)


def _epoch(loader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)
    return [batch["index"].tolist() for batch in loader]


def test_batches_and_reproducible_order(dataset):
    loader = make_loader(dataset, batch_size=4, workers=0, seed=5)
    assert isinstance(loader.sampler, ResumableSampler)
    first = _epoch(loader, 0)
    assert len(first) == len(loader) == 3  # 13 samples, drop_last
    batch = next(iter(loader))
    assert batch["defect"].shape == (4, 3, SIZE, SIZE) and batch["control"].shape == (4, 3, SIZE, SIZE)
    assert _epoch(make_loader(dataset, batch_size=4, workers=0, seed=5), 0) == first
    assert _epoch(loader, 1) != first
    assert _epoch(make_loader(dataset, batch_size=4, workers=0, seed=6), 0) != first
    unshuffled = make_loader(dataset, batch_size=13, workers=0, shuffle=False, drop_last=False)
    assert _epoch(unshuffled, 0) == [list(range(13))]
    with pytest.raises(PtoolsError, match="fewer than one batch"):
        make_loader(dataset, batch_size=14, workers=0)


def test_resume_mid_epoch_gives_the_same_batches(dataset):
    loader = make_loader(dataset, batch_size=3, workers=0, seed=1)
    loader.sampler.set_epoch(2)
    full = [b for b in loader]
    state = None
    loader.sampler.set_epoch(2)
    for i, _ in enumerate(loader):
        if i == 1:
            state = loader.sampler.state_dict(consumed=(i + 1) * 3)
            break
    assert state == {"epoch": 2, "start_index": 6, "seed": 1, "num_replicas": 1}
    fresh = make_loader(dataset, batch_size=3, workers=0, seed=1)
    fresh.sampler.load_state_dict(state)
    fresh.sampler.set_epoch(state["epoch"])  # the trainer's loop calls this again: must keep the start
    assert len(fresh) == 2
    rest = list(fresh)
    assert len(rest) == 2
    for got, want in zip(rest, full[2:], strict=True):
        assert torch.equal(got["index"], want["index"])
        assert torch.equal(got["defect"], want["defect"])  # same augmentation too
    # Saving again in the resumed epoch counts from where it started.
    assert fresh.sampler.state_dict(consumed=3)["start_index"] == 9
    assert fresh.sampler.state_dict(consumed=7) == {"epoch": 3, "start_index": 0, "seed": 1, "num_replicas": 1}
    # The start index was for that one iteration; the next epoch is whole again.
    assert len(_epoch(fresh, 3)) == 4
    with pytest.raises(ValueError, match="seed"):
        make_loader(dataset, batch_size=3, workers=0, seed=2).sampler.load_state_dict(state)


def test_start_index_for_another_epoch_is_dropped(dataset):
    sampler = ResumableSampler(dataset, seed=0)
    sampler.load_state_dict({"epoch": 1, "start_index": 5, "seed": 0})
    sampler.set_epoch(4)
    assert len(list(sampler)) == len(dataset)


def test_sharding_covers_the_dataset(dataset):
    shards = [ResumableSampler(dataset, seed=3, num_replicas=2, rank=r) for r in range(2)]
    for s in shards:
        s.set_epoch(1)
    keys = [list(s) for s in shards]
    assert len(keys[0]) == len(keys[1]) == 7  # padded to equal length
    assert {i for k in keys for i, _ in k} == set(range(13))
    assert all(epoch == 1 for k in keys for _, epoch in k)


def test_workers_do_not_change_the_batches(tmp_path):
    ds = DefectDataset(folders_layout(tmp_path), image_size=SIZE, augment=True)
    single = make_loader(ds, batch_size=2, workers=0, seed=4, drop_last=False)
    multi = make_loader(ds, batch_size=2, workers=2, seed=4, drop_last=False)
    assert multi.persistent_workers and multi.num_workers == 2
    for epoch in (0, 1):
        a, b = _epoch_batches(single, epoch), _epoch_batches(multi, epoch)
        for x, y in zip(a, b, strict=True):
            for key in ("normal", "defect", "mask", "control", "index"):
                assert torch.equal(x[key], y[key])


def _epoch_batches(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_batches_equal_the_samples_they_hold(tmp_path):
    """Workers ship compact uint8 samples; the expanded batch must be exactly the stacked dataset items."""
    ds = DefectDataset(folders_layout(tmp_path), image_size=SIZE, augment=True, seed=2)
    loader = make_loader(ds, batch_size=3, workers=0, seed=1, drop_last=False)
    loader.sampler.set_epoch(5)
    for batch in loader:
        for row, index in enumerate(batch["index"].tolist()):
            item = ds[(index, 5)]
            for key in ("normal", "defect", "mask", "control", "defect_labels", "normal_labels", "has_mask"):
                assert torch.equal(batch[key][row], item[key]), key
    assert batch["normal"].dtype == torch.float32 and batch["control"].shape[1] == ds.num_classes
