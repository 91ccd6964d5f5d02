"""A Keras model config (Keras 2.0 to 3.x, Sequential or Functional) as a call graph in topological order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptools.errors import PtoolsError

Ref = tuple[str, int, int]  # (layer name, call index, output index): one tensor of the graph

MODEL_CLASSES = {"Functional", "Model", "Sequential"}
# tf_keras wraps a TF function called on Keras tensors (`x / 255.`, `tf.nn.bias_add`) in these layers.
TF_OP_CLASSES = {"TFOpLambda", "SlicingOpLambda"}
_CONSTANT = "_CONSTANT_VALUE"  # tf_keras: a non-tensor first argument of a TFOpLambda


@dataclass(frozen=True)
class TensorArg:
    """Stands for a graph tensor inside an op's arguments: `Call.inputs[index]`."""

    index: int


@dataclass(frozen=True)
class Const:
    """A constant tensor given to an op (`__numpy__`/`__tensor__` in Keras 3, a list in tf_keras)."""

    value: np.ndarray


@dataclass
class Call:
    """One call of a layer (or of a Keras 3 operation / tf_keras TF op): what it consumes and how."""

    layer: str
    class_name: str
    config: dict[str, Any]
    index: int  # the layer's call number (shared layers are called more than once)
    inputs: list[Ref]
    kwargs: dict[str, Any] = field(default_factory=dict)
    tensor_kwargs: list[str] = field(default_factory=list)  # kwargs that carry graph tensors (initial_state, mask)
    op: str | None = None  # "keras" (a keras.ops node) or "tf" (TFOpLambda): an operation, not a layer
    args: list[Any] = field(default_factory=list)  # an op's positional arguments, TensorArg for tensors
    op_kwargs: dict[str, Any] = field(default_factory=dict)  # an op's keyword arguments, TensorArg for tensors
    module: str | None = None  # where Keras finds the class (`keras.src.applications.convnext`), when saved
    kwarg_inputs: dict[str, list[int]] = field(default_factory=dict)  # tensor kwarg -> its indices in inputs


@dataclass
class Graph:
    name: str
    class_name: str
    inputs: list[Ref]
    outputs: list[Ref]
    calls: list[Call]  # topological order, InputLayers first
    input_shapes: dict[str, tuple[int | None, ...]]  # InputLayer name -> shape without the batch axis
    input_dtypes: dict[str, str]
    output_names: list[str] = field(default_factory=list)  # keys of a dict of outputs (Keras 3), else empty


def _layer_name(layer: dict[str, Any]) -> str:
    return str(layer.get("name") or layer.get("config", {}).get("name"))


def _input_shape(cfg: dict[str, Any]) -> tuple[int | None, ...] | None:
    for key in ("batch_shape", "batch_input_shape"):
        shape = cfg.get(key)
        if isinstance(shape, list):
            return tuple(shape[1:])
    return None


def _module(layer: dict[str, Any]) -> str | None:
    m = layer.get("module")
    return m if isinstance(m, str) else None


def is_keras_op(layer: dict[str, Any]) -> bool:
    """Keras 3 writes operations on tensors (`x + 3.0`, `ops.mean`) as graph nodes from keras.src.ops.*;
    their class names (Add, Multiply, Concatenate...) collide with layers, their module does not. Keras 3's
    legacy .h5 writes no module: there an operation is told by its config, which has no `trainable` (every
    layer's has) but only its name and settings, in a Keras 3 (dict) node."""
    module = layer.get("module")
    if isinstance(module, str):
        return module.startswith(("keras.src.ops", "keras.ops"))
    cfg = layer.get("config")
    nodes = layer.get("inbound_nodes") or []
    return (
        isinstance(cfg, dict)
        and "trainable" not in cfg
        and bool(nodes)
        and all(isinstance(n, dict) for n in nodes)
        and layer.get("class_name") not in MODEL_CLASSES
    )


class _Args:
    """Collects the tensors of a node's arguments while replacing them by TensorArg placeholders."""

    def __init__(self) -> None:
        self.refs: list[Ref] = []

    def add(self, ref: Ref) -> TensorArg:
        self.refs.append(ref)
        return TensorArg(len(self.refs) - 1)

    def k3(self, obj: Any) -> Any:
        """Keras 3 node arguments: `__keras_tensor__` entries with a keras_history, constants, slices."""
        if isinstance(obj, dict):
            cls = obj.get("class_name")
            cfg = obj.get("config")
            if cls == "__keras_tensor__":
                name, node, tensor = cfg["keras_history"]
                return self.add((str(name), int(node), int(tensor)))
            if cls in ("__numpy__", "__tensor__"):
                return Const(np.asarray(cfg["value"], dtype=np.dtype(str(cfg.get("dtype") or "float32"))))
            if cls == "__ellipsis__":
                return Ellipsis
            if cls == "__slice__":
                return slice(cfg.get("start"), cfg.get("stop"), cfg.get("step"))
            if cls == "__tuple__" and "items" in obj:
                return [self.k3(v) for v in obj["items"]]
            return {k: self.k3(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.k3(v) for v in obj]
        return obj

    def k2(self, obj: Any) -> Any:
        """tf_keras call kwargs: tensors as [layer, node, tensor] triples, constants as (nested) lists."""
        if _is_ref(obj):
            return self.add((str(obj[0]), int(obj[1]), int(obj[2])))
        if isinstance(obj, dict):
            if obj.get("class_name") == "__ellipsis__":
                return Ellipsis
            if set(obj) <= {"start", "stop", "step"} and obj:  # a slice in a SlicingOpLambda's slice_spec
                return slice(obj.get("start"), obj.get("stop"), obj.get("step"))
            return {k: self.k2(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.k2(v) for v in obj]
        return obj


def _is_ref(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) in (3, 4)
        and isinstance(v[0], str)
        and v[0] != _CONSTANT
        and isinstance(v[1], int)
        and isinstance(v[2], int)
        and not isinstance(v[1], bool)
    )


def _is_entry(v: Any) -> bool:
    """One element of a tf_keras node: [layer, node, tensor(, kwargs)] or [_CONSTANT_VALUE, -1, value(, kwargs)]."""
    return isinstance(v, list) and len(v) in (3, 4) and isinstance(v[0], str)


def _entries(node: Any, layer: dict[str, Any]) -> list[list[Any]]:
    """The [name, node, tensor, kwargs] entries of a tf_keras node, in order, whatever its nesting."""
    if _is_entry(node):
        return [node]
    if isinstance(node, list):
        return [e for v in node for e in _entries(v, layer)]
    raise PtoolsError(f"layer {_layer_name(layer)}: unreadable inbound node {node!r}")


def _first_arg(node: Any, a: _Args) -> Any:
    """A tf_keras node as the layer's first call argument: tensors as TensorArg, constants as values."""
    if _is_entry(node):
        if node[0] == _CONSTANT:
            return Const(np.asarray(node[2])) if isinstance(node[2], list) else node[2]
        return a.add((str(node[0]), int(node[1]), int(node[2])))
    return [_first_arg(x, a) for x in node]


def _parse_nodes(layer: dict[str, Any]) -> list[Call]:
    """Each inbound node of a layer config as a Call (without index and config, filled by the caller)."""
    out = []
    op = "keras" if is_keras_op(layer) else ("tf" if layer.get("class_name") in TF_OP_CLASSES else None)
    for node in layer.get("inbound_nodes") or []:
        a = _Args()
        call = Call(_layer_name(layer), str(layer.get("class_name")), {}, 0, [], op=op, module=_module(layer))
        if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            args = a.k3(node.get("args", []))
            kwargs = {}
            for k, v in (node.get("kwargs") or {}).items():
                before = len(a.refs)
                kwargs[k] = a.k3(v)
                if len(a.refs) > before:
                    call.tensor_kwargs.append(k)
                    call.kwarg_inputs[k] = list(range(before, len(a.refs)))
                elif op is None:
                    call.kwargs[k] = v
            if op is not None:
                call.args, call.op_kwargs = list(args), kwargs
            # Keras 3 writes the `training` default of each call into its node, and a model called for
            # inference (predict, or training=False) overrides it in every layer: not a setting of the layer.
            call.kwargs.pop("training", None)
        elif isinstance(node, list):  # Keras 2: a list (or TF-op structure) of [name, node, tensor, kwargs]
            entries = _entries(node, layer)
            kw: dict[str, Any] = {}
            for e in entries:
                if len(e) > 3 and isinstance(e[3], dict):
                    kw.update(e[3])
            structure = _first_arg(node, a)
            if op is not None:
                # A TF op keeps its first argument's structure: one tensor (the node is one entry) or a list.
                call.args = [structure]
            for k, v in kw.items():
                before = len(a.refs)
                conv = a.k2(v)
                if len(a.refs) > before:
                    call.tensor_kwargs.append(k)
                    call.kwarg_inputs[k] = list(range(before, len(a.refs)))
                elif op is None:
                    call.kwargs[k] = v
                if op is not None:
                    call.op_kwargs[k] = conv
        else:
            raise PtoolsError(f"layer {_layer_name(layer)}: unreadable inbound node {node!r}")
        call.inputs = a.refs
        out.append(call)
    return out


def _ref_list(value: Any) -> tuple[list[Ref], list[str]]:
    """`input_layers`/`output_layers`: [[name, node, tensor], ...], one [name, node, tensor], or (Keras 3) a
    dict of them; with the dict's keys."""
    if isinstance(value, dict):
        refs, names = [], []
        for k, v in value.items():
            r, _ = _ref_list(v)
            refs += r
            names += [str(k)] * len(r)
        return refs, names
    if not isinstance(value, list) or not value:
        return [], []
    if isinstance(value[0], str):
        return [(value[0], int(value[1]), int(value[2]))], []
    refs: list[Ref] = []
    for v in value:
        refs += _ref_list(v)[0]
    return refs, []


def parse_config(
    model_config: dict[str, Any], source: str = "model", input_shapes: list[tuple[int | None, ...]] | None = None
) -> Graph:
    """The call graph of a Keras model config (`config.json` of a `.keras`, `model_config` of an `.h5`, or the
    config of a model nested in another); `input_shapes` (in input order) replace the config's when given."""
    cls = model_config.get("class_name")
    cfg = model_config.get("config")
    if cls not in MODEL_CLASSES:
        raise PtoolsError(f"{source}: the model is a {cls!r}, not a Sequential or Functional model")
    if cls == "Sequential":
        layers = cfg.get("layers", []) if isinstance(cfg, dict) else cfg  # Keras 2.0: a bare list
        name = cfg.get("name", "model") if isinstance(cfg, dict) else "model"
        build_shape = cfg.get("build_input_shape") if isinstance(cfg, dict) else None
        graph = _sequential(layers or [], name, source, build_shape, input_shapes)
    else:
        graph = _functional(cfg, cls, source, input_shapes)
    return graph


def nested_input_shapes(layer_cfg: dict[str, Any]) -> list[tuple[int | None, ...] | None]:
    """The input shapes a nested model's own config declares (None where it does not say)."""
    cfg = layer_cfg.get("config")
    if layer_cfg.get("class_name") == "Sequential":
        layers = cfg.get("layers", []) if isinstance(cfg, dict) else cfg
        if layers:
            first = layers[0]
            if first.get("class_name") in MODEL_CLASSES:
                return nested_input_shapes(first)[:1]
            return [_input_shape(first.get("config", {}))]
        return [None]
    layers = {_layer_name(lc): lc for lc in cfg.get("layers", [])}
    refs, _ = _ref_list(cfg.get("input_layers"))
    return [_input_shape(layers[r[0]].get("config", {})) if r[0] in layers else None for r in refs]


def _sequential(
    layers: list[dict[str, Any]],
    name: str,
    source: str,
    build_shape: Any,
    given: list[tuple[int | None, ...]] | None,
) -> Graph:
    calls: list[Call] = []
    first = layers[0] if layers else None
    if first is None:
        raise PtoolsError(f"{source}: empty Sequential model")
    if first.get("class_name") == "InputLayer":
        in_name = _layer_name(first)
        shape = _input_shape(first.get("config", {}))
        dtype = first.get("config", {}).get("dtype", "float32")
        layers = layers[1:]
    else:  # Keras 2: the first layer carries batch_input_shape; a nested model first: its own input
        in_name = "input_1"
        shape = _input_shape(first.get("config", {}))
        if shape is None and first.get("class_name") in MODEL_CLASSES:
            shape = nested_input_shapes(first)[0]
        if shape is None and isinstance(build_shape, list) and build_shape:
            shape = tuple(build_shape[1:])
        dtype = first.get("config", {}).get("dtype", "float32")
    if given:
        shape = given[0]
    if shape is None:
        raise PtoolsError(f"{source}: the Sequential model has no input shape in its config", hint="build it first")
    calls.append(Call(in_name, "InputLayer", {"name": in_name}, 0, []))
    prev: Ref = (in_name, 0, 0)
    for layer in layers:
        lname = _layer_name(layer)
        if layer.get("class_name") in TF_OP_CLASSES or is_keras_op(layer):
            raise PtoolsError(f"{source}: operation {lname} inside a Sequential model")
        calls.append(Call(lname, layer["class_name"], layer.get("config", {}), 0, [prev], module=_module(layer)))
        prev = (lname, 0, 0)
    dtypes = {in_name: dtype if isinstance(dtype, str) else "float32"}
    return Graph(name, "Sequential", [(in_name, 0, 0)], [prev], calls, {in_name: shape}, dtypes)


def _functional(cfg: dict[str, Any], cls: str, source: str, given: list[tuple[int | None, ...]] | None) -> Graph:
    layers = cfg.get("layers", [])
    calls: list[Call] = []
    input_shapes: dict[str, tuple[int | None, ...]] = {}
    dtypes: dict[str, str] = {}
    inputs, _ = _ref_list(cfg.get("input_layers"))
    outputs, output_names = _ref_list(cfg.get("output_layers"))
    override = {r[0]: s for r, s in zip(inputs, given or [], strict=False)}
    keras3 = False
    for layer in layers:
        lname = _layer_name(layer)
        lcfg = layer.get("config", {})
        if layer.get("class_name") == "InputLayer":
            shape = override.get(lname) or _input_shape(lcfg)
            if shape is None:
                raise PtoolsError(f"{source}: input {lname} has no shape in the config")
            input_shapes[lname] = shape
            dtype = lcfg.get("dtype", "float32")
            dtypes[lname] = dtype if isinstance(dtype, str) else "float32"
            calls.append(Call(lname, "InputLayer", lcfg, 0, []))
            continue
        nodes = layer.get("inbound_nodes") or []
        keras3 = keras3 or any(isinstance(n, dict) for n in nodes)
        for i, call in enumerate(_parse_nodes(layer)):
            call.config, call.index = lcfg, i
            calls.append(call)
    if not outputs:
        raise PtoolsError(f"{source}: the model config lists no outputs")
    classes = {_layer_name(lc): lc for lc in layers}
    _renumber_model_nodes(calls, inputs, outputs, classes, keras3)
    graph = Graph(cfg.get("name", "model"), cls, inputs, outputs, _toposort(calls, source), input_shapes, dtypes)
    graph.output_names = output_names
    return graph


def _skips_first_node(layer_cfg: dict[str, Any], keras3: bool, in_args: bool) -> int:
    """How many nodes of a nested model precede its first call in the config's node numbering.

    A Functional model (and, in Keras 2 / tf_keras, a Sequential built with an input) owns a node linking
    its own inputs to its outputs, which the config leaves out but still counts: tf_keras numbers every
    reference that way; Keras 3 only its `input_layers`/`output_layers`, node arguments count from 0."""
    cls = layer_cfg.get("class_name")
    if cls not in MODEL_CLASSES:
        return 0
    if keras3:
        return 0 if in_args or cls == "Sequential" else 1
    if cls == "Sequential":
        return int(nested_input_shapes(layer_cfg)[0] is not None)
    return 1


def _renumber_model_nodes(
    calls: list[Call], inputs: list[Ref], outputs: list[Ref], classes: dict[str, Any], keras3: bool
) -> None:
    """References to nested models' outputs as indices into their config node lists (see _skips_first_node).
    Where the numbering rule does not fit a reference (another Keras version), the other one is tried."""
    n_nodes: dict[str, int] = {}
    for c in calls:
        n_nodes[c.layer] = max(n_nodes.get(c.layer, 0), c.index + 1)
    for in_args, refs_lists in ((True, [c.inputs for c in calls]), (False, [inputs, outputs])):
        used: dict[str, list[int]] = {}
        for refs in refs_lists:
            for r in refs:
                if classes.get(r[0], {}).get("class_name") in MODEL_CLASSES:
                    used.setdefault(r[0], []).append(r[1])
        skip: dict[str, int] = {}
        for name, idx in used.items():
            n = n_nodes.get(name, 0)
            s = _skips_first_node(classes[name], keras3, in_args)
            if not all(0 <= i - s < n for i in idx) and all(0 <= i - (1 - s) < n for i in idx):
                s = 1 - s
            skip[name] = s
        for refs in refs_lists:
            for j, r in enumerate(refs):
                if r[0] in skip:
                    refs[j] = (r[0], r[1] - skip[r[0]], r[2])


def _toposort(calls: list[Call], source: str) -> list[Call]:
    """Calls ordered so every input is computed first; ties keep the config's order (Keras' own order)."""
    produced: set[tuple[str, int]] = set()
    pending = list(calls)
    ordered: list[Call] = []
    while pending:
        for i, c in enumerate(pending):
            if all((r[0], r[1]) in produced for r in c.inputs):
                ordered.append(c)
                produced.add((c.layer, c.index))
                del pending[i]
                break
        else:
            missing = sorted({f"{r[0]}[{r[1]}]" for c in pending for r in c.inputs if (r[0], r[1]) not in produced})
            raise PtoolsError(
                f"{source}: the model graph references missing or cyclic layers: {', '.join(missing[:5])}"
            )
    return ordered
