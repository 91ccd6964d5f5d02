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
        # 5x the paper's rate, G and D alike: at 2e-4 the restoration's map covered half of a 1-px
        # scratch after 1500 steps (it must find the defect with no map to say where) and restorations
        # kept the rest as a trace; at 1e-3 restored=normal 52/36% -> 78/73% and IoU 0.88 -> 0.95
        # (built-in set, seeds 0/1; 5e-4 was half-way); with w_fg below 81/50%, and on the photo set
        # 14/14% -> 32/48% (docs/train.md "Presets")
        "lr_g": 1e-3,
        "lr_d": 1e-3,
        # no weight averaging: in every pair measured at 400-500 steps (6 checkpoints, both sets) the
        # 0.99-averaged G had more colour spread (1.35-1.47x the real defects' against 1.15-1.35x) and
        # more far-field change than the last step's own G
        "ema": 0.0,
        # Against the colour speckle, the halo and restorations that damage more than they repair (issue 16;
        # benchmarks/train_quality.py, --data builtin and photos, docs/train.md has the table):
        # - the class term at 1/10 of the paper's weight: its gradient on G's output is 30-70x the other
        #   terms', mostly on the 2x2 lattice, and D's unnormalised class head lets G answer it with fixed
        #   colour textures; the mask and pair terms carry the label where the data has masks and pairs
        #   (0 measured the same as 0.5 at 500 steps; 0.5 keeps a label signal for data without them)
        "w_cls_g": 0.5,
        # - Dice + plain BCE on the map: the class-balanced BCE weighs a 1-px crack's pixels ~50x the
        #   background's, and its optimum paints a 2-3 px halo around every thin defect
        "mask_loss": "dice",
        # - F itself pulled to the real partner inside the mask (w_fg): the output's L1 reaches F only
        #   through M, so F kept a colour tint where the real defect is grey (spread ratio 1.67 -> 1.31
        #   at lr 5e-4, restored=normal 58% -> 74%)
        "w_fg": 10.0,
        # - nearest x2 + 3x3 conv instead of the 4x4 stride-2 transposed conv: the restorations' 2x2
        #   checkerboard energy near the defect fell from 1.94x the real normal's to 1.40x (photos, 500 steps)
        "g_upsample": "nearest",
        # the cores idle when the run starts: alone on 2 cores two threads run 3.7 step/s against 2.1 with
        # one (1500 steps: 6.7 instead of 12 minutes); on a busy machine one thread, as a second one mostly
        # waits for a core another process holds (0.22 step/s against 3.9 with one, measured back to back)
        "threads": -1,
    },
}


def preset_fields(name: str) -> dict[str, Any]:
    """The overrides of a preset; a clear error naming the known ones otherwise."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise PtoolsError(f"--preset {name!r}: no such preset", hint=f"use one of: {', '.join(PRESETS)}") from None
