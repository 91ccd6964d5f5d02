"""`--device auto|cpu|cuda|cuda:N|mps`: parse without torch, resolve with it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import torch

_SPEC = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def parse_device_spec(spec: str) -> str:
    """Normalise and validate a device string; cheap enough for argument parsing."""
    spec = spec.strip().lower()
    if not _SPEC.match(spec):
        raise PtoolsError(f"--device {spec!r}: not a device", hint="use auto, cpu, cuda, cuda:N or mps")
    return spec


def resolve_device(spec: str = "auto") -> torch.device:
    """Pick the torch.device for a spec: auto prefers cuda, then mps, then cpu."""
    import torch

    spec = parse_device_spec(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PtoolsError(
                f"--device {spec}: CUDA is not available on this machine",
                hint="use --device cpu or auto",
            )
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise PtoolsError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible",
                hint="check CUDA_VISIBLE_DEVICES",
            )
        return torch.device(spec)
    if spec == "mps" and not _mps_available():
        raise PtoolsError("--device mps: MPS is not available on this machine", hint="use --device cpu or auto")
    return torch.device(spec)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
