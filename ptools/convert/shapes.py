"""Shape propagation through a Keras model config, only far enough to know what each Flatten flattens.

The first Dense after a Flatten of an (H, W, C) map needs its rows permuted; Keras 3 configs record the
Flatten's input shape, legacy tf.keras configs do not, so we recompute it with TF's padding arithmetic.
"""

from __future__ import annotations

import math
from typing import Any

Shape = tuple[int | None, ...]  # without the batch axis

_PASSTHROUGH = {
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "PReLU",
    "Softmax",
    "Dropout",
    "SpatialDropout2D",
    "GaussianNoise",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "UnitNormalization",
    "SpectralNormalization",
    "Rescaling",
    "Normalization",
    "SpatialDropout1D",
    "SpatialDropout3D",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Masking",
    "Identity",
    "ThresholdedReLU",
    # identity at inference
    "RandomFlip",
    "RandomRotation",
    "RandomZoom",
    "RandomContrast",
    "RandomTranslation",
    "RandomBrightness",
}
_SKIP_THROUGH = {"Dropout", "Activation", "ReLU", "LeakyReLU", "ELU", "GaussianNoise", "Identity"}


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    return tuple(int(x) for x in v)


def _window(n: int | None, k: int, s: int, d: int, padding: str) -> int | None:
    if n is None:
        return None
    k_eff = (k - 1) * d + 1
    if padding in ("same", "causal"):  # causal: (k - 1) * d zeros before, then VALID: ceil(n / s) too
        return math.ceil(n / s)
    if padding != "valid":
        return None
    return (n - k_eff + s) // s


def _transpose_len(n: int | None, k: int, s: int, d: int, padding: str, op: int | None) -> int | None:
    if n is None:
        return None
    k_eff = (k - 1) * d + 1
    if padding == "valid":
        return (n - 1) * s + k_eff + (op if op is not None else max(k_eff, s) - k_eff)
    return n * s if op is None else (n - 1) * s + k_eff % 2 + op


def _pairs(v: Any, nd: int) -> list[tuple[int, int]] | None:
    """Keras' padding / cropping argument (n, (a, b) for 1D, ((a, b), ...) or (n, m, ...)) as nd pairs."""
    if nd == 1 and isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(q, int) for q in v):
        v = [v]
    items = [v] * nd if isinstance(v, int) else v
    if not isinstance(items, (list, tuple)) or len(items) != nd:
        return None
    pairs = [(q, q) if isinstance(q, int) else tuple(q) for q in items]
    return pairs if all(len(q) == 2 and all(isinstance(n, int) for n in q) for q in pairs) else None  # type: ignore[return-value]


def output_shape(cls: str, cfg: dict[str, Any], inputs: list[Shape]) -> Shape | None:
    """Output shape of one layer (channels_last), or None when we cannot tell."""
    if cls == "InputLayer":
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        return tuple(shape[1:]) if shape else None
    if not inputs or inputs[0] is None:
        return None
    x = inputs[0]
    if cfg.get("data_format") == "channels_first":
        return None
    if cls in _PASSTHROUGH:
        return x
    conv = cls in (
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "SeparableConv1D",
        "SeparableConv2D",
    )
    if conv or cls in (
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
    ):
        nd = len(x) - 1
        if conv:
            k = _tuple(cfg.get("kernel_size", 1), nd)
            s = _tuple(cfg.get("strides", 1), nd)
            d = _tuple(cfg.get("dilation_rate", 1), nd)
        else:
            k = _tuple(cfg.get("pool_size", 2), nd)
            s = _tuple(cfg.get("strides") or k, nd)
            d = (1,) * nd
        pad = cfg.get("padding", "valid")
        spatial = tuple(_window(x[i], k[i], s[i], d[i], pad) for i in range(nd))
        if cls.startswith("Conv") or cls.startswith("Separable"):
            c = cfg.get("filters")
        elif cls.startswith("Depthwise"):
            c = x[-1] * cfg.get("depth_multiplier", 1) if x[-1] is not None else None
        else:
            c = x[-1]
        return (*spatial, c)
    if cls in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        nd = len(x) - 1
        k, s = _tuple(cfg.get("kernel_size", 1), nd), _tuple(cfg.get("strides", 1), nd)
        d = _tuple(cfg.get("dilation_rate", 1), nd)
        op = cfg.get("output_padding")
        ops = _tuple(op, nd) if op is not None else (None,) * nd
        pad = cfg.get("padding", "valid")
        return (*(_transpose_len(x[i], k[i], s[i], d[i], pad, ops[i]) for i in range(nd)), cfg.get("filters"))
    if cls in ("UpSampling1D", "UpSampling2D", "UpSampling3D"):
        nd = len(x) - 1
        size = _tuple(cfg.get("size", 2), nd)
        return (*(None if x[i] is None else x[i] * size[i] for i in range(nd)), x[-1])
    if cls in ("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D"):
        pads = _pairs(cfg.get("padding" if cls.startswith("Zero") else "cropping", 1), len(x) - 1)
        if pads is None:
            return None
        sign = 1 if cls.startswith("Zero") else -1
        return (*(None if x[i] is None else x[i] + sign * sum(pads[i]) for i in range(len(pads))), x[-1])
    if cls == "Embedding":
        return (*x, cfg.get("output_dim"))
    if cls == "Flatten":
        return (None if any(d is None for d in x) else math.prod(x),)  # type: ignore[arg-type]
    if cls == "Dense":
        return (*x[:-1], cfg.get("units"))
    if cls == "Reshape":
        return tuple(cfg.get("target_shape", ())) or None
    if cls.startswith("Global"):
        return (x[-1],)
    if cls == "Concatenate" and all(i is not None for i in inputs):
        axis = cfg.get("axis", -1)
        if axis in (-1, len(x)):
            last = [i[-1] for i in inputs]  # type: ignore[index]
            return (*x[:-1], None if None in last else sum(last))  # type: ignore[arg-type]
    return None


def inbound_names(layer_cfg: dict[str, Any]) -> list[str]:
    """Names of the layers feeding a functional layer, for legacy and Keras 3 inbound_nodes formats."""
    names: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            hist = obj.get("config", {}).get("keras_history") if obj.get("class_name") == "__keras_tensor__" else None
            if hist:
                names.append(hist[0])
                return
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
                names.append(obj[0])
                # tf_keras keeps a TFOpLambda's other tensor operands in the call kwargs: `x - y` is
                # ["x", 0, 0, {"y": ["y", 0, 0]}], and y feeds the op as much as x does
                if len(obj) >= 4:
                    walk(obj[3])
                return
            for v in obj:
                walk(v)

    walk(layer_cfg.get("inbound_nodes", []))
    return names


# (class by layer, inbound layers by layer, output shape by layer, operation by operation node)
_Graph = tuple[dict[str, Any], dict[str, list[str]], dict[str, Shape | None], dict[str, str]]
_MODEL_CLASSES = {"Sequential", "Functional", "Model"}


def _layers_of(model_config: dict[str, Any]) -> list[dict[str, Any]] | None:
    cfg = model_config.get("config", {})
    layers = cfg.get("layers", []) if isinstance(cfg, dict) else cfg
    return [lc for lc in layers if isinstance(lc, dict)] if isinstance(layers, list) else None


def _output_names(model_config: dict[str, Any], layers: list[dict[str, Any]]) -> list[str]:
    cfg = model_config.get("config", {})
    outs = cfg.get("output_layers") if isinstance(cfg, dict) else None
    if isinstance(outs, list) and outs:
        if isinstance(outs[0], str):
            return [outs[0]]
        return [str(o[0]) for o in outs if isinstance(o, list) and o]
    last = layers[-1] if layers else {}
    return [last.get("name") or last.get("config", {}).get("name")] if layers else []


def _graph(model_config: dict[str, Any] | None, recorded: dict[str, Shape | None]) -> _Graph | None:
    """(class by layer, inbound layers by layer, output shape by layer, {operation node: operation}) of a model
    config, nested models inlined: their inner layers join the graph (fed by what feeds
    the nested model), and a layer that consumes a nested model is fed by its output layer, so a Flatten inside
    one is seen."""
    if not model_config:
        return None
    classes: dict[str, Any] = {}
    feeds: dict[str, list[str]] = {}
    out_shapes: dict[str, Shape | None] = {}
    ops: dict[str, str] = {}

    def walk(mc: dict[str, Any], outer_srcs: list[str] | None) -> list[str] | None:
        """Add one model's layers; returns its output layer names (None when it cannot be followed)."""
        layers = _layers_of(mc)
        if layers is None:
            return None
        sequential = mc.get("class_name") == "Sequential" or not any(lc.get("inbound_nodes") for lc in layers)
        alias: dict[str, str] = {}
        prev: list[str] = list(outer_srcs or [])
        for lc in layers:
            lcfg = lc.get("config", {})
            name = lc.get("name") or lcfg.get("name")
            cls = lc.get("class_name", "")
            if sequential:
                srcs = prev if (prev or cls != "InputLayer") else []
                if cls == "InputLayer" and outer_srcs is not None:  # a nested Sequential's own input
                    alias[name] = outer_srcs[0] if outer_srcs else name
                    continue
            else:
                srcs = inbound_names(lc)
                if cls == "InputLayer" and outer_srcs is not None:
                    alias[name] = outer_srcs[min(len(alias), len(outer_srcs) - 1)] if outer_srcs else name
                    continue
            srcs = [alias.get(x, x) for x in srcs]
            if cls in _MODEL_CLASSES and isinstance(lcfg, (dict, list)):
                inner_out = walk(lc, srcs)
                if inner_out and len(inner_out) == 1:
                    alias[name] = inner_out[0]
                    prev = [inner_out[0]]
                    continue
            if name in classes:  # a shared layer called again, or a name two nested models share
                prev = [name]
                continue
            classes[name] = cls
            feeds[name] = srcs
            op = operation(cls, lc)
            if op is not None:
                ops[name] = op
            ins = [out_shapes.get(x) for x in srcs]
            if recorded.get(name) is not None:
                ins = [tuple(recorded[name][1:])]  # type: ignore[index]
            elif not srcs and cls != "InputLayer" and (lcfg.get("batch_input_shape") or lcfg.get("batch_shape")):
                ins = [tuple((lcfg.get("batch_input_shape") or lcfg.get("batch_shape"))[1:])]
            out_shapes[name] = output_shape(cls, lcfg, ins)
            if op in _ELEMENTWISE:  # x - 3.0, x * y: the shape of x, unless an operand may broadcast it up
                same = ins and all(i is not None and i == ins[0] for i in ins)
                out_shapes[name] = ins[0] if same and _scalar_constants(lc) else None
            prev = [name]
        return [alias.get(n, n) for n in _output_names(mc, layers)]

    if walk(model_config, None) is None and not classes:
        return None
    return classes, feeds, out_shapes, ops


def _flatten_feeding(name: str, classes: dict[str, Any], feeds: dict[str, list[str]]) -> str | None:
    src = feeds.get(name, [])
    while len(src) == 1 and classes.get(src[0]) in _SKIP_THROUGH:
        src = feeds.get(src[0], [])
    return src[0] if len(src) == 1 and classes.get(src[0]) == "Flatten" else None


def dense_after_flatten(model_config: dict[str, Any] | None) -> dict[str, str]:
    """{Dense layer: the Flatten feeding it} per the config, whether or not the flattened shape is known."""
    g = _graph(model_config, {})
    if g is None:
        return {}
    classes, feeds, _, _ = g
    out = {}
    for name, cls in classes.items():
        flat = _flatten_feeding(name, classes, feeds) if cls == "Dense" else None
        if flat is not None:
            out[name] = flat
    return out


def flatten_shapes(model_config: dict[str, Any] | None, recorded: dict[str, Shape | None]) -> dict[str, Shape]:
    """{dense layer name: pre-Flatten shape (H, W, C)} for every Dense fed (through dropout/activations) by a
    Flatten of a rank >= 2 map. `recorded` holds input shapes the file itself records (Keras 3 build_config)."""
    g = _graph(model_config, recorded)
    if g is None:
        return {}
    classes, feeds, out_shapes, _ = g
    result: dict[str, Shape] = {}
    for name, cls in classes.items():
        if cls != "Dense":
            continue
        flat = _flatten_feeding(name, classes, feeds)
        if flat is not None:
            pre = tuple(recorded[flat][1:]) if recorded.get(flat) else None  # type: ignore[index]
            if pre is None:
                fs = feeds.get(flat, [])
                pre = out_shapes.get(fs[0]) if len(fs) == 1 else None
            if pre is not None and len(pre) >= 2 and all(isinstance(d, int) for d in pre):
                result[name] = pre
    return result


# Layers that keep each feature of a vector where it is (their weights, if any, are one per feature).
_FEATURE_WISE = _SKIP_THROUGH | {
    "Softmax",
    "GaussianDropout",
    "AlphaDropout",
    "SpatialDropout1D",
    "Rescaling",
    "UnitNormalization",
    "BatchNormalization",
    "LayerNormalization",
    "PReLU",
    "Normalization",
    "ActivityRegularization",
    "ThresholdedReLU",
    "Masking",
}
PER_FEATURE = {"BatchNormalization", "LayerNormalization", "PReLU", "Normalization"}
_MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
# Layers whose outputs are new features (or maps), whatever order their inputs came in: a Flatten before
# them says nothing about the rows of a Dense after them.
_FRESH = {
    "InputLayer", "Dense", "EinsumDense", "Embedding", "LSTM", "GRU", "SimpleRNN", "Bidirectional", "RNN",
    "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose",
    "Conv2DTranspose", "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
    "SeparableConv2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "MultiHeadAttention",
}  # fmt: skip
# Layers whose PyTorch counterparts put channels last (nn.Embedding, nn.Linear, batch-first RNNs): a port
# flattens their (..., C) output in TF's own order, while a conv map is channels-first in a port.
_CHANNELS_LAST_OUT = {
    "Embedding", "Dense", "EinsumDense", "LSTM", "GRU", "SimpleRNN", "Bidirectional", "RNN", "TimeDistributed",
    "MultiHeadAttention",
}  # fmt: skip
# Operations that work on each element alone (a tensor operand broadcast): a vector keeps its feature order.
# tf_keras saves them as TFOpLambda layers naming the TF function, Keras 3 as operation nodes by class.
_TF_ELEMENTWISE = {
    "__operators__.add", "math.add", "math.subtract", "math.multiply", "math.truediv", "math.divide",
    "math.pow", "math.maximum", "math.minimum", "math.negative", "math.abs", "math.sqrt", "math.square",
    "math.exp", "math.log", "math.tanh", "math.sigmoid", "nn.sigmoid", "math.erf", "math.rsqrt",
    "math.reciprocal", "math.floor", "math.ceil", "math.sign", "nn.relu", "nn.relu6", "nn.silu", "nn.swish",
    "nn.gelu", "nn.elu", "nn.selu", "nn.leaky_relu", "math.softplus", "nn.softplus", "nn.softsign",
    "math.softsign", "clip_by_value", "cast",
}  # fmt: skip
_KERAS3_ELEMENTWISE = {
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Power", "Maximum", "Minimum", "Negative",
    "Absolute", "Abs", "Sqrt", "Square", "Exp", "Log", "Tanh", "Sigmoid", "Relu", "Relu6", "Silu", "Swish",
    "Gelu", "Softplus", "Softsign", "Elu", "Selu", "Erf", "Rsqrt", "Reciprocal", "Floor", "Ceil", "Sign",
    "Clip", "Cast", "HardSigmoid", "HardSilu", "HardSwish", "LeakyRelu",
}  # fmt: skip
Segment = tuple[Shape | None, int]  # (pre-Flatten (..., C) shape, or None: not from a map; number of features)
UNKNOWN = "unknown"  # a Flatten feeds it, of a shape the config does not tell


_ELEMENTWISE = {f"tf.{f}" for f in _TF_ELEMENTWISE} | {f"keras.ops.{c}" for c in _KERAS3_ELEMENTWISE}
# Layer classes and tf_keras operations (`tf.math.multiply`) after which a vector's features are the same
# features in the same order: what a weights-only file's layer names are checked against (convert.questions).
ORDER_KEEPING = _PASSTHROUGH | _FEATURE_WISE | {"InputLayer"}
ELEMENTWISE_OPS = _ELEMENTWISE


def _scalar_constants(layer_cfg: dict[str, Any]) -> bool:
    """Every non-tensor operand in an operation node's call is a number (or a name, None, a bool)."""

    def ok(obj: Any) -> bool:
        if obj is None or isinstance(obj, (int, float, str, bool)):
            return True
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                return True
            return all(ok(v) for k, v in obj.items() if k in ("args", "kwargs")) if "args" in obj else False
        if isinstance(obj, list) and len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
            return all(ok(v) for v in obj[3].values()) if len(obj) >= 4 and isinstance(obj[3], dict) else True
        return False

    nodes = layer_cfg.get("inbound_nodes")
    if not isinstance(nodes, list) or len(nodes) != 1:
        return False
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        return all(ok(a) for a in node.get("args", [])) and all(ok(v) for v in node.get("kwargs", {}).values())
    if isinstance(node, list) and node and isinstance(node[0], str):  # tf_keras TFOpLambda: ["x", 0, 0, {"y": 3.0}]
        return ok(node)
    return isinstance(node, list) and all(ok(t) for t in node)  # [["x", 0, 0, {}], ...]


def operation(cls: str, layer_cfg: dict[str, Any]) -> str | None:
    """The operation of a tf_keras TFOpLambda (`tf.math.subtract`) or a Keras 3 operation node
    (`keras.ops.Subtract`); None for a layer."""
    cfg = layer_cfg.get("config")
    if cls in ("TFOpLambda", "SlicingOpLambda"):
        fn = cfg.get("function") if isinstance(cfg, dict) else None
        return f"tf.{fn}" if isinstance(fn, str) else "tf.?"
    module = layer_cfg.get("module")
    if isinstance(module, str) and module.startswith("keras.src.ops"):
        return f"keras.ops.{cls}"
    return None


def flatten_segments(
    model_config: dict[str, Any] | None,
    recorded: dict[str, Shape | None],
    channels_last: dict[str, str] | None = None,
) -> dict[str, list[Segment] | str]:
    """{layer: the segments of its input features} for every Dense and per-feature layer (BatchNorm, LayerNorm,
    PReLU, Normalization) whose vector input holds features of a Flatten of a rank >= 2 map, in TF's (H, W, C)
    order: straight, through feature-wise layers, merges and element-wise operations, or as parts of a
    Concatenate. A string where a Flatten feeds it but its order there cannot be worked out: UNKNOWN when the
    flattened shape is not known, else why (the features pass a layer or operation convert cannot follow).
    `channels_last`, if given, receives {layer: why} for those of them fed a Flatten of a map that may come
    from a layer whose PyTorch counterpart outputs channels-last (nn.Embedding, nn.Linear, batch-first RNNs):
    a port flattens such a map as TF does, not NCHW, so no NCHW reordering is determined for them."""
    g = _graph(model_config, recorded)
    if g is None:
        return {}
    classes, feeds, out_shapes, ops = g
    memo: dict[str, list[Segment] | str | None] = {}
    cl_why: dict[str, str] = {}  # node -> why its features include a channels-last map's, flattened
    layout_memo: dict[str, str | None] = {}

    def channels_last_source(name: str, depth: int = 0) -> str | None:
        """The channels-last layer a map may come from, through layers that keep its layout; else None."""
        if name in layout_memo:
            return layout_memo[name]
        layout_memo[name] = None
        cls, srcs = classes.get(name), feeds.get(name, [])
        found: str | None = None
        if depth > 500 or cls is None:
            pass
        elif cls in _CHANNELS_LAST_OUT and name not in ops:
            found = name
        elif (cls in _FEATURE_WISE or cls in _MERGES or ops.get(name) in _ELEMENTWISE) and srcs:
            found = next((f for f in (channels_last_source(s, depth + 1) for s in srcs) if f), None)
        layout_memo[name] = found
        return found

    def segs(name: str, depth: int = 0) -> list[Segment] | str | None:
        if name in memo:
            return memo[name]
        if depth > 500:
            return None
        memo[name] = None  # cycles (malformed configs) end here
        cls, srcs = classes.get(name), feeds.get(name, [])
        shape = out_shapes.get(name)
        out: list[Segment] | str | None = None
        if cls == "Flatten" and len(srcs) == 1:
            pre = tuple(recorded[name][1:]) if recorded.get(name) else out_shapes.get(srcs[0])  # type: ignore[index]
            if pre is not None and len(pre) >= 2 and all(isinstance(d, int) for d in pre):
                out = [(pre, math.prod(pre))]  # type: ignore[arg-type]
                src = channels_last_source(srcs[0])
                if src is not None:
                    cl_why[name] = (
                        f"Flatten `{name}` flattens the {'x'.join(str(d) for d in pre)} output of `{src}` "
                        f"({classes.get(src)}), whose PyTorch counterpart gives it channels-last, as TF holds it"
                    )
            elif pre is not None and len(pre) == 1:
                out = segs(srcs[0], depth + 1)
            else:
                out = UNKNOWN
        elif cls in _FEATURE_WISE and len(srcs) == 1:
            out = segs(srcs[0], depth + 1) if shape is None or len(shape) == 1 else None
        elif (cls in _MERGES or ops.get(name) in _ELEMENTWISE) and srcs:
            parts = [segs(s, depth + 1) for s in srcs]
            out = parts[0] if all(p == parts[0] for p in parts) else (UNKNOWN if any(parts) else None)
        elif cls == "Concatenate" and srcs:
            parts = [segs(s, depth + 1) for s in srcs]
            if any(parts):
                joined: list[Segment] = []
                for s, p in zip(srcs, parts, strict=True):
                    sh = out_shapes.get(s)
                    if isinstance(p, str) or sh is None or len(sh) != 1 or not isinstance(sh[0], int):
                        joined = []
                        break
                    joined += p if isinstance(p, list) else [(None, sh[0])]
                out = joined or UNKNOWN
        elif cls == "Reshape" and len(srcs) == 1 and shape and math.prod(d or 0 for d in shape[:-1]) == 1:
            out = segs(srcs[0], depth + 1)  # (1, ..., 1, n): the vector as it was
        elif (cls not in _FRESH or name in ops) and srcs and cls is not None:
            # A layer or operation convert cannot follow: if a Flatten's features reach it, the rows of a
            # Dense after it may or may not be in the Flatten's order, and only the user or a target can say.
            if any(segs(s, depth + 1) for s in srcs):
                label = ops.get(name) or cls
                what = f"`{name}`" if label == name else f"`{name}` ({label})"  # tf_keras names ops by function
                out = f"they pass {what}, whose effect on the order of the features convert cannot follow"
        if isinstance(out, list) and name not in cl_why:
            why = next((cl_why[s] for s in srcs if s in cl_why), None)
            if why is not None:
                cl_why[name] = why
        memo[name] = out
        return out

    result: dict[str, list[Segment] | str] = {}
    for name, cls in classes.items():
        if cls != "Dense" and cls not in PER_FEATURE:
            continue
        srcs = feeds.get(name, [])
        if len(srcs) != 1:
            continue
        found = segs(srcs[0])
        if isinstance(found, str) or (isinstance(found, list) and any(sh is not None for sh, _ in found)):
            result[name] = found  # type: ignore[assignment]
            if channels_last is not None and isinstance(found, list) and srcs[0] in cl_why:
                channels_last[name] = cl_why[srcs[0]]
    return result
