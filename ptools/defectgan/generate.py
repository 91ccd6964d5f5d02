"""Use a trained generator: defect synthesis from a label or a mask, restoration, or a whole new dataset."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptools.defectgan.checkpoint import load_checkpoint, resolve_resume
from ptools.defectgan.config import DefectGANConfig
from ptools.defectgan.generator import Generator
from ptools.defectgan.models import prepare
from ptools.errors import PtoolsError
from ptools.files import claim_folder, ensure_parent, output_folder, temp_folder_beside

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DATASET_MARKER = "generated.json"  # written into a generated dataset; lets --force replace only those
MASK_THRESHOLD = 0.5  # a generated dataset's mask: the pixels where the spatial map M is above this

Progress = Callable[..., None]  # progress(done) or progress(done, total=N) (the dataset's total, once known)


@dataclass
class Output:
    input: Path
    sample: int
    image: Path
    map: Path
    placement: Path | None = None  # the placement mask drawn for this sample (no --mask, no --whole-image)


@dataclass
class Notes:
    """Things the user should hear about (printed by the CLI, listed in --json), never silent changes."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file, or a run folder / its checkpoints/ folder (newest checkpoint, as `train --resume`)."""
    path = Path(path)
    if path.is_dir():
        try:
            return resolve_resume(path)[0]
        except PtoolsError as e:
            raise PtoolsError(
                e.message.replace("--resume ", ""), hint="pass a checkpoint .pt or a run folder"
            ) from None
    return path


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[Generator, DefectGANConfig]:
    """The generator of a training checkpoint (weights_only load), in eval mode on `device`.

    A run folder is accepted like `train --resume` accepts it. The averaged generator (`generator_ema`,
    written when the run had `ema` > 0) is preferred: its weights are the mean of the last steps', steadier
    than the last step's own. On a CPU the run's `threads` setting applies, as in training (the small
    preset's one thread: with two on busy shared cores one 64 px image cost 20x the CPU time, 160 ms
    against 8 ms).
    """
    from ptools.defectgan.models import build_generator

    path = checkpoint_file(path)
    state = load_checkpoint(path)
    config = DefectGANConfig.from_dict(state["config"], source=str(path))
    g = build_generator(config)
    # The same structure as in training (spectral norm included) so the state dict keys match.
    g = prepare(g, config, "cpu")
    weights = state.get("generator_ema") or state["generator"]
    try:
        g.load_state_dict(weights)
    except RuntimeError as e:
        raise PtoolsError(f"{path}: generator weights do not fit its own config: {str(e).splitlines()[0]}") from None
    if torch.device(device).type == "cpu" and config.threads:
        from ptools.defectgan.config import cpu_threads

        torch.set_num_threads(cpu_threads(config.threads))
    return g.to(device).eval(), config


def list_inputs(path: str | Path) -> list[Path]:
    """An image file, or the images directly inside a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise PtoolsError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return found
    raise PtoolsError(f"--input {path}: no such file or folder")


def label_names(config: DefectGANConfig) -> str:
    return ", ".join(f"{i + 1}={n}" for i, n in enumerate(config.labels))


def label_channel(config: DefectGANConfig, label: str | None) -> int:
    """--label NAME or INDEX (the control-map channel: 1 = the first defect label) -> channel number.

    Without --label a checkpoint of one label needs no choice; with several, guessing the first one
    would hand back the wrong defect without a word, so it is refused.
    """
    if not config.labels:
        raise PtoolsError("the checkpoint has no defect labels")
    if label is None:
        if len(config.labels) == 1:
            return 1
        raise PtoolsError(
            f"--label is required: this checkpoint has {len(config.labels)} defect labels",
            hint=f"pass --label NAME or INDEX; labels: {label_names(config)}",
        )
    if label in config.labels:
        return config.labels.index(label) + 1
    if label.isdigit() and 1 <= int(label) <= len(config.labels):
        return int(label)
    raise PtoolsError(f"--label {label}: not a label of this checkpoint", hint=f"labels: {label_names(config)}")


def read_mask(path: Path, size: int, notes: Notes) -> torch.Tensor:
    """(1,S,S) float {0,1}: a mask of another size is resized (nearest), a grey one thresholded; both noted."""
    from ptools.data.imageio import load_mask, open_image

    if not path.is_file():
        raise PtoolsError(f"--mask {path}: no such file")
    try:
        with open_image(path) as img:
            w, h = img.size
            grey = np.asarray(img if img.mode in ("L", "1", "P") else img.convert("L"), dtype=np.uint8)
    except ValueError as e:
        raise PtoolsError(f"--mask {path}: cannot read mask ({e})") from None
    values = set(np.unique(grey).tolist())
    if (w, h) != (size, size):
        notes.add(f"--mask {path.name}: {w}x{h} resized to {size}x{size} (nearest) for this checkpoint")
    if not (values <= {0, 255} or values <= {0, 1}):
        cut = 0 if max(values) <= 1 else 127
        notes.add(f"--mask {path.name}: {len(values)} grey levels, not binary: pixels above {cut} count as the mask")
    mask = torch.from_numpy(load_mask(path, size)).float()[None]
    if not mask.any():
        raise PtoolsError(f"--mask {path}: the mask marks no pixel", hint="white (or 1) marks where the defect goes")
    return mask


def control_map(
    config: DefectGANConfig, size: int, channel: int | None, mask: torch.Tensor | None, restore: bool
) -> torch.Tensor:
    """(C,S,S): restoration -> the uniform normal map; a mask -> the mask in `channel`; else the whole image."""
    control = torch.zeros(config.num_classes, size, size)
    if restore:
        control[0] = 1.0
        return control
    assert channel is not None
    control[channel] = mask[0] if mask is not None else 1.0
    control[0] = 1.0 - control[channel]
    return control


def load_input(path: Path, size: int, notes: Notes) -> torch.Tensor:
    """(3,S,S) in [-1,1]; an input of another size is resized to the checkpoint's size, with a note."""
    from ptools.data.imageio import load_rgb, open_image
    from ptools.data.transforms import normalize

    try:
        with open_image(path) as img:
            w, h = img.size
    except ValueError as e:
        raise PtoolsError(f"{path}: cannot read image ({e})") from None
    if (w, h) != (size, size):
        notes.add(
            f"inputs of another size (e.g. {path.name}: {w}x{h}) were resized to {size}x{size}, the size this "
            f"checkpoint was trained at; outputs are {size}x{size}"
        )
    return normalize(torch.from_numpy(load_rgb(path, size)).permute(2, 0, 1))


def generate(
    checkpoint: str | Path,
    inputs: list[Path],
    out_dir: str | Path,
    *,
    label: str | None = None,
    mask: str | Path | None = None,
    restore: bool = False,
    n: int = 1,
    device: str = "auto",
    seed: int = 0,
    force: bool = False,
    progress: Progress | None = None,
    whole_image: bool = False,
) -> tuple[list[Output], DefectGANConfig, Notes]:
    """Write `n` results per input (each with fresh noise) and their spatial maps into `out_dir`.

    Files: <stem>_<k>.png (the image) and <stem>_<k>_map.png (where G changed it), k = 0..n-1. Where the
    defect goes: `mask` for every sample; else, unless `whole_image`, a placement mask drawn per sample from
    the label's synthetic defect shapes (as `generate --dataset` draws them), written as <stem>_<k>_mask.png.
    A control map that asks for the defect everywhere (`whole_image`) makes a trained G paint all of it.
    `progress(done)` is called after each input with the number of inputs done.
    """
    from torchvision.utils import save_image

    from ptools.data.transforms import denormalize
    from ptools.devices import resolve_device
    from ptools.files import atomic_path, check_output_path

    if n < 1:
        raise PtoolsError(f"--n must be at least 1 (got {n})")
    if restore and (label is not None or mask is not None or whole_image):
        raise PtoolsError("--restore takes no --label, --mask or --whole-image (restoration targets the normal map)")
    if whole_image and mask is not None:
        raise PtoolsError("--whole-image and --mask both say where the defect goes: give one")
    out_dir = output_folder(out_dir)  # before the model is loaded: a wrong --out fails at once
    dev = resolve_device(device)
    g, config = load_generator(checkpoint, dev)
    size = config.image_size
    notes = Notes()
    channel = None if restore else label_channel(config, label)
    mask_t = read_mask(Path(mask), size, notes) if mask is not None else None
    draw = None if restore or mask is not None or whole_image else _synth_masks(list(config.labels), size, seed)
    control = control_map(config, size, channel, mask_t, restore)

    plan = [
        Output(
            p,
            k,
            out_dir / f"{p.stem}_{k}.png",
            out_dir / f"{p.stem}_{k}_map.png",
            out_dir / f"{p.stem}_{k}_mask.png" if draw is not None else None,
        )
        for p in inputs
        for k in range(n)
    ]
    names = [o.image.name for o in plan]
    if len(set(names)) != len(names):
        raise PtoolsError("two inputs share a file name stem; their outputs would collide", hint="rename one")
    for o in plan:  # refuse before any work, never after half the files
        for target in (o.image, o.map, o.placement):
            if target is not None:
                check_output_path(target, force, probe=False)  # output_folder probed the folder

    torch.manual_seed(seed)
    a = control[None].expand(n, -1, -1, -1).to(dev)
    with torch.no_grad():
        for done, path in enumerate(inputs, start=1):
            ours = [o for o in plan if o.input == path]
            if draw is not None:  # a placement per sample, numbered over the whole run (seeded)
                assert channel is not None
                name = config.labels[channel - 1]
                places = [torch.from_numpy(draw(name, plan.index(o))).float()[None] for o in ours]
                a = torch.stack([control_map(config, size, channel, m, False) for m in places]).to(dev)
            x = load_input(path, size, notes)[None].expand(n, -1, -1, -1)
            images, maps = g(x.to(dev), a)  # n copies, each with its own noise
            for o in ours:
                with atomic_path(o.image, force) as tmp:
                    save_image(denormalize(images[o.sample].float().cpu()), tmp, format="PNG")
                with atomic_path(o.map, force) as tmp:
                    save_image(maps[o.sample].float().cpu(), tmp, format="PNG")
                if o.placement is not None:
                    with atomic_path(o.placement, force) as tmp:
                        save_image(a[o.sample, channel].float().cpu()[None], tmp, format="PNG")
            if progress is not None:
                progress(done)
    return plan, config, notes


# ---- a whole new dataset in the seed layout ----


@dataclass
class DatasetResult:
    root: Path
    labels: dict[str, int]  # samples written per label
    rejected: dict[str, int]  # draws whose map marked no pixel or every pixel (not written)
    mask_source: str
    image_size: int
    notes: Notes


def _synth_masks(labels: list[str], size: int, seed: int) -> Callable[[str, int], np.ndarray]:
    """Placement masks from ptools' synthetic defect shapes: a label named like a built-in kind (scratch,
    crack, spot, stain and their aliases) gets that kind's shapes; any other label the kinds in turn.
    Draw `i` of a label is a pure function of (seed, label channel, i)."""
    from ptools.data.synth import ALIASES, DEFECTS, KINDS

    def kind_of(label: str) -> str:
        name = ALIASES.get(label.lower(), label.lower())
        return name if name in DEFECTS else KINDS[labels.index(label) % len(KINDS)]

    blank = np.full((size, size, 3), 0.5, np.float32)

    def draw(label: str, i: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 7, labels.index(label), i])
        for _ in range(8):  # a shape drawn (almost) off the image is redrawn, as synth does
            _, mask = DEFECTS[kind_of(label)](rng, size, blank)
            if mask.sum() >= 4:
                break
        return mask.astype(np.uint8)

    return draw


def _folder_masks(
    root: Path, labels: list[str], channels: list[str], size: int, seed: int
) -> Callable[[str, int], np.ndarray]:
    """Placement masks from files: ROOT/{label}/defect_segmentation/* of a seed-layout dataset (per label),
    or every mask image directly in ROOT (for all labels); taken in a shuffled order seeded by (seed, the
    label's channel among `channels`), cycled."""
    from ptools.data.imageio import load_mask

    per_label: dict[str, list[Path]] = {}
    flat = list_inputs(root) if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()) else []
    for label in labels:
        folder = root / label / "defect_segmentation"
        files = list_inputs(folder) if folder.is_dir() else flat
        if not files:
            raise PtoolsError(
                f"--masks {root}: no masks for label {label!r}",
                hint="pass a seed-layout dataset (LABEL/defect_segmentation/) or a folder of mask images",
            )
        order = np.random.default_rng([seed, 11, channels.index(label)]).permutation(len(files))
        per_label[label] = [files[j] for j in order]
    loaded: dict[Path, np.ndarray] = {}

    def draw(label: str, i: int) -> np.ndarray:
        path = per_label[label][i % len(per_label[label])]
        if path not in loaded:
            loaded[path] = load_mask(path, size)
        return loaded[path]

    return draw


def generate_dataset(
    checkpoint: str | Path,
    normals: list[Path],
    out_dir: str | Path,
    *,
    n: int,
    label: str | None = None,
    masks: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    force: bool = False,
    progress: Progress | None = None,
) -> DatasetResult:
    """Write a new seed-layout dataset `{out}/{label}/normal|defect|defect_segmentation/NAME.png`, `n`
    samples for every label of the checkpoint (or for `label` only).

    Sample `k` of a label: a normal image from `normals` (a seeded shuffled order per label, cycled), a
    placement mask (see `_synth_masks` / `_folder_masks`) put into the label's control channel, and G's
    defacement with its own noise. The written mask is G's own spatial map thresholded at MASK_THRESHOLD:
    it marks where the synthetic defect really is, which need not be exactly the placement mask. A draw
    whose map marks no pixel or every pixel is not a usable sample and is drawn again (another normal and
    mask), at most 3 draws per sample. Every draw is a pure function of (seed, label channel, k, attempt),
    so the same seed writes the same files, the first samples of a larger `n` are those of a smaller one,
    and a label's samples do not depend on which other labels are written. The folder appears only when
    complete (written beside it, renamed).
    """
    from PIL import Image

    from ptools.data.dataset import mix_seed, numpy_image
    from ptools.devices import resolve_device

    if n < 1:
        raise PtoolsError(f"--n must be at least 1 (got {n})")
    out_dir = Path(out_dir)
    claim_folder(out_dir, force, DATASET_MARKER, "ptools generate --dataset", name=f"--dataset {out_dir}")
    dev = resolve_device(device)
    g, config = load_generator(checkpoint, dev)
    size = config.image_size
    notes = Notes()
    wanted = [config.labels[label_channel(config, label) - 1]] if label is not None else list(config.labels)
    if masks is not None:
        masks = Path(masks)
        if not masks.is_dir():
            raise PtoolsError(f"--masks {masks}: no such folder")
        draw_mask = _folder_masks(masks, wanted, list(config.labels), size, seed)
        mask_source = f"files under {masks}"
    else:
        draw_mask = _synth_masks(list(config.labels), size, seed)
        mask_source = "random shapes from ptools' synthetic defect generator"
    orders = {
        name: np.random.default_rng([seed, 3, config.labels.index(name) + 1]).permutation(len(normals))
        for name in wanted
    }
    cache: dict[Path, torch.Tensor] = {}

    def normal_for(name: str, draw: int) -> tuple[Path, torch.Tensor]:
        path = normals[orders[name][draw % len(normals)]]
        if path not in cache:
            cache[path] = load_input(path, size, notes)
        return path, cache[path]

    written = dict.fromkeys(wanted, 0)
    rejected = dict.fromkeys(wanted, 0)
    records: list[dict[str, Any]] = []
    if progress is not None:
        progress(0, total=n * len(wanted))
    ensure_parent(out_dir)
    staging = temp_folder_beside(out_dir)
    try:
        done = 0
        # The caller's RNG state is left as it was; on CUDA the noise is drawn on the device.
        with torch.no_grad(), torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            for name in wanted:
                channel = config.labels.index(name) + 1
                (staging / name / "normal").mkdir(parents=True)
                (staging / name / "defect").mkdir()
                (staging / name / "defect_segmentation").mkdir()
                for k in range(n):
                    for attempt in range(3):
                        # Later attempts take other normals and masks: draw numbers past the first n.
                        draw = k + attempt * n
                        path, x = normal_for(name, draw)
                        place = torch.from_numpy(draw_mask(name, draw)).float()[None]
                        control = control_map(config, size, channel, place, False)
                        torch.manual_seed(mix_seed(seed, channel, draw))  # this sample's noise, whatever the batch
                        image, m = g(x[None].to(dev), control[None].to(dev))
                        seg = (m[0, 0].float().cpu() > MASK_THRESHOLD).numpy()
                        if seg.any() and not seg.all():
                            break
                        rejected[name] += 1
                    else:
                        raise PtoolsError(
                            f"{checkpoint}: {name} sample {k}: the spatial map marked no pixel or every pixel in 3 "
                            f"draws ({sum(rejected.values())} such draws so far)",
                            hint="the generator barely changes its input yet: train it longer",
                        )
                    stem = f"{name}_{k:05d}"
                    base = staging / name
                    Image.fromarray(numpy_image(x)).save(base / "normal" / f"{stem}.png")
                    Image.fromarray(numpy_image(image[0].float().cpu())).save(base / "defect" / f"{stem}.png")
                    Image.fromarray(seg.astype(np.uint8) * 255).save(base / "defect_segmentation" / f"{stem}.png")
                    records.append({"name": f"{name}/{stem}", "label": name, "draw": draw, "normal_source": str(path)})
                    written[name] += 1
                    done += 1
                    if progress is not None:
                        progress(done)
        manifest = {
            "schema": "ptools.generated/1",
            "checkpoint": str(checkpoint),
            "seed": seed,
            "n_per_label": n,
            "image_size": size,
            "mask_source": mask_source,
            "mask_rule": f"generator spatial map > {MASK_THRESHOLD}",
            "samples": records,
        }
        (staging / DATASET_MARKER).write_text(json.dumps(manifest, indent=1) + "\n")
        if out_dir.exists():  # empty, or --force on an earlier generated set (both checked above)
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DatasetResult(out_dir, written, rejected, mask_source, size, notes)
