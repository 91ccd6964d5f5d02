"""Per Keras layer class: the torch module(s), the forward line, the output shape and the weight layout.

Values flow through the graph with their Keras shape (channels last, no batch axis) and a flag saying
whether the torch tensor holds them channels-first. Image layers want channels-first and produce it;
Dense, RNN, Embedding, Reshape and Flatten want Keras order. A layout change is written into the forward
line (`x.permute(0, 2, 3, 1)`), so Flatten sees TF's (H, W, C) order and no Dense rows are permuted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptools import padding as tfpad
from ptools.convert.layouts import conv_kernel, dense_kernel, depthwise_kernel, swap_gates_zr
from ptools.errors import PtoolsError
from ptools.port.code import call, identifier, lit, one

Shape = tuple[int | None, ...]
Weights = list[tuple[str, np.ndarray]]  # (path in the file, array) in the layer's variable order


class Unsupported(Exception):
    """This layer (or one of its settings) has no exact torch equivalent here."""


@dataclass
class Value:
    name: str
    shape: Shape  # Keras order, without the batch axis
    cf: bool = False  # the torch tensor holds it channels-first (NCHW, NCL, NCDHW)
    integer: bool = False
    mask: str | None = None  # Keras' mask travelling with it: a (N, T) bool tensor's variable name

    @property
    def rank(self) -> int:
        return len(self.shape) + 1


@dataclass
class LayerCode:
    modules: list[tuple[str, str]] = field(default_factory=list)  # (attribute, constructor); ("", statement)
    lines: list[str] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    weights: Callable[[Weights], dict[str, np.ndarray]] | None = None  # -> state_dict entries
    imports: set[str] = field(default_factory=set)  # names from ptools.nn
    needs_file_weights: bool = True  # False: `weights` can do without stored arrays (constants in the config)


@dataclass
class Ctx:
    """What an emitter needs besides its own config: its attribute/variable names and the Keras version."""

    attr: str  # module attribute for this layer
    out: str  # variable name for its (first) output
    keras3: bool  # activation formulas changed between tf_keras and Keras 3 (hard_sigmoid)
    layer: str
    call_index: int = 0  # >0: a shared layer called again, its modules exist already
    taken: set[str] = field(default_factory=set)  # variable names of the forward so far (with `out`)

    def fresh(self, name: str) -> str:
        """A variable name for an extra value of this call (`lstm_h`), unique in the forward."""
        return identifier(re.sub("__+", "_", name), self.taken)


# -- layout helpers ---------------------------------------------------------------------------------


def as_cf(v: Value) -> str:
    """The torch expression for `v` channels-first."""
    if v.cf or v.rank <= 2:
        return v.name
    if v.rank == 3:
        return f"{v.name}.transpose(1, 2)"
    return f"{v.name}.permute(0, {v.rank - 1}, {', '.join(str(i) for i in range(1, v.rank - 1))})"


def as_keras(v: Value) -> str:
    """The torch expression for `v` in Keras' channels-last order."""
    if not v.cf or v.rank <= 2:
        return v.name
    if v.rank == 3:
        return f"{v.name}.transpose(1, 2)"
    return f"{v.name}.permute(0, {', '.join(str(i) for i in range(2, v.rank))}, 1)"


def keras_axis(axis: int, rank: int) -> int:
    a = axis if axis >= 0 else rank + axis
    if not 1 <= a < rank:
        raise Unsupported(f"axis {axis} is the batch axis or out of range for rank {rank}")
    return a


def torch_axis(axis: int, v: Value) -> int:
    """A Keras axis (channels last) as the axis of the torch tensor holding `v`."""
    a = keras_axis(axis, v.rank)
    if not v.cf or v.rank <= 2:
        return a
    return 1 if a == v.rank - 1 else a + 1


def cf_axes(v: Value) -> tuple[int, ...]:
    """Spatial axes of `v` in its torch layout."""
    return tuple(range(2, v.rank)) if v.cf else tuple(range(1, v.rank - 1))


def f32(x: float) -> float:
    """The shortest float that is the same float32: Keras 2 configs store float32 slopes as 0.30000001192092896,
    and torch applies them in float32 anyway."""
    short = float(str(np.float32(x)))
    return short if np.float32(short) == np.float32(x) else float(x)


def tup(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        t = tuple(int(x) for x in v)
        return t if len(t) == n else (t[0],) * n
    return (int(v),) * n


# -- activations ------------------------------------------------------------------------------------


def activation(name: Any, x: str, v: Value, ctx: Ctx) -> str | None:
    """`x` passed through the Keras activation `name`; None for linear."""
    if isinstance(name, dict):  # Keras 3 may serialise a built-in as {"class_name": "function", "config": "relu"}
        name = name.get("config") if isinstance(name.get("config"), str) else name.get("class_name")
    if name in (None, "linear"):
        return None
    simple = {
        "relu": "torch.relu({})",
        "relu6": "F.relu6({})",
        "sigmoid": "torch.sigmoid({})",
        "tanh": "torch.tanh({})",
        "elu": "F.elu({})",
        "selu": "F.selu({})",
        "softplus": "F.softplus({})",
        "softsign": "F.softsign({})",
        "swish": "F.silu({})",
        "silu": "F.silu({})",
        "gelu": "F.gelu({})",  # Activation("gelu"): approximate=False in tf_keras and Keras 3
        "exponential": "torch.exp({})",
        "mish": "F.mish({})",
        "hard_silu": "F.hardswish({})",
        "hard_swish": "F.hardswish({})",
        "leaky_relu": "F.leaky_relu({}, 0.2)",  # the function's default (the layer's is 0.3)
    }
    if name in simple:
        return simple[name].format(x)
    if name == "hard_sigmoid":
        # Keras 3: relu6(x + 3) / 6 (= torch's hardsigmoid); tf_keras and Keras 2: clip(0.2 x + 0.5, 0, 1).
        return f"F.hardsigmoid({x})" if ctx.keras3 else f"torch.clamp(0.2 * {x} + 0.5, 0.0, 1.0)"
    if name in ("softmax", "log_softmax"):
        fn = "torch.softmax" if name == "softmax" else "torch.log_softmax"
        return f"{fn}({x}, dim={torch_axis(-1, v)})"
    raise Unsupported(f"activation {name!r}")


def _act_line(ctx: Ctx, expr: str, cfg: dict[str, Any], v: Value, settings: list[str]) -> str:
    act = activation(cfg.get("activation"), expr, v, ctx)
    if act is not None:
        settings.append(f"activation={cfg.get('activation')}")
    return f"{ctx.out} = {act if act is not None else expr}"


# -- convolutions -----------------------------------------------------------------------------------


def _same_pads(
    sizes: Shape, k: tuple[int, ...], s: tuple[int, ...], d: tuple[int, ...]
) -> list[tuple[int, int]] | None:
    pads = []
    for n, kk, ss, dd in zip(sizes, k, s, d, strict=True):
        if n is None:
            if ss != 1:
                return None
            total = (kk - 1) * dd  # stride 1: TF's pads do not depend on the input size
            pads.append((total // 2, total - total // 2))
        else:
            w = tfpad.conv_window(n, kk, ss, dd, "same")
            pads.append((w.pad_before, w.pad_after))
    return pads


def _conv_out(n: int | None, k: int, s: int, d: int, padding: str) -> int | None:
    if n is None:
        return None
    keff = (k - 1) * d + 1
    if padding == "valid":
        if keff > n:
            raise Unsupported(f"kernel {k} larger than the input {n} with VALID padding")
        return (n - keff) // s + 1
    if padding == "causal":  # (k - 1) * d zeros before, then a VALID conv
        return (n - 1) // s + 1
    return -(-n // s)


def _check_channels_last(cfg: dict[str, Any]) -> None:
    if cfg.get("data_format", "channels_last") not in ("channels_last", None):
        raise Unsupported("data_format='channels_first' (only channels_last models are ported)")


def _pad_module(nd: int, pads: list[tuple[int, int]]) -> str:
    flat: list[int] = []
    for before, after in reversed(pads):  # torch pads the last dimension first
        flat += [before, after]
    if nd == 2:
        return call("nn.ZeroPad2d", tuple(flat))
    return call(f"nn.ConstantPad{nd}d", tuple(flat), 0.0)


def _conv_weights(ws: Weights, use_bias: bool, attr: str, layout: Callable[[np.ndarray], np.ndarray]) -> dict:
    names = ["kernel", "bias"] if use_bias else ["kernel"]
    arrays = expect(ws, names)
    out = {f"{attr}.weight": layout(arrays["kernel"])}
    if use_bias:
        out[f"{attr}.bias"] = arrays["bias"]
    return out


def expect(ws: Weights, names: list[str]) -> dict[str, np.ndarray]:
    """The layer's arrays under their Keras variable names, by order (every Keras generation saves a layer's
    variables in the same order; only their names differ: `kernel:0`, `conv_1/kernel:0`, `vars/0`)."""
    if len(ws) != len(names):
        got = ", ".join(p for p, _ in ws) or "none"
        raise PtoolsError(f"expected {len(names)} weights ({', '.join(names)}), the file has {len(ws)}: {got}")
    return {n: a for n, (_, a) in zip(names, ws, strict=True)}


def channels(v: Value) -> int:
    """The channel count a layer's weights are sized by; a port cannot declare a layer without it."""
    c = v.shape[-1]
    if c is None:
        raise Unsupported("unknown number of input channels")
    return c


def conv(cfg: dict[str, Any], ins: list[Value], ctx: Ctx, nd: int) -> LayerCode:
    _check_channels_last(cfg)
    v = ins[0]
    code = LayerCode()
    k, s, d = tup(cfg["kernel_size"], nd), tup(cfg.get("strides", 1), nd), tup(cfg.get("dilation_rate", 1), nd)
    groups = int(cfg.get("groups", 1) or 1)
    padding = cfg.get("padding", "valid")
    cin, cout, use_bias = channels(v), int(cfg["filters"]), bool(cfg.get("use_bias", True))
    sizes = v.shape[:-1]
    kwargs: dict[str, Any] = {"kernel_size": one(k)}
    if any(x != 1 for x in s):
        kwargs["stride"] = one(s)
    pre = ""
    cls = f"nn.Conv{nd}d"
    if padding == "same":
        pads = _same_pads(sizes, k, s, d)
        if pads is not None and all(b == a for b, a in pads):
            if any(b for b, _ in pads):
                kwargs["padding"] = one(tuple(b for b, _ in pads))
            code.settings.append(f"TF SAME pads {[b for b, _ in pads]} on each side: symmetric padding is exact")
        elif nd == 2:
            cls = "Conv2dSame"
            code.imports.add("Conv2dSame")
            if pads is not None:
                kwargs["input_size"] = tuple(sizes)
            code.settings.append(
                f"TF SAME pads (before, after) {pads if pads else 'computed per input size'}: asymmetric, "
                "ptools.nn.Conv2dSame"
            )
        elif pads is not None:
            code.modules.append((f"{ctx.attr}_pad", _pad_module(nd, pads)))
            pre = f"self.{ctx.attr}_pad"
            code.settings.append(f"TF SAME pads (before, after) {pads}: asymmetric, explicit pad module")
        else:
            raise Unsupported("SAME padding with stride > 1 on an input of unknown size")
    elif padding == "causal":
        pads = [((k[0] - 1) * d[0], 0)]
        code.modules.append((f"{ctx.attr}_pad", _pad_module(nd, pads)))
        pre = f"self.{ctx.attr}_pad"
        code.settings.append(f"causal padding: {pads[0][0]} zeros before")
    elif padding != "valid":
        raise Unsupported(f"padding={padding!r}")
    if any(x != 1 for x in d):
        kwargs["dilation"] = one(d)
    if groups != 1:
        kwargs["groups"] = groups
        code.settings.append(f"groups={groups}")
    if not use_bias:
        kwargs["bias"] = False
        code.settings.append("bias=False")
    code.modules.append((ctx.attr, call(cls, cin, cout, **kwargs)))  # after its pad module, if any
    x = as_cf(v)
    if pre:
        x = f"{pre}({x})"
    out_sizes = tuple(_conv_out(n, kk, ss, dd, padding) for n, kk, ss, dd in zip(sizes, k, s, d, strict=True))
    out = Value(ctx.out, (*out_sizes, cout), cf=True)
    # The activation sees the conv's channels-first output (a softmax's dim), whatever layout its input had.
    code.lines.append(_act_line(ctx, f"self.{ctx.attr}({x})", cfg, out, code.settings))
    code.outputs.append(out)
    code.weights = lambda ws: _conv_weights(ws, use_bias, ctx.attr, conv_kernel)
    return code


def conv_transpose(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    _check_channels_last(cfg)
    v = ins[0]
    code = LayerCode()
    k, s, d = tup(cfg["kernel_size"], 2), tup(cfg.get("strides", 1), 2), tup(cfg.get("dilation_rate", 1), 2)
    op = cfg.get("output_padding")
    op_t = None if op is None else tup(op, 2)
    padding = cfg.get("padding", "valid")
    if int(cfg.get("groups", 1) or 1) != 1:
        raise Unsupported("grouped Conv2DTranspose")
    cin, cout, use_bias = channels(v), int(cfg["filters"]), bool(cfg.get("use_bias", True))
    sizes = v.shape[:-1]
    out_sizes: tuple[int | None, ...] = (None, None)
    expressible = None
    if all(n is not None for n in sizes):
        t = tfpad.transpose2d_window(tuple(sizes), k, s, d, padding, op_t)
        out_sizes = t.output
        answers = [tfpad.torch_transpose_padding(x) for x in (t.h, t.w)]
        if all(a is not None for a in answers):
            expressible = answers
        code.settings.append(f"TF crop of the full transposed conv (top, bottom), (left, right): {t.crop}")
    kwargs: dict[str, Any] = {"kernel_size": one(k)}
    if any(x != 1 for x in s):
        kwargs["stride"] = one(s)
    if expressible is not None:
        cls = "nn.ConvTranspose2d"
        p, o = tuple(a[0] for a in expressible), tuple(a[1] for a in expressible)
        if any(p):
            kwargs["padding"] = one(p)
        if any(o):
            kwargs["output_padding"] = one(o)
        code.settings.append("symmetric crop: padding/output_padding are exact")
    else:
        cls = "ConvTranspose2dSame"
        code.imports.add("ConvTranspose2dSame")
        kwargs["padding"] = lit(padding)
        if op_t is not None:
            kwargs["output_padding"] = one(op_t)
        code.settings.append("TF crops the odd cell bottom/right: ptools.nn.ConvTranspose2dSame")
    if not use_bias:
        kwargs["bias"] = False
        code.settings.append("bias=False")
    if any(x != 1 for x in d):
        kwargs["dilation"] = one(d)
    code.modules.append((ctx.attr, call(cls, cin, cout, **kwargs)))
    out = Value(ctx.out, (*out_sizes, cout), cf=True)
    code.lines.append(_act_line(ctx, f"self.{ctx.attr}({as_cf(v)})", cfg, out, code.settings))
    code.outputs.append(out)
    code.weights = lambda ws: _conv_weights(ws, use_bias, ctx.attr, conv_kernel)
    return code


def depthwise(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    m = int(cfg.get("depth_multiplier", 1))
    c = channels(ins[0])
    code = conv({**cfg, "filters": c * m, "groups": c}, ins, ctx, 2)
    code.settings = [s for s in code.settings if not s.startswith("groups=")]
    code.settings.insert(0, f"depthwise: groups={c}, depth_multiplier={m} (output channel c*{m}+m)")
    use_bias = bool(cfg.get("use_bias", True))
    code.weights = lambda ws: _depthwise_weights(ws, use_bias, ctx.attr)
    return code


def _depthwise_weights(ws: Weights, use_bias: bool, attr: str) -> dict:
    arrays = expect(ws, ["depthwise_kernel", "bias"] if use_bias else ["depthwise_kernel"])
    out = {f"{attr}.weight": depthwise_kernel(arrays["depthwise_kernel"])}
    if use_bias:
        out[f"{attr}.bias"] = arrays["bias"]
    return out


def separable(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    m = int(cfg.get("depth_multiplier", 1))
    c = channels(ins[0])
    dw_ctx = Ctx(f"{ctx.attr}_depthwise", ctx.out, ctx.keras3, ctx.layer)
    dw = conv({**cfg, "filters": c * m, "groups": c, "use_bias": False, "activation": None}, ins, dw_ctx, 2)
    pw_ctx = Ctx(f"{ctx.attr}_pointwise", ctx.out, ctx.keras3, ctx.layer)
    pw_cfg = {**cfg, "kernel_size": 1, "strides": 1, "padding": "valid", "dilation_rate": 1, "groups": 1}
    pw = conv(pw_cfg, dw.outputs, pw_ctx, 2)
    code = LayerCode(modules=dw.modules + pw.modules, outputs=pw.outputs, imports=dw.imports | pw.imports)
    code.settings = [f"separable: depthwise (groups={c}, depth_multiplier={m}) then pointwise 1x1"]
    code.settings += [s for s in dw.settings if not s.startswith(("groups=", "bias="))]
    expr = f"self.{pw_ctx.attr}(self.{dw_ctx.attr}({as_cf(ins[0])}))"
    code.lines.append(_act_line(ctx, expr, cfg, pw.outputs[0], code.settings))
    if not cfg.get("use_bias", True):
        code.settings.append("bias=False")
    use_bias = bool(cfg.get("use_bias", True))

    def weights(ws: Weights) -> dict:
        names = ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if use_bias else [])
        a = expect(ws, names)
        out = {
            f"{dw_ctx.attr}.weight": depthwise_kernel(a["depthwise_kernel"]),
            f"{pw_ctx.attr}.weight": conv_kernel(a["pointwise_kernel"]),
        }
        if use_bias:
            out[f"{pw_ctx.attr}.bias"] = a["bias"]
        return out

    code.weights = weights
    return code


# -- dense, norms, embedding ------------------------------------------------------------------------


def dense(cfg: dict[str, Any], ins: list[Value], ctx: Ctx, time_distributed: bool = False) -> LayerCode:
    v = ins[0]
    code = LayerCode()
    n_in, units, use_bias = v.shape[-1], int(cfg["units"]), bool(cfg.get("use_bias", True))
    if n_in is None:
        raise Unsupported("unknown input features")
    kwargs = {} if use_bias else {"bias": False}
    if not use_bias:
        code.settings.append("bias=False")
    code.modules.append((ctx.attr, call("nn.Linear", n_in, units, **kwargs)))
    kv = Value(as_keras(v), v.shape)
    code.lines.append(
        _act_line(ctx, f"self.{ctx.attr}({kv.name})", cfg, Value(ctx.out, (*v.shape[:-1], units)), code.settings)
    )
    code.outputs.append(Value(ctx.out, (*v.shape[:-1], units)))
    code.weights = lambda ws: _conv_weights(ws, use_bias, ctx.attr, dense_kernel)
    return code


def batchnorm(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    v = ins[0]
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if not isinstance(axis, int) or keras_axis(axis, v.rank) != v.rank - 1:
        raise Unsupported(f"BatchNormalization over axis {axis} (only the channel axis is ported)")
    if cfg.get("renorm"):
        raise Unsupported("batch renormalization")
    c = channels(v)
    eps, mom = float(cfg.get("epsilon", 1e-3)), float(cfg.get("momentum", 0.99))
    nd = {2: 1, 3: 1, 4: 2, 5: 3}.get(v.rank)
    if nd is None:
        raise Unsupported(f"BatchNormalization on a rank-{v.rank} tensor")
    torch_mom = round(1.0 - mom, 10)
    code = LayerCode()
    code.modules.append((ctx.attr, call(f"nn.BatchNorm{nd}d", c, eps=eps, momentum=torch_mom)))
    code.settings.append(f"eps={eps:g}, momentum={torch_mom:g} (= 1 - Keras momentum {mom:g})")
    center, scale = cfg.get("center", True), cfg.get("scale", True)
    if not center:
        code.settings.append("center=False: bias is 0")
    if not scale:
        code.settings.append("scale=False: weight is 1")
    x = as_cf(v)
    code.lines.append(f"{ctx.out} = self.{ctx.attr}({x})")
    code.outputs.append(Value(ctx.out, v.shape, cf=v.rank > 2))

    def weights(ws: Weights) -> dict:
        names = (["gamma"] if scale else []) + (["beta"] if center else []) + ["moving_mean", "moving_variance"]
        a = expect(ws, names)
        n = a["moving_mean"].shape
        return {
            f"{ctx.attr}.weight": a.get("gamma", np.ones(n, np.float32)),
            f"{ctx.attr}.bias": a.get("beta", np.zeros(n, np.float32)),
            f"{ctx.attr}.running_mean": a["moving_mean"],
            f"{ctx.attr}.running_var": a["moving_variance"],
            f"{ctx.attr}.num_batches_tracked": np.array(0, np.int64),
        }

    code.weights = weights
    return code


def layernorm(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    v = ins[0]
    if cfg.get("rms_scaling"):
        raise Unsupported("rms_scaling=True")
    axis = cfg.get("axis", -1)
    axes = [keras_axis(a, v.rank) for a in (axis if isinstance(axis, list) else [axis])]
    eps = float(cfg.get("epsilon", 1e-3))
    code = LayerCode()
    # Normalised axes must be the trailing axes of the tensor nn.LayerNorm sees: try the current layout,
    # then the other one; gamma/beta are stored in Keras axis order and permuted to the torch order.
    for layout_cf in (v.cf, not v.cf):
        mapped = [torch_axis(a, Value("", v.shape, layout_cf)) for a in axes]
        if sorted(mapped) == list(range(v.rank - len(axes), v.rank)):
            break
    else:
        raise Unsupported(f"LayerNormalization over axes {axis} (not the trailing axes in either layout)")
    perm = [int(i) for i in np.argsort(mapped)]  # torch order of the normalised axes, as Keras positions
    shape = tuple(v.shape[axes[i] - 1] for i in perm)
    if any(n is None for n in shape):
        raise Unsupported("LayerNormalization over an axis of unknown size")
    code.modules.append((ctx.attr, call("nn.LayerNorm", one(shape) if len(shape) == 1 else shape, eps=eps)))
    code.settings.append(f"eps={eps:g}; normalised Keras axes {axes} (torch dims {sorted(mapped)})")
    if layout_cf == v.cf or v.rank <= 2:
        code.lines.append(f"{ctx.out} = self.{ctx.attr}({v.name})")
    else:  # normalise in the other layout and come back, so neighbours keep theirs
        there = as_cf(v) if layout_cf else as_keras(v)
        back = (
            as_keras(Value(f"self.{ctx.attr}({there})", v.shape, True))
            if layout_cf
            else as_cf(Value(f"self.{ctx.attr}({there})", v.shape, False))
        )
        code.lines.append(f"{ctx.out} = {back}")
        code.settings.append("normalised channels-last, then back")
    code.outputs.append(Value(ctx.out, v.shape, cf=v.cf))
    center, scale = cfg.get("center", True), cfg.get("scale", True)
    # center=False, scale=False: Keras stores nothing for the layer; the module's weight 1 and bias 0 say so.
    code.needs_file_weights = bool(center or scale)

    def weights(ws: Weights) -> dict:
        a = expect(ws, (["gamma"] if scale else []) + (["beta"] if center else []))
        full = tuple(v.shape[x - 1] for x in axes)
        g = a.get("gamma", np.ones(full, np.float32)).reshape(full).transpose(perm)
        b = a.get("beta", np.zeros(full, np.float32)).reshape(full).transpose(perm)
        return {f"{ctx.attr}.weight": np.ascontiguousarray(g), f"{ctx.attr}.bias": np.ascontiguousarray(b)}

    code.weights = weights
    return code


def embedding(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    v = ins[0]
    n, dim = int(cfg["input_dim"]), int(cfg["output_dim"])
    code = LayerCode()
    code.modules.append((ctx.attr, call("nn.Embedding", n, dim)))
    code.lines.append(f"{ctx.out} = self.{ctx.attr}({v.name}.long())")
    mask = None
    if cfg.get("mask_zero") and not ctx.keras3:  # tf_keras masks token-0 steps for the layers taking masks
        # (Keras 3 writes that mask as a graph node of its own, `not_equal`, given to each such layer)
        mask = ctx.fresh(f"{ctx.out}_mask")
        code.lines.append(f"{mask} = {v.name} != 0")
        code.settings.append(f"mask_zero=True: {mask} marks the real steps")
    code.outputs.append(Value(ctx.out, (*v.shape, dim), mask=mask))
    code.weights = lambda ws: {f"{ctx.attr}.weight": expect(ws, ["embeddings"])["embeddings"]}
    return code


# -- recurrent --------------------------------------------------------------------------------------

_RNN_TORCH = {"LSTM": "nn.LSTM", "GRU": "nn.GRU", "SimpleRNN": "nn.RNN"}


_KERAS_RNN_ACTS = ("sigmoid", "tanh", "hard_sigmoid", "relu", "linear")


def _rnn_kind(cls: str, cfg: dict[str, Any], ctx: Ctx, masked: bool = False) -> tuple[dict[str, Any] | None, list[str]]:
    """None when torch.nn's layer computes Keras' formula (and no mask is taken: torch.nn cannot skip
    steps), else the KerasRNN arguments that do."""
    if cfg.get("stateful"):
        raise Unsupported("stateful=True")
    if cfg.get("time_major"):
        raise Unsupported("time_major=True")
    act, rec = cfg.get("activation", "tanh"), cfg.get("recurrent_activation", "sigmoid")
    # Keras < 2.1 had no reset_after and reset before the matmul; every later config writes it down.
    reset_after = bool(cfg.get("reset_after", False)) if cls == "GRU" else True
    for a in (act, rec) if cls != "SimpleRNN" else (act,):
        if a not in _KERAS_RNN_ACTS:
            raise Unsupported(f"{cls} activation {a!r}")
    settings = []
    if cls == "GRU":
        settings.append(f"reset_after={reset_after}; gates z,r,h reordered to r,z,n")
    if cls == "SimpleRNN":
        native = act in ("tanh", "relu")
    else:
        native = act == "tanh" and rec == "sigmoid" and reset_after
    if native and not masked:
        return None, settings

    def name(a: str) -> str:
        return "hard_sigmoid_k2" if a == "hard_sigmoid" and not ctx.keras3 else a

    kwargs: dict[str, Any] = {}
    if act != "tanh":
        kwargs["activation"] = lit(name(act))
    if cls != "SimpleRNN" and rec != "sigmoid":
        kwargs["recurrent_activation"] = lit(name(rec))
    if not reset_after:
        kwargs["reset_after"] = False
    if native:
        settings.append("masked steps: ptools.nn.KerasRNN (torch.nn's recurrent layers cannot skip them)")
    else:
        settings.append(
            f"activation={act}, recurrent_activation={rec}"
            + ("" if reset_after else ", reset_after=False")
            + ": not torch.nn's formula, ptools.nn.KerasRNN"
        )
    return kwargs, settings


def _rnn_module(
    cls: str, cfg: dict[str, Any], n_in: int, keras: dict[str, Any] | None, bidirectional: bool = False
) -> str:
    kwargs: dict[str, Any] = {} if keras is not None else {"batch_first": True}
    if keras is None and cls == "SimpleRNN" and cfg.get("activation", "tanh") == "relu":
        kwargs["nonlinearity"] = lit("relu")
    if not cfg.get("use_bias", True):
        kwargs["bias"] = False
    if keras is not None:
        kwargs.update(keras)
    if bidirectional:
        kwargs["bidirectional"] = True
    if keras is not None:
        mode = {"SimpleRNN": "RNN"}.get(cls, cls)
        return call("KerasRNN", lit(mode), n_in, int(cfg["units"]), **kwargs)
    return call(_RNN_TORCH[cls], n_in, int(cfg["units"]), **kwargs)


def _rnn_arrays(cls: str, cfg: dict[str, Any], ws: Weights, suffix: str, attr: str) -> dict:
    use_bias = cfg.get("use_bias", True)
    a = expect(ws, ["kernel", "recurrent_kernel"] + (["bias"] if use_bias else []))
    k, rk = dense_kernel(a["kernel"]), dense_kernel(a["recurrent_kernel"])
    out = {}
    if cls == "GRU":
        k, rk = swap_gates_zr(k), swap_gates_zr(rk)
    out[f"{attr}.weight_ih_l0{suffix}"] = k
    out[f"{attr}.weight_hh_l0{suffix}"] = rk
    if use_bias:
        b = a["bias"]
        if cls == "GRU" and b.ndim == 2:  # reset_after: [input bias, recurrent bias]
            out[f"{attr}.bias_ih_l0{suffix}"] = swap_gates_zr(b[0])
            out[f"{attr}.bias_hh_l0{suffix}"] = swap_gates_zr(b[1])
        else:  # one bias: only the sum of torch's two matters (reset_after=False: the input side)
            out[f"{attr}.bias_ih_l0{suffix}"] = swap_gates_zr(b) if cls == "GRU" else b
            out[f"{attr}.bias_hh_l0{suffix}"] = np.zeros_like(b)
    return out


def _mask_args(v: Value, zero_output: bool, backwards: bool = False) -> str:
    """The KerasRNN arguments that apply Keras' mask of `v` (empty without one)."""
    if v.mask is None:
        return ""
    m = f"{v.mask}.flip(1)" if backwards else v.mask
    return f", mask={m}" + (", zero_output_for_mask=True" if zero_output else "")


def rnn(cls: str, cfg: dict[str, Any], ins: list[Value], ctx: Ctx, tensor_kwargs: list[str]) -> LayerCode:
    n_states = 2 if cls == "LSTM" else 1
    if set(tensor_kwargs) - {"initial_state"} or len(ins) not in (1, 1 + n_states):
        raise Unsupported("called with a mask tensor, or with initial_state of another length")
    v = ins[0]
    keras, settings = _rnn_kind(cls, cfg, ctx, masked=v.mask is not None)
    code = LayerCode(settings=settings)
    n_in, units = v.shape[-1], int(cfg["units"])
    if n_in is None:
        raise Unsupported("unknown input features")
    code.modules.append((ctx.attr, _rnn_module(cls, cfg, n_in, keras)))
    if keras is not None:
        code.imports.add("KerasRNN")
    x = as_keras(v)
    backwards = bool(cfg.get("go_backwards"))
    if backwards:
        x = f"{x}.flip(1)"
        code.settings.append("go_backwards: input reversed in time (the output stays in that order)")
    if len(ins) > 1:  # initial_state: Keras (N, units) states -> torch (1, N, units)
        states = [f"{s.name}.unsqueeze(0)" for s in ins[1:]]
        x += f", ({', '.join(states)})" if cls == "LSTM" else f", {states[0]}"
        code.settings.append("initial_state from " + ", ".join(s.name for s in ins[1:]))
    zero_output = bool(cfg.get("zero_output_for_mask", False))
    if v.mask is not None:
        x += _mask_args(v, zero_output, backwards)
        code.settings.append(
            f"masked by {v.mask}: masked steps keep the state and "
            + ("output zeros" if zero_output else "repeat the previous output")
        )
    seq, ret_state = bool(cfg.get("return_sequences")), bool(cfg.get("return_state"))
    o = ctx.out
    last = "" if seq else "[:, -1]"
    out_shape = (v.shape[0], units) if seq else (units,)
    # The output keeps the mask only as a sequence, unreversed even after go_backwards (as Keras does).
    out_mask = v.mask if seq else None
    if not ret_state:
        code.lines.append(f"{o}, _ = self.{ctx.attr}({x})" if seq else f"{o} = self.{ctx.attr}({x})[0][:, -1]")
        code.outputs.append(Value(o, out_shape, mask=out_mask))
    elif cls == "LSTM":
        h, c = ctx.fresh(f"{o}_h"), ctx.fresh(f"{o}_c")
        code.lines.append(f"{o}, ({h}, {c}) = self.{ctx.attr}({x})")
        code.lines.append(f"{o}, {h}, {c} = {o}{last}, {h}[0], {c}[0]")
        code.outputs += [Value(o, out_shape, mask=out_mask), Value(h, (units,)), Value(c, (units,))]
    else:
        h = ctx.fresh(f"{o}_h")
        code.lines.append(f"{o}, {h} = self.{ctx.attr}({x})")
        code.lines.append(f"{o}, {h} = {o}{last}, {h}[0]")
        code.outputs += [Value(o, out_shape, mask=out_mask), Value(h, (units,))]
    code.settings.append(f"return_sequences={seq}, return_state={ret_state}")
    code.weights = lambda ws: _rnn_arrays(cls, cfg, ws, "", ctx.attr)
    return code


def bidirectional(cfg: dict[str, Any], ins: list[Value], ctx: Ctx, tensor_kwargs: list[str]) -> LayerCode:
    inner = cfg.get("layer", {})
    cls, icfg = inner.get("class_name"), inner.get("config", {})
    if cls not in _RNN_TORCH:
        raise Unsupported(f"Bidirectional({cls})")
    n_states = 2 if cls == "LSTM" else 1
    init = ins[1:]  # Keras order: the forward layer's states, then the backward layer's
    if set(tensor_kwargs) - {"initial_state"} or len(init) not in (0, 2 * n_states):
        raise Unsupported("called with a mask tensor, or with initial_state of another length")
    back = cfg.get("backward_layer")
    if back:
        bcfg = back.get("config", {})
        for key in ("units", "activation", "recurrent_activation", "use_bias", "reset_after"):
            if bcfg.get(key) != icfg.get(key):
                raise Unsupported(f"backward_layer differs from the forward layer in {key}")
    if icfg.get("go_backwards"):
        raise Unsupported("Bidirectional over a go_backwards layer")
    v = ins[0]
    keras, settings = _rnn_kind(cls, icfg, ctx, masked=v.mask is not None)
    code = LayerCode(settings=settings)
    n_in, u = v.shape[-1], int(icfg["units"])
    if n_in is None:
        raise Unsupported("unknown input features")
    code.modules.append((ctx.attr, _rnn_module(cls, icfg, n_in, keras, bidirectional=True)))
    if keras is not None:
        code.imports.add("KerasRNN")
    mode = cfg.get("merge_mode", "concat")
    seq, o, ret_state = bool(icfg.get("return_sequences")), ctx.out, bool(icfg.get("return_state"))
    x = as_keras(v)
    if init:  # torch wants (2, N, units) per state: [forward, backward]
        stacked = [f"torch.stack([{init[i].name}, {init[i + n_states].name}])" for i in range(n_states)]
        x += f", ({', '.join(stacked)})" if cls == "LSTM" else f", {stacked[0]}"
        code.settings.append("initial_state from " + ", ".join(s.name for s in init))
    if v.mask is not None:  # Keras' Bidirectional gives zeros at masked steps of returned sequences
        x += _mask_args(v, seq)
        code.settings.append(f"masked by {v.mask}" + (": masked steps output zeros" if seq else ""))
    h = ctx.fresh(f"{o}_h")
    c = ctx.fresh(f"{o}_c") if cls == "LSTM" else ""
    if ret_state or init:
        states = f"({h}, {c})" if cls == "LSTM" else h
        code.lines.append(f"{o}, {states} = self.{ctx.attr}({x})")
        fwd, bwd = (f"{o}[..., :{u}]", f"{o}[..., {u}:]") if seq else (f"{h}[0]", f"{h}[1]")
    elif seq:
        code.lines.append(f"{o}, _ = self.{ctx.attr}({x})")
        fwd, bwd = f"{o}[..., :{u}]", f"{o}[..., {u}:]"
    else:
        code.lines.append(f"_, ({h}, _) = self.{ctx.attr}({x})" if cls == "LSTM" else f"_, {h} = self.{ctx.attr}({x})")
        fwd, bwd = f"{h}[0]", f"{h}[1]"
    merged = {
        "concat": None if seq else f"torch.cat([{fwd}, {bwd}], dim=-1)",
        "sum": f"{fwd} + {bwd}",
        "mul": f"{fwd} * {bwd}",
        "ave": f"({fwd} + {bwd}) / 2",
    }
    steps = (v.shape[0],) if seq else ()
    out_mask = v.mask if seq else None
    if mode in merged:
        if merged[mode] is not None:
            code.lines.append(f"{o} = {merged[mode]}")
        code.outputs.append(Value(o, (*steps, 2 * u if mode == "concat" else u), mask=out_mask))
    elif mode is None:
        bw = ctx.fresh(f"{o}_backward")
        code.lines.append(f"{o}, {bw} = {fwd}, {bwd}")
        code.outputs += [Value(o, (*steps, u), mask=out_mask), Value(bw, (*steps, u), mask=out_mask)]
    else:
        raise Unsupported(f"merge_mode={mode!r}")
    if ret_state:  # Keras returns [output, *forward states, *backward states]
        kinds = ("h", "c") if cls == "LSTM" else ("h",)
        names = [ctx.fresh(f"{o}_{d}_{k}") for d in ("forward", "backward") for k in kinds]
        exprs = [f"{h if k == 'h' else c}[{i}]" for i in (0, 1) for k in kinds]
        code.lines.append(f"{', '.join(names)} = {', '.join(exprs)}")
        code.outputs += [Value(n, (u,)) for n in names]
    code.settings.append(f"bidirectional, merge_mode={mode}, return_sequences={seq}, return_state={ret_state}")

    def weights(ws: Weights) -> dict:
        fw = [(p, a) for p, a in ws if "backward" not in p]
        bw = [(p, a) for p, a in ws if "backward" in p]
        return {**_rnn_arrays(cls, icfg, fw, "", ctx.attr), **_rnn_arrays(cls, icfg, bw, "_reverse", ctx.attr)}

    code.weights = weights
    return code


def time_distributed(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    inner = cfg.get("layer", {})
    if inner.get("class_name") != "Dense":
        raise Unsupported(f"TimeDistributed({inner.get('class_name')}) (only Dense is ported)")
    code = dense(inner.get("config", {}), ins, ctx)
    code.settings.insert(0, "TimeDistributed(Dense): nn.Linear applies to the last axis of every step")
    return code


# -- shape-only layers ------------------------------------------------------------------------------


def pool(cfg: dict[str, Any], ins: list[Value], ctx: Ctx, kind: str, nd: int) -> LayerCode:
    _check_channels_last(cfg)
    v = ins[0]
    code = LayerCode()
    k = tup(cfg.get("pool_size", 2), nd)
    s = tup(cfg.get("strides") or k, nd)
    padding = cfg.get("padding", "valid")
    sizes = v.shape[:-1]
    name = "MaxPool" if kind == "max" else "AvgPool"
    kwargs: dict[str, Any] = {}
    if s != k:
        kwargs["stride"] = one(s)
    cls = f"nn.{name}{nd}d"
    if padding == "same":
        answers = None
        if all(n is not None for n in sizes):
            ws = [tfpad.conv_window(int(n), kk, ss, 1, "same") for n, kk, ss in zip(sizes, k, s, strict=True)]
            answers = [tfpad.torch_pool_padding(w) for w in ws]
            code.settings.append(f"TF SAME pads (before, after) {[(w.pad_before, w.pad_after) for w in ws]}")
        if answers is not None and all(a is not None for a in answers) and len({a[1] for a in answers}) == 1:
            p = tuple(a[0] for a in answers)
            if any(p):
                kwargs["padding"] = one(p)
            if answers[0][1]:
                kwargs["ceil_mode"] = True
            if kind == "avg" and (any(p) or answers[0][1]):
                kwargs["count_include_pad"] = False
            code.settings.append(
                "padding/ceil_mode give TF's windows exactly" + ("; padded cells not counted" if kind == "avg" else "")
            )
        elif nd == 2:
            cls = f"{name}2dSame"
            code.imports.add(cls)
            kwargs = {"stride": one(s)} if s != k else {}
            code.settings.append(f"TF SAME pooling: ptools.nn.{cls}")
        else:
            raise Unsupported("SAME pooling that padding/ceil_mode cannot express")
    elif padding != "valid":
        raise Unsupported(f"padding={padding!r}")
    code.modules.append((ctx.attr, call(cls, one(k), **kwargs)))
    code.lines.append(f"{ctx.out} = self.{ctx.attr}({as_cf(v)})")
    out = tuple(_conv_out(n, kk, ss, 1, padding) for n, kk, ss in zip(sizes, k, s, strict=True))
    code.outputs.append(Value(ctx.out, (*out, v.shape[-1]), cf=True))
    return code


def global_pool(cfg: dict[str, Any], ins: list[Value], ctx: Ctx, kind: str) -> LayerCode:
    _check_channels_last(cfg)
    v = ins[0]
    keep = bool(cfg.get("keepdims", False))
    dims = cf_axes(v)
    if v.mask is not None:
        if kind != "avg":
            raise Unsupported("a masked global max pooling")
        return _masked_average(v, keep, ctx)
    fn = "mean" if kind == "avg" else "amax"
    dim = dims[0] if len(dims) == 1 else dims
    extra = ", keepdim=True" if keep else ""
    code = LayerCode(lines=[f"{ctx.out} = {v.name}.{fn}(dim={lit(dim)}{extra})"])
    shape = (*([1] * (v.rank - 2)), v.shape[-1]) if keep else (v.shape[-1],)
    code.outputs.append(Value(ctx.out, tuple(shape), cf=v.cf and keep))
    return code


def _masked_average(v: Value, keep: bool, ctx: Ctx) -> LayerCode:
    """Keras' GlobalAveragePooling1D with a mask: the mean over the real steps only."""
    if v.rank != 3:
        raise Unsupported("a masked global pooling of a rank other than 3")
    t = 2 if v.cf else 1
    m = f"{v.mask}.unsqueeze({1 if v.cf else -1})"
    keepdim = ", keepdim=True" if keep else ""
    expr = f"torch.where({m}, {v.name}, 0.0).sum(dim={t}{keepdim}) / {m}.sum(dim={t}{keepdim})"
    code = LayerCode(lines=[f"{ctx.out} = {expr}"], settings=[f"mean over the steps {v.mask} marks"])
    shape = (1, v.shape[-1]) if keep else (v.shape[-1],)
    code.outputs.append(Value(ctx.out, shape, cf=v.cf and keep))
    return code


def flatten(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    v = ins[0]
    n = math.prod(v.shape) if all(d is not None for d in v.shape) else None
    code = LayerCode()
    if v.rank <= 2:
        code.lines.append(f"{ctx.out} = {v.name}")
    else:
        code.lines.append(f"{ctx.out} = torch.flatten({as_keras(v)}, 1)")
        if v.cf:
            code.settings.append("flattened in Keras' channels-last order (permute first): Dense rows stay as in TF")
    code.outputs.append(Value(ctx.out, (n,)))
    return code


def reshape(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    v = ins[0]
    target = [int(d) for d in cfg["target_shape"]]
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        total = math.prod(v.shape) if all(d is not None for d in v.shape) else None
        shape: Shape = tuple((total // known if total is not None else None) if d == -1 else d for d in target)
    else:
        shape = tuple(target)
    code = LayerCode(lines=[f"{ctx.out} = {as_keras(v)}.reshape({v.name}.shape[0], {', '.join(map(str, target))})"])
    code.outputs.append(Value(ctx.out, shape))
    return code


def permute(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    v = ins[0]
    dims = [int(d) for d in cfg["dims"]]
    code = LayerCode(lines=[f"{ctx.out} = {as_keras(v)}.permute(0, {', '.join(map(str, dims))})"])
    code.settings.append("axes as in Keras (channels-last order)")
    code.outputs.append(Value(ctx.out, tuple(v.shape[d - 1] for d in dims)))
    return code


def dropout(cls: str, cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    v = ins[0]
    rate = float(cfg.get("rate", 0.0))
    code = LayerCode(settings=["identity in eval mode"])
    if cls.startswith("SpatialDropout"):
        nd = int(cls[-2])
        code.modules.append((ctx.attr, call(f"nn.Dropout{nd}d", rate)))
        code.lines.append(f"{ctx.out} = self.{ctx.attr}({as_cf(v)})")
        code.outputs.append(Value(ctx.out, v.shape, cf=v.rank > 2))
    elif cls == "Dropout":
        code.modules.append((ctx.attr, call("nn.Dropout", rate)))
        code.lines.append(f"{ctx.out} = self.{ctx.attr}({v.name})")
        code.outputs.append(Value(ctx.out, v.shape, cf=v.cf))
    else:  # GaussianNoise, GaussianDropout, AlphaDropout: training-time noise only
        code.lines.append(f"{ctx.out} = {v.name}  # {cls}: identity at inference")
        code.outputs.append(Value(ctx.out, v.shape, cf=v.cf))
    return code


def _pad_pairs(value: Any, nd: int) -> list[tuple[int, int]]:
    if isinstance(value, int):
        return [(value, value)] * nd
    out = []
    for p in value:
        out.append((int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1])))
    if nd == 1 and len(out) == 2 and isinstance(value[0], int):
        return [(int(value[0]), int(value[1]))]
    return out


def zero_padding(cfg: dict[str, Any], ins: list[Value], ctx: Ctx, nd: int) -> LayerCode:
    _check_channels_last(cfg)
    v = ins[0]
    pads = _pad_pairs(cfg.get("padding", 1), nd)
    code = LayerCode()
    code.modules.append((ctx.attr, _pad_module(nd, pads)))
    code.lines.append(f"{ctx.out} = self.{ctx.attr}({as_cf(v)})")
    sizes = tuple(None if n is None else n + a + b for n, (a, b) in zip(v.shape[:-1], pads, strict=True))
    code.outputs.append(Value(ctx.out, (*sizes, v.shape[-1]), cf=True))
    return code


def cropping(cfg: dict[str, Any], ins: list[Value], ctx: Ctx, nd: int) -> LayerCode:
    _check_channels_last(cfg)
    v = ins[0]
    crops = _pad_pairs(cfg.get("cropping", 1), nd)
    idx = []
    for a, b in crops:
        idx.append(f"{a}:-{b}" if b else (f"{a}:" if a else ":"))
    code = LayerCode(lines=[f"{ctx.out} = {as_cf(v)}[:, :, {', '.join(idx)}]"])
    sizes = tuple(None if n is None else n - a - b for n, (a, b) in zip(v.shape[:-1], crops, strict=True))
    code.outputs.append(Value(ctx.out, (*sizes, v.shape[-1]), cf=True))
    return code


def upsampling(cfg: dict[str, Any], ins: list[Value], ctx: Ctx, nd: int) -> LayerCode:
    v = ins[0]
    code = LayerCode()
    if nd == 1:
        size = int(cfg.get("size", 2))
        code.lines.append(f"{ctx.out} = {as_keras(v)}.repeat_interleave({size}, dim=1)")
        code.outputs.append(Value(ctx.out, (None if v.shape[0] is None else v.shape[0] * size, v.shape[-1])))
        return code
    _check_channels_last(cfg)
    size = tup(cfg.get("size", 2), 2)
    mode = cfg.get("interpolation", "nearest")
    kwargs: dict[str, Any] = {"scale_factor": one(tuple(float(s) for s in size)), "mode": lit(mode)}
    if mode == "bilinear":
        kwargs["align_corners"] = False
        code.settings.append("bilinear with half-pixel centres, as TF: align_corners=False")
    elif mode != "nearest":
        raise Unsupported(f"UpSampling2D interpolation={mode!r}")
    code.modules.append((ctx.attr, call("nn.Upsample", **kwargs)))
    code.lines.append(f"{ctx.out} = self.{ctx.attr}({as_cf(v)})")
    sizes = tuple(None if n is None else n * s for n, s in zip(v.shape[:-1], size, strict=True))
    code.outputs.append(Value(ctx.out, (*sizes, v.shape[-1]), cf=True))
    return code


def _common_layout(ins: list[Value]) -> tuple[list[str], bool]:
    cf = any(v.cf for v in ins) and all(v.rank > 2 for v in ins)
    return [as_cf(v) if cf else as_keras(v) for v in ins], cf


def merge(cls: str, cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    if len(ins) < 2 or (cls == "Subtract" and len(ins) != 2):
        raise Unsupported(f"{cls} of {len(ins)} input(s)")
    if len({v.rank for v in ins}) != 1:
        raise Unsupported("inputs of different ranks")
    xs, cf = _common_layout(ins)
    if cls == "Add":
        expr = " + ".join(xs)
    elif cls == "Subtract":
        expr = f"{xs[0]} - {xs[1]}"
    elif cls == "Multiply":
        expr = " * ".join(xs)
    elif cls == "Average":
        expr = f"({' + '.join(xs)}) / {len(xs)}"
    else:
        fn = "torch.maximum" if cls == "Maximum" else "torch.minimum"
        expr = xs[0]
        for x in xs[1:]:
            expr = f"{fn}({expr}, {x})"
    shape = tuple(
        max((v.shape[i] for v in ins if v.shape[i] is not None), default=None) for i in range(len(ins[0].shape))
    )
    return LayerCode(lines=[f"{ctx.out} = {expr}"], outputs=[Value(ctx.out, shape, cf=cf)])


def concatenate(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    if len({v.rank for v in ins}) != 1:
        raise Unsupported("inputs of different ranks")
    xs, cf = _common_layout(ins)
    axis = int(cfg.get("axis", -1))
    ref = Value("", ins[0].shape, cf)
    a = keras_axis(axis, ref.rank)
    dim = torch_axis(axis, ref)
    code = LayerCode(lines=[f"{ctx.out} = torch.cat([{', '.join(xs)}], dim={dim})"])
    code.settings.append(f"Keras axis {axis} -> torch dim {dim}")
    shape = list(ins[0].shape)
    sizes = [v.shape[a - 1] for v in ins]
    shape[a - 1] = None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]
    code.outputs.append(Value(ctx.out, tuple(shape), cf=cf))
    return code


def activation_layer(cls: str, cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    v = ins[0]
    code = LayerCode()
    x = v.name
    if cls == "Activation":
        expr = activation(cfg.get("activation"), x, v, ctx)
        expr = expr if expr is not None else x
        code.settings.append(f"activation={cfg.get('activation')}")
    elif cls == "ReLU":
        mv, slope, thr = cfg.get("max_value"), float(cfg.get("negative_slope", 0.0)), float(cfg.get("threshold", 0.0))
        if thr != 0.0 or (slope != 0.0 and mv is not None):
            return _general_relu(v, mv, slope, thr, ctx)
        if slope:
            expr = f"F.leaky_relu({x}, {lit(slope)})"
        elif mv is None:
            expr = f"torch.relu({x})"
        elif float(mv) == 6.0:
            expr = f"F.relu6({x})"
        else:
            expr = f"torch.clamp({x}, 0.0, {lit(float(mv))})"
        code.settings.append(f"max_value={mv}, negative_slope={slope:g}")
    elif cls == "LeakyReLU":
        slope = f32(float(cfg.get("negative_slope", cfg.get("alpha", 0.3))))
        expr = f"F.leaky_relu({x}, {lit(slope)})"
        code.settings.append(f"negative_slope={slope!r}")
    elif cls == "ELU":
        alpha = f32(float(cfg.get("alpha", 1.0)))
        expr = f"F.elu({x})" if alpha == 1.0 else f"F.elu({x}, {lit(alpha)})"
    elif cls == "Softmax":
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if not isinstance(axis, int):
            raise Unsupported(f"Softmax over axes {axis}")
        expr = f"torch.softmax({x}, dim={torch_axis(axis, v)})"
        code.settings.append(f"Keras axis {axis} -> torch dim {torch_axis(axis, v)}")
    else:
        raise Unsupported(cls)
    code.lines.append(f"{ctx.out} = {expr}")
    code.outputs.append(Value(ctx.out, v.shape, cf=v.cf))
    return code


def _general_relu(v: Value, max_value: Any, slope: float, threshold: float, ctx: Ctx) -> LayerCode:
    """Keras' relu(x, negative_slope, max_value, threshold) step by step, as Keras computes it: x where
    x > threshold (else 0), clipped to [0, max_value], minus negative_slope * relu(threshold - x)."""
    x, o = v.name, ctx.out
    code = LayerCode(settings=[f"max_value={max_value}, negative_slope={slope:g}, threshold={threshold:g}"])
    thr = lit(f32(threshold))
    if threshold != 0.0:
        code.lines.append(f"{o} = {x} * ({x} > {thr})")
    elif max_value is not None and float(max_value) == 6.0:
        code.lines.append(f"{o} = F.relu6({x})")
        max_value = None
    else:
        code.lines.append(f"{o} = torch.relu({x})")
    if max_value is not None:
        code.lines.append(f"{o} = torch.clamp({o}, 0.0, {lit(f32(float(max_value)))})")
    if slope != 0.0:
        neg = f"torch.relu({thr} - {x})" if threshold != 0.0 else f"torch.relu(-{x})"
        code.lines.append(f"{o} = {o} - {lit(f32(slope))} * {neg}")
    code.outputs.append(Value(o, v.shape, cf=v.cf))
    return code


def rescaling(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    v = ins[0]
    scale, offset = cfg.get("scale", 1.0), cfg.get("offset", 0.0)
    if not isinstance(scale, (int, float)) or not isinstance(offset, (int, float)):
        raise Unsupported("per-channel scale/offset lists")
    expr = f"{v.name} * {lit(float(scale))}"
    if offset:
        expr += f" + {lit(float(offset))}" if offset > 0 else f" - {lit(-float(offset))}"
    code = LayerCode(lines=[f"{ctx.out} = {expr}"], settings=[f"x * {scale!r} + {offset!r}"])
    code.outputs.append(Value(ctx.out, v.shape, cf=v.cf))
    return code


def prelu(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    """nn.PReLU holds one slope per channel (or one in all): Keras' alpha must be shared over the other axes."""
    v = ins[0]
    shared_cfg = cfg.get("shared_axes") or []
    shared = {keras_axis(a, v.rank) for a in (shared_cfg if isinstance(shared_cfg, list) else [shared_cfg])}
    if not set(range(1, v.rank - 1)) <= shared:
        return _prelu_per_position(v, shared, ctx)
    n = 1 if v.rank - 1 in shared else v.shape[-1]
    if n is None:
        raise Unsupported("unknown number of channels")
    code = LayerCode(settings=["one slope per channel" if n != 1 else "one slope for all"])
    code.modules.append((ctx.attr, call("nn.PReLU", n) if n != 1 else "nn.PReLU()"))
    code.lines.append(f"{ctx.out} = self.{ctx.attr}({as_cf(v)})")
    code.outputs.append(Value(ctx.out, v.shape, cf=v.rank > 2))
    code.weights = lambda ws: {f"{ctx.attr}.weight": np.ascontiguousarray(expect(ws, ["alpha"])["alpha"].reshape(-1))}
    return code


def _prelu_per_position(v: Value, shared: set[int], ctx: Ctx) -> LayerCode:
    """Keras' PReLU with slopes along non-shared spatial axes: relu(x) - alpha * relu(-x), alpha a parameter
    of Keras' shape (1 on shared axes), held in the tensor's layout."""
    kshape = tuple(1 if a + 1 in shared else d for a, d in enumerate(v.shape))
    if any(d is None for d in kshape):
        raise Unsupported("PReLU with a slope per position along an axis of unknown size")
    cf = v.cf and v.rank > 2
    tshape = (kshape[-1], *kshape[:-1]) if cf else kshape
    code = LayerCode(settings=[f"a slope per position: alpha {kshape} (Keras order)"])
    code.modules.append((ctx.attr, f"nn.Parameter({call('torch.zeros', *tshape)})"))
    code.lines.append(f"{ctx.out} = torch.relu({v.name}) - self.{ctx.attr} * torch.relu(-{v.name})")
    code.outputs.append(Value(ctx.out, v.shape, cf=v.cf))

    def weights(ws: Weights) -> dict:
        alpha = expect(ws, ["alpha"])["alpha"].reshape(kshape)
        return {ctx.attr: np.ascontiguousarray(np.moveaxis(alpha, -1, 0) if cf else alpha)}

    code.weights = weights
    return code


def normalization(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    """Keras' (x - mean) / max(sqrt(variance), 1e-7), with mean and variance as buffers (in the state_dict)."""
    v = ins[0]
    axis = cfg.get("axis", -1)
    axes = [keras_axis(a, v.rank) for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
    if cfg.get("invert"):
        raise Unsupported("Normalization(invert=True)")
    if axes != [v.rank - 1]:
        raise Unsupported(f"Normalization over axes {axis} (only the channel axis is ported)")
    c = v.shape[-1]
    if c is None:
        raise Unsupported("unknown number of channels")
    shape = (1, c, *([1] * (v.rank - 2))) if v.cf and v.rank > 2 else (c,)
    code = LayerCode(settings=["(x - mean) / max(sqrt(variance), 1e-7), as Keras"])
    for part in ("mean", "variance"):
        zeros = call("torch.zeros", *shape) if part == "mean" else call("torch.ones", *shape)
        code.modules.append(("", f'self.register_buffer("{ctx.attr}_{part}", {zeros})'))
    m, var = f"self.{ctx.attr}_mean", f"self.{ctx.attr}_variance"
    code.lines.append(f"{ctx.out} = ({v.name} - {m}) / torch.clamp({var}.sqrt(), min=1e-7)")
    code.outputs.append(Value(ctx.out, v.shape, cf=v.cf))
    given = {k: cfg.get(k) for k in ("mean", "variance")}

    def weights(ws: Weights) -> dict:
        arrays = {k: np.asarray(val, np.float32) for k, val in given.items() if val is not None}
        if len(arrays) < 2:
            arrays = {k: a for k, a in expect(ws, ["mean", "variance", "count"]).items() if k != "count"}
        return {
            f"{ctx.attr}_{k}": np.ascontiguousarray(np.broadcast_to(a.reshape(-1), (c,)).reshape(shape), np.float32)
            for k, a in arrays.items()
        }

    code.weights = weights
    code.needs_file_weights = not all(v is not None for v in given.values())
    return code


# Preprocessing and regularisation layers that pass their input through unchanged at inference (checked on
# Keras 3.15 and tf_keras 2.21 with training=False). RandomCrop is not among them: tf_keras crops and resizes.
INFERENCE_IDENTITY = frozenset(
    {
        *("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness"),
        *("RandomHeight", "RandomWidth", "RandomGrayscale", "RandomHue", "RandomSaturation", "RandomSharpness"),
        *("RandomShear", "RandomColorJitter", "RandomColorDegeneration", "RandomPosterization", "RandomInvert"),
        *("RandomErasing", "RandomGaussianBlur", "RandomPerspective", "RandomElasticTransform"),
        *("AugMix", "RandAugment", "MixUp", "CutMix", "ActivityRegularization"),
    }
)
# Layers defined inside keras.applications (not in keras.layers): ported only when the config says so.
_APPLICATION_MODULES = ("keras.src.applications.", "tf_keras.src.applications.", "keras.applications.")
_LAYER_SCALE_KEYS = {"name", "trainable", "dtype", "init_values", "projection_dim"}


def identity(cls: str, ins: list[Value], ctx: Ctx, why: str) -> LayerCode:
    """No line of computation: a comment, and the layer's output is its input under the same name."""
    v = ins[0]
    code = LayerCode(lines=[f"# {ctx.layer} ({cls}): {why}"], settings=[why])
    code.outputs.append(Value(v.name, v.shape, cf=v.cf, integer=v.integer))
    return code


def random_crop(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    size = (cfg.get("height"), cfg.get("width"))
    if tuple(ins[0].shape[:2]) != size:
        raise Unsupported(f"RandomCrop to {size} of a {ins[0].shape[:2]} input (crops or resizes at inference)")
    return identity("RandomCrop", ins, ctx, "identity at inference (input already of the crop size)")


def layer_scale(cfg: dict[str, Any], ins: list[Value], ctx: Ctx) -> LayerCode:
    """ConvNeXt's LayerScale: x * gamma, one factor per channel."""
    v = ins[0]
    c = channels(v)
    if int(cfg.get("projection_dim", c)) != c:
        raise Unsupported(f"projection_dim {cfg.get('projection_dim')} for {c} channels")
    code = LayerCode(settings=["x * gamma (one factor per channel)"])
    code.modules.append((ctx.attr, f"nn.Parameter({call('torch.ones', c)})"))
    gamma = f"self.{ctx.attr}" + (f"[:, {', '.join(['None'] * (v.rank - 2))}]" if v.cf and v.rank > 2 else "")
    code.lines.append(f"{ctx.out} = {v.name} * {gamma}")
    code.outputs.append(Value(ctx.out, v.shape, cf=v.cf))
    code.weights = lambda ws: {ctx.attr: expect(ws, ["gamma"])["gamma"].reshape(c)}
    return code


# Layers a Keras mask passes through unchanged (their computation ignores it), and those that use it.
MASK_PASS = frozenset(
    {
        *("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Activation"),
        *("ReLU", "LeakyReLU", "ELU", "Dense", "TimeDistributed", "LayerNormalization", "BatchNormalization"),
        *INFERENCE_IDENTITY,
    }
)
MASK_USE = frozenset({"LSTM", "GRU", "SimpleRNN", "Bidirectional", "GlobalAveragePooling1D", "GlobalAvgPool1D"})
# Merges: tf_keras' output mask is the AND of the inputs' masks (Keras 3 writes its own, an OR, as operations).
MASK_MERGE = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"})


def multi_head_attention(
    cfg: dict[str, Any], ins: list[Value], ctx: Ctx, tensor_kwargs: list[str], kwargs: dict[str, Any]
) -> LayerCode:
    """Keras' MultiHeadAttention over the sequence axis of (N, T, E) inputs: query/key/value projections
    (EinsumDense kernels (E, heads, dim) as nn.Linear), scaled dot-product attention (scale 1/sqrt(key_dim),
    Keras' causal mask), the output projection."""
    roles = ["query", "value", "key"][: len(ins) - len(tensor_kwargs)] + list(tensor_kwargs)
    if set(roles) - {"query", "value", "key"} or len(set(roles)) != len(roles) or "value" not in roles:
        raise Unsupported(f"called with {', '.join(roles)} (attention_mask and masks are not ported)")
    if kwargs.get("return_attention_scores"):
        raise Unsupported("return_attention_scores=True")
    for key, ok in (("use_gate", False), ("sliding_window", None)):
        if cfg.get(key, ok) != ok:
            raise Unsupported(f"{key}={cfg.get(key)!r}")
    by = dict(zip(roles, ins, strict=True))
    q, v = by["query"], by["value"]
    k = by.get("key", v)
    if any(x.rank != 3 for x in (q, k, v)):
        raise Unsupported("inputs of a rank other than 3 (batch, steps, features)")
    axes = cfg.get("attention_axes")
    if axes not in (None, [1], (1,), 1, [-2]):
        raise Unsupported(f"attention_axes={axes}")
    heads, dk = int(cfg["num_heads"]), int(cfg["key_dim"])
    dv = int(cfg.get("value_dim") or dk)
    out_dim = cfg.get("output_shape")
    if isinstance(out_dim, (list, tuple)):
        if len(out_dim) != 1:
            raise Unsupported(f"output_shape={out_dim}")
        out_dim = out_dim[0]
    eq, ek, ev = channels(q), channels(k), channels(v)
    eo = int(out_dim) if out_dim is not None else eq
    bias = bool(cfg.get("use_bias", True))
    kw = {} if bias else {"bias": False}
    a = ctx.attr
    sizes = {"query": (eq, heads * dk), "key": (ek, heads * dk), "value": (ev, heads * dv), "output": (heads * dv, eo)}
    code = LayerCode(modules=[(f"{a}_{p}", call("nn.Linear", *io, **kw)) for p, io in sizes.items()])
    names = {p: ctx.fresh(f"{ctx.out}_{p[0]}") for p in ("query", "key", "value")}
    src = {"query": q, "key": k, "value": v}
    dims = {"query": dk, "key": dk, "value": dv}
    for p in ("query", "key", "value"):
        code.lines.append(
            f"{names[p]} = self.{a}_{p}({as_keras(src[p])}).unflatten(-1, ({heads}, {dims[p]})).transpose(1, 2)"
        )
    causal = bool(kwargs.get("use_causal_mask"))
    extra = ", is_causal=True" if causal else ""
    code.lines.append(
        f"{ctx.out} = F.scaled_dot_product_attention({names['query']}, {names['key']}, {names['value']}{extra})"
    )
    code.lines.append(f"{ctx.out} = self.{a}_output({ctx.out}.transpose(1, 2).flatten(2))")
    code.settings.append(
        f"{heads} heads, key_dim={dk}, value_dim={dv}: softmax(q k^T / sqrt({dk})) v"
        + ("; causal mask" if causal else "")
    )
    code.outputs.append(Value(ctx.out, (q.shape[0], eo)))

    def weights(ws: Weights) -> dict:
        out = {}
        for part, keras_names in (
            ("query", ("query",)),
            ("key", ("key",)),
            ("value", ("value",)),
            ("output", ("attention_output", "output")),
        ):
            mine = [(p_, arr) for p_, arr in ws if _mha_part(p_) in keras_names]
            got = expect(mine, ["kernel", "bias"] if bias else ["kernel"])
            kernel = got["kernel"]
            n_out = kernel.shape[-1] if part == "output" else kernel.shape[-2] * kernel.shape[-1]
            out[f"{a}_{part}.weight"] = np.ascontiguousarray(kernel.reshape(-1, n_out).T)
            if bias:
                out[f"{a}_{part}.bias"] = np.ascontiguousarray(got["bias"].reshape(-1))
        if len(ws) != (8 if bias else 4):
            raise PtoolsError(f"expected {8 if bias else 4} MultiHeadAttention weights, the file has {len(ws)}")
        return out

    code.weights = weights
    return code


def _mha_part(path: str) -> str:
    """Which projection a stored MultiHeadAttention weight belongs to, from its path in any family:
    `query/kernel` (tf_keras .h5), `query/vars/0` (Keras 3), `_query_dense/kernel` (SavedModel)."""
    head = path.split("/", 1)[0].strip("_")
    return head.removesuffix("_dense") if head.endswith("_dense") else head


def emit(
    cls: str,
    cfg: dict[str, Any],
    ins: list[Value],
    ctx: Ctx,
    tensor_kwargs: list[str],
    module: str | None = None,
    kwargs: dict[str, Any] | None = None,
) -> LayerCode:
    """The code for one call of a Keras layer; raises Unsupported when it has no exact torch form here."""
    if cls in ("Conv1D", "Conv2D", "Conv3D"):
        return conv(cfg, ins, ctx, int(cls[4]))
    if cls == "Conv2DTranspose":
        return conv_transpose(cfg, ins, ctx)
    if cls == "DepthwiseConv2D":
        return depthwise(cfg, ins, ctx)
    if cls == "SeparableConv2D":
        return separable(cfg, ins, ctx)
    if cls == "Dense":
        return dense(cfg, ins, ctx)
    if cls == "BatchNormalization":
        return batchnorm(cfg, ins, ctx)
    if cls == "LayerNormalization":
        return layernorm(cfg, ins, ctx)
    if cls == "Embedding":
        return embedding(cfg, ins, ctx)
    if cls in _RNN_TORCH:
        return rnn(cls, cfg, ins, ctx, tensor_kwargs)
    if cls == "Bidirectional":
        return bidirectional(cfg, ins, ctx, tensor_kwargs)
    if cls == "TimeDistributed":
        return time_distributed(cfg, ins, ctx)
    if cls in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"):
        return pool(cfg, ins, ctx, "max" if cls.startswith("Max") else "avg", int(cls[-2]))
    if cls in ("MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D"):
        return pool(cfg, ins, ctx, "max" if cls.startswith("Max") else "avg", int(cls[-2]))
    if cls.startswith(("GlobalAveragePooling", "GlobalMaxPooling", "GlobalAvgPool", "GlobalMaxPool")):
        return global_pool(cfg, ins, ctx, "max" if "Max" in cls else "avg")
    if cls == "Flatten":
        return flatten(cfg, ins, ctx)
    if cls == "Reshape":
        return reshape(cfg, ins, ctx)
    if cls == "Permute":
        return permute(cfg, ins, ctx)
    if cls in (
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
    ):
        return dropout(cls, cfg, ins, ctx)
    if cls in ("ZeroPadding1D", "ZeroPadding2D"):
        return zero_padding(cfg, ins, ctx, int(cls[-2]))
    if cls in ("Cropping1D", "Cropping2D"):
        return cropping(cfg, ins, ctx, int(cls[-2]))
    if cls in ("UpSampling1D", "UpSampling2D"):
        return upsampling(cfg, ins, ctx, int(cls[-2]))
    if cls in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
        return merge(cls, cfg, ins, ctx)
    if cls == "Concatenate":
        return concatenate(cfg, ins, ctx)
    if cls in ("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax"):
        return activation_layer(cls, cfg, ins, ctx)
    if cls == "Rescaling":
        return rescaling(cfg, ins, ctx)
    if cls == "Normalization":
        return normalization(cfg, ins, ctx)
    if cls == "PReLU":
        return prelu(cfg, ins, ctx)
    if cls == "MultiHeadAttention":
        return multi_head_attention(cfg, ins, ctx, tensor_kwargs, kwargs or {})
    if cls in INFERENCE_IDENTITY:
        return identity(cls, ins, ctx, "identity at inference")
    if cls == "RandomCrop":
        return random_crop(cfg, ins, ctx)
    # tf_keras .h5 configs omit the module: then the config must be exactly the applications' one.
    from_apps = module.startswith(_APPLICATION_MODULES) if module else set(cfg) == _LAYER_SCALE_KEYS
    if from_apps:
        if cls == "LayerScale":
            return layer_scale(cfg, ins, ctx)
        if cls == "StochasticDepth":
            return identity(cls, ins, ctx, "identity at inference")
    raise Unsupported(f"no PyTorch port for Keras layer class {cls}")


SUPPORTED = frozenset(
    {
        *("Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D", "Dense"),
        *("BatchNormalization", "LayerNormalization", "Embedding", *_RNN_TORCH, "Bidirectional", "TimeDistributed"),
        *("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"),
        *("MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D"),
        *(f"Global{k}Pooling{n}D" for k in ("Average", "Max") for n in (1, 2, 3)),
        *(f"Global{k}Pool{n}D" for k in ("Avg", "Max") for n in (1, 2, 3)),
        *("Flatten", "Reshape", "Permute", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"),
        *("GaussianNoise", "GaussianDropout", "AlphaDropout", "ZeroPadding1D", "ZeroPadding2D"),
        *("Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D"),
        *("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"),
        *("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Rescaling", "Normalization", "PReLU"),
        *INFERENCE_IDENTITY,
        *("RandomCrop", "LayerScale", "StochasticDepth"),  # the last two: keras.applications' own
        "MultiHeadAttention",
    }
)
