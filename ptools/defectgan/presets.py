"""Named config overrides for `ptools train --preset`: the paper's model, or one small enough for a CPU."""

from __future__ import annotations

from typing import Any

from ptools.errors import PtoolsError

PRESETS: dict[str, dict[str, Any]] = {
    # The faithful reproduction: the paper's widths, losses and optimisation, none of our additions
    # (no mask or pair supervision, no weight averaging).
    "paper": {"w_mask": 0.0, "w_pair": 0.0, "ema": 0.0},
    # Reduced widths at 64 px, tuned to learn as much as it can in minutes on 2 CPU cores (600 steps took
    # about 5 minutes there). Why each setting (measured with benchmarks/train_quality.py):
    "small": {
        "image_size": 64,
        "g_width": 16,
        "g_res_blocks": 3,
        "spade_hidden": 32,
        "d_width": 16,
        "d_layers": 4,
        "d_max_width": 128,
        # one D update per G update: a short run gets 5x more G updates than with the paper's 5
        "d_steps": 1,
        # with spectral norm D's classifier stays at chance for thousands of updates, so G gets no signal
        "spectral_norm": False,
        "init": "kaiming",
        # a constant rate: a decay to 1e-6 over a few hundred steps stops learning half-way
        "lr_schedule": "constant",
        # the averaged G is steadier than the last step's
        "ema": 0.99,
        # one torch thread: 3.9 step/s against 0.22 with two, measured back to back on the busy 2-core
        # machine this was tuned on (small convs only lose from threading when the cores are shared)
        "threads": 1,
    },
}


def preset_fields(name: str) -> dict[str, Any]:
    """The overrides of a preset; a clear error naming the known ones otherwise."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise PtoolsError(f"--preset {name!r}: no such preset", hint=f"use one of: {', '.join(PRESETS)}") from None
