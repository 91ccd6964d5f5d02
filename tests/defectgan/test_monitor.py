"""Sample grids: titled columns, one named row per label, the step in the heading."""

from __future__ import annotations

import numpy as np
import torch

from ptools.defectgan.monitor import SAMPLE_COLUMNS, render_sample_grid


def test_grid_has_a_heading_column_titles_and_row_names():
    torch.manual_seed(0)
    columns = [torch.rand(3, 3, 64, 64) * 0.2 for _ in SAMPLE_COLUMNS]  # dark tiles: text is the only light ink
    image = render_sample_grid(columns, list(SAMPLE_COLUMNS), ["crack", "scratch", "spot"], "step 7/10")
    px = np.asarray(image.convert("L")).astype(int)
    tile = 128  # 64 px tiles are enlarged so the titles fit
    assert image.height > 3 * tile and image.width > len(SAMPLE_COLUMNS) * tile
    top = image.height - (3 * (tile + 2) + 2)  # heading + title band above the tiles
    left = image.width - (len(SAMPLE_COLUMNS) * (tile + 2) + 2)  # the row-name band
    assert left > 20 and top > 20
    assert (px[: top // 2] < 128).any()  # heading text
    for c in range(len(SAMPLE_COLUMNS)):  # a title over every column, none spilling past its tile
        x0 = left + 2 + c * (tile + 2)
        band = px[top // 2 : top, x0 : x0 + tile]
        assert (band < 128).any(), SAMPLE_COLUMNS[c]
    for r in range(3):  # a name left of every row
        y0 = top + 2 + r * (tile + 2)
        assert (px[y0 : y0 + tile, :left] < 128).any()


def test_training_writes_one_row_per_label(tiny_data, tmp_path):
    from PIL import Image

    from ptools.defectgan.trainer import train
    from tests.defectgan.conftest import tiny_config

    train(tiny_config(steps=1, d_steps=1), data_root=tiny_data, run_dir=tmp_path / "run", device="cpu", progress=False)
    (png,) = (tmp_path / "run" / "samples").iterdir()
    image = Image.open(png)
    n_labels = 4  # crack, scratch, spot, stain in the tiny set
    assert n_labels * 128 < image.height < (n_labels + 1) * 128
    assert len(SAMPLE_COLUMNS) * 128 < image.width < (len(SAMPLE_COLUMNS) + 1) * 128
