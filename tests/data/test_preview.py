"""Preview grid: size, what each column shows, terminal rendering."""

from __future__ import annotations

import io

import numpy as np
import torch
from rich.console import Console
from rich.text import Text

from ptools.data.preview import (
    COLUMNS,
    HEADER_HEIGHT,
    LEGEND_ROW_HEIGHT,
    PAD,
    TerminalPreview,
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


def _terminal(preview, color_system: str | None, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=color_system, force_terminal=True)
    console.print(TerminalPreview(preview))
    return console.file.getvalue()


def test_terminal_preview_titles_and_legend_are_text(tmp_path):
    """Titles, captions and the legend are text (pixel text shrunk to 80 columns cannot be read); the
    pixels fit the width; 256-colour and truecolor terminals get half-block cells."""
    root = seed_layout(tmp_path, {"crack": ["a", "b"], "stain": ["d"]}, size=20)
    preview = render_preview(root, n=2, seed=0, image_size=64)
    for system in ("truecolor", "256"):
        out = _terminal(preview, system)
        plain = Text.from_ansi(out).plain.splitlines()
        assert plain[0].split() == list(COLUMNS)
        assert plain[1].startswith("1. ") and "crack" in plain[1]
        assert plain[-1].split()[:2] == ["control", "colours:"] and "stain" in plain[-1]
        pixel_rows = [line for line in plain if "▀" in line]
        assert pixel_rows and all(len(line) <= 80 and set(line) == {"▀"} for line in pixel_rows)
    assert "38;2;" in _terminal(preview, "truecolor")


def test_terminal_preview_with_16_colours_shows_the_image_not_white_blocks(tmp_path):
    """TERM=xterm (16 colours) and logs (no colour): characters by brightness; the mask tile shows the
    mask's shape (helpers' mask: rows/cols 4..9 of 20) and the textures are not one flat block."""
    root = seed_layout(tmp_path, {"crack": ["a"]}, size=20)
    preview = render_preview(root, n=1, seed=0, image_size=64)
    for system in ("standard", None):
        out = _terminal(preview, system)
        lines = Text.from_ansi(out).plain.splitlines()
        assert "▀" not in out
        body = lines[2:-1]
        width = len(lines[0]) if lines[0] else 80
        mask_x0 = lines[0].index("mask")
        span = round(64 * 80 / (len(COLUMNS) * (64 + PAD) + PAD))
        mask = [row[mask_x0 : mask_x0 + span] for row in body]
        inside = mask[len(mask) * 10 // 32][span * 10 // 32]  # about the middle of the mask (px 4..9 of 20)
        outside = mask[-1][-2]
        assert inside == "@" and outside == " ", (inside, outside, width)
    from ptools.data import synthesize

    textured = render_preview(synthesize(tmp_path / "synth", n=4, size=64, seed=3), n=1, seed=0, image_size=64)
    for system in ("standard", None):
        lines = Text.from_ansi(_terminal(textured, system)).plain.splitlines()
        normal = "".join(row[1 : span - 1] for row in lines[2:-1])
        assert len(set(normal)) >= 4  # the surface's texture, not one block character
