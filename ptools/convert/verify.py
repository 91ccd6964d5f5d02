"""`--check-output`: load the converted weights into the target model, run TF's saved input, compare outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ptools.errors import PtoolsError


def load_arrays(path: Path, what: str) -> list[np.ndarray]:
    """The arrays of a .npy file, or of a .npz file in its stored order (no pickles); `what` names the flag."""
    if not path.is_file():
        raise PtoolsError(f"{path}: no such {what} file")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PtoolsError(f"{path}: not a .npy/.npz {what} file ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return [data[k] for k in data.files]
    return [data]


def _first_conv_channels(model: Any) -> int | None:
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return None


def _to_torch_input(x: np.ndarray, channels: int | None) -> tuple[Any, bool]:
    """NHWC (TF) -> NCHW when the model's first conv says so; other inputs pass as they are."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x))
    if x.dtype.kind in "iu":
        t = t.long()
    if x.ndim in (3, 4, 5) and channels is not None and x.shape[-1] == channels and x.shape[1] != channels:
        return t.movedim(-1, 1).contiguous(), True
    return t, False


def check_model_output(plan: Any, input_path: Path, expected_path: Path, tolerance: float) -> dict[str, Any]:
    import torch

    model = plan.model
    if model is None:
        raise PtoolsError("--check-output needs --model")
    sd = {}
    for t in plan.out_tensors():
        a = np.asarray(t.make())
        sd[t.key] = torch.from_numpy(np.array(a, dtype=np.float32 if t.dtype == "bfloat16" else a.dtype, copy=True))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing:
        raise PtoolsError(f"--check-output: the converted weights leave {len(missing)} model keys unset: {missing[:5]}")
    xs = load_arrays(input_path, "input")
    ys = load_arrays(expected_path, "expected output")
    channels = _first_conv_channels(model)
    inputs, transposed = [], []
    for x in xs:
        t, tr = _to_torch_input(x, channels)
        inputs.append(t)
        transposed.append(tr)
    model.eval()
    with torch.no_grad():
        try:
            out = model(*inputs)
        except Exception as e:  # noqa: BLE001 - the user's model rejected the input: bad input, not a crash
            raise PtoolsError(f"--check-output: the model failed on the input ({type(e).__name__}: {e})") from None
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if len(outs) != len(ys):
        raise PtoolsError(f"--check-output: the model returned {len(outs)} outputs, --expected holds {len(ys)}")
    errors = []
    for o, y in zip(outs, ys, strict=True):
        o = o.detach().float()
        if tuple(o.shape) != tuple(y.shape) and o.ndim >= 3 and tuple(o.movedim(1, -1).shape) == tuple(y.shape):
            o = o.movedim(1, -1)  # NCHW output vs NHWC reference
        if tuple(o.shape) != tuple(y.shape):
            raise PtoolsError(f"--check-output: output shape {tuple(o.shape)} differs from expected {tuple(y.shape)}")
        errors.append(float((o - torch.from_numpy(y.astype(np.float32))).abs().max()))
    worst = max(errors) if errors else 0.0
    return {
        "ok": worst <= tolerance,
        "max_abs_error": worst,
        "per_output": errors,
        "tolerance": tolerance,
        "inputs_transposed_nhwc_to_nchw": transposed,
        "unexpected_keys": list(unexpected),
    }
