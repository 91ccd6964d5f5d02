"""Does DefectGAN's synthetic data help a downstream model trained on few real defects? Judged on held-out images.

A factory has many normal images and K real defects per label. The benchmark trains the same small
downstream models in every arm, with the same step budget, batch size and schedule, and grades them on
held-out real images no arm ever sees (asserted by pixel hashes):

  - a segmenter (a small U-Net: background + one class per label), graded by mask IoU per label
    (intersection / union summed over every held-out image, the normals included, so false alarms on
    normal images count) and their mean, mIoU;
  - a classifier (normal + one class per label), graded by recall per class and balanced accuracy.

Arms, each with the same real data (K pairs per label, their normals and a pool of other normals):

  real        the real data only;
  gan         + N images per label from `ptools generate --dataset` (placement masks as generate draws
              them), from a generator that `ptools train --preset small --steps 1500 --data` trained on the
              same K pairs (the README's budget);
  copypaste   + N images per label made by pasting a real defect's pixels, through its mask, onto another
              normal image, with flips, 90-degree turns and a shift: what a practitioner tries first;
  quickstart  + N images per label from the README quick start's generator (`ptools train --preset small
              --steps 1500` on the built-in synthetic set: another seed, or on the photo set another domain);
  ceiling     (sanity) real only with every defect of the training pool (hundreds per label): the figure a
              large real set reaches with the same recipe.

In the arms with extra images, a defect in a batch is a real one with probability `--real-share` (0.5)
and an extra one otherwise; a quarter of each batch is normal images; flips and 90-degree turns apply to
every image in every arm. Seeds vary everything that is drawn: which K pairs, the generator's training,
the extra images, the downstream init and batches. For a seed, every arm has the same real data, so the
table also gives each arm's paired difference to `real`.

    python benchmarks/augment_value.py                          # built-in set, K 10 and 50, seeds 0 1 2
    python benchmarks/augment_value.py --seeds 0 --k 10         # one seed, one K (about 10 min CPU)
    python benchmarks/augment_value.py --dataset photo          # the real-photo set (benchmarks/photo_set.py)
    python benchmarks/augment_value.py --arms real copypaste    # some arms only

Generators are trained and used through the real CLI (`python -m ptools train ...`, `python -m ptools
generate ... --dataset`) in subprocesses, niced, at most `--jobs` at once (one torch thread each), and
cached by a hash of their command, their training data and the ptools source they run (`--cache`), so a
rerun retrains only what changed. Downstream results are cached the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 64  # the size `--preset small` trains at; every image is used at this size
POOL_SEED = 2024  # the built-in set's training pool (the quick start trains on seed 0, the judge on 424242)
HELDOUT_SEED = 9090  # the built-in set's held-out images
POOL_PER_LABEL = 300
HELDOUT_PER_LABEL = 100  # held-out defect images per label (and as many normal images in all)
NORMALS_PER_LABEL = 50  # pool samples per label kept as normal-only images (the factory's many normals)
GAN_STEPS = 1500  # the README's budget
N_EXTRA = 200  # extra images per label in the arms that add some
REAL_SHARE = 0.5
NORMAL_SHARE = 0.25
# Downstream steps, every arm of a set. Built-in: at 600 the 1-px classes were often not learned yet. Photos: at
# 1000 no arm, the all-real ceiling included, ever predicted a crack (ceiling mIoU 46, crack 0); at 3000 the
# ceiling reaches 71, crack 42 (width 16 at 1000 steps: 60, crack 34).
STEPS = {"builtin": 1000, "photo": 3000}
THIN_WEIGHT = 5.0  # cross-entropy weight of the thin classes (crack, scratch)
BATCH = 16
LR = 3e-3
UNET_WIDTH = 8
CLS_WIDTH = 8
NOT_WORSE = 0.01  # "not worse" allows this much lower mean mIoU (one point)
TARGET_GAIN = 0.05  # K = 10: gan beats real by at least five points of mIoU
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ptools-bench" / "augment-value"
ARMS = ("real", "gan", "gan-masks", "copypaste", "quickstart", "ceiling")
DEFAULT_ARMS = ("real", "gan", "copypaste", "quickstart", "ceiling")


# ---- data: a pool to draw the user's data from, and held-out images ----


@dataclass
class Pairs:
    """Defect images with their masks and paired normals, per label; uint8 (n, S, S, 3) / bool (n, S, S)."""

    defect: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]
    normal: dict[str, np.ndarray]
    files: dict[str, list[tuple[Path, Path, Path]]]  # (normal, defect, mask) files

    def put(self, source: Pairs, label: str, rows: np.ndarray) -> None:
        """Set this label's samples to `source`'s samples `rows` of the same label (every part, in that order)."""
        for part in ("defect", "mask", "normal"):
            getattr(self, part)[label] = getattr(source, part)[label][rows]
        self.files[label] = [source.files[label][j] for j in rows]


@dataclass
class Source:
    name: str
    labels: list[str]
    pool: Pairs  # the user's data is drawn from this
    heldout: Pairs
    heldout_normals: np.ndarray
    pool_root: Path


def read_seed_layout(root: Path, labels: list[str] | None = None) -> Pairs:
    """Every pair of a seed-layout set at SIZE, in file order per label."""
    from ptools.data.imageio import load_mask, load_rgb
    from ptools.data.layouts import scan

    index = scan(root, "seed")
    labels = labels or list(index.labels)
    out = Pairs({}, {}, {}, {})
    for label in labels:
        samples = sorted((s for s in index.samples if s.labels == (label,)), key=lambda s: s.defect.name)
        if any(s.mask is None or s.normal is None for s in samples):
            raise SystemExit(f"{root}/{label}: every defect needs its normal and its mask here")
        out.defect[label] = np.stack([load_rgb(s.defect, SIZE) for s in samples])
        out.normal[label] = np.stack([load_rgb(s.normal, SIZE) for s in samples])
        out.mask[label] = np.stack([load_mask(s.mask, SIZE) > 0 for s in samples])
        out.files[label] = [(s.normal, s.defect, s.mask) for s in samples]
    return out


def shuffled(pairs: Pairs, seed: int) -> Pairs:
    """Each label's samples in a fixed random order. File order can group them (the photo set's names begin
    with their surface), and every split below takes contiguous runs, so each run must be a fair draw."""
    out = Pairs({}, {}, {}, {})
    for i, label in enumerate(pairs.defect):
        out.put(pairs, label, np.random.default_rng([seed, 29, i]).permutation(len(pairs.defect[label])))
    return out


def split_source(name: str, labels: list[str], pool_root: Path, heldout_root: Path) -> Source:
    """A training pool, and a held-out set whose first HELDOUT_PER_LABEL samples per label (in a fixed
    shuffled order) give the held-out defects and whose other samples give the held-out normal images
    (surfaces no held-out defect is on)."""
    pool = shuffled(read_seed_layout(pool_root, labels), POOL_SEED)
    both = shuffled(read_seed_layout(heldout_root, labels), HELDOUT_SEED)
    h = HELDOUT_PER_LABEL
    heldout = Pairs(
        *({k: v[:h] for k, v in part.items()} for part in (both.defect, both.mask, both.normal, both.files))
    )
    per = -(-h // len(labels))
    normals = np.concatenate([both.normal[k][h : h + per] for k in labels])[:h]
    return Source(name, labels, pool, heldout, normals, pool_root)


def builtin_source(cache: Path) -> Source:
    """ptools' own synthetic set: a training pool and a held-out set, each from its own seed."""
    from ptools.data import synthesize
    from ptools.data.synth import KINDS

    labels = sorted(KINDS)
    code = source_hash(["data/synth.py"])[:8]
    roots = []
    for part, seed, n in (("pool", POOL_SEED, POOL_PER_LABEL), ("heldout", HELDOUT_SEED, 2 * HELDOUT_PER_LABEL)):
        root = cache / "data" / f"builtin-{part}-s{seed}-n{n}-{SIZE}-{code}"
        if not root.is_dir():
            synthesize(root, n=n * len(labels), size=SIZE, labels=labels, seed=seed)
        roots.append(root)
    return split_source("builtin", labels, *roots)


def photo_source(cache: Path) -> Source:
    """benchmarks/photo_set.py: scikit-image texture photos with defects drawn there (not by ptools' synth);
    its held-out split is cut from photo columns its training split never touches."""
    here = Path(__file__).resolve().parent
    if not (here / "photo_set.py").is_file():
        raise SystemExit("--dataset photo needs benchmarks/photo_set.py (the DefectGAN quality issue's set)")
    sys.path.insert(0, str(here))
    from photo_set import LABELS, build_photo_set

    labels = sorted(LABELS)
    code = hashlib.sha256((here / "photo_set.py").read_bytes()).hexdigest()[:8]
    roots = []
    for part, seed, n in (("train", POOL_SEED, POOL_PER_LABEL), ("heldout", HELDOUT_SEED, 2 * HELDOUT_PER_LABEL)):
        root = cache / "data" / f"photo-{part}-s{seed}-n{n}-{SIZE}-{code}"
        if not root.is_dir():
            build_photo_set(root, split=part, n_per_label=n, size=SIZE, seed=seed, labels=labels)
        roots.append(root)
    return split_source("photo", labels, *roots)


def load_source(name: str, cache: Path) -> Source:
    if name == "builtin":
        return builtin_source(cache)
    if name == "photo":
        return photo_source(cache)
    raise SystemExit(f"--dataset {name}: unknown (builtin or photo)")


# ---- the user's data for a seed and K ----


@dataclass
class UserData:
    """What the user has: K pairs per label and a pool of normal images (other surfaces)."""

    k: int
    seed: int
    pairs: Pairs
    normals: np.ndarray  # the normal-only pool (the pairs' own normals are added for training)
    normal_files: list[Path]


def user_data(source: Source, k: int, seed: int) -> UserData:
    """K pairs per label drawn by `seed` (nested: the K = 10 pairs are among the K = 50 ones), and the
    normal images of the last NORMALS_PER_LABEL pool samples of every label (the pool's shuffled order),
    never a defect pair."""
    pairs = Pairs({}, {}, {}, {})
    normals, normal_files = [], []
    for i, label in enumerate(source.labels):
        n = len(source.pool.defect[label])
        reserve = min(NORMALS_PER_LABEL, n // 4)
        candidates = n - reserve
        if k > candidates:
            raise SystemExit(f"--k {k}: the {source.name} pool has only {candidates} {label} pairs to draw from")
        pairs.put(source.pool, label, np.random.default_rng([seed, 17, i]).permutation(candidates)[:k])
        normals.append(source.pool.normal[label][candidates:])
        normal_files += [source.pool.files[label][j][0] for j in range(candidates, n)]
    return UserData(k, seed, pairs, np.concatenate(normals), normal_files)


def write_user_set(data: UserData, root: Path) -> None:
    """The K pairs as a seed-layout set (copies of the pool's files): what `ptools train --data` gets."""
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for label, files in data.pairs.files.items():
        for sub in ("normal", "defect", "defect_segmentation"):
            (tmp / label / sub).mkdir(parents=True)
        for normal, defect, mask in files:
            shutil.copy(normal, tmp / label / "normal" / normal.name)
            shutil.copy(defect, tmp / label / "defect" / defect.name)
            shutil.copy(mask, tmp / label / "defect_segmentation" / mask.name)
    os.replace(tmp, root)


def write_normals(data: UserData, root: Path) -> None:
    """The normal pool as one folder: `ptools generate --input`."""
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for j, path in enumerate(data.normal_files):
        shutil.copy(path, tmp / f"n{j:04d}_{path.name}")
    os.replace(tmp, root)


# ---- hashing: cache keys and the leakage check ----


def pixel_hashes(images: Iterable[np.ndarray]) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in images}


def tree_hash(root: Path) -> str:
    """Contents of every file under root (sorted relative names), for cache keys."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def source_hash(parts: Iterable[str], leave_out: Iterable[str] = ()) -> str:
    """The ptools source a command runs: a changed model or trainer retrains, a changed `inspect` does not."""
    import ptools

    base = Path(ptools.__file__).parent
    h = hashlib.sha256()
    for part in parts:
        for path in sorted((base / part).rglob("*.py")) if (base / part).is_dir() else [base / part]:
            if str(path.relative_to(base)) not in leave_out:
                h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


TRAIN_SOURCES = ("defectgan", "data", "nn", "cli/train.py", "padding.py", "devices.py")
GENERATE_SOURCES = ("defectgan/generate.py", "cli/generate.py")  # not part of a generator's training key


def key_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class LeakageError(AssertionError):
    """A held-out image among the images some arm (or some generator) was trained on."""


def check_no_leakage(sets: list[Any], heldout: set[str], name: str = "") -> None:
    """No held-out image (by pixel hash) in any arm's training images, normals or extra images, nor in a
    generator's training set (a Pairs: defects and normals). Raised as an error, not an `assert`: it must
    hold under `python -O` too."""
    for item in sets:
        if isinstance(item, Task):
            seen = pixel_hashes(item.real_x) | pixel_hashes(item.normals)
            if item.extra_x is not None:
                seen |= pixel_hashes(item.extra_x)
            where = f"{item.arm} K={item.k} seed {item.seed}"
        else:
            seen = set().union(*(pixel_hashes(v) for part in (item.defect, item.normal) for v in part.values()))
            where = name
        leaked = seen & heldout
        if leaked:
            raise LeakageError(f"{where}: {len(leaked)} held-out images among its training images")


# ---- generators through the real CLI ----


@dataclass
class GanJob:
    name: str
    dir: Path  # cache entry: data/ (when --data), run/, done
    command: list[str]

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def done(self) -> bool:
        return (self.dir / "done").is_file()


def gan_job(cache: Path, name: str, data: Path | None, seed: int, steps: int) -> GanJob:
    code = source_hash(TRAIN_SOURCES, leave_out=GENERATE_SOURCES)
    args = ["train", "--preset", "small", "--steps", str(steps), "--seed", str(seed), "--device", "cpu"]
    key = key_of("gan", args, tree_hash(data) if data is not None else "builtin", code)
    entry = cache / "gans" / f"{name}-{key}"
    cmd = [sys.executable, "-m", "ptools", *args, "--out", str(entry / "run"), "--force"]
    # Several trainings side by side: one torch thread each (the preset would take the cores idle at its start).
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "threads.toml").write_text("threads = 1\n")
    cmd += ["--config", str(entry / "threads.toml")]
    if data is not None:
        if not (entry / "data").is_dir():
            entry.mkdir(parents=True, exist_ok=True)
            shutil.copytree(data, entry / "data.tmp", dirs_exist_ok=True)
            os.replace(entry / "data.tmp", entry / "data")
        cmd += ["--data", str(entry / "data")]
    return GanJob(name, entry, cmd)


def nice() -> None:
    os.nice(5)


def run_jobs(jobs: list[GanJob], parallel: int) -> None:
    """Train the generators not in the cache, `parallel` at a time; each logs to its entry's train.log."""
    todo = [j for j in jobs if not j.done]
    for j in jobs:
        if j.done:
            print(f"generator {j.name}: cached ({j.dir})", flush=True)
    running: list[tuple[GanJob, subprocess.Popen, float]] = []
    while todo or running:
        while todo and len(running) < parallel:
            j = todo.pop(0)
            j.dir.mkdir(parents=True, exist_ok=True)
            print(f"generator {j.name}: $ {' '.join(j.command)}", flush=True)
            log = open(j.dir / "train.log", "w")  # noqa: SIM115 (closed with the process)
            proc = subprocess.Popen(j.command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=nice)
            running.append((j, proc, time.perf_counter()))
        time.sleep(2)
        for item in list(running):
            j, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode:
                tail = (j.dir / "train.log").read_text().splitlines()[-5:]
                raise SystemExit(f"generator {j.name} exited with {proc.returncode}:\n" + "\n".join(tail))
            (j.dir / "done").write_text(f"{time.perf_counter() - t0:.1f}\n")
            print(f"generator {j.name}: trained in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)


def generate_extra(
    job: GanJob, normals: Path, labels: list[str], n: int, seed: int, masks: Path | None = None
) -> Pairs:
    """`ptools generate RUN --input NORMALS --dataset OUT --n N --seed S [--masks DIR]` (cached), read back."""
    args = ["--n", str(n), "--seed", str(seed), "--device", "cpu"]
    if masks is not None:
        args += ["--masks", str(masks)]
    key = key_of("generate", args, tree_hash(normals), source_hash(GENERATE_SOURCES), masks and tree_hash(masks))
    out = job.dir / f"generated-{key}"
    if not out.is_dir():
        cmd = [sys.executable, "-m", "ptools", "generate", str(job.run), "--input", str(normals)]
        cmd += ["--dataset", str(out), *args, "--json"]
        print(f"generator {job.name}: $ {' '.join(cmd[1:])}", flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=nice)
        if done.returncode:
            raise SystemExit(f"generate for {job.name} exited with {done.returncode}: {done.stderr.strip()}")
    got = read_seed_layout(out)
    missing = [label for label in labels if label not in got.defect]
    if missing:
        raise SystemExit(f"{out}: no generated {', '.join(missing)} (the generator's labels differ)")
    return got


# ---- copy-paste, the simple baseline ----


def copy_paste(data: UserData, labels: list[str], n: int, seed: int) -> Pairs:
    """N images per label: a real defect (its pixels inside its mask) pasted onto a normal of the pool,
    with a random flip, 90-degree turn and shift (the mask's box stays inside the image)."""
    out = Pairs({}, {}, {}, {})
    for li, label in enumerate(labels):
        rng = np.random.default_rng([seed, 31, li])
        src_d, src_m = data.pairs.defect[label], data.pairs.mask[label]
        order = rng.permutation(len(src_d))
        images, masks, normals = [], [], []
        for i in range(n):
            j = order[i % len(order)]
            d, m = src_d[j], src_m[j]
            if rng.random() < 0.5:
                d, m = d[:, ::-1], m[:, ::-1]
            turns = int(rng.integers(4))
            d, m = np.rot90(d, turns), np.rot90(m, turns)
            ys, xs = np.nonzero(m)
            dy = int(rng.integers(-ys.min(), SIZE - ys.max())) if len(ys) else 0
            dx = int(rng.integers(-xs.min(), SIZE - xs.max())) if len(xs) else 0
            d, m = np.roll(d, (dy, dx), axis=(0, 1)), np.roll(m, (dy, dx), axis=(0, 1))
            target = data.normals[int(rng.integers(len(data.normals)))]
            img = target.copy()
            img[m] = d[m]
            images.append(img)
            masks.append(m.copy())
            normals.append(target)
        out.defect[label], out.mask[label], out.normal[label] = np.stack(images), np.stack(masks), np.stack(normals)
        out.files[label] = []
    return out


# ---- the downstream task ----


@dataclass
class Task:
    """One downstream training: arrays only, so it pickles to a worker process."""

    arm: str
    k: int
    seed: int
    labels: list[str]
    real_x: np.ndarray  # (n, S, S, 3) uint8
    real_y: np.ndarray  # (n, S, S) uint8: 0 background, label index + 1 inside the mask
    real_c: np.ndarray  # (n,) label index + 1
    normals: np.ndarray
    extra_x: np.ndarray | None = None
    extra_y: np.ndarray | None = None
    extra_c: np.ndarray | None = None
    eval_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eval_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eval_c: np.ndarray = field(default_factory=lambda: np.zeros(0))
    steps: int = STEPS["builtin"]
    real_share: float = REAL_SHARE

    def key(self) -> str:
        h = hashlib.sha256()
        for a in (self.real_x, self.real_y, self.normals, self.extra_x, self.extra_y, self.eval_x, self.eval_y):
            h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
        meta = [self.seed, self.labels, self.steps, self.real_share, recipe_hash()]
        return key_of(h.hexdigest(), meta)


def thin_label(label: str) -> bool:
    return label in ("crack", "scratch")


def recipe_hash() -> str:
    """The downstream recipe's source and constants: results cached under an older recipe are not reused."""
    import inspect

    code = "".join(inspect.getsource(f) for f in (make_models, iou_counts, to_input, train_task))
    return key_of(code, SIZE, BATCH, LR, UNET_WIDTH, CLS_WIDTH, NORMAL_SHARE, THIN_WEIGHT)


def stack_pairs(pairs: Pairs, labels: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, cs = [], [], []
    for i, label in enumerate(labels):
        xs.append(pairs.defect[label])
        ys.append(pairs.mask[label].astype(np.uint8) * (i + 1))
        cs.append(np.full(len(pairs.defect[label]), i + 1, np.uint8))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(cs)


def make_models(classes: int) -> tuple[Any, Any]:
    import torch
    from torch import nn
    from torch.nn import functional as F

    def block(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        """Three poolings (64 -> 8 px), nearest upsampling and skips; a few hundred thousand weights."""

        def __init__(self, w: int) -> None:
            super().__init__()
            self.e1, self.e2, self.e3, self.mid = block(3, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 8 * w)
            self.d3, self.d2, self.d1 = block(12 * w, 4 * w), block(6 * w, 2 * w), block(3 * w, w)
            self.head = nn.Conv2d(w, classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e1 = self.e1(x)
            e2 = self.e2(F.max_pool2d(e1, 2))
            e3 = self.e3(F.max_pool2d(e2, 2))
            mid = self.mid(F.max_pool2d(e3, 2))
            d3 = self.d3(torch.cat([F.interpolate(mid, scale_factor=2.0), e3], 1))
            d2 = self.d2(torch.cat([F.interpolate(d3, scale_factor=2.0), e2], 1))
            return self.head(self.d1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], 1)))

    class Classifier(nn.Module):
        """Conv stages at 64, 32, 16, 8 px, global mean + max pooling (max sees a thin crack)."""

        def __init__(self, w: int) -> None:
            super().__init__()
            self.features = nn.Sequential(
                block(3, w), nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2), block(2 * w, 4 * w), nn.MaxPool2d(2),
                block(4 * w, 8 * w),
            )  # fmt: skip
            self.head = nn.Linear(16 * w, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.features(x)
            return self.head(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], 1))

    return UNet(UNET_WIDTH), Classifier(CLS_WIDTH)


def iou_counts(pred: np.ndarray, truth: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: pixels in both the prediction and the truth, and in either (class maps of any shape)."""
    inter = np.array([np.sum((pred == c) & (truth == c)) for c in range(classes)], np.float64)
    union = np.array([np.sum((pred == c) | (truth == c)) for c in range(classes)], np.float64)
    return inter, union


def to_input(x: np.ndarray) -> Any:
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return t.contiguous(memory_format=torch.channels_last)


def train_task(task: Task) -> dict[str, Any]:
    """Train the segmenter and the classifier on the same batches; grade both on the held-out images."""
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(1)
    t0 = time.process_time()
    torch.manual_seed(task.seed)
    classes = len(task.labels) + 1
    seg, cls = make_models(classes)
    seg, cls = seg.to(memory_format=torch.channels_last), cls.to(memory_format=torch.channels_last)
    params = list(seg.parameters()) + list(cls.parameters())
    opt = torch.optim.Adam(params, lr=LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=task.steps, pct_start=0.15)
    rng = np.random.default_rng([task.seed, 5])
    by_label_real = [np.nonzero(task.real_c == c)[0] for c in range(1, classes)]
    by_label_extra = [np.nonzero(task.extra_c == c)[0] for c in range(1, classes)] if task.extra_c is not None else None
    blank = np.zeros((SIZE, SIZE), np.uint8)
    class_weight = torch.tensor([1.0] + [THIN_WEIGHT if thin_label(label) else 1.0 for label in task.labels])
    seg.train()
    cls.train()
    for _ in range(task.steps):
        xs, ys, cs = [], [], []
        for _ in range(BATCH):
            if rng.random() < NORMAL_SHARE:
                x, y, c = task.normals[rng.integers(len(task.normals))], blank, 0
            else:
                label = int(rng.integers(classes - 1))
                if by_label_extra is not None and rng.random() >= task.real_share:
                    j = by_label_extra[label][rng.integers(len(by_label_extra[label]))]
                    x, y, c = task.extra_x[j], task.extra_y[j], label + 1
                else:
                    j = by_label_real[label][rng.integers(len(by_label_real[label]))]
                    x, y, c = task.real_x[j], task.real_y[j], label + 1
            turns, flip = int(rng.integers(4)), rng.random() < 0.5
            if flip:
                x, y = x[:, ::-1], y[:, ::-1]
            xs.append(np.rot90(x, turns))
            ys.append(np.rot90(y, turns))
            cs.append(c)
        x = to_input(np.stack(xs))
        y = torch.from_numpy(np.ascontiguousarray(np.stack(ys))).long()
        logits = seg(x)
        # Weighted cross-entropy plus a soft Dice over the defect classes: thin defects are a few % of the
        # pixels, and with plain cross-entropy the 1-px classes stayed at IoU 0 for 800 of 1000 steps.
        probs = logits.softmax(1)[:, 1:]
        onehot = F.one_hot(y, classes).permute(0, 3, 1, 2)[:, 1:].float()
        inter = (probs * onehot).sum(dim=(0, 2, 3))
        dice = 1 - (2 * inter + 1) / (probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3)) + 1)
        seg_loss = F.cross_entropy(logits, y, weight=class_weight) + dice.mean()
        loss = seg_loss + F.cross_entropy(cls(x), torch.tensor(cs))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    seg.eval()
    cls.eval()
    inter = np.zeros(classes)
    union = np.zeros(classes)
    confusion = np.zeros((classes, classes), np.int64)
    preds = []
    with torch.no_grad():
        for start in range(0, len(task.eval_x), 100):
            x = to_input(task.eval_x[start : start + 100])
            p = seg(x).argmax(1).numpy()
            i, u = iou_counts(p, task.eval_y[start : start + 100], classes)
            inter += i
            union += u
            for t, q in zip(task.eval_c[start : start + 100], cls(x).argmax(1).numpy(), strict=True):
                confusion[t, q] += 1
            preds.append(p.astype(np.uint8))
    iou = {label: float(inter[i + 1] / max(union[i + 1], 1)) for i, label in enumerate(task.labels)}
    recall = confusion.diagonal() / confusion.sum(1).clip(min=1)
    return {
        "arm": task.arm,
        "k": task.k,
        "seed": task.seed,
        "iou": iou,
        "miou": float(np.mean(list(iou.values()))),
        "recall": {name: float(r) for name, r in zip(["normal", *task.labels], recall, strict=True)},
        "balanced_acc": float(recall.mean()),
        "cpu_s": time.process_time() - t0,
        "preds": np.concatenate(preds)[:: max(1, len(task.eval_x) // 64)],  # a sample for the grids
    }


def run_tasks(tasks: list[Task], cache: Path, jobs: int) -> list[dict[str, Any]]:
    """Downstream trainings, `jobs` worker processes (one thread each), results cached by content."""
    results: dict[int, dict[str, Any]] = {}
    todo = []
    for i, task in enumerate(tasks):
        path = cache / "results" / f"{task.key()}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                results[i] = {**json.loads(str(z["meta"])), "preds": z["preds"]}
        else:
            todo.append(i)
    if todo:
        print(f"downstream: {len(todo)} trainings ({len(tasks) - len(todo)} cached), {jobs} at a time", flush=True)
    with ProcessPoolExecutor(max_workers=max(1, jobs), initializer=nice) as pool:
        futures = {i: pool.submit(train_task, tasks[i]) for i in todo}
        for i, fut in futures.items():
            r = fut.result()
            results[i] = r
            path = cache / "results" / f"{tasks[i].key()}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            meta = {k: v for k, v in r.items() if k != "preds"}
            np.savez_compressed(path.with_suffix(".tmp.npz"), meta=json.dumps(meta), preds=r["preds"])
            os.replace(path.with_suffix(".tmp.npz"), path)
            t = tasks[i]
            print(f"  {t.arm:10s} K={t.k:<3d} seed {t.seed}: mIoU {r['miou']:.3f} ({r['cpu_s']:.0f} s CPU)", flush=True)
    return [results[i] for i in range(len(tasks))]


# ---- reporting ----


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:5.1f}"
    return f"{100 * statistics.mean(values):5.1f} ±{100 * statistics.stdev(values):4.1f}"


def report(results: list[dict[str, Any]], labels: list[str], ks: list[int]) -> tuple[str, list[str]]:
    """The table (IoU in points, mean ± sample standard deviation over seeds) and one verdict per arm."""
    rows = ["K", "arm", *labels, "mIoU", "Δ vs real", "cls bal.acc"]
    lines = ["  ".join(f"{r:>14s}" for r in rows)]
    verdicts: list[str] = []
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["k"], r["arm"]), []).append(r)
    for (k, arm), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], ARMS.index(kv[0][1]))):
        real = {r["seed"]: r for r in groups.get((k, "real"), [])} if arm != "ceiling" else {}
        diffs = [r["miou"] - real[r["seed"]]["miou"] for r in rs if r["seed"] in real]
        cells = [str(k) if arm != "ceiling" else "all", arm]
        cells += [mean_sd([r["iou"][label] for r in rs]) for label in labels]
        cells += [mean_sd([r["miou"] for r in rs]), mean_sd(diffs) if diffs and arm != "real" else "",
                  mean_sd([r["balanced_acc"] for r in rs])]  # fmt: skip
        lines.append("  ".join(f"{c:>14s}" for c in cells))
    for k in ks:
        mean = {arm: statistics.mean([r["miou"] for r in rs]) for (kk, arm), rs in groups.items() if kk == k}
        if "real" not in mean:
            continue
        for arm in ("gan", "gan-masks", "copypaste", "quickstart"):
            if arm not in mean:
                continue
            gain = mean[arm] - mean["real"]
            if k <= 10 and arm == "gan":
                ok = gain >= TARGET_GAIN and mean[arm] >= mean.get("copypaste", -1) - NOT_WORSE
                want = f">= +{100 * TARGET_GAIN:.0f} points over real and not worse than copypaste"
                if "copypaste" in mean:
                    want += f" ({100 * (mean[arm] - mean['copypaste']):+.1f} vs copypaste)"
            else:
                ok = gain >= -NOT_WORSE
                want = f"not worse than real (>= -{100 * NOT_WORSE:.0f} point)"
            verdicts.append(
                f"K={k} {arm}: {100 * gain:+.1f} points mIoU vs real; target {want}: {'met' if ok else 'MISSED'}"
            )
    return "\n".join(lines), verdicts


def sanity(results: list[dict[str, Any]], ks: list[int]) -> list[str]:
    """The real-only figures must be sane: above zero, rising with K, below the all-real ceiling."""
    mean = {}
    for r in results:
        mean.setdefault((r["k"], r["arm"]), []).append(r["miou"])
    m = {key: statistics.mean(v) for key, v in mean.items()}
    ceiling = [v for (k, arm), v in m.items() if arm == "ceiling"]
    out = []
    for k in ks:
        if (k, "real") in m:
            out.append(f"real K={k}: mIoU {100 * m[(k, 'real')]:.1f}")
    if ceiling:
        out.append(f"ceiling (every pool defect, real only): mIoU {100 * ceiling[0]:.1f}")
    problems = []
    reals = [m[(k, "real")] for k in sorted(ks) if (k, "real") in m]
    if reals and min(reals) <= 0.01:
        problems.append("a real-only segmenter learned nothing (mIoU ~ 0)")
    if any(b < a - NOT_WORSE for a, b in zip(reals, reals[1:], strict=False)):
        problems.append("real-only mIoU falls as K grows")
    if ceiling and reals and max(reals) > ceiling[0] + NOT_WORSE:
        problems.append("a small real set beats every real defect of the pool")
    out.append("sanity: " + ("; ".join(problems) if problems else "ok (rises with K, below the ceiling)"))
    return out


def save_grid(path: Path, rows: list[tuple[str, np.ndarray, np.ndarray]], labels: list[str]) -> None:
    """One row per (title, images uint8 (n,S,S,3), class maps uint8 (n,S,S): 0 background, label index + 1):
    each image, then the image with each class's outline in its label's `dataset preview` colour."""
    import torch
    from torchvision.utils import make_grid, save_image

    from ptools.data.preview import label_colours

    colours = label_colours(labels)
    tiles = []
    for _, images, maps in rows:
        for img, classes in zip(images, maps, strict=True):
            t = img.astype(np.float32) / 255
            shown = t.copy()
            for c, label in enumerate(labels, start=1):
                m = classes == c
                edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
                shown[edge] = np.asarray(colours[label], np.float32) / 255
            tiles += [torch.from_numpy(t).permute(2, 0, 1), torch.from_numpy(shown).permute(2, 0, 1)]
    per_row = 2 * len(rows[0][1])
    grid = make_grid(torch.stack(tiles), nrow=per_row, padding=2, pad_value=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    (path.with_suffix(".txt")).write_text(
        "rows, top to bottom (each tile: image, then its classes outlined: "
        + ", ".join(f"{label} rgb{colours[label]}" for label in labels)
        + "):\n"
        + "\n".join(title for title, _, _ in rows)
        + "\n"
    )


# ---- main ----


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="builtin", help="builtin (ptools' synthetic set) or photo")
    parser.add_argument("--k", type=int, nargs="+", default=[10, 50], help="real pairs per label")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--arms", nargs="+", default=list(DEFAULT_ARMS), choices=ARMS, help="gan-masks: gan with --masks = the K pairs"
    )
    parser.add_argument("--n", type=int, default=N_EXTRA, help="extra images per label (gan, copypaste, quickstart)")
    parser.add_argument(
        "--steps", type=int, default=None, help="downstream steps, every arm (default: builtin 1000, photo 3000)"
    )
    parser.add_argument("--gan-steps", type=int, default=GAN_STEPS, help="--steps of `ptools train`")
    parser.add_argument("--real-share", type=float, default=REAL_SHARE, help="share of real defects in a batch")
    parser.add_argument("--jobs", type=int, default=2, help="heavy processes at once (one thread each)")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--grids", type=Path, default=None, help="write example grids here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--generators-only", action="store_true", help="train (or find) the generators, then stop")
    args = parser.parse_args()
    t_start = time.perf_counter()
    cache = args.cache
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)

    source = load_source(args.dataset, cache)
    if args.steps is None:
        args.steps = STEPS[source.name]
    labels = source.labels
    eval_x = np.concatenate([source.heldout.defect[label] for label in labels] + [source.heldout_normals])
    eval_y = np.concatenate(
        [source.heldout.mask[label].astype(np.uint8) * (i + 1) for i, label in enumerate(labels)]
        + [np.zeros((len(source.heldout_normals), SIZE, SIZE), np.uint8)]
    )
    eval_c = np.concatenate(
        [np.full(len(source.heldout.defect[label]), i + 1, np.uint8) for i, label in enumerate(labels)]
        + [np.zeros(len(source.heldout_normals), np.uint8)]
    )
    heldout_hashes = pixel_hashes(eval_x) | pixel_hashes(np.concatenate(list(source.heldout.normal.values())))
    print(
        f"{source.name}: labels {', '.join(labels)}; held out {len(eval_x)} images "
        f"({len(eval_x) - len(source.heldout_normals)} defects, {len(source.heldout_normals)} normal)",
        flush=True,
    )

    users = {(k, s): user_data(source, k, s) for k in args.k for s in args.seeds}
    gan_jobs: dict[tuple[int, int], GanJob] = {}
    normals_dirs: dict[int, Path] = {}
    for (k, s), data in users.items():
        # Named by its images: a folder written for another draw (another ptools, another split) is not reused.
        content = key_of(sorted(pixel_hashes(data.normals)))
        normals_dirs.setdefault(s, work / f"{source.name}-normals-s{s}-{content}")
        if not normals_dirs[s].is_dir():
            write_normals(data, normals_dirs[s])
        if "gan" in args.arms or "gan-masks" in args.arms:
            root = work / f"{source.name}-k{k}-s{s}"
            shutil.rmtree(root, ignore_errors=True)
            write_user_set(data, root)
            gan_jobs[(k, s)] = gan_job(cache, f"{source.name}-k{k}-s{s}", root, s, args.gan_steps)
    quick = gan_job(cache, "quickstart-s0", None, 0, args.gan_steps) if "quickstart" in args.arms else None
    run_jobs([*gan_jobs.values(), *([quick] if quick else [])], args.jobs)
    if args.generators_only:
        return

    tasks: list[Task] = []
    extras_seen: dict[tuple[str, int, int], Pairs] = {}
    for (k, s), data in users.items():
        real_x, real_y, real_c = stack_pairs(data.pairs, labels)
        normals = np.concatenate([data.normals, *data.pairs.normal.values()])
        pool_hashes = pixel_hashes(data.normals)
        for arm in args.arms:
            if arm == "ceiling":
                continue
            extra = None
            if arm == "gan":
                extra = generate_extra(gan_jobs[(k, s)], normals_dirs[s], labels, args.n, s)
            elif arm == "gan-masks":  # placed where the user's own K masks are
                job = gan_jobs[(k, s)]
                extra = generate_extra(job, normals_dirs[s], labels, args.n, s, masks=job.dir / "data")
            elif arm == "quickstart":
                extra = generate_extra(quick, normals_dirs[s], labels, args.n, s)
            elif arm == "copypaste":
                extra = copy_paste(data, labels, args.n, s)
            if extra is not None and arm != "copypaste":  # generate drew on exactly the user's normal pool
                drawn_on = set().union(*(pixel_hashes(v) for v in extra.normal.values()))
                if not drawn_on <= pool_hashes:
                    raise SystemExit(f"{arm} K={k} seed {s}: generated images on normals outside the user's pool")
            task = Task(
                arm, k, s, labels, real_x, real_y, real_c, normals, steps=args.steps, real_share=args.real_share
            )
            if extra is not None:
                task.extra_x, task.extra_y, task.extra_c = stack_pairs(extra, labels)
                extras_seen[(arm, k, s)] = extra
            task.eval_x, task.eval_y, task.eval_c = eval_x, eval_y, eval_c
            tasks.append(task)
    if "ceiling" in args.arms:
        for s in args.seeds[:1]:  # a sanity figure: one seed is enough
            pool_x, pool_y, pool_c = stack_pairs(source.pool, labels)
            normals = np.concatenate(list(source.pool.normal.values()))
            task = Task("ceiling", max(args.k), s, labels, pool_x, pool_y, pool_c, normals, steps=args.steps)
            task.eval_x, task.eval_y, task.eval_c = eval_x, eval_y, eval_c
            tasks.append(task)

    check_no_leakage(tasks, heldout_hashes)
    for job in [*gan_jobs.values(), *([quick] if quick else [])]:
        data_root = job.dir / "data" if (job.dir / "data").is_dir() else job.run / "data"
        trained_on = read_seed_layout(data_root)
        check_no_leakage([trained_on], heldout_hashes, f"generator {job.name}")
        if job in gan_jobs.values():  # and a user's generator saw exactly the K pairs of its arm
            user = users[next(key for key, j in gan_jobs.items() if j is job)].pairs
            for label in labels:
                if pixel_hashes(trained_on.defect[label]) != pixel_hashes(user.defect[label]):
                    raise LeakageError(f"generator {job.name}: its {label} training images are not the arm's K pairs")
    print("leakage check: no held-out image in any arm's training data or any generator's", flush=True)

    results = run_tasks(tasks, cache, args.jobs)
    table, verdicts = report(results, labels, args.k)
    print(f"\n{source.name}: segmenter mask IoU per label and mean (points, mean ± sd over seeds {args.seeds}), "
          f"N={args.n} extra per label, {args.steps} steps x batch {BATCH} per arm")  # fmt: skip
    print(table)
    print()
    for line in sanity(results, args.k):
        print(line)
    for line in verdicts:
        print(line)
    print(f"\nwall {(time.perf_counter() - t_start) / 60:.1f} min; load {os.getloadavg()[0]:.1f}")

    if args.grids:
        for k in args.k:
            s = args.seeds[0]
            rows = []
            for label in labels:
                user = users[(k, s)].pairs
                code = labels.index(label) + 1
                rows.append((f"real {label} (K={k}, first 6)", user.defect[label][:6], user.mask[label][:6] * code))
                for arm in ("copypaste", "gan", "gan-masks", "quickstart"):
                    if (arm, k, s) in extras_seen:
                        e = extras_seen[(arm, k, s)]
                        rows.append((f"{arm} {label}", e.defect[label][:6], e.mask[label][:6] * code))
            save_grid(args.grids / f"{source.name}-k{k}-s{s}-extra.png", rows, labels)
            # The results keep every `stride`-th prediction; show ten of them spread over every label and the normals.
            stride = max(1, len(eval_x) // 64)
            kept = len(range(0, len(eval_x), stride))
            pick = np.linspace(0, kept - 1, 10).round().astype(int)
            shown = eval_x[pick * stride]
            rows = [("held-out truth", shown, eval_y[pick * stride])]
            for r, t in zip(results, tasks, strict=True):
                if t.k == k and t.seed == s or t.arm == "ceiling":
                    rows.append((f"{t.arm} prediction", shown, r["preds"][pick]))
            save_grid(args.grids / f"{source.name}-k{k}-s{s}-pred.png", rows, labels)
        print(f"grids in {args.grids}")

    if args.json:
        doc = {
            "dataset": source.name,
            "labels": labels,
            "k": args.k,
            "seeds": args.seeds,
            "n": args.n,
            "steps": args.steps,
            "results": [{k: v for k, v in r.items() if k != "preds"} for r in results],
            "verdicts": verdicts,
        }
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
