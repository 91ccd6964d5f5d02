"""Training checkpoints: atomic save, weights_only load, RNG capture/restore, rotation, resume lookup.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)`
reads it without unpickling any object: the config is stored with `DefectGANConfig.to_dict()` and every
RNG state as tensors or int lists.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptools.errors import PtoolsError
from ptools.files import atomic_torch_save

FORMAT = "ptools.defectgan/1"
CKPT_DIR = "checkpoints"
LATEST = "latest.pt"
INTERRUPTED = "interrupted.pt"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def step_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from: python, numpy, torch CPU and each CUDA device."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [int(version), [int(v) for v in internal], gauss],
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["gauss"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
        else:  # another machine shape: keep the current CUDA streams rather than fail
            torch.cuda.set_rng_state(cuda_states[0].cpu())


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write atomically (temp file in the same folder, then rename): a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_torch_save({"format": FORMAT, **state}, path, force=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint with weights_only=True (no arbitrary unpickling) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise PtoolsError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files; we report our own
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated, foreign or unsafe files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PtoolsError(
            f"{path}: cannot read as a ptools training checkpoint: {first}",
            hint="pass a .pt file written by `ptools train` (use `ptools inspect` to look inside others)",
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PtoolsError(
            f"{path}: not a ptools DefectGAN checkpoint (no '{FORMAT}' format tag)",
            hint="pass a .pt file written by `ptools train`",
        )
    return state


def step_checkpoints(ckpt_dir: Path) -> list[Path]:
    """step_*.pt files in `ckpt_dir`, oldest step first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def rotate(ckpt_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` step checkpoints (latest.pt and interrupted.pt are never touched)."""
    files = step_checkpoints(ckpt_dir)
    doomed = files[: max(len(files) - keep, 0)]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def resolve_resume(path: str | os.PathLike) -> tuple[Path, Path]:
    """`--resume PATH` -> (checkpoint file, run folder).

    PATH may be a checkpoint file, a run folder, or its checkpoints/ folder; in a folder the newer of
    latest.pt and interrupted.pt wins (an interrupted run is resumed from where it stopped).
    """
    path = Path(path)
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == CKPT_DIR else path.parent
        return path, run_dir
    if not path.is_dir():
        raise PtoolsError(f"--resume {path}: no such checkpoint file or run folder")
    ckpt_dir = path if path.name == CKPT_DIR else path / CKPT_DIR
    run_dir = ckpt_dir.parent
    candidates = [p for p in (ckpt_dir / LATEST, ckpt_dir / INTERRUPTED) if p.is_file()]
    if not candidates:
        candidates = step_checkpoints(ckpt_dir)[-1:]
    if not candidates:
        raise PtoolsError(
            f"--resume {path}: no checkpoint in {ckpt_dir}", hint="pass a run folder written by `ptools train`"
        )
    newest = max(candidates, key=lambda p: p.stat().st_mtime_ns)
    return newest, run_dir
