"""Named config overrides for `ptools train --preset`: the paper's model, or one small enough for a CPU."""

from __future__ import annotations

from typing import Any

from ptools.errors import PtoolsError

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's widths and settings: the config defaults as they are.
    "paper": {},
    # Same architecture with reduced widths at 64 px: about 5 steps/s on 2 CPU cores instead of 0.2,
    # so a first run shows the whole loop (data, losses, samples, checkpoints) in a minute or two.
    "small": {
        "image_size": 64,
        "g_width": 16,
        "g_res_blocks": 3,
        "spade_hidden": 32,
        "d_width": 16,
        "d_layers": 4,
        "d_max_width": 128,
    },
}


def preset_fields(name: str) -> dict[str, Any]:
    """The overrides of a preset; a clear error naming the known ones otherwise."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise PtoolsError(f"--preset {name!r}: no such preset", hint=f"use one of: {', '.join(PRESETS)}") from None
