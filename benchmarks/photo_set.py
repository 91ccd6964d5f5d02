"""A real-photo defect set for judging DefectGAN: scikit-image's texture photographs, defects drawn here.

The surfaces are photographs that scikit-image ships (brick wall, grass, gravel: grey photos given a
fixed colour cast each; a stained tissue micrograph in its own colours). The defects (crack, scratch,
spot, stain: the built-in label names) are drawn by this file alone, sharing no code with
`ptools/data/synth.py`: random-walk cracks whose width and depth vary along their length, thin
anti-aliased scratches (some broken), irregular pits and rust spots, and stains with soft, mottled
edges whose colour multiplies the surface so its texture shows through.

Each photo is split by columns so the held-out split comes from pixels the training split never saw:

    split     photo columns        use
    train     [0, 296)             what `ptools train --data` learns from
    judge     [0, 296)             the independent classifier's training images (defects drawn anew)
    heldout   [328, 512)           evaluation: neither the generator nor the judge saw these pixels

Crops of 64-128 source pixels (a random scale), a random flip / quarter turn and a small gain change
are resized to `--size`. Every sample is a pure function of (seed, split, sample number). The set is
written in the seed layout `{OUT}/{label}/normal|defect|defect_segmentation/NAME.png` (masks binary,
the defect image equal to the normal outside its mask), so `ptools dataset check OUT` accepts it.

    pip install scikit-image          # a benchmark dependency only; ptools itself does not need it
    python benchmarks/photo_set.py runs/photos --split train --n-per-label 300 --size 64 --seed 0
    python benchmarks/photo_set.py runs/photos-eval --split heldout --n-per-label 50 --seed 1
    ptools dataset check runs/photos && ptools train --data runs/photos --preset small --out runs/p

    from photo_set import build_photo_set          # with benchmarks/ on sys.path
    build_photo_set("runs/photos", split="train", n_per_label=300, size=64, seed=0)

Options: --labels crack,scratch,spot,stain (any subset), --force (replace a set this script made; any
other folder is refused). Exit 0 on success, 2 on bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ("crack", "scratch", "spot", "stain")
SPLITS = {"train": 1, "judge": 2, "heldout": 3}  # the split's number enters every sample's RNG seed
# Column ranges of the 512 px photos (a 32 px gap: no crop of one range reaches into the other).
REGIONS = {"train": (0, 296), "judge": (0, 296), "heldout": (328, 512)}
CROP_RANGE = (64, 128)  # source pixels per crop side, resized to the output size
MARKER = "photo_set.json"
SS = 4  # supersampling of the defect shapes: anti-aliased edges

Array = np.ndarray

# name -> (scikit-image loader, colour cast for grey photos; None = a colour photo kept as it is)
SURFACES: dict[str, tuple[str, tuple[float, float, float] | None]] = {
    "brick": ("brick", (1.0, 0.74, 0.62)),
    "grass": ("grass", (0.78, 0.96, 0.62)),
    "gravel": ("gravel", (0.97, 0.92, 0.84)),
    "tissue": ("immunohistochemistry", None),
}


@lru_cache(maxsize=1)
def load_photos() -> dict[str, Array]:
    """The surface photos as float32 (512, 512, 3) in [0, 1], from scikit-image's bundled data."""
    try:
        import skimage.data
    except ModuleNotFoundError:
        raise SystemExit("photo_set: needs scikit-image (pip install scikit-image)") from None
    out = {}
    for name, (loader, cast) in SURFACES.items():
        img = np.asarray(getattr(skimage.data, loader)(), dtype=np.float32) / 255.0
        if img.ndim == 2:
            img = img[..., None] * np.asarray(cast, np.float32)
        out[name] = np.ascontiguousarray(img[:512, :512, :3])
    return out


# ---------------------------------------------------------------- surfaces


def crop_box(rng: np.random.Generator, photo_shape: tuple[int, int], split: str) -> tuple[int, int, int]:
    """(top, left, side) of a square crop inside the split's column range of a photo."""
    x0, x1 = REGIONS[split]
    side = int(rng.integers(CROP_RANGE[0], CROP_RANGE[1] + 1))
    side = min(side, x1 - x0, photo_shape[0])
    left = int(rng.integers(x0, x1 - side + 1))
    top = int(rng.integers(0, photo_shape[0] - side + 1))
    return top, left, side


def surface(rng: np.random.Generator, photo: Array, split: str, size: int) -> Array:
    """A (size, size, 3) float crop of `photo` from the split's region: scaled, turned, gain-jittered."""
    top, left, side = crop_box(rng, photo.shape[:2], split)
    crop = photo[top : top + side, left : left + side]
    u8 = Image.fromarray((crop * 255 + 0.5).astype(np.uint8))
    img = np.asarray(u8.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    img = np.rot90(img, int(rng.integers(4)))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    gain = rng.uniform(0.9, 1.1) * (1 + rng.uniform(-0.03, 0.03, 3))  # exposure and white balance
    return np.clip(img * gain, 0, 1).astype(np.float32)


# ---------------------------------------------------------------- shapes (coverage in [0, 1])


def _grid(size: int) -> tuple[Array, Array]:
    """Supersampled pixel-centre coordinates (y, x) in output pixels."""
    c = (np.arange(size * SS, dtype=np.float32) + 0.5) / SS
    return np.meshgrid(c, c, indexing="ij")


def _pool(fine: Array, size: int) -> Array:
    """Average SS x SS blocks: a supersampled shape -> anti-aliased coverage."""
    return fine.reshape(size, SS, size, SS).mean(axis=(1, 3))


def stroke(points: Array, half_widths: Array, size: int) -> Array:
    """Coverage of a polyline (K, 2) as (x, y) with a half width per vertex (linearly varied along each segment)."""
    yy, xx = _grid(size)
    inside = np.zeros_like(xx, dtype=bool)
    for (p, q), (hp, hq) in zip(
        zip(points[:-1], points[1:], strict=True), zip(half_widths[:-1], half_widths[1:], strict=True), strict=True
    ):
        d = q - p
        length2 = float(d @ d) or 1e-6
        t = np.clip(((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / length2, 0, 1)
        dist = np.hypot(xx - (p[0] + t * d[0]), yy - (p[1] + t * d[1]))
        inside |= dist <= hp + t * (hq - hp)
    return _pool(inside.astype(np.float32), size)


def blob(center: Array, radius: float, size: int, rng: np.random.Generator, wobble: float, soft: float) -> Array:
    """Coverage of an irregular disc: the radius is modulated by a few random harmonics of the angle,
    and the edge ramps over `soft` pixels (0: a hard, anti-aliased edge)."""
    yy, xx = _grid(size)
    angle = np.arctan2(yy - center[1], xx - center[0])
    r = np.full_like(angle, radius)
    for k in range(2, 6):
        r *= 1 + wobble / k * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    dist = np.hypot(xx - center[0], yy - center[1])
    fine = np.clip((r - dist) / soft + 0.5, 0, 1) if soft > 0 else (dist <= r).astype(np.float32)
    return _pool(fine.astype(np.float32), size)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> Array:
    """A (size, size) field in [0, 1] that varies over about size / cells pixels (bicubic resize of random cells)."""
    grid = Image.fromarray(rng.random((cells, cells)).astype(np.float32), mode="F")
    field = np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(field, 0, 1)


def _random_walk(rng: np.random.Generator, start: Array, heading: float, steps: int, step: float, turn: float) -> Array:
    pts = [start]
    for _ in range(steps):
        heading += rng.normal(0, turn)
        pts.append(pts[-1] + step * rng.uniform(0.7, 1.3) * np.array([np.cos(heading), np.sin(heading)]))
    return np.array(pts, np.float32)


# ---------------------------------------------------------------- defects: (alpha, composite) pairs


def draw_crack(rng: np.random.Generator, img: Array) -> tuple[Array, Array]:
    """A dark random-walk crack (and sometimes a branch): width tapers to the tips, depth varies along it."""
    size = img.shape[0]
    s = size / 64
    start = rng.uniform(0.2, 0.8, 2).astype(np.float32) * size
    main = _random_walk(rng, start, rng.uniform(0, 2 * np.pi), int(rng.integers(10, 22)), 2.2 * s, 0.35)
    taper = np.sin(np.linspace(0.15, np.pi - 0.15, len(main))) ** 0.5
    width = rng.uniform(0.45, 1.1) * s
    alpha = stroke(main, width * taper, size)
    if rng.random() < 0.55:
        j = int(rng.integers(len(main) // 4, 3 * len(main) // 4))
        branch = _random_walk(rng, main[j], rng.uniform(0, 2 * np.pi), int(rng.integers(4, 10)), 2.0 * s, 0.4)
        alpha = np.maximum(alpha, stroke(branch, 0.45 * s * np.linspace(1, 0.4, len(branch)), size))
    depth = rng.uniform(0.55, 0.85) * (0.75 + 0.25 * smooth_noise(rng, size, 5))
    out = img * (1 - (alpha * depth)[..., None])
    return alpha, out


def draw_scratch(rng: np.random.Generator, img: Array) -> tuple[Array, Array]:
    """One to three thin, light, anti-aliased lines, gently bent; some are broken into dashes."""
    size = img.shape[0]
    s = size / 64
    alpha = np.zeros((size, size), np.float32)
    theta = rng.uniform(0, np.pi)
    for _ in range(int(rng.integers(1, 4))):
        theta += rng.normal(0, 0.12)  # scratches of one event run nearly parallel
        direction = np.array([np.cos(theta), np.sin(theta)], np.float32)
        normal = np.array([-direction[1], direction[0]], np.float32)
        center = rng.uniform(0.25, 0.75, 2).astype(np.float32) * size
        length = rng.uniform(0.35, 0.85) * size
        bend = rng.uniform(-0.08, 0.08) * size
        t = np.linspace(-0.5, 0.5, 24, dtype=np.float32)[:, None]
        pts = center + t * length * direction + bend * (1 - 4 * t**2) * normal
        hw = np.full(len(pts), rng.uniform(0.3, 0.65) * s, np.float32)
        line = stroke(pts, hw, size)
        if rng.random() < 0.4:  # broken: dashes along the line
            along = (np.mgrid[0:size, 0:size][::-1].transpose(1, 2, 0) @ direction) / (size * 0.12)
            line *= (np.sin(2 * np.pi * along + rng.uniform(0, 6.3)) > -0.3).astype(np.float32)
        alpha = np.maximum(alpha, line)
    strength = rng.uniform(0.55, 0.9)
    lum = img.mean(axis=2, keepdims=True)
    light = np.clip(0.5 * (img + lum) + rng.uniform(0.25, 0.45), 0, 1)  # bright and a little desaturated
    out = img + (alpha * strength)[..., None] * (light - img)
    return alpha, out


def draw_spot(rng: np.random.Generator, img: Array) -> tuple[Array, Array]:
    """One to four small pits (dark) or rust spots (reddish brown), irregular, with a soft rim."""
    size = img.shape[0]
    s = size / 64
    alpha = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 5))):
        center = rng.uniform(0.12, 0.88, 2).astype(np.float32) * size
        alpha = np.maximum(alpha, blob(center, rng.uniform(1.3, 3.8) * s, size, rng, 0.35, 0.8 * s))
    if rng.random() < 0.5:  # a pit: darker towards its centre
        out = img * (1 - 0.8 * alpha[..., None] ** 0.7)
    else:  # rust: the surface's shading kept, its colour pulled to a rust tone
        rust = np.array([rng.uniform(0.45, 0.65), rng.uniform(0.2, 0.32), rng.uniform(0.06, 0.14)], np.float32)
        lum = img.mean(axis=2, keepdims=True)
        target = np.clip(rust * (0.5 + lum), 0, 1)
        out = img + 0.85 * alpha[..., None] * (target - img)
    return alpha, out


def draw_stain(rng: np.random.Generator, img: Array) -> tuple[Array, Array]:
    """A large soft-edged blotch whose colour multiplies the surface (its texture shows through), mottled,
    sometimes with the darker rim a drying liquid leaves."""
    size = img.shape[0]
    s = size / 64
    center = rng.uniform(0.3, 0.7, 2).astype(np.float32) * size
    alpha = blob(center, rng.uniform(7, 15) * s, size, rng, 0.45, rng.uniform(2.0, 4.0) * s)
    alpha *= 0.7 + 0.3 * smooth_noise(rng, size, 6)
    kind = rng.random()
    if kind < 0.4:  # coffee / tannin: brown
        tint = np.array([rng.uniform(0.62, 0.78), rng.uniform(0.45, 0.58), rng.uniform(0.25, 0.38)], np.float32)
    elif kind < 0.7:  # oil / water: darker, nearly neutral
        tint = np.full(3, rng.uniform(0.5, 0.7), np.float32) * (1 + rng.uniform(-0.04, 0.04, 3))
    else:  # rust run-off: orange
        tint = np.array([rng.uniform(0.8, 0.95), rng.uniform(0.5, 0.62), rng.uniform(0.22, 0.35)], np.float32)
    if rng.random() < 0.5:  # tide line: a darker band just inside the edge
        rim = np.clip(1 - np.abs(alpha - 0.45) / 0.2, 0, 1)
        tint_map = tint[None, None, :] * (1 - 0.25 * rim[..., None])
    else:
        tint_map = np.broadcast_to(tint, img.shape)
    strength = rng.uniform(0.7, 1.0)
    out = img * (1 - (alpha * strength)[..., None] * (1 - tint_map))
    return alpha, out


DEFECTS: dict[str, Callable[[np.random.Generator, Array], tuple[Array, Array]]] = {
    "crack": draw_crack,
    "scratch": draw_scratch,
    "spot": draw_spot,
    "stain": draw_stain,
}
MASK_ALPHA = 0.2  # a pixel belongs to the mask where the shape covers at least this much of it


def photo_sample(
    seed: int, split: str, i: int, size: int, label: str, photos: dict[str, Array] | None = None
) -> tuple[Array, Array, Array, str]:
    """(normal uint8 HxWx3, defect uint8 HxWx3, mask bool HxW, surface name) for sample `i` of a split.

    Outside the mask the defect image equals the normal image bit for bit (a mask says where it changed).
    """
    photos = load_photos() if photos is None else photos
    names = sorted(photos)
    rng = np.random.default_rng([seed, SPLITS[split], i])
    name = names[(i // len(LABELS)) % len(names)]  # every surface with every label
    normal = surface(rng, photos[name], split, size)
    for _ in range(10):  # a shape drawn almost off the image is drawn again
        alpha, defect = DEFECTS[label](rng, normal)
        mask = alpha >= MASK_ALPHA
        if mask.sum() >= 4 and not mask.all():
            break
    normal_u8 = (np.clip(normal, 0, 1) * 255 + 0.5).astype(np.uint8)
    defect_u8 = (np.clip(defect, 0, 1) * 255 + 0.5).astype(np.uint8)
    defect_u8[~mask] = normal_u8[~mask]
    return normal_u8, defect_u8, mask, name


def build_photo_set(
    out_dir: str | Path,
    split: str = "train",
    n_per_label: int = 300,
    size: int = 64,
    seed: int = 0,
    labels: Sequence[str] = LABELS,
    force: bool = False,
    photos: dict[str, Array] | None = None,
) -> Path:
    """Write the split as a seed-layout dataset in `out_dir` (built in a temp folder, then renamed); return it.

    `photos` replaces scikit-image's photos (name -> float (H, W, 3) in [0, 1], at least 512 x 512):
    tests use it. A non-empty `out_dir` is replaced only with `force` and only if this script made it.
    """
    out_dir = Path(out_dir)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
    unknown = [x for x in labels if x not in DEFECTS]
    if unknown or not labels:
        raise ValueError(f"labels must be some of {', '.join(LABELS)} (got {', '.join(labels) or 'none'})")
    if n_per_label < 1 or not 16 <= size <= 512:
        raise ValueError(f"need n_per_label >= 1 and 16 <= size <= 512 (got {n_per_label}, {size})")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not (force and (out_dir / MARKER).is_file()):
            why = "pass --force to replace it" if (out_dir / MARKER).is_file() else "not made by photo_set.py"
            raise ValueError(f"{out_dir}: exists and is not empty ({why})")
    photos = load_photos() if photos is None else photos
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        counts: dict[str, int] = {}
        for label in labels:
            for sub in ("normal", "defect", "defect_segmentation"):
                (tmp / label / sub).mkdir(parents=True)
        for label in labels:
            for k in range(n_per_label):
                i = k * len(LABELS) + LABELS.index(label)  # sample numbers do not depend on the label subset
                normal, defect, mask, name = photo_sample(seed, split, i, size, label, photos)
                counts[name] = counts.get(name, 0) + 1
                stem = f"{label}_{name}_{i:05d}"
                Image.fromarray(normal).save(tmp / label / "normal" / f"{stem}.png", compress_level=1)
                Image.fromarray(defect).save(tmp / label / "defect" / f"{stem}.png", compress_level=1)
                Image.fromarray(mask.astype(np.uint8) * 255).save(
                    tmp / label / "defect_segmentation" / f"{stem}.png", compress_level=1
                )
        meta = {
            "generator": "benchmarks/photo_set.py",
            "split": split,
            "columns": list(REGIONS[split]),
            "n_per_label": n_per_label,
            "size": size,
            "seed": seed,
            "labels": list(labels),
            "surfaces": counts,
        }
        (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the dataset folder to write")
    parser.add_argument("--split", choices=list(SPLITS), default="train")
    parser.add_argument("--n-per-label", type=int, default=300, help="samples per label (default 300)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", default=",".join(LABELS), help="comma-separated subset of the labels")
    parser.add_argument("--force", action="store_true", help="replace a set this script made before")
    args = parser.parse_args(argv)
    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    try:
        out = build_photo_set(args.out, args.split, args.n_per_label, args.size, args.seed, labels, args.force)
    except ValueError as e:
        print(f"photo_set: {e}", file=sys.stderr)
        return 2
    meta = json.loads((out / MARKER).read_text())
    print(
        f"{out}: {args.split} split, {args.n_per_label} x {len(labels)} labels at {args.size} px, "
        f"surfaces {meta['surfaces']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
