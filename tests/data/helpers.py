"""Tiny on-disk datasets for the data tests, built in tmp_path with known pixel content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16


def solid(value: int | tuple[int, int, int], size: int = SIZE, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (size, size), value)


def square_mask(size: int = SIZE, lo: int = 4, hi: int = 10, on: int = 255) -> Image.Image:
    arr = np.zeros((size, size), np.uint8)
    arr[lo:hi, lo:hi] = on
    return Image.fromarray(arr)


def seed_layout(root: Path, labels: dict[str, list[str]], size: int = SIZE) -> Path:
    """ROOT/{label}/normal|defect|defect_segmentation with one stem per entry.

    Each stem gets its own grey level (normal) and its own red level (defect), so a test can tell from
    the pixels which files were paired.
    """
    for label, stems in labels.items():
        for sub in ("normal", "defect", "defect_segmentation"):
            (root / label / sub).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            k = stem_code(stem)
            solid((k, k, k), size).save(root / label / "normal" / f"{stem}.png")
            solid((k, 0, 0), size).save(root / label / "defect" / f"{stem}.png")
            square_mask(size).save(root / label / "defect_segmentation" / f"{stem}.png")
    return root


def stem_code(stem: str) -> int:
    """A distinct pixel value per test stem (stems are short and unique within a test)."""
    return 20 + (sum(ord(c) * (i + 1) for i, c in enumerate(stem)) % 200)


def folders_layout(root: Path, size: int = SIZE) -> Path:
    """ROOT/normal/n0..n4, ROOT/crack/c0,c1 (c0 with a mask), ROOT/stain/s0."""
    (root / "normal").mkdir(parents=True)
    for i in range(5):
        solid((10 + 40 * i,) * 3, size).save(root / "normal" / f"n{i}.png")
    (root / "crack" / "masks").mkdir(parents=True)
    solid((200, 0, 0), size).save(root / "crack" / "c0.jpg")
    solid((150, 0, 0), size).save(root / "crack" / "c1.png")
    square_mask(size).save(root / "crack" / "masks" / "c0.png")
    (root / "stain").mkdir()
    solid((0, 0, 200), size).save(root / "stain" / "s0.png")
    return root


def csv_layout(root: Path, size: int = SIZE) -> Path:
    """A manifest with relative paths: normals, a single-label image, a multi-label image with a mask."""
    (root / "img").mkdir(parents=True)
    for i in range(3):
        solid((30 * (i + 1),) * 3, size).save(root / "img" / f"ok{i}.png")
    solid((255, 0, 0), size).save(root / "img" / "a.png")
    solid((0, 255, 0), size).save(root / "img" / "b.png")
    square_mask(size, on=1).save(root / "img" / "b_mask.png")
    rows = [
        "path,labels,mask",
        "img/ok0.png,,",
        "img/ok1.png,normal,",
        "img/ok2.png,,",
        "img/a.png,rust,",
        "img/b.png,dent;rust,img/b_mask.png",
    ]
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return root
