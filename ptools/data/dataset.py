"""DefectDataset: one API over the seed layout, label folders and CSV manifests, returning CPU tensors.

Sample contract (S = image_size, C = num_classes = len(labels) + 1):
  normal (3,S,S) float32 [-1,1]; defect (3,S,S) float32 [-1,1]; mask (1,S,S) float32 {0,1} (zeros when
  no mask is known; see has_mask); defect_labels (C,) multi-hot with channel 0 = 0; normal_labels (C,)
  = [1,0,...,0]; control (C,S,S): each defect label's channel holds the mask (the whole channel = 1 for
  an image-level label without mask), channel 0 = 1 - union of the defect channels; index (int);
  has_mask (bool tensor).

Randomness is a pure function of (seed, epoch, index): the unpaired normal drawn from the pool and the
augmentation parameters. A key is an int (epoch = `dataset.epoch`, set by `set_epoch`) or an
`(index, epoch)` tuple, which is what `make_loader`'s sampler yields, so persistent workers (which hold
a stale copy of the dataset) still draw per epoch, and a sample does not depend on the worker count.

`compact_item` is the same sample before expansion (uint8 images and mask, no control map) and
`expand` turns one or a collated batch of them into the contract; `make_loader` uses the pair so its
workers move 7x fewer bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ptools.data.imageio import load_mask, load_rgb
from ptools.data.layouts import DatasetIndex, Sample, scan
from ptools.data.transforms import AUGMENT_SOURCE_FACTOR, apply_paired, paired_augment
from ptools.errors import PtoolsError

NORMAL_CHANNEL = "normal"
_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A well-spread 63-bit seed from small integers (splitmix64 steps), cheap enough per sample."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


class DefectDataset(Dataset):
    """Defect samples with their normal partner, mask, labels and control map (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        image_size: int = 128,
        augment: bool = False,
        layout: str = "auto",
        seed: int = 0,
        labels: list[str] | None = None,
    ) -> None:
        if image_size < 8:
            raise PtoolsError(f"image size {image_size} is too small (need >= 8)")
        self.index: DatasetIndex = scan(root, layout)
        self.root = Path(root)
        self.layout = self.index.layout
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.paired = self.index.paired
        # `labels` pins the channel order (e.g. to a checkpoint's) instead of the scan's sorted order.
        self.labels: list[str] = list(labels) if labels is not None else list(self.index.labels)
        unknown = sorted({n for s in self.index.samples for n in s.labels} - set(self.labels))
        if unknown:
            raise PtoolsError(f"{root}: labels {', '.join(unknown)} are not among {', '.join(self.labels)}")
        self.samples: list[Sample] = self.index.samples
        self.normals: list[Path] = self.index.normals
        if not self.samples:
            raise PtoolsError(f"{root}: no usable defect samples", hint="run `ptools dataset check` on it")
        if not self.paired and not self.normals:
            raise PtoolsError(f"{root}: no normal images to pair the defects with")
        self.num_classes = len(self.labels) + 1
        self._channel = {name: i + 1 for i, name in enumerate(self.labels)}
        self._transform = paired_augment(image_size) if augment else None

    @property
    def channel_names(self) -> list[str]:
        """Control-map channel names: "normal" then the defect labels."""
        return [NORMAL_CHANNEL, *self.labels]

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for int keys (the loader's sampler passes the epoch with each index instead)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def normal_for(self, index: int, epoch: int) -> Path:
        """The normal image of sample `index` in `epoch`: its partner, or a draw from the pool."""
        sample = self.samples[index]
        if sample.normal is not None:
            return sample.normal
        return self.normals[mix_seed(self.seed, epoch, index, 1) % len(self.normals)]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """One sample in the float contract (see the module docstring)."""
        return expand(self.compact_item(key))

    def compact_item(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """The same sample before expansion: images and mask as uint8 (3,S,S) / (1,S,S), no control map.

        About 7x fewer bytes than the float form; `make_loader` ships these from its workers and
        expands whole batches with `expand` in the consuming process, where the values come out
        identical to `dataset[key]`.
        """
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), self.epoch)
        if index < 0:
            index += len(self.samples)
        sample = self.samples[index]
        size = self.image_size
        # Each file is decoded exactly once, straight to its working size. For augmentation that is the
        # source's own resolution up to 1.5x the output: upsampling first would only make the crop's
        # nearest-neighbour mask resize drop thin structures (1 px cracks) on the way back down.
        augment = self._transform is not None
        cap = round(size * AUGMENT_SOURCE_FACTOR) if augment else size
        defect_np = load_rgb(sample.defect, cap, upscale=not augment)
        load_size = defect_np.shape[0]
        defect = torch.from_numpy(defect_np).permute(2, 0, 1)
        # A paired normal must match its defect pixel for pixel; an unpaired one is cropped on its own.
        normal_path = self.normal_for(index, epoch)
        normal_np = load_rgb(normal_path, load_size) if self.paired else load_rgb(normal_path, cap, upscale=not augment)
        normal = torch.from_numpy(normal_np).permute(2, 0, 1)
        mask = None if sample.mask is None else torch.from_numpy(load_mask(sample.mask, load_size))[None]
        if augment:
            with torch.random.fork_rng(devices=[]):  # never disturb the caller's global RNG
                torch.manual_seed(mix_seed(self.seed, epoch, index, 2))
                if self.paired:
                    images, mask = apply_paired(self._transform, {"normal": normal, "defect": defect}, mask)
                    normal, defect = images["normal"], images["defect"]
                else:  # unrelated images: the normal gets its own crop
                    images, mask = apply_paired(self._transform, {"defect": defect}, mask)
                    defect = images["defect"]
                    normal = apply_paired(self._transform, {"normal": normal}, None)[0]["normal"]
        return {
            "normal": normal.contiguous(),
            "defect": defect.contiguous(),
            "mask": mask.contiguous() if mask is not None else torch.zeros(1, size, size, dtype=torch.uint8),
            "defect_labels": self.label_vector(sample.labels),
            "normal_labels": self.label_vector(()),
            "index": index,
            "has_mask": torch.tensor(mask is not None),
        }

    def label_vector(self, labels: tuple[str, ...] | list[str]) -> torch.Tensor:
        """Multi-hot (C,) vector; no defect label means the normal class (channel 0)."""
        vec = torch.zeros(self.num_classes)
        if not labels:
            vec[0] = 1.0
        for name in labels:
            vec[self._channel[name]] = 1.0
        return vec

    def control_map(self, labels: tuple[str, ...] | list[str], mask: torch.Tensor | None) -> torch.Tensor:
        """(C,S,S): the mask in each label's channel (ones without a mask), channel 0 = 1 - their union."""
        has_mask = torch.tensor([mask is not None])
        spatial = mask[None] if mask is not None else torch.zeros(1, 1, self.image_size, self.image_size)
        return control_maps(self.label_vector(labels)[None], spatial, has_mask)[0]

    def label_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.labels, 0)
        for s in self.samples:
            for name in s.labels:
                counts[name] += 1
        return counts


def control_maps(
    labels: torch.Tensor, mask: torch.Tensor, has_mask: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,C,S,S) control maps from multi-hot labels (B,C), masks (B,1,S,S) in {0,1} and has_mask (B,).

    Each defect label's channel holds the mask, or ones for an image-level label without a mask;
    channel 0 = 1 - the union of the defect channels (all ones for a sample with no defect label).
    """
    b, c = labels.shape
    if out is None:
        out = torch.empty(b, c, *mask.shape[-2:])
    # numpy, not torch: this runs in the training process, whose intra-op thread pool is sized for the
    # model; small elementwise ops fanned out over it cost more than they save on a busy machine.
    o = out.numpy()
    spatial = np.where(has_mask.numpy().reshape(b, 1, 1, 1), mask.numpy(), np.float32(1)).astype(np.float32, copy=False)
    np.multiply(labels.numpy()[:, 1:, None, None], spatial, out=o[:, 1:])
    if c > 1:
        np.subtract(np.float32(1), o[:, 1:].max(axis=1), out=o[:, 0])
    else:
        o[:, 0] = 1.0
    return out


def _unit_range(u8: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 [-1, 1] into `out` with numpy (see control_maps for why); x / 127.5 - 1, like
    `normalize`, elementwise and correctly rounded, so alone or batched the values are the same."""
    o = out.numpy()
    np.divide(u8.numpy(), np.float32(127.5), out=o, dtype=np.float32)
    np.subtract(o, np.float32(1), out=o)
    return out


def expand(compact: dict[str, Any], pin_memory: bool = False) -> dict[str, Any]:
    """Compact sample(s) (uint8 images and mask; from `compact_item` or a collated batch of them) ->
    the float contract, with the control map. With pin_memory the outputs are allocated pinned, so a
    later `.to("cuda", non_blocking=True)` really is asynchronous."""
    batched = compact["normal"].dim() == 4
    items = compact if batched else {k: (v[None] if torch.is_tensor(v) else v) for k, v in compact.items()}
    b, _, s, _ = items["normal"].shape
    c = items["defect_labels"].shape[1]

    def empty(*shape: int) -> torch.Tensor:
        return torch.empty(*shape, pin_memory=pin_memory)

    normal = _unit_range(items["normal"], empty(b, 3, s, s))
    defect = _unit_range(items["defect"], empty(b, 3, s, s))
    mask = empty(b, 1, s, s)
    np.copyto(mask.numpy(), items["mask"].numpy(), casting="unsafe")
    control = control_maps(items["defect_labels"], mask, items["has_mask"], out=empty(b, c, s, s))
    out = {
        "normal": normal,
        "defect": defect,
        "mask": mask,
        "defect_labels": items["defect_labels"],
        "normal_labels": items["normal_labels"],
        "control": control,
        "index": compact["index"],
        "has_mask": items["has_mask"],
    }
    if not batched:
        out = {k: (v[0] if torch.is_tensor(v) and k != "index" else v) for k, v in out.items()}
    return out


def numpy_image(t: torch.Tensor) -> np.ndarray:
    """A (3,H,W) [-1,1] tensor as an (H,W,3) uint8 array, for saving and previews."""
    return ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
