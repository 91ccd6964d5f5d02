"""Settings a PyTorch port must choose for Keras layers that hold no weights (pooling, padding, upsampling,
activations), read from the Keras config: the `ptools.nn` layer or the torch arguments that reproduce TF.

Weighted layers get their notes in layouts.py with their tensors; these layers never reach a state_dict,
so without these notes nothing would tell the porter that `nn.MaxPool2d(3, 2, padding=1)` is not TF's
SAME pooling or that Keras' LeakyReLU slope is 0.3.
"""

from __future__ import annotations

from typing import Any

from ptools.convert.layouts import Note

_POOLS = {"MaxPooling": "MaxPool", "AveragePooling": "AvgPool"}
_PLAIN_ACTIVATIONS = {
    "relu": "nn.ReLU()",
    "sigmoid": "nn.Sigmoid()",
    "tanh": "nn.Tanh()",
    "elu": "nn.ELU()",
    "selu": "nn.SELU()",
    "softplus": "nn.Softplus()",
    "softsign": "nn.Softsign()",
    "swish": "nn.SiLU()",
    "silu": "nn.SiLU()",
    "gelu": "nn.GELU() (exact erf form, Keras' default approximate=False)",
    "relu6": "nn.ReLU6()",
    "hard_swish": "nn.Hardswish()",
    "hard_silu": "nn.Hardswish()",
    "mish": "nn.Mish()",
    "exponential": "torch.exp",
    "log_softmax": "nn.LogSoftmax(dim=1) on NCHW maps, dim=-1 on vectors (Keras' axis -1 is channels)",
    "softmax": "nn.Softmax(dim=1) on NCHW maps, dim=-1 on vectors (Keras' axis -1 is channels)",
    "leaky_relu": "nn.LeakyReLU(negative_slope=0.2) (Keras' activation default; PyTorch's is 0.01)",
}


def _pairs(value: Any, n: int) -> list[tuple[int, int]]:
    """Keras padding/cropping argument -> n (before, after) pairs."""
    if isinstance(value, int):
        return [(value, value)] * n
    out: list[tuple[int, int]] = []
    for v in value:
        out.append((v, v) if isinstance(v, int) else (int(v[0]), int(v[1])))
    return out if len(out) == n else [(out[0][0], out[0][1])] * n


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    if value is None:
        return ()
    return (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)


def activation_note(layer: str, activation: Any, keras3: bool, after: bool = False) -> Note | None:
    """The torch module for a Keras activation name (None for linear)."""
    name = activation.get("config", {}).get("name", activation) if isinstance(activation, dict) else activation
    if not isinstance(name, str) or name in ("linear", "", None):
        return None
    where = "after this layer: " if after else ""
    if name == "hard_sigmoid":
        how = (
            "nn.Hardsigmoid() (Keras 3: relu6(x + 3) / 6)"
            if keras3
            else "clip(0.2 * x + 0.5, 0, 1), not nn.Hardsigmoid (= x / 6 + 0.5): Keras 2's definition"
        )
    else:
        how = _PLAIN_ACTIVATIONS.get(name, f"the torch equivalent of Keras' {name!r}")
    return Note(layer, "activation", name, where + how)


def layer_settings(name: str, cls: str | None, cfg: dict[str, Any], keras3: bool) -> list[Note]:
    """Notes for one Keras layer from its config (empty for layers that need no choice)."""
    cls = cls or ""
    notes: list[Note] = []
    if cfg.get("data_format") == "channels_first" and not cls.startswith(("Conv", "Depthwise", "Separable")):
        return notes  # the weighted-layer notes already say the model is channels_first
    base = cls.rstrip("123D")
    nd = int(cls[-2]) if cls[-2:-1].isdigit() and cls.endswith("D") else 2
    if base in _POOLS:
        k = _tuple(cfg.get("pool_size", 2), nd)
        s = _tuple(cfg.get("strides") or k, nd)
        torch_name = f"{_POOLS[base]}{nd}d"
        if cfg.get("padding", "valid") == "same":
            if nd == 2:
                what = (
                    f"ptools.nn.{torch_name}Same({k}, {s}): TF SAME pads the extra row/column bottom/right"
                    + (" with -inf" if base == "MaxPooling" else " and averages over the real cells only")
                    + f"; nn.{torch_name}(padding=...) is symmetric"
                    + ("" if base == "MaxPooling" else " and counts the padding")
                )
            else:
                what = (
                    f"TF SAME {nd}-D pooling: pad total max((ceil(n/s) - 1) * s + k - n, 0), the extra one "
                    f"after, {'with -inf' if base == 'MaxPooling' else 'excluding pads from the average'}, "
                    f"then nn.{torch_name}({k}, {s})"
                )
            notes.append(Note(name, "padding", "same", what))
        elif k != s:
            notes.append(Note(name, "pool", {"kernel": list(k), "stride": list(s)}, f"nn.{torch_name}({k}, {s})"))
    elif base == "ZeroPadding":
        pads = _pairs(cfg.get("padding", 1), nd)
        flat = [p for pair in reversed(pads) for p in pair]  # torch pads the last axis first
        notes.append(
            Note(
                name,
                "padding",
                [list(p) for p in pads],
                f"nn.ZeroPad{nd}d({tuple(flat)}): torch orders pads last axis first (left, right, top, bottom)",
            )
        )
    elif base == "Cropping":
        crops = _pairs(cfg.get("cropping", 1), nd)
        sl = ", ".join(f"{a}:{'-' + str(b) if b else ''}" for a, b in crops)
        notes.append(Note(name, "cropping", [list(c) for c in crops], f"slice x[:, :, {sl}] (no nn module)"))
    elif base == "UpSampling":
        size = _tuple(cfg.get("size", 2), nd)
        interp = cfg.get("interpolation", "nearest")
        if interp == "nearest":
            how = f"nn.Upsample(scale_factor={size}, mode='nearest')"
        elif interp == "bilinear":
            how = (
                f"nn.Upsample(scale_factor={size}, mode='bilinear', align_corners=False)"
                " (TF2 resizes with half-pixel centers)"
            )
        else:
            how = (
                f"nn.Upsample(scale_factor={size}, mode='{interp}') is not exact for {interp!r} "
                "(TF's kernels differ from torch's, e.g. bicubic a=-0.5 vs -0.75)"
            )
        notes.append(Note(name, "interpolation", interp, how))
    elif cls == "LeakyReLU":
        slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        notes.append(
            Note(name, "negative_slope", slope, f"nn.LeakyReLU(negative_slope={slope:g}): PyTorch's default is 0.01")
        )
    elif cls == "ELU":
        alpha = cfg.get("alpha", 1.0)
        if alpha != 1.0:
            notes.append(Note(name, "alpha", alpha, f"nn.ELU(alpha={alpha:g})"))
    elif cls == "ReLU":
        mx, ns, th = cfg.get("max_value"), cfg.get("negative_slope", 0.0), cfg.get("threshold", 0.0)
        if ns or th:
            notes.append(
                Note(name, "relu", {"max_value": mx, "negative_slope": ns, "threshold": th}, "a custom activation")
            )
        elif mx is not None:
            how = "nn.ReLU6()" if float(mx) == 6.0 else f"torch.clamp(x, 0, {mx:g})"
            notes.append(Note(name, "max_value", mx, how))
    elif cls == "Softmax":
        notes.append(Note(name, "axis", cfg.get("axis", -1), "nn.Softmax(dim=1) on NCHW maps, dim=-1 on vectors"))
    elif cls == "Activation":
        note = activation_note(name, cfg.get("activation"), keras3)
        if note is not None:
            notes.append(note)
    elif "activation" in cfg and cls not in ("LSTM", "GRU", "SimpleRNN"):
        note = activation_note(name, cfg.get("activation"), keras3, after=True)
        if note is not None:
            notes.append(note)
    return notes
