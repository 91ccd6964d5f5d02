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


def test_control_colours_are_the_dataset_previews_for_every_label():
    from ptools.data.preview import NORMAL_COLOUR, control_view, label_colours
    from ptools.defectgan.monitor import colorize_control

    labels = ["scratch", "crack", "spot", "stain", "dent", "hole"]
    colours = list(label_colours(labels).values())
    for channel in range(len(labels) + 1):
        control = torch.zeros(1, len(labels) + 1, 4, 4)
        control[0, channel] = 1
        mine = (colorize_control(control)[0] * 255).round().to(torch.uint8)
        preview = control_view(control[0], colours)
        assert torch.equal(mine, preview), channel
    assert tuple(int(v) for v in (colorize_control(torch.eye(7)[:, :, None, None])[0, :, 0, 0] * 255).round()) == (
        NORMAL_COLOUR
    )


def test_each_translation_stands_right_of_its_source():
    cols = list(SAMPLE_COLUMNS)
    assert cols.index("restored") == cols.index("real defect") + 1
    assert cols.index("synthetic defect") > cols.index("input")
    assert cols[0] == "input"


def test_sample_grid_pixels_follow_the_titles(tiny_data, tmp_path):
    """The trainer puts the real defect image in the "real defect" column (compared pixel for pixel)."""
    from PIL import Image

    from ptools.data import DefectDataset, denormalize
    from ptools.defectgan.trainer import train
    from tests.defectgan.conftest import tiny_config

    config = tiny_config(steps=1, d_steps=1)
    train(config, data_root=tiny_data, run_dir=tmp_path / "run", device="cpu", progress=False)
    (png,) = (tmp_path / "run" / "samples").iterdir()
    px = np.asarray(Image.open(png).convert("RGB")).astype(int)
    data = DefectDataset(tiny_data, image_size=config.image_size, labels=config.labels)
    first = next(i for i, s in enumerate(data.samples) if config.labels[0] in s.labels)
    real = (denormalize(data[(first, 0)]["defect"]) * 255).round().permute(1, 2, 0).numpy().astype(int)
    size = config.image_size
    scale = max(1, -(-128 // size))
    tile = size * scale
    left = px.shape[1] - (len(SAMPLE_COLUMNS) * (tile + 2) + 2)
    top = px.shape[0] - (len(config.labels) * (tile + 2) + 2)
    c = SAMPLE_COLUMNS.index("real defect")
    x0, y0 = left + 2 + c * (tile + 2), top + 2
    shown = px[y0 : y0 + tile : scale, x0 : x0 + tile : scale]
    assert np.abs(shown - real).max() <= 1
