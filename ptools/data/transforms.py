"""Paired augmentation (one random crop/flip for image, partner and mask) and [-1, 1] scaling."""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

# Crops keep at least half the area so a small defect usually stays in frame; the mild zoom (<= 1.41x)
# is taken from a source decoded at AUGMENT_SOURCE_FACTOR x the output size, so crops stay sharp.
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
AUGMENT_SOURCE_FACTOR = 1.5


def paired_augment(size: int) -> v2.Transform:
    """A transform over a dict of tv_tensors: every Image and Mask gets the same random parameters.

    v2 resizes `tv_tensors.Mask` with nearest interpolation on its own, so masks stay binary.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
        ]
    )


def apply_paired(
    transform: v2.Transform, images: dict[str, torch.Tensor], mask: torch.Tensor | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Run `transform` once over uint8 (3,H,W) images and an optional (1,H,W) mask, all aligned."""
    inputs: dict[str, torch.Tensor] = {k: tv_tensors.Image(v) for k, v in images.items()}
    if mask is not None:
        inputs["__mask"] = tv_tensors.Mask(mask)
    out = transform(inputs)
    out_mask = out.pop("__mask", None)
    return {k: v.as_subclass(torch.Tensor) for k, v in out.items()}, (
        None if out_mask is None else out_mask.as_subclass(torch.Tensor)
    )


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [-1, 1]."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(127.5).sub_(1.0)
    return x.to(torch.float32) * 2.0 - 1.0


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (generator outputs may overshoot slightly)."""
    return ((x + 1.0) * 0.5).clamp_(0.0, 1.0)
