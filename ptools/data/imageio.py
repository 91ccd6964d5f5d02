"""Decode images and masks once, straight to the size we need, as uint8 numpy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ptools.errors import PtoolsError


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, ValueError) as e:
        raise PtoolsError(f"{path}: cannot read image ({e})") from None


def load_rgb(path: Path, size: int, upscale: bool = True) -> np.ndarray:
    """(size, size, 3) uint8. JPEG draft mode lets libjpeg decode at 1/2, 1/4, 1/8 scale directly,
    which is most of the gain over decode-then-resize when sources are larger than `size`.

    With upscale=False a smaller source keeps its resolution (side = its longer side, squared), so a
    later crop-and-resize works from the real pixels instead of an upsampled copy.
    """
    with _open(path) as img:
        if not upscale:
            size = min(size, max(img.size))
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # never below the requested size; resize finishes the job
        try:
            img.load()
            if img.mode != "RGB":
                img = img.convert("RGB")
        except OSError as e:
            raise PtoolsError(f"{path}: cannot decode image ({e})") from None
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        return np.array(img)  # a writable copy: torch.from_numpy warns on read-only buffers


def load_mask(path: Path, size: int) -> np.ndarray:
    """(size, size) uint8 in {0, 1}, resized with nearest so it stays binary.

    Masks saved as 0/1 and as 0/255 both occur; anything above half the mask's own range counts.
    """
    with _open(path) as img:
        try:
            # Palette masks (VOC style) hold class indices: keep them, their colours' luminance means nothing.
            img.load()
            if img.mode not in ("L", "P"):
                img = img.convert("L")
        except OSError as e:
            raise PtoolsError(f"{path}: cannot decode mask ({e})") from None
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.NEAREST)
        arr = np.asarray(img, dtype=np.uint8)
    threshold = 0 if arr.max(initial=0) <= 1 else 127
    return (arr > threshold).astype(np.uint8)
