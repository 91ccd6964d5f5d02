"""The built-in synthetic defect set: procedural surfaces, defects with exact masks, and their normals.

Every sample is a pure function of (seed, sample number), so the set is the same for a seed whatever
the worker count. Textures are vectorised numpy (upsampled noise, sines); defect shapes are drawn with
PIL (aliasing off, so masks are exactly binary) and the defect only changes pixels inside its mask.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ptools.errors import PtoolsError
from ptools.files import claim_folder, ensure_parent, make_public, temp_folder_beside

KINDS = ("scratch", "crack", "spot", "stain")
ALIASES = {"hole": "spot", "holes": "spot", "spots": "spot", "scratches": "scratch", "cracks": "crack"}
TEXTURES = ("noise", "brushed", "weave", "wood")
MARKER = "synth.json"  # written into the root; lets --force replace only sets made by synth
DEFAULT_N = 1000

Array = np.ndarray


def _upsample(grid: Array, height: int, width: int) -> Array:
    """Smoothly resize a small float grid (bicubic through PIL's float mode)."""
    img = Image.fromarray(grid.astype(np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BICUBIC))


def _fractal(rng: np.random.Generator, size: int, octaves: Sequence[int] = (4, 8, 16, 32)) -> Array:
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for cells in octaves:
        out += amp * _upsample(rng.random((cells, cells)), size, size)
        total += amp
        amp *= 0.55
    out /= total
    return (out - out.min()) / max(float(out.max() - out.min()), 1e-6)


def _texture(rng: np.random.Generator, size: int, family: str) -> Array:
    """A (size, size) luminance field in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if family == "noise":
        tex = _fractal(rng, size)
    elif family == "brushed":
        streaks = _upsample(rng.random((size, int(rng.integers(3, 8)))), size, size)
        tex = 0.7 * streaks + 0.3 * _fractal(rng, size, (4, 8))
        if rng.random() < 0.5:
            tex = tex.T
    elif family == "weave":
        f = rng.uniform(6, 14)
        weave = np.sin(2 * np.pi * f * xx) * np.sin(2 * np.pi * f * yy)
        tex = 0.5 + 0.3 * weave + 0.3 * (_fractal(rng, size, (8, 16)) - 0.5)
    else:  # wood: rings around an off-image centre, warped by noise
        cx, cy = rng.uniform(-0.5, 1.5, 2)
        r = np.sqrt(((xx - cx) * rng.uniform(0.2, 1.0)) ** 2 + (yy - cy) ** 2)
        tex = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(6, 14) * r + 4 * _fractal(rng, size, (4, 8)))
    return np.clip(tex, 0.0, 1.0).astype(np.float32)


def _surface(rng: np.random.Generator, size: int) -> Array:
    """(size, size, 3) float RGB in [0, 1]: a texture family tinted with a muted colour."""
    family = TEXTURES[int(rng.integers(len(TEXTURES)))]
    tex = _texture(rng, size, family)
    grey = rng.uniform(0.35, 0.7)
    tint = grey + rng.uniform(-0.08, 0.08, 3)
    contrast = rng.uniform(0.25, 0.55)
    img = tint[None, None, :] * (1.0 + contrast * (tex[..., None] - 0.5))
    grain = rng.normal(0.0, 0.012, (size, size, 1))  # sensor noise, the same in normal and defect
    return np.clip(img + grain, 0.0, 1.0).astype(np.float32)


def _mask_canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("L", (size, size), 0)
    return canvas, ImageDraw.Draw(canvas)


def _scratch(rng: np.random.Generator, size: int, img: Array) -> tuple[Array, Array]:
    canvas, draw = _mask_canvas(size)
    s = size / 128
    for _ in range(int(rng.integers(1, 3))):
        p0 = rng.uniform(0.15, 0.85, 2) * size
        theta = rng.uniform(0, np.pi)
        length = rng.uniform(0.3, 0.7) * size
        bend = rng.uniform(-0.15, 0.15) * size
        t = np.linspace(0, 1, 16)[:, None]
        direction = np.array([np.cos(theta), np.sin(theta)])
        normal = np.array([-direction[1], direction[0]])
        pts = p0 + (t - 0.5) * length * direction + bend * 4 * t * (1 - t) * normal
        draw.line([tuple(p) for p in pts], fill=255, width=max(1, round(rng.uniform(1, 2.5) * s)))
    mask = np.asarray(canvas) > 0
    light = rng.uniform(0.8, 1.0)
    alpha = rng.uniform(0.55, 0.85)
    out = img.copy()
    out[mask] = out[mask] * (1 - alpha) + light * alpha
    return out, mask


def _crack(rng: np.random.Generator, size: int, img: Array) -> tuple[Array, Array]:
    canvas, draw = _mask_canvas(size)
    s = size / 128

    def walk(start: Array, theta: float, steps: int) -> list[tuple[float, float]]:
        pts = [tuple(start)]
        pos = start.copy()
        for _ in range(steps):
            theta += rng.normal(0, 0.45)
            pos = pos + rng.uniform(2.5, 5.0) * s * np.array([np.cos(theta), np.sin(theta)])
            pts.append(tuple(pos))
        return pts

    main = walk(rng.uniform(0.25, 0.75, 2) * size, rng.uniform(0, 2 * np.pi), int(rng.integers(12, 30)))
    draw.line(main, fill=255, width=max(1, round(rng.uniform(1, 3) * s)), joint="curve")
    if rng.random() < 0.6:
        fork = np.array(main[len(main) // 2])
        draw.line(walk(fork, rng.uniform(0, 2 * np.pi), int(rng.integers(5, 14))), fill=255, width=max(1, round(s)))
    mask = np.asarray(canvas) > 0
    out = img.copy()
    out[mask] *= rng.uniform(0.12, 0.35)
    return out, mask


def _spot(rng: np.random.Generator, size: int, img: Array) -> tuple[Array, Array]:
    canvas, draw = _mask_canvas(size)
    s = size / 128
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(0.12, 0.88, 2) * size
        rx, ry = rng.uniform(2, 8, 2) * s
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    mask = np.asarray(canvas) > 0
    out = img.copy()
    rust = np.array([rng.uniform(0.15, 0.35), rng.uniform(0.08, 0.2), rng.uniform(0.03, 0.12)], np.float32)
    hole = rng.random() < 0.5
    out[mask] = out[mask] * 0.2 if hole else out[mask] * 0.3 + rust * 0.7
    return out, mask


def _stain(rng: np.random.Generator, size: int, img: Array) -> tuple[Array, Array]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    radius = rng.uniform(0.1, 0.25) * size
    aspect = rng.uniform(0.6, 1.0)
    dist = np.sqrt(((xx - cx) * aspect) ** 2 + (yy - cy) ** 2) / radius
    wobble = _upsample(rng.random((6, 6)), size, size) - 0.5
    mask = (dist + 0.7 * wobble) < 1.0
    tint = np.array([rng.uniform(0.25, 0.45), rng.uniform(0.18, 0.32), rng.uniform(0.05, 0.2)], np.float32)
    alpha = rng.uniform(0.35, 0.6)
    out = img.copy()
    out[mask] = out[mask] * (1 - alpha) + tint * alpha
    return out, mask


DEFECTS: dict[str, Callable[[np.random.Generator, int, Array], tuple[Array, Array]]] = {
    "scratch": _scratch,
    "crack": _crack,
    "spot": _spot,
    "stain": _stain,
}


def resolve_labels(labels: Sequence[str]) -> list[str]:
    """Validate label names (built-in kinds or their aliases); keeps the names the user gave."""
    out: list[str] = []
    for name in labels:
        name = name.strip()
        if not name:
            continue
        if ALIASES.get(name.lower(), name.lower()) not in DEFECTS:
            raise PtoolsError(f"unknown defect kind {name!r}", hint=f"use some of {', '.join(KINDS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise PtoolsError("no defect labels given", hint=f"use some of {', '.join(KINDS)}")
    return out


def make_sample(seed: int, i: int, size: int, label: str) -> tuple[Array, Array, Array]:
    """(normal uint8 HxWx3, defect uint8 HxWx3, mask bool HxW) for sample number `i`."""
    rng = np.random.default_rng([seed, i])
    normal = _surface(rng, size)
    draw = DEFECTS[ALIASES.get(label.lower(), label.lower())]
    for _ in range(8):  # a defect drawn (almost) off the image is redrawn
        defect, mask = draw(rng, size, normal)
        if mask.sum() >= 4:
            break
    to_u8 = lambda a: (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)  # noqa: E731
    normal_u8, defect_u8 = to_u8(normal), to_u8(defect)
    # Exactness: outside the mask the defect image is the normal image, bit for bit.
    defect_u8[~mask] = normal_u8[~mask]
    return normal_u8, defect_u8, mask


def _write_range(args: tuple[str, int, int, int, int, tuple[str, ...], str]) -> int:
    root, seed, start, stop, size, labels, ext = args
    for i in range(start, stop):
        label = labels[i % len(labels)]
        normal, defect, mask = make_sample(seed, i, size, label)
        name = f"{label}_{i:05d}"
        base = Path(root) / label
        opts = {"quality": 95} if ext == "jpg" else {"compress_level": 1}
        Image.fromarray(normal).save(base / "normal" / f"{name}.{ext}", **opts)
        Image.fromarray(defect).save(base / "defect" / f"{name}.{ext}", **opts)
        Image.fromarray(mask.astype(np.uint8) * 255).save(
            base / "defect_segmentation" / f"{name}.png", compress_level=1
        )
    return stop - start


def synthesize(
    out_dir: str | Path,
    n: int = DEFAULT_N,
    size: int = 128,
    labels: Sequence[str] = KINDS,
    seed: int = 0,
    *,
    force: bool = False,
    ext: str = "png",
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write `n` samples (labels in turn) in the seed layout under `out_dir`; return `out_dir`.

    Built in a temporary sibling folder and renamed into place, so an interrupted run leaves nothing.
    `workers` > 1 spreads the work over processes (the output does not change).
    """
    out_dir = Path(out_dir)
    names = resolve_labels(labels)
    if n < 1:
        raise PtoolsError(f"--n must be at least 1 (got {n})")
    if not 16 <= size <= 2048:
        raise PtoolsError(f"--size must be between 16 and 2048 (got {size})")
    if ext not in ("png", "jpg"):
        raise PtoolsError(f"image format {ext!r} not supported (png or jpg)")
    claim_folder(out_dir, force, MARKER, "ptools dataset synth")
    ensure_parent(out_dir)
    tmp = temp_folder_beside(out_dir)
    try:
        make_public(tmp, folder=True)  # mkdtemp makes it 0700: teammates could not read the set
        for label in names:
            for sub in ("normal", "defect", "defect_segmentation"):
                (tmp / label / sub).mkdir(parents=True)
        chunk = 50
        jobs = [(str(tmp), seed, a, min(a + chunk, n), size, tuple(names), ext) for a in range(0, n, chunk)]
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for done in pool.map(_write_range, jobs):
                    if progress:
                        progress(done)
        else:
            for job in jobs:
                done = _write_range(job)
                if progress:
                    progress(done)
        meta = {"generator": "ptools dataset synth", "n": n, "size": size, "labels": names, "seed": seed, "ext": ext}
        (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            # Swap: old set aside, new one in, old one removed; never a moment with a half-written set.
            trash = temp_folder_beside(out_dir, ".old")
            os.replace(out_dir, trash / "old")
            os.replace(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
