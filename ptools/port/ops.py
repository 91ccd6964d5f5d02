"""Operations on tensors in a Keras graph: Keras 3 `keras.ops` nodes and tf_keras TFOpLambda layers.

`x + 3.0`, `x / 127.5`, `preprocess_input(x)`, `ops.mean(x, axis=...)` are saved as graph nodes of their
own: Keras 3 as operation nodes (module keras.src.ops.*, positional `args` holding tensors and constants,
settings in the config), tf_keras as TFOpLambda layers naming the TF function (`math.truediv`) with the
first argument in the node and the others as keyword arguments. Both are mapped onto one set of canonical
operations, computed in the Keras layout semantics (numpy broadcasting on channels-last shapes) whatever
layout the torch tensors are held in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ptools.port.code import lit
from ptools.port.graph import Call, Const, TensorArg
from ptools.port.layers import LayerCode, Shape, Unsupported, Value, as_cf, as_keras, f32, keras_axis, torch_axis

# Keras 3 operation classes -> canonical names.
_KERAS_OPS = {
    **{k: k.lower() for k in ("Add", "Subtract", "Multiply", "Power", "Maximum", "Minimum", "Negative", "Sqrt")},
    **{k: k.lower() for k in ("Square", "Exp", "Log", "Tanh", "Sigmoid", "Relu", "Relu6", "Silu", "Gelu")},
    **{k: k.lower() for k in ("Softplus", "Softsign", "Elu", "Selu", "Softmax", "Erf", "Rsqrt", "Reciprocal")},
    **{k: k.lower() for k in ("Floor", "Ceil", "Sign", "Clip", "Mean", "Sum", "Max", "Min", "Reshape")},
    **{k: k.lower() for k in ("Transpose", "Squeeze", "Stack", "Matmul", "Cast")},
    "LogicalAnd": "logical_and",
    "LogicalOr": "logical_or",
    "LogicalXor": "logical_xor",
    "LogicalNot": "logical_not",
    "Any": "any",
    "ZerosLike": "zeros_like",
    "OnesLike": "ones_like",
    "All": "all",
    "NotEqual": "not_equal",
    "Equal": "equal",
    "Greater": "greater",
    "GreaterEqual": "greater_equal",
    "Less": "less",
    "LessEqual": "less_equal",
    "TrueDivide": "divide",
    "Divide": "divide",
    "Absolute": "abs",
    "Abs": "abs",
    "Swish": "silu",
    "HardSigmoid": "hard_sigmoid",
    "HardSilu": "hard_silu",
    "HardSwish": "hard_silu",
    "LeakyRelu": "leaky_relu",
    "LogSoftmax": "log_softmax",
    "ExpandDims": "expand_dims",
    "Concatenate": "concat",
    "GetItem": "getitem",
}

# tf_keras TFOpLambda functions -> (canonical name, parameter names in TF's order).
_TF_OPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "__operators__.add": ("add", ("x", "y")),
    "math.add": ("add", ("x", "y")),
    "math.subtract": ("subtract", ("x", "y")),
    "math.multiply": ("multiply", ("x", "y")),
    "math.truediv": ("divide", ("x", "y")),
    "math.divide": ("divide", ("x", "y")),
    "math.pow": ("power", ("x", "y")),
    "math.maximum": ("maximum", ("x", "y")),
    "math.minimum": ("minimum", ("x", "y")),
    "math.logical_and": ("logical_and", ("x", "y")),
    "math.logical_or": ("logical_or", ("x", "y")),
    "math.logical_xor": ("logical_xor", ("x", "y")),
    "math.logical_not": ("logical_not", ("x",)),
    "math.reduce_any": ("any", ("input_tensor", "axis", "keepdims")),
    "zeros_like": ("zeros_like", ("input", "dtype")),
    "ones_like": ("ones_like", ("input", "dtype")),
    "math.reduce_all": ("all", ("input_tensor", "axis", "keepdims")),
    "math.not_equal": ("not_equal", ("x", "y")),
    "math.equal": ("equal", ("x", "y")),
    "math.greater": ("greater", ("x", "y")),
    "math.greater_equal": ("greater_equal", ("x", "y")),
    "math.less": ("less", ("x", "y")),
    "math.less_equal": ("less_equal", ("x", "y")),
    "math.negative": ("negative", ("x",)),
    "math.abs": ("abs", ("x",)),
    "math.sqrt": ("sqrt", ("x",)),
    "math.square": ("square", ("x",)),
    "math.exp": ("exp", ("x",)),
    "math.log": ("log", ("x",)),
    "math.tanh": ("tanh", ("x",)),
    "math.sigmoid": ("sigmoid", ("x",)),
    "nn.sigmoid": ("sigmoid", ("x",)),
    "math.erf": ("erf", ("x",)),
    "math.rsqrt": ("rsqrt", ("x",)),
    "math.reciprocal": ("reciprocal", ("x",)),
    "math.floor": ("floor", ("x",)),
    "math.ceil": ("ceil", ("x",)),
    "math.sign": ("sign", ("x",)),
    "nn.relu": ("relu", ("features",)),
    "nn.relu6": ("relu6", ("features",)),
    "nn.silu": ("silu", ("features", "beta")),
    "nn.swish": ("silu", ("features", "beta")),
    "nn.gelu": ("gelu", ("features", "approximate")),
    "nn.elu": ("elu", ("features",)),
    "nn.selu": ("selu", ("features",)),
    "nn.leaky_relu": ("leaky_relu", ("features", "alpha")),
    "math.softplus": ("softplus", ("features",)),
    "nn.softplus": ("softplus", ("features",)),
    "nn.softsign": ("softsign", ("features",)),
    "math.softsign": ("softsign", ("features",)),
    "nn.softmax": ("softmax", ("logits", "axis")),
    "nn.log_softmax": ("log_softmax", ("logits", "axis")),
    "clip_by_value": ("clip", ("t", "clip_value_min", "clip_value_max")),
    "math.reduce_mean": ("mean", ("input_tensor", "axis", "keepdims")),
    "math.reduce_sum": ("sum", ("input_tensor", "axis", "keepdims")),
    "math.reduce_max": ("max", ("input_tensor", "axis", "keepdims")),
    "math.reduce_min": ("min", ("input_tensor", "axis", "keepdims")),
    "reshape": ("reshape", ("tensor", "shape")),
    "transpose": ("transpose", ("a", "perm", "conjugate")),
    "compat.v1.transpose": ("transpose", ("a", "perm", "conjugate")),
    "expand_dims": ("expand_dims", ("input", "axis")),
    "squeeze": ("squeeze", ("input", "axis")),
    "compat.v1.squeeze": ("squeeze", ("input", "axis")),
    "concat": ("concat", ("values", "axis")),
    "stack": ("stack", ("values", "axis")),
    "__operators__.getitem": ("getitem", ("tensor", "slice_spec")),
    "linalg.matmul": ("matmul", ("a", "b")),
    "matmul": ("matmul", ("a", "b")),
    "cast": ("cast", ("x", "dtype")),
    "nn.bias_add": ("bias_add", ("value", "bias", "data_format")),
}

_UNARY = {
    "negative": "-{}",
    "abs": "torch.abs({})",
    "sqrt": "torch.sqrt({})",
    "square": "torch.square({})",
    "exp": "torch.exp({})",
    "log": "torch.log({})",
    "tanh": "torch.tanh({})",
    "sigmoid": "torch.sigmoid({})",
    "erf": "torch.erf({})",
    "rsqrt": "torch.rsqrt({})",
    "reciprocal": "torch.reciprocal({})",
    "floor": "torch.floor({})",
    "ceil": "torch.ceil({})",
    "sign": "torch.sign({})",
    "relu": "torch.relu({})",
    "relu6": "F.relu6({})",
    "silu": "F.silu({})",
    "selu": "F.selu({})",
    "softplus": "F.softplus({})",
    "softsign": "F.softsign({})",
    "hard_sigmoid": "F.hardsigmoid({})",  # keras.ops.hard_sigmoid: relu6(x + 3) / 6, torch's formula
    "hard_silu": "F.hardswish({})",
    "logical_not": "torch.logical_not({})",
}
_BINARY = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/", "power": "**"}
_COMPARE = {"not_equal": "!=", "equal": "==", "greater": ">", "greater_equal": ">=", "less": "<", "less_equal": "<="}
_LOGICAL = ("logical_and", "logical_or", "logical_xor")  # Keras 3 combines masks with these
_REDUCE = {"mean": "mean", "sum": "sum", "max": "amax", "min": "amin", "any": "any", "all": "all"}
_MAX_LITERAL = 64  # constants up to this many elements are written into model.py; larger ones are buffers


def supported_tf_functions() -> list[str]:
    return sorted(_TF_OPS)


def emit_op(c: Call, ins: list[Value], ctx: Any) -> LayerCode:
    """The code of one operation node; raises Unsupported (naming the operation) when it has no exact form."""

    def resolve(obj: Any) -> Any:
        if isinstance(obj, TensorArg):
            return ins[obj.index]
        if isinstance(obj, list):
            return [resolve(x) for x in obj]
        if isinstance(obj, dict):
            return {k: resolve(x) for k, x in obj.items()}
        return obj

    args, kwargs = resolve(c.args), resolve(c.op_kwargs)
    if c.op == "tf":
        fn = str(c.config.get("function"))
        if fn not in _TF_OPS:
            raise Unsupported(f"TF function tf.{fn} has no PyTorch port here")
        name, params = _TF_OPS[fn]
        bound = dict(kwargs)
        bound.pop("name", None)
        if args:
            bound[params[0]] = args[0]
        unknown = set(bound) - set(params)
        if unknown:
            raise Unsupported(f"tf.{fn} with argument(s) {', '.join(sorted(unknown))}")
        ordered = [bound.get(p) for p in params]
        return _tf(name, fn, ordered, ctx)
    name = _KERAS_OPS.get(c.class_name)
    if name is None:
        raise Unsupported(f"keras.ops operation {c.class_name} has no PyTorch port here")
    return _keras(name, c.class_name, args, kwargs, c.config, ctx)


def _keras(name: str, cls: str, args: list[Any], kwargs: dict[str, Any], cfg: dict[str, Any], ctx: Any) -> LayerCode:
    if kwargs:
        raise Unsupported(f"keras.ops {cls} with keyword argument(s) {', '.join(sorted(kwargs))}")
    if name in _BINARY or name in _COMPARE or name in _LOGICAL or name in ("maximum", "minimum"):
        if len(args) != 2:
            raise Unsupported(f"keras.ops {cls} with {len(args)} arguments")
        return binary(name, args[0], args[1], ctx)
    if name in ("concat", "stack"):
        return _join(name, args[0] if args else None, int(cfg.get("axis", 0 if name == "stack" else -1)), ctx)
    x = _value(args[0] if args else None, cls)
    if name in _UNARY:
        return _unary(_UNARY[name], x, ctx)
    if name == "gelu":
        return _unary('F.gelu({}, approximate="tanh")' if cfg.get("approximate", True) else "F.gelu({})", x, ctx)
    if name == "elu":
        alpha = f32(float(cfg.get("alpha", 1.0)))
        return _unary("F.elu({})" if alpha == 1.0 else "F.elu({}, " + lit(alpha) + ")", x, ctx)
    if name == "leaky_relu":
        return _unary("F.leaky_relu({}, " + lit(f32(float(cfg.get("negative_slope", 0.2)))) + ")", x, ctx)
    if name in ("softmax", "log_softmax"):
        return _softmax(name, x, cfg.get("axis", -1), ctx)
    if name == "clip":
        return _clip(x, cfg.get("x_min"), cfg.get("x_max"), ctx)
    if name in _REDUCE:
        if cfg.get("initial") is not None:
            raise Unsupported(f"keras.ops {cls} with initial=")
        return reduce(name, x, cfg.get("axis"), bool(cfg.get("keepdims", False)), ctx)
    if name == "reshape":
        return _reshape(x, cfg.get("newshape"), ctx)
    if name == "transpose":
        return _transpose(x, cfg.get("axes"), ctx)
    if name == "expand_dims":
        return _expand_dims(x, cfg.get("axis"), ctx)
    if name == "squeeze":
        return _squeeze(x, cfg.get("axis"), ctx)
    if name == "getitem":
        return getitem(x, args[1] if len(args) > 1 else None, ctx)
    if name == "matmul":
        return _matmul(x, args[1] if len(args) > 1 else None, ctx)
    if name == "cast":
        return _cast(x, cfg.get("dtype"), ctx)
    if name in ("zeros_like", "ones_like"):
        return _filled_like(name, x, cfg.get("dtype"), ctx)
    raise Unsupported(f"keras.ops {cls}")


def _tf(name: str, fn: str, a: list[Any], ctx: Any) -> LayerCode:
    if name in _BINARY or name in _COMPARE or name in _LOGICAL or name in ("maximum", "minimum"):
        return binary(name, a[0], a[1], ctx)
    if name in ("concat", "stack"):
        return _join(name, a[0], int(a[1] if a[1] is not None else 0), ctx)
    x = _value(a[0], f"tf.{fn}")
    if name in _UNARY:
        if name == "silu" and a[1] not in (None, 1.0):
            raise Unsupported(f"tf.{fn} with beta={a[1]}")
        return _unary(_UNARY[name], x, ctx)
    if name == "gelu":
        return _unary('F.gelu({}, approximate="tanh")' if a[1] else "F.gelu({})", x, ctx)
    if name == "elu":
        return _unary("F.elu({})", x, ctx)
    if name == "leaky_relu":
        return _unary("F.leaky_relu({}, " + lit(f32(float(0.2 if a[1] is None else a[1]))) + ")", x, ctx)
    if name in ("softmax", "log_softmax"):
        return _softmax(name, x, -1 if a[1] is None else a[1], ctx)
    if name == "clip":
        return _clip(x, a[1], a[2], ctx)
    if name in _REDUCE:
        return reduce(name, x, a[1], bool(a[2]), ctx)
    if name == "reshape":
        return _reshape(x, a[1], ctx)
    if name == "transpose":
        if a[2]:
            raise Unsupported(f"tf.{fn} with conjugate=True")
        return _transpose(x, a[1], ctx)
    if name == "expand_dims":
        return _expand_dims(x, a[1], ctx)
    if name == "squeeze":
        return _squeeze(x, a[1], ctx)
    if name == "getitem":
        return getitem(x, a[1], ctx)
    if name == "matmul":
        return _matmul(x, a[1], ctx)
    if name == "cast":
        return _cast(x, a[1], ctx)
    if name in ("zeros_like", "ones_like"):
        return _filled_like(name, x, a[1], ctx)
    if name == "bias_add":
        if a[2] not in (None, "NHWC", "NWC", "NDHWC", "N...C"):
            raise Unsupported(f"tf.{fn} with data_format={a[2]!r}")
        bias = a[1]
        if isinstance(bias, Value) or bias is None:
            raise Unsupported(f"tf.{fn} with a tensor bias")
        return binary("add", x, _const(bias), ctx)
    raise Unsupported(f"tf.{fn}")


# -- helpers ------------------------------------------------------------------------------------------------


def _value(v: Any, what: str) -> Value:
    if not isinstance(v, Value):
        raise Unsupported(f"{what} on a constant, not on a tensor of the model")
    return v


def _const(v: Any) -> np.ndarray:
    if isinstance(v, Const):
        return v.value
    arr = np.asarray(v)
    if arr.dtype == np.float64:  # a Python float: Keras uses it in the tensor's float32
        arr = arr.astype(np.float32)
    return arr


def _keras_shape(v: Value) -> tuple[int | None, ...]:
    return (None, *v.shape)


def _broadcast(shapes: list[tuple[int | None, ...]]) -> tuple[int | None, ...]:
    rank = max(len(s) for s in shapes)
    out: list[int | None] = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise Unsupported(f"shapes {shapes} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


class _Consts:
    """Non-scalar constants of one operation, written as buffers of the module: small ones with their values
    in model.py (not in the state_dict), larger ones filled from weights.safetensors."""

    def __init__(self, code: LayerCode, attr: str) -> None:
        self.code, self.attr, self.n = code, attr, 0
        self.stored: dict[str, np.ndarray] = {}

    def add(self, arr: np.ndarray) -> str:
        if arr.dtype.kind == "f" and arr.dtype != np.float32:
            raise Unsupported(f"a {arr.dtype} constant")
        if arr.dtype.kind not in "fiub":
            raise Unsupported(f"a constant of type {arr.dtype}")
        self.n += 1
        name = f"{self.attr}_const" if self.n == 1 else f"{self.attr}_const{self.n}"
        integer = arr.dtype.kind != "f"
        if arr.size <= _MAX_LITERAL:
            vals = [int(x) if integer else f32(float(x)) for x in arr.reshape(-1)]
            t = f"torch.tensor({lit(vals)}{', dtype=torch.long' if integer else ''})"
            if arr.ndim != 1:
                t += f".reshape({', '.join(str(d) for d in arr.shape)})" if arr.ndim else ".reshape(())"
            self.code.modules.append(("", f'self.register_buffer("{name}", {t}, persistent=False)'))
        else:
            dtype = ", dtype=torch.long" if integer else ""
            self.code.modules.append(("", f'self.register_buffer("{name}", torch.zeros({lit(arr.shape)}{dtype}))'))
            self.stored[name] = np.asarray(arr.astype(np.int64) if integer else arr, order="C")
            stored = self.stored
            self.code.weights = lambda ws: dict(stored)
            self.code.needs_file_weights = False
        return f"self.{name}"


def _scalar(arr: np.ndarray) -> str | None:
    """A literal for a one-element constant; None when it must stay a tensor."""
    if arr.size != 1:
        return None
    x = arr.reshape(-1)[0]
    if arr.dtype.kind == "f":
        return lit(f32(float(x))) if arr.dtype == np.float32 else lit(float(x))
    if arr.dtype.kind in "iub":
        return str(int(x))
    return None


def binary(name: str, a: Any, b: Any, ctx: Any) -> LayerCode:
    """An element-wise operation on two operands, tensors or constants, with numpy broadcasting on Keras
    shapes. Tensors of the result's rank keep their layout (channels-first when any is); anything else is
    computed in Keras order. Constants are moved into the layout the result is computed in."""
    code = LayerCode()
    ops = [a, b]
    values = [o for o in ops if isinstance(o, Value)]
    if not values:
        raise Unsupported(f"{name} of two constants")
    consts = {i: _const(o) for i, o in enumerate(ops) if not isinstance(o, Value)}
    shapes = [_keras_shape(o) if isinstance(o, Value) else tuple(consts[i].shape) for i, o in enumerate(ops)]
    out_shape = _broadcast(shapes)
    rank = len(out_shape)
    top = max(v.rank for v in values)  # constants up to this rank cannot change the result's rank
    cf = rank > 2 and any(v.cf for v in values) and all(v.rank == rank for v in values)
    consts_code = _Consts(code, ctx.attr)
    exprs: list[str] = []
    literal: list[bool] = []
    for i, o in enumerate(ops):
        if isinstance(o, Value):
            exprs.append(as_cf(o) if cf else as_keras(o))
            literal.append(False)
            continue
        arr = consts[i]
        scalar = _scalar(arr) if arr.ndim <= top else None
        literal.append(scalar is not None)
        if scalar is not None:
            exprs.append(scalar)
            continue
        if cf:  # numpy-align to the result rank, then move the channel axis where torch holds it
            arr = np.moveaxis(arr.reshape((1,) * (rank - arr.ndim) + arr.shape), -1, 1)
        while arr.ndim > 1 and arr.shape[0] == 1 and arr.ndim <= top:
            arr = arr[0]
        exprs.append(consts_code.add(arr))
    x, y = exprs
    if name in _BINARY or name in _COMPARE:
        op = _BINARY.get(name) or _COMPARE[name]
        if op in "+-" and literal[1] and y.startswith("-"):  # x + -1.0 reads as x - 1.0
            op, y = ("-" if op == "+" else "+"), y[1:]
        if op == "**" and literal[0] and x.startswith("-"):
            x = f"({x})"
        # ruff format hugs `**` between simple operands (names, numbers, attribute chains): `x**2`.
        expr = f"{x}**{y}" if op == "**" and _simple_power_operand(x) and _simple_power_operand(y) else f"{x} {op} {y}"
    elif name in _LOGICAL:
        if any(literal):
            raise Unsupported(f"{name} with a constant")
        expr = f"torch.{name}({x}, {y})"
    elif any(literal):  # one side a number: clamp takes it as a bound
        t, s = (y, x) if literal[0] else (x, y)
        expr = f"torch.clamp({t}, {'min' if name == 'maximum' else 'max'}={s})"
    else:
        expr = f"{'torch.maximum' if name == 'maximum' else 'torch.minimum'}({x}, {y})"
    code.lines.append(f"{ctx.out} = {expr}")
    integer = all(v.integer for v in values) and all(consts[i].dtype.kind in "iub" for i in consts)
    # A comparison gives booleans (Keras' masks): integers for the port's purposes (no float layout work).
    boolean = name in _COMPARE or name in _LOGICAL
    code.outputs.append(Value(ctx.out, out_shape[1:], cf, (integer and name != "divide") or boolean))
    code.settings.append(
        f"{name} of " + " and ".join("a tensor" if isinstance(o, Value) else "a constant" for o in ops)
    )
    return code


def _simple_power_operand(expr: str) -> bool:
    body = expr[1:] if expr.startswith("-") else expr
    return all(part.isidentifier() for part in body.split(".")) or body.replace(".", "", 1).isdigit()


def _unary(template: str, x: Value, ctx: Any) -> LayerCode:
    expr = template.format(x.name)
    code = LayerCode(lines=[f"{ctx.out} = {expr}"])
    keeps_integer = x.integer and template in ("-{}", "torch.abs({})")
    code.outputs.append(Value(ctx.out, x.shape, x.cf, keeps_integer or template.startswith("torch.logical_not")))
    return code


def _softmax(name: str, x: Value, axis: Any, ctx: Any) -> LayerCode:
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    if not isinstance(axis, int):
        raise Unsupported(f"{name} over axes {axis}")
    fn = "torch.softmax" if name == "softmax" else "torch.log_softmax"
    return _unary(fn + "({}, dim=" + str(torch_axis(axis, x)) + ")", x, ctx)


def _clip(x: Value, lo: Any, hi: Any, ctx: Any) -> LayerCode:
    bounds = []
    for b in (lo, hi):
        if isinstance(b, Value) or b is None:
            raise Unsupported("clip with a tensor or missing bound")
        arr = _const(b)
        s = _scalar(arr)
        if s is None:
            raise Unsupported("clip with per-element bounds")
        if x.integer is False and arr.dtype.kind != "f":
            s = lit(float(int(s)))
        bounds.append(s)
    return _unary("torch.clamp({}, " + bounds[0] + ", " + bounds[1] + ")", x, ctx)


def _axes(axis: Any, rank: int, what: str) -> list[int]:
    if axis is None:
        raise Unsupported(f"{what} over every axis, the batch axis included")
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    out = []
    for a in axes:
        if not isinstance(a, int) or isinstance(a, bool):
            raise Unsupported(f"{what} over axis {a!r}")
        out.append(keras_axis(a, rank))
    return sorted(set(out))


def reduce(name: str, x: Value, axis: Any, keepdims: bool, ctx: Any) -> LayerCode:
    axes = _axes(axis, x.rank, name)
    dims = sorted(torch_axis(a, x) for a in axes)
    dim = dims[0] if len(dims) == 1 else tuple(dims)
    extra = ", keepdim=True" if keepdims else ""
    code = LayerCode(lines=[f"{ctx.out} = {x.name}.{_REDUCE[name]}(dim={lit(dim)}{extra})"])
    if keepdims:
        shape = tuple(1 if i + 1 in axes else d for i, d in enumerate(x.shape))
        code.outputs.append(Value(ctx.out, shape, x.cf, x.integer or name in ("any", "all")))
        return code
    shape = tuple(d for i, d in enumerate(x.shape) if i + 1 not in axes)
    # Channels-first survives when the channel axis and at least one spatial axis remain.
    cf = x.cf and x.rank > 2 and (x.rank - 1) not in axes and len(shape) > 1
    code.outputs.append(Value(ctx.out, shape, cf, (x.integer and name != "mean") or name in ("any", "all")))
    return code


def _reshape(x: Value, newshape: Any, ctx: Any) -> LayerCode:
    if not isinstance(newshape, (list, tuple)) or not newshape:
        raise Unsupported(f"reshape to {newshape!r}")
    if newshape[0] not in (-1, None):
        raise Unsupported(f"reshape to {list(newshape)}: the batch axis is given a fixed size")
    target = [int(d) if d is not None else -1 for d in newshape[1:]]
    if target.count(-1) > 1:
        raise Unsupported(f"reshape to {list(newshape)}")
    total = math.prod(x.shape) if all(d is not None for d in x.shape) else None
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        shape: Shape = tuple(
            (total // known if total is not None and known else None) if d == -1 else d for d in target
        )
    else:
        shape = tuple(target)
    dims = ", ".join(str(d) for d in target)
    code = LayerCode(lines=[f"{ctx.out} = {as_keras(x)}.reshape({x.name}.shape[0], {dims})"])
    code.outputs.append(Value(ctx.out, shape, False, x.integer))
    return code


def _transpose(x: Value, axes: Any, ctx: Any) -> LayerCode:
    if not isinstance(axes, (list, tuple)) or len(axes) != x.rank:
        raise Unsupported(f"transpose with axes {axes!r} (all axes must be given, the batch axis first)")
    perm = [keras_axis(a, x.rank) if a != 0 else 0 for a in axes]
    if perm[0] != 0 or sorted(perm) != list(range(x.rank)):
        raise Unsupported(f"transpose with axes {list(axes)} (moves the batch axis)")
    code = LayerCode(lines=[f"{ctx.out} = {as_keras(x)}.permute({', '.join(map(str, perm))})"])
    code.outputs.append(Value(ctx.out, tuple(x.shape[p - 1] for p in perm[1:]), False, x.integer))
    return code


def _expand_dims(x: Value, axis: Any, ctx: Any) -> LayerCode:
    if not isinstance(axis, int):
        raise Unsupported(f"expand_dims on axis {axis!r}")
    a = axis if axis >= 0 else x.rank + 1 + axis
    if not 1 <= a <= x.rank:
        raise Unsupported(f"expand_dims on axis {axis} (the batch axis or out of range)")
    code = LayerCode(lines=[f"{ctx.out} = {as_keras(x)}.unsqueeze({a})"])
    shape = list(x.shape)
    shape.insert(a - 1, 1)
    code.outputs.append(Value(ctx.out, tuple(shape), False, x.integer))
    return code


def _squeeze(x: Value, axis: Any, ctx: Any) -> LayerCode:
    if axis is None:
        axes = [i + 1 for i, d in enumerate(x.shape) if d == 1]
        if any(d is None for d in x.shape):
            raise Unsupported("squeeze without axis on a tensor of unknown size")
    else:
        axes = _axes(axis, x.rank, "squeeze")
    for a in axes:
        if x.shape[a - 1] != 1:
            raise Unsupported(f"squeeze of axis {a} of size {x.shape[a - 1]}")
    expr = as_keras(x)
    for a in sorted(axes, reverse=True):
        expr += f".squeeze({a})"
    code = LayerCode(lines=[f"{ctx.out} = {expr}"])
    code.outputs.append(Value(ctx.out, tuple(d for i, d in enumerate(x.shape) if i + 1 not in axes), False, x.integer))
    return code


def _join(name: str, items: Any, axis: int, ctx: Any) -> LayerCode:
    if not isinstance(items, list) or not items or not all(isinstance(v, Value) for v in items):
        raise Unsupported(f"{name} of constants (only tensors of the model are joined)")
    if len({v.rank for v in items}) != 1:
        raise Unsupported(f"{name} of tensors of different ranks")
    rank = items[0].rank
    if name == "concat":
        a = keras_axis(axis, rank)
        cf = rank > 2 and all(v.cf for v in items)
        xs = [v.name if cf else as_keras(v) for v in items]
        dim = torch_axis(axis, Value("", items[0].shape, cf))
        shape = list(items[0].shape)
        sizes = [v.shape[a - 1] for v in items]
        shape[a - 1] = None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]
        code = LayerCode(lines=[f"{ctx.out} = torch.cat([{', '.join(xs)}], dim={dim})"])
        code.outputs.append(Value(ctx.out, tuple(shape), cf))
        return code
    a = axis if axis >= 0 else rank + 1 + axis
    if not 1 <= a <= rank:
        raise Unsupported(f"stack on axis {axis} (the batch axis or out of range)")
    xs = [as_keras(v) for v in items]
    shape = list(items[0].shape)
    shape.insert(a - 1, len(items))
    code = LayerCode(lines=[f"{ctx.out} = torch.stack([{', '.join(xs)}], dim={a})"])
    code.outputs.append(Value(ctx.out, tuple(shape), False))
    return code


def _slice_text(s: slice) -> str:
    parts = ["" if s.start is None else str(s.start), "" if s.stop is None else str(s.stop)]
    if s.step not in (None, 1):
        parts.append(str(s.step))
    return ":".join(parts)


def getitem(x: Value, key: Any, ctx: Any) -> LayerCode:
    """`x[...]` with ints, slices, an ellipsis and None on Keras axes, the batch axis left whole. Indexing
    maps onto the torch layout (a reversed slice becomes `.flip`)."""
    items = key if isinstance(key, list) else [key]
    for it in items:
        if isinstance(it, Value) or not (
            it is None or it is Ellipsis or isinstance(it, slice) or (isinstance(it, int) and not isinstance(it, bool))
        ):
            raise Unsupported(f"indexing with {it!r}")
        if isinstance(it, slice) and not all(p is None or isinstance(p, int) for p in (it.start, it.stop, it.step)):
            raise Unsupported(f"indexing with {it!r}")
    if sum(it is Ellipsis for it in items) > 1:
        raise Unsupported("indexing with two ellipses")
    n_axes = sum(1 for it in items if it is not None and it is not Ellipsis)
    if n_axes > x.rank:
        raise Unsupported(f"{n_axes} indices for a rank-{x.rank} tensor")
    full = slice(None, None, None)
    if Ellipsis in items:
        i = items.index(Ellipsis)
        items = items[:i] + [full] * (x.rank - n_axes) + items[i + 1 :]
    else:
        items = items + [full] * (x.rank - n_axes)
    per_axis = [it for it in items if it is not None]  # one per Keras axis, batch first
    if per_axis[0] != full:
        raise Unsupported("indexing the batch axis")
    sizes = _keras_shape(x)
    kshape: list[int | None] = []
    ax = 0
    for it in items:
        if it is None:
            kshape.append(1)
            continue
        n = sizes[ax]
        ax += 1
        if isinstance(it, int):
            if n is not None and not -n <= it < n:
                raise Unsupported(f"index {it} out of range for an axis of size {n}")
            continue
        if it.step is not None and it.step < 0 and (it.start is not None or it.stop is not None):
            raise Unsupported("a reversed slice with start or stop")
        if it.step == 0:
            raise Unsupported("a slice with step 0")
        kshape.append(None if n is None else len(range(*it.indices(n))))
    has_new = any(it is None for it in items)
    cf = x.cf and x.rank > 2 and not has_new
    if cf:  # index in torch order: (batch, channel, spatial...)
        order = [0, x.rank - 1, *range(1, x.rank - 1)]
        specs = [per_axis[k] for k in order]
        channel = per_axis[-1]
        out_cf = not isinstance(channel, int) and sum(not isinstance(s, int) for s in per_axis) > 2
        base = x.name
    else:
        specs = items
        out_cf = False
        base = as_keras(x)
    flips = [i for i, s in enumerate(s for s in specs if s is not None) if isinstance(s, slice) and (s.step or 1) < 0]
    expr = base
    if flips:
        # Positions among real axes equal tensor dims only when no None precedes them; reject the mix.
        if any(s is None for s in specs):
            raise Unsupported("a reversed slice together with None (new axes)")
        expr = f"{expr}.flip({', '.join(str(d) for d in flips)})" if len(flips) > 1 else f"{expr}.flip({flips[0]})"
        specs = [slice(None, None, -s.step if s.step != -1 else None) if i in flips else s for i, s in enumerate(specs)]
    texts = ["None" if s is None else (str(s) if isinstance(s, int) else _slice_text(s)) for s in specs]
    while texts and texts[-1] == ":":
        texts.pop()
    if texts:
        expr = f"{expr}[{', '.join(texts)}]"
    code = LayerCode(lines=[f"{ctx.out} = {expr}"])
    code.outputs.append(Value(ctx.out, tuple(kshape[1:]), out_cf, x.integer))  # Keras order, batch dropped
    return code


def _matmul(a: Value, b: Any, ctx: Any) -> LayerCode:
    if a.rank < 3:
        raise Unsupported("matmul of a rank-2 tensor (batch x features): the batch axis would be multiplied")
    code = LayerCode()
    if isinstance(b, Value):
        if b.rank < 3:
            raise Unsupported("matmul with a rank-2 tensor (batch x features)")
        y = as_keras(b)
        bs = _keras_shape(b)
    else:
        arr = _const(b)
        if arr.ndim < 2:
            raise Unsupported("matmul with a vector")
        y = _Consts(code, ctx.attr).add(arr)
        bs = tuple(arr.shape)
    as_ = _keras_shape(a)
    if as_[-1] is not None and bs[-2] is not None and as_[-1] != bs[-2]:
        raise Unsupported(f"matmul of shapes {as_} and {bs}")
    batch = _broadcast([as_[:-2], bs[:-2]])
    code.lines.append(f"{ctx.out} = torch.matmul({as_keras(a)}, {y})")
    code.outputs.append(Value(ctx.out, (*batch[1:], as_[-2], bs[-1])))
    return code


def _cast(x: Value, dtype: Any, ctx: Any) -> LayerCode:
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name", dtype)
    dtype = str(dtype)
    if dtype == "float32":
        expr = f"{x.name}.float()" if x.integer else x.name
        code = LayerCode(lines=[f"{ctx.out} = {expr}"])
        code.outputs.append(Value(ctx.out, x.shape, x.cf))
        return code
    if dtype in ("int32", "int64"):
        code = LayerCode(lines=[f"{ctx.out} = {x.name}.long()"])
        code.outputs.append(Value(ctx.out, x.shape, x.cf, True))
        return code
    raise Unsupported(f"cast to {dtype} (only float32 and integer casts are ported)")


def _filled_like(name: str, x: Value, dtype: Any, ctx: Any) -> LayerCode:
    """zeros_like / ones_like, in the tensor's layout (Keras 3 builds masks of unmasked inputs with these)."""
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name", dtype)
    torch_dtype = {None: "", "bool": ", dtype=torch.bool", "float32": ", dtype=torch.float32"}
    torch_dtype |= {"int32": ", dtype=torch.long", "int64": ", dtype=torch.long"}
    if dtype not in torch_dtype:
        raise Unsupported(f"{name} of type {dtype}")
    code = LayerCode(lines=[f"{ctx.out} = torch.{name}({x.name}{torch_dtype[dtype]})"])
    integer = x.integer if dtype is None else dtype != "float32"
    code.outputs.append(Value(ctx.out, x.shape, x.cf, integer))
    return code
