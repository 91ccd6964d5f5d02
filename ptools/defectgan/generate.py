"""Use a trained generator: defect synthesis from a label or a mask, or restoration, with spatial maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ptools.defectgan.checkpoint import load_checkpoint
from ptools.defectgan.config import DefectGANConfig
from ptools.defectgan.generator import Generator
from ptools.defectgan.models import prepare
from ptools.errors import PtoolsError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Output:
    input: Path
    sample: int
    image: Path
    map: Path


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[Generator, DefectGANConfig]:
    """The generator of a training checkpoint (weights_only load), in eval mode on `device`.

    The averaged generator (`generator_ema`, written when the run had `ema` > 0) is preferred: its
    weights are the mean of the last steps', steadier than the last step's own.
    """
    from ptools.defectgan.models import build_generator

    state = load_checkpoint(path)
    config = DefectGANConfig.from_dict(state["config"], source=str(path))
    g = build_generator(config)
    # The same structure as in training (spectral norm included) so the state dict keys match.
    g = prepare(g, config, "cpu")
    try:
        g.load_state_dict(state.get("generator_ema") or state["generator"])
    except RuntimeError as e:
        raise PtoolsError(f"{path}: generator weights do not fit its own config: {str(e).splitlines()[0]}") from None
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


def label_channel(config: DefectGANConfig, label: str | None) -> int:
    """--label NAME or INDEX (the control-map channel: 1 = the first defect label) -> channel number."""
    if label is None:
        if not config.labels:
            raise PtoolsError("the checkpoint has no defect labels")
        return 1
    names = ", ".join(f"{i + 1}={n}" for i, n in enumerate(config.labels))
    if label in config.labels:
        return config.labels.index(label) + 1
    if label.isdigit() and 1 <= int(label) <= len(config.labels):
        return int(label)
    raise PtoolsError(f"--label {label}: not a label of this checkpoint", hint=f"labels: {names}")


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
) -> tuple[list[Output], DefectGANConfig]:
    """Write `n` results per input (each with fresh noise) and their spatial maps into `out_dir`.

    Files: <stem>_<k>.png (the image) and <stem>_<k>_map.png (where G changed it), k = 0..n-1.
    """
    from torchvision.utils import save_image

    from ptools.data.imageio import load_mask, load_rgb
    from ptools.data.transforms import denormalize, normalize
    from ptools.devices import resolve_device
    from ptools.files import atomic_path, check_output_path

    if n < 1:
        raise PtoolsError(f"--n must be at least 1 (got {n})")
    if restore and (label is not None or mask is not None):
        raise PtoolsError("--restore takes no --label or --mask (restoration targets the normal map)")
    dev = resolve_device(device)
    g, config = load_generator(checkpoint, dev)
    size = config.image_size
    channel = None if restore else label_channel(config, label)
    mask_t = None
    if mask is not None:
        mask_path = Path(mask)
        if not mask_path.is_file():
            raise PtoolsError(f"--mask {mask_path}: no such file")
        mask_t = torch.from_numpy(load_mask(mask_path, size)).float()[None]
    control = control_map(config, size, channel, mask_t, restore)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = [
        Output(p, k, out_dir / f"{p.stem}_{k}.png", out_dir / f"{p.stem}_{k}_map.png") for p in inputs for k in range(n)
    ]
    names = [o.image.name for o in plan]
    if len(set(names)) != len(names):
        raise PtoolsError("two inputs share a file name stem; their outputs would collide", hint="rename one")
    for o in plan:  # refuse before any work, never after half the files
        check_output_path(o.image, force)
        check_output_path(o.map, force)

    torch.manual_seed(seed)
    a = control[None].expand(n, -1, -1, -1).to(dev)
    with torch.no_grad():
        for path in inputs:
            x = normalize(torch.from_numpy(load_rgb(path, size)).permute(2, 0, 1))[None].expand(n, -1, -1, -1)
            images, maps = g(x.to(dev), a)  # n copies, each with its own noise
            for o in (o for o in plan if o.input == path):
                with atomic_path(o.image, force) as tmp:
                    save_image(denormalize(images[o.sample].float().cpu()), tmp, format="PNG")
                with atomic_path(o.map, force) as tmp:
                    save_image(maps[o.sample].float().cpu(), tmp, format="PNG")
    return plan, config
