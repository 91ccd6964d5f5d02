"""Defect datasets: layouts, DefectDataset, the loader factory, paired transforms, synth, check, preview.

Attributes are imported on first use so `import ptools.data` (and the CLI) stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "DefectDataset": "ptools.data.dataset",
    "make_loader": "ptools.data.loader",
    "ResumableSampler": "ptools.data.loader",
    "normalize": "ptools.data.transforms",
    "denormalize": "ptools.data.transforms",
    "paired_augment": "ptools.data.transforms",
    "synthesize": "ptools.data.synth",
    "check_dataset": "ptools.data.check",
    "CheckReport": "ptools.data.check",
    "scan": "ptools.data.layouts",
}

__all__ = [
    "CheckReport",
    "DefectDataset",
    "ResumableSampler",
    "check_dataset",
    "denormalize",
    "make_loader",
    "normalize",
    "paired_augment",
    "scan",
    "synthesize",
]

if TYPE_CHECKING:
    from ptools.data.check import CheckReport, check_dataset
    from ptools.data.dataset import DefectDataset
    from ptools.data.layouts import scan
    from ptools.data.loader import ResumableSampler, make_loader
    from ptools.data.synth import synthesize
    from ptools.data.transforms import denormalize, normalize, paired_augment


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ptools.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
