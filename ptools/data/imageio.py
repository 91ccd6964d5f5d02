"""Decode images and masks once, straight to the size we need, as uint8 numpy arrays."""

from __future__ import annotations

import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from ptools.checkpoint._text import oneline
from ptools.errors import PtoolsError

# Decoding costs up to ~7 bytes a pixel (RGBA, then an RGB copy): 50 Mpx stays inside the 512 MiB every
# command promises, and is still larger than any camera frame a defect dataset holds (8000 x 6000 = 48 Mpx).
MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """An image that cannot or must not be decoded; the message names the problem, not the file."""


def image_problem(path: Path) -> str | None:
    """Why `path` cannot be opened as an image without blocking (FIFO, device, folder), or None."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return f"cannot read ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "a folder, not an image"
    if not stat.S_ISREG(mode):
        return "not a regular file (a FIFO, socket or device would block or never end)"
    return None


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """Image.open with the size checked before any pixel is decoded; Pillow's warnings become errors.

    Pillow's own bomb check only warns up to 2x its limit (and prints the warning on two lines); a
    decoder warning (truncated EXIF, bad chunk) means the file is damaged. Errors raise ImageError;
    callers add the path and decide the severity (a dataset problem, or exit 2).
    """
    problem = image_problem(path)
    if problem:
        raise ImageError(problem)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # DecompressionBombWarning, "Corrupt EXIF data", ...
            img = Image.open(path)
    except (OSError, ValueError, SyntaxError, Warning, Image.DecompressionBombError) as e:
        raise ImageError(_reason(e)) from None
    with img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ImageError(f"{w}x{h} = {w * h} pixels, above the {MAX_PIXELS}-pixel limit (a decompression bomb?)")
        yield img


def decode(img: Image.Image) -> None:
    """img.load() with every decoder failure, and every decoder warning, as an ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            img.load()
    except (OSError, ValueError, SyntaxError, EOFError, Warning, Image.DecompressionBombError, MemoryError) as e:
        raise ImageError(_reason(e)) from None


def _reason(e: BaseException) -> str:
    if isinstance(e, Warning):
        return oneline(f"{type(e).__name__}: {e}")
    return oneline(str(e) or type(e).__name__)


@contextmanager
def _open(path: Path, what: str = "image") -> Iterator[Image.Image]:
    try:
        with open_image(path) as img:
            yield img
    except ImageError as e:
        raise PtoolsError(f"{path}: cannot read {what} ({e})") from None


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
            decode(img)
            if img.mode != "RGB":
                img = img.convert("RGB")
        except (ImageError, OSError, ValueError) as e:
            raise PtoolsError(f"{path}: cannot decode image ({oneline(str(e))})") from None
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        return np.array(img)  # a writable copy: torch.from_numpy warns on read-only buffers


def load_mask(path: Path, size: int) -> np.ndarray:
    """(size, size) uint8 in {0, 1}, resized with nearest so it stays binary.

    Masks saved as 0/1 and as 0/255 both occur; anything above half the mask's own range counts.
    """
    with _open(path, "mask") as img:
        try:
            # Palette masks (VOC style) hold class indices: keep them, their colours' luminance means nothing.
            decode(img)
            if img.mode not in ("L", "P"):
                img = img.convert("L")
        except (ImageError, OSError, ValueError) as e:
            raise PtoolsError(f"{path}: cannot decode mask ({oneline(str(e))})") from None
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.NEAREST)
        arr = np.asarray(img, dtype=np.uint8)
    threshold = 0 if arr.max(initial=0) <= 1 else 127
    return (arr > threshold).astype(np.uint8)
