"""Preview grid: size, what each column shows, terminal rendering."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from rich.console import Console

from ptools.data.preview import (
    COLUMNS,
    HEADER_HEIGHT,
    LEGEND_ROW_HEIGHT,
    PAD,
    HalfBlockImage,
    control_view,
    label_colours,
    render_preview,
)
from tests.data.helpers import seed_layout


def test_grid_size_and_tiles(tmp_path):
    root = seed_layout(tmp_path, {"crack": ["a", "b", "c"], "stain": ["d"]}, size=20)
    preview = render_preview(root, n=3, seed=0, image_size=64)
    assert len(preview.indices) == 3 and preview.labels == ["crack", "stain"]
    width = len(COLUMNS) * (64 + PAD) + PAD
    height = HEADER_HEIGHT + 3 * (64 + PAD) + PAD + LEGEND_ROW_HEIGHT
    assert preview.image.size == (width, height)
    px = np.asarray(preview.image)
    top = HEADER_HEIGHT + PAD
    mask_tile = px[top : top + 64, PAD + 2 * (64 + PAD) :][:, :64]
    # helpers' mask is rows/cols 4..9 of 20, scaled to 64 px by nearest: about 13..32.
    assert (mask_tile[16:28, 16:28] == 255).all() and (mask_tile[40:, 40:] == 0).all()
    overlay_tile = px[top : top + 64, PAD + 3 * (64 + PAD) :][:, :64].astype(int)
    defect_tile = px[top : top + 64, PAD + 1 * (64 + PAD) :][:, :64].astype(int)
    assert np.abs(overlay_tile[20, 20] - defect_tile[20, 20]).sum() > 30  # tinted where the mask is
    assert np.array_equal(overlay_tile[50, 50], defect_tile[50, 50])  # untouched elsewhere


def test_label_filter_and_augmented(tmp_path):
    root = seed_layout(tmp_path, {"crack": ["a", "b", "c"], "stain": ["d"]})
    preview = render_preview(root, n=5, label="stain", image_size=32)
    assert [r["labels"] for r in preview.rows] == [["stain"]]
    augmented = render_preview(root, n=2, seed=1, augmented=True, image_size=32)
    assert augmented.image.size[0] == len(COLUMNS) * (32 + PAD) + PAD


def test_control_view_colours():
    control = torch.zeros(3, 2, 2)
    control[0, 0, 0] = 1
    control[2, 1, 1] = 1
    view = control_view(control, list(label_colours(["a", "b"]).values()))
    assert tuple(view[:, 1, 1].tolist()) == label_colours(["a", "b"])["b"]
    assert tuple(view[:, 0, 1].tolist()) == (0, 0, 0)


def test_half_block_rendering_fits_the_width():
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    img.paste((0, 0, 255), (0, 50, 200, 100))
    console = Console(width=40, file=io.StringIO(), color_system="truecolor", force_terminal=True)
    console.print(HalfBlockImage(img))
    out = console.file.getvalue()
    lines = [line for line in out.splitlines() if line]
    assert len(lines) == 10  # 40 columns -> 20 pixel rows -> 10 text rows
    assert all(line.count("▀") == 40 for line in lines)
    assert "38;2;255;0;0" in lines[0] and "48;2;0;0;255" in lines[-1]
