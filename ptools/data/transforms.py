"""Paired augmentation (one random crop/flip for image, partner and mask) and [-1, 1] scaling."""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

# Crops keep at least half the area so a small defect usually stays in frame; the mild zoom (<= 1.41x)
# is taken from a source decoded at its own resolution up to AUGMENT_SOURCE_FACTOR x the output size.
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
AUGMENT_SOURCE_FACTOR = 1.5


class AlignedRandomResizedCrop(v2.RandomResizedCrop):
    """RandomResizedCrop whose masks use nearest-exact (pixel-centre aligned, like the image's bilinear).

    v2's own mask kernel uses legacy nearest, which samples the top-left neighbour and shifts a
    downscaled mask by up to half a source pixel against its image.
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            out = F.resized_crop(
                inpt.as_subclass(torch.Tensor), **params, size=self.size, interpolation=InterpolationMode.NEAREST_EXACT
            )
            return tv_tensors.wrap(out, like=inpt)
        return super().transform(inpt, params)


def paired_augment(size: int) -> v2.Transform:
    """A transform over a dict of tv_tensors: every Image and Mask gets the same random parameters.

    Masks are resized with (exact) nearest interpolation, so they stay binary.
    """
    return v2.Compose(
        [
            AlignedRandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
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


def normalize(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [-1, 1] (into `out` when given).

    Elementwise and correctly rounded, so a sample gives the same values alone or inside a batch.
    """
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32)
    out.copy_(x)
    if x.dtype == torch.uint8:
        return out.div_(127.5).sub_(1.0)
    return out.mul_(2.0).sub_(1.0)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (generator outputs may overshoot slightly)."""
    return ((x + 1.0) * 0.5).clamp_(0.0, 1.0)
