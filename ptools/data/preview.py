"""Render dataset samples as a grid (normal | defect | mask | overlay | control map), to PNG or a terminal."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from rich.color import Color
from rich.console import Console, ConsoleOptions
from rich.segment import Segment
from rich.style import Style
from torchvision.utils import draw_segmentation_masks, make_grid

from ptools.data.dataset import DefectDataset
from ptools.errors import PtoolsError

COLUMNS = ("normal", "defect", "mask", "overlay", "control")
PAD = 2
HEADER_HEIGHT = 16
LEGEND_ROW_HEIGHT = 18
BACKGROUND = (255, 255, 255)
NORMAL_COLOUR = (48, 48, 48)  # channel 0 in the control-map view: background stays dark
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)


def label_colours(labels: list[str]) -> dict[str, tuple[int, int, int]]:
    """A fixed colour per label, by its control-map channel (stable between runs)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(labels)}


@dataclass
class Preview:
    """The rendered grid and what it shows."""

    image: Image.Image
    indices: list[int]
    labels: list[str]
    rows: list[dict[str, object]]
    tiles: list[torch.Tensor] | None = None  # COLUMNS tiles per sample, for the terminal view


def choose_indices(dataset: DefectDataset, n: int, seed: int, label: str | None) -> list[int]:
    candidates = list(range(len(dataset)))
    if label is not None:
        if label not in dataset.labels:
            raise PtoolsError(f"label {label!r} not in this dataset", hint=f"labels: {', '.join(dataset.labels)}")
        candidates = [i for i in candidates if label in dataset.samples[i].labels]
    rng = random.Random(seed)
    return sorted(rng.sample(candidates, min(n, len(candidates))))


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def control_view(control: torch.Tensor, colours: list[tuple[int, int, int]]) -> torch.Tensor:
    """(C,H,W) control map -> (3,H,W) uint8: every channel painted in its colour, weighted by its value."""
    palette = torch.tensor([NORMAL_COLOUR, *colours], dtype=torch.float32)  # (C, 3)
    rgb = torch.einsum("chw,ck->khw", control, palette)
    return rgb.clamp(0, 255).round().to(torch.uint8)


def sample_tiles(dataset: DefectDataset, index: int, epoch: int = 0) -> list[torch.Tensor]:
    """The five uint8 (3,S,S) tiles of one preview row."""
    item = dataset[(index, epoch)]
    colours = list(label_colours(dataset.labels).values())
    defect = _to_uint8(item["defect"])
    mask = (item["mask"] * 255).to(torch.uint8).expand(3, -1, -1)
    # Overlay from the control channels: pixel masks where known, the whole image for image-level labels.
    present = [c for c in range(1, dataset.num_classes) if item["defect_labels"][c] > 0]
    overlay = defect
    if present:
        masks = item["control"][present] > 0.5
        overlay = draw_segmentation_masks(defect, masks, alpha=0.45, colors=[colours[c - 1] for c in present])
    return [_to_uint8(item["normal"]), defect, mask, overlay, control_view(item["control"], colours)]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def legend_rows(labels: list[str], width: int) -> list[list[str]]:
    """Split the legend entries ("normal" first) into rows that fit `width` pixels."""
    font = _font(12)
    rows: list[list[str]] = [[]]
    x = PAD
    for name in ["normal", *labels]:
        w = 14 + int(font.getlength(name)) + 12
        if rows[-1] and x + w > width:
            rows.append([])
            x = PAD
        rows[-1].append(name)
        x += w
    return rows


def render_grid(tiles: list[torch.Tensor], labels: list[str]) -> Image.Image:
    """Rows of tiles -> one PNG-ready image with column titles on top and a colour legend below."""
    grid = make_grid(torch.stack(tiles), nrow=len(COLUMNS), padding=PAD, pad_value=255)
    body = Image.fromarray(grid.permute(1, 2, 0).numpy())
    tile = tiles[0].shape[-1]
    rows = legend_rows(labels, body.width)
    out = Image.new("RGB", (body.width, HEADER_HEIGHT + body.height + LEGEND_ROW_HEIGHT * len(rows)), BACKGROUND)
    out.paste(body, (0, HEADER_HEIGHT))
    draw = ImageDraw.Draw(out)
    font = _font(12)
    for c, title in enumerate(COLUMNS):
        x = PAD + c * (tile + PAD)
        draw.text((x + 2, 2), title, fill=(0, 0, 0), font=font)
    colours = {"normal": NORMAL_COLOUR, **label_colours(labels)}
    y = HEADER_HEIGHT + body.height + 2
    for row in rows:
        x = PAD
        for name in row:
            draw.rectangle([x, y + 2, x + 10, y + 12], fill=colours[name], outline=(0, 0, 0))
            draw.text((x + 14, y), name, fill=(0, 0, 0), font=font)
            x += 14 + int(font.getlength(name)) + 12
        y += LEGEND_ROW_HEIGHT
    return out


def render_preview(
    root: str | Path,
    n: int = 4,
    seed: int = 0,
    label: str | None = None,
    augmented: bool = False,
    image_size: int = 128,
    layout: str = "auto",
) -> Preview:
    """Draw `n` samples (chosen by `seed`, optionally only those with `label`) of the dataset at `root`."""
    if n < 1:
        raise PtoolsError(f"--n must be at least 1 (got {n})")
    dataset = DefectDataset(root, image_size=image_size, augment=augmented, layout=layout, seed=seed)
    indices = choose_indices(dataset, n, seed, label)
    tiles: list[torch.Tensor] = []
    rows: list[dict[str, object]] = []
    for i in indices:
        tiles += sample_tiles(dataset, i)
        s = dataset.samples[i]
        rows.append(
            {
                "index": i,
                "labels": list(s.labels),
                "defect": str(s.defect),
                "normal": str(dataset.normal_for(i, 0)),
                "mask": None if s.mask is None else str(s.mask),
            }
        )
    return Preview(render_grid(tiles, dataset.labels), indices, list(dataset.labels), rows, tiles)


RAMP = " .:-=+*#%@"  # brightness, dark to light, for terminals without 256 colours


class TerminalPreview:
    """The preview for a terminal: column titles, a caption per sample and the colour legend as text (pixel
    text scaled to 80 columns cannot be read), the tiles as pixels. In a terminal of 256 or more colours
    the pixels are "▀" cells (fg = upper, bg = lower); with 16 colours (TERM=xterm) or none (a log), where
    the nearest of 16 colours turns most of an image white, they are characters by brightness, with the
    saturated ones (masks, overlays, control colours) in their nearest colour."""

    def __init__(self, preview: Preview, max_width: int | None = None) -> None:
        if not preview.tiles:
            raise ValueError("a Preview made by render_preview (with its tiles) is needed")
        self.preview = preview
        self.max_width = max_width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterable[Any]:
        from rich.text import Text

        p = self.preview
        per_row = len(COLUMNS)
        rows = [p.tiles[i : i + per_row] for i in range(0, len(p.tiles), per_row)]
        tile = rows[0][0].shape[-1]
        row_px = per_row * tile + (per_row + 1) * PAD
        width = min(options.max_width, self.max_width or options.max_width, row_px)
        scale = width / row_px
        titles = [" "] * width
        spans = []
        for c, title in enumerate(COLUMNS):
            x0, span = round((PAD + c * (tile + PAD)) * scale), max(1, round(tile * scale))
            spans.append((x0, min(width, x0 + span)))
            for j, ch in enumerate(title[:span]):
                if x0 + j < width:
                    titles[x0 + j] = ch
        yield Text("".join(titles).rstrip(), style="bold")
        rich_colours = console.color_system in ("256", "truecolor")
        for r, tiles in enumerate(rows):
            meta = p.rows[r] if r < len(p.rows) else {}
            labels = ", ".join(str(x) for x in meta.get("labels", [])) or "normal"  # type: ignore[union-attr]
            yield Text(f"{r + 1}. {labels}: {Path(str(meta.get('defect', ''))).name}", style="dim")
            grid = make_grid(torch.stack(tiles), nrow=per_row, padding=PAD, pad_value=0)
            image = Image.fromarray(grid.permute(1, 2, 0).numpy())
            yield from _half_blocks(image, width) if rich_colours else _ramp(image, width, spans)
        legend = Text("control colours:")
        for name, colour in {"normal": NORMAL_COLOUR, **label_colours(p.labels)}.items():
            legend.append("  ■ ", style=Style(color=Color.from_rgb(*colour)))
            legend.append(name)
        yield legend


def _scaled(image: Image.Image, width: int) -> np.ndarray:
    height = max(2, round(image.height * width / image.width))
    height += height % 2
    # BOX (area average) when shrinking: Lanczos rings around a small bright blob and invents colours
    resample = Image.Resampling.BOX if width < image.width else Image.Resampling.LANCZOS
    return np.asarray(image.convert("RGB").resize((width, height), resample))


def _half_blocks(image: Image.Image, width: int) -> Iterable[Segment]:
    pixels = _scaled(image, width)
    styles: dict[tuple[int, ...], Style] = {}
    for y in range(0, pixels.shape[0], 2):
        top, bottom = pixels[y], pixels[y + 1]
        for x in range(pixels.shape[1]):
            key = (*top[x], *bottom[x])
            style = styles.get(key)
            if style is None:
                style = styles[key] = Style(
                    color=Color.from_rgb(key[0], key[1], key[2]), bgcolor=Color.from_rgb(key[3], key[4], key[5])
                )
            yield Segment("▀", style)
        yield Segment.line()


def _ramp(image: Image.Image, width: int, spans: list[tuple[int, int]]) -> Iterable[Segment]:
    pixels = _scaled(image, width).astype(np.float32)
    cells = (pixels[0::2] + pixels[1::2]) / 2  # one character covers two pixel rows
    light = cells @ np.array([0.299, 0.587, 0.114], np.float32)
    # Each tile's brightness stretched to the whole ramp: surface textures are low-contrast greys, and a
    # defect on them is a small step of brightness that 10 characters would otherwise not show.
    level = np.zeros_like(light)
    for x0, x1 in spans:
        inner = light[:, x0 + 1 : x1 - 1]  # the edge cells are blended with the padding between tiles
        if inner.size:
            lo, hi = np.percentile(inner, 5), np.percentile(inner, 95)
            # at least 40 grey levels of range: a flat tile (a uniform control map) stays flat, not noise
            level[:, x0:x1] = (light[:, x0:x1] - lo) / max(hi - lo, 40.0)
    spread = cells.max(axis=2) - cells.min(axis=2)
    for y in range(cells.shape[0]):
        for x in range(cells.shape[1]):
            if spread[y, x] > 90:  # a saturated pixel (mask, overlay, control colours): "@" in its nearest colour
                r, g, b = (int(v) for v in cells[y, x])
                yield Segment("@", Style(color=Color.from_rgb(r, g, b)))
            else:
                yield Segment(RAMP[int(np.clip(level[y, x], 0, 0.999) * len(RAMP))])
        yield Segment.line()
