"""The DataLoader factory and a resumable, distributed-aware sampler.

Resuming exactly (same samples, same order, same augmentation) needs only the sampler's state:

    loader = make_loader(ds, batch_size=4, seed=cfg.seed)
    sampler = loader.sampler                      # a ResumableSampler
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)                  # keeps a pending start_index for this same epoch
        for i, batch in enumerate(loader):
            ...
            ckpt["sampler"] = sampler.state_dict(consumed=(i + 1) * batch_size)
    # on resume:
    sampler.load_state_dict(ckpt["sampler"])      # epoch + start_index (+ seed, checked)
    start_epoch = sampler.epoch                   # the next iteration skips what was consumed

`consumed` counts samples taken from the loader since the current iteration began (this rank's
samples); the sampler adds the offset the iteration started from, so saving twice in a resumed epoch
stays right. Order = permutation(seed + epoch); each sample's random draws = f(dataset seed, epoch,
index), so worker count and worker seeding do not change what a batch holds.

For a DefectDataset the workers send compact samples (uint8 images and mask, no control map: about
7x fewer bytes through shared memory) and the loader (an ExpandingLoader) expands each batch in the
consuming process into the float contract, into pinned buffers when CUDA is available. A batch is
exactly the stack of `dataset[(index, epoch)]` for its indices. `loader.dataset` is a thin view that
forwards attributes (labels, num_classes, paired) to the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ptools.errors import PtoolsError


class ResumableSampler(DistributedSampler):
    """DistributedSampler (one replica when torch.distributed is not initialised) that yields
    `(index, epoch)` keys and can start an epoch part-way through."""

    def __init__(
        self,
        dataset: Dataset,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        # drop_last=False: shards are padded to equal length, so every rank runs the same step count.
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self._pending_start = 0  # applies to the next __iter__ only
        self._iter_start = 0  # the offset the current iteration started from

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._pending_start = 0  # a start index loaded for another epoch must not leak into this one
        super().set_epoch(epoch)

    def set_start_index(self, start: int) -> None:
        """Skip the first `start` samples (of this rank) in the next iteration."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start index {start} outside 0..{self.num_samples}")
        self._pending_start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())
        self._iter_start, self._pending_start = self._pending_start, 0
        epoch = self.epoch
        return iter([(i, epoch) for i in indices[self._iter_start :]])

    def __len__(self) -> int:
        return self.num_samples - self._pending_start

    def state_dict(self, consumed: int = 0) -> dict[str, int]:
        """Where to resume: `consumed` = samples taken from the loader since this iteration began."""
        start = self._iter_start + consumed
        epoch = self.epoch
        if start >= self.num_samples:  # the epoch is over: resume at the start of the next one
            epoch, start = epoch + 1, 0
        return {"epoch": epoch, "start_index": start, "seed": self.seed, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"sampler state was saved with seed {state['seed']}, this sampler has {self.seed}")
        if int(state.get("num_replicas", self.num_replicas)) != self.num_replicas:
            raise ValueError("sampler state was saved with another world size; the order cannot be resumed")
        self.epoch = int(state["epoch"])
        self.set_start_index(int(state.get("start_index", 0)))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int = 2,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
) -> DataLoader:
    """A DataLoader over `dataset` with a ResumableSampler (as `loader.sampler`), pinned memory when CUDA
    is available, persistent workers, and a seeded generator."""
    if batch_size < 1:
        raise PtoolsError(f"batch size must be at least 1 (got {batch_size})")
    sampler = ResumableSampler(dataset, shuffle=shuffle, seed=seed)
    if drop_last and sampler.num_samples < batch_size:
        raise PtoolsError(
            f"the dataset has {sampler.num_samples} samples per process, fewer than one batch of {batch_size}",
            hint="lower --batch-size or add data",
        )
    generator = torch.Generator()
    generator.manual_seed(seed)
    pin = torch.cuda.is_available()
    compact = hasattr(dataset, "compact_item")
    loader_cls = ExpandingLoader if compact else DataLoader
    loader = loader_cls(
        _CompactView(dataset) if compact else dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        # Compact batches are expanded into pinned buffers instead (see ExpandingLoader).
        pin_memory=pin and not compact,
        persistent_workers=workers > 0,
        drop_last=drop_last,
        generator=generator,
        prefetch_factor=4 if workers > 0 else None,
    )
    if compact:
        loader.pin_outputs = pin
    return loader


class _CompactView(Dataset):
    """What the workers index: a DefectDataset's compact samples (uint8 images, no control map)."""

    def __init__(self, dataset: Dataset) -> None:
        self.base = dataset

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> dict[str, Any]:
        return self.base.compact_item(key)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:  # labels, num_classes, paired, ... of the real dataset
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


class ExpandingLoader(DataLoader):
    """A DataLoader whose workers send compact samples (uint8 images and mask: about 7x fewer bytes
    through shared memory than float images plus control maps) and whose batches are expanded here,
    in the consuming process, into the float contract. Batches equal stacked `dataset[key]` samples."""

    pin_outputs = False

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        from ptools.data.dataset import expand

        pin = self.pin_outputs
        return (expand(batch, pin_memory=pin) for batch in super().__iter__())
