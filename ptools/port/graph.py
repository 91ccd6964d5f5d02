"""A Keras model config (Keras 2.0 to 3.x, Sequential or Functional) as a call graph in topological order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ptools.errors import PtoolsError

Ref = tuple[str, int, int]  # (layer name, call index, output index): one tensor of the graph

MODEL_CLASSES = {"Functional", "Model", "Sequential"}


@dataclass
class Call:
    """One call of a layer: what it consumes and with which keyword arguments."""

    layer: str
    class_name: str
    config: dict[str, Any]
    index: int  # the layer's call number (shared layers are called more than once)
    inputs: list[Ref]
    kwargs: dict[str, Any] = field(default_factory=dict)
    tensor_kwargs: list[str] = field(default_factory=list)  # kwargs that carry graph tensors (initial_state, mask)


@dataclass
class Graph:
    name: str
    class_name: str
    inputs: list[Ref]
    outputs: list[Ref]
    calls: list[Call]  # topological order, InputLayers first
    input_shapes: dict[str, tuple[int | None, ...]]  # InputLayer name -> shape without the batch axis
    input_dtypes: dict[str, str]


def _layer_name(layer: dict[str, Any]) -> str:
    return str(layer.get("name") or layer.get("config", {}).get("name"))


def _input_shape(cfg: dict[str, Any]) -> tuple[int | None, ...] | None:
    for key in ("batch_shape", "batch_input_shape"):
        shape = cfg.get(key)
        if isinstance(shape, list):
            return tuple(shape[1:])
    return None


def _refs_k3(obj: Any, out: list[Ref]) -> None:
    """Keras 3 node args: nested lists/dicts holding `__keras_tensor__` entries with a keras_history."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            name, node, tensor = obj["config"]["keras_history"]
            out.append((str(name), int(node), int(tensor)))
            return
        for v in obj.values():
            _refs_k3(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _refs_k3(v, out)


def _parse_nodes(layer: dict[str, Any]) -> list[tuple[list[Ref], dict[str, Any], list[str]]]:
    """Each inbound node as (input refs, plain kwargs, names of kwargs that hold tensors)."""
    nodes = []
    for node in layer.get("inbound_nodes") or []:
        if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            refs: list[Ref] = []
            _refs_k3(node.get("args", []), refs)
            kwargs, tensor_kwargs = {}, []
            for k, v in (node.get("kwargs") or {}).items():
                found: list[Ref] = []
                _refs_k3(v, found)
                if found:
                    tensor_kwargs.append(k)
                    refs += found
                else:
                    kwargs[k] = v
            nodes.append((refs, kwargs, tensor_kwargs))
        elif isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
            refs, kwargs = [], {}
            for entry in node:
                refs.append((str(entry[0]), int(entry[1]), int(entry[2])))
                if len(entry) > 3 and isinstance(entry[3], dict):
                    kwargs.update(entry[3])
            tensor_kwargs = [k for k, v in kwargs.items() if _looks_like_ref(v)]
            nodes.append((refs, {k: v for k, v in kwargs.items() if k not in tensor_kwargs}, tensor_kwargs))
        else:
            raise PtoolsError(f"layer {_layer_name(layer)}: unreadable inbound node {node!r}")
    return nodes


def _looks_like_ref(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and isinstance(v[0], (list, str))


def _ref_list(value: Any) -> list[Ref]:
    """`input_layers`/`output_layers`: [[name, node, tensor], ...] or a single [name, node, tensor]."""
    if not isinstance(value, list) or not value:
        return []
    if isinstance(value[0], str):
        return [(value[0], int(value[1]), int(value[2]))]
    return [(str(v[0]), int(v[1]), int(v[2])) for v in value]


def parse_config(model_config: dict[str, Any], source: str = "model") -> Graph:
    """The call graph of a Keras model config (`config.json` of a `.keras`, `model_config` of an `.h5`)."""
    cls = model_config.get("class_name")
    cfg = model_config.get("config")
    if cls not in MODEL_CLASSES:
        raise PtoolsError(f"{source}: the model is a {cls!r}, not a Sequential or Functional model")
    if cls == "Sequential":
        layers = cfg.get("layers", []) if isinstance(cfg, dict) else cfg  # Keras 2.0: a bare list
        name = cfg.get("name", "model") if isinstance(cfg, dict) else "model"
        return _sequential(layers or [], name, source)
    return _functional(cfg, cls, source)


def _sequential(layers: list[dict[str, Any]], name: str, source: str) -> Graph:
    calls: list[Call] = []
    input_shapes: dict[str, tuple[int | None, ...]] = {}
    dtypes: dict[str, str] = {}
    first = layers[0] if layers else None
    if first is None:
        raise PtoolsError(f"{source}: empty Sequential model")
    if first.get("class_name") == "InputLayer":
        in_name = _layer_name(first)
        shape = _input_shape(first.get("config", {}))
        dtype = first.get("config", {}).get("dtype", "float32")
        layers = layers[1:]
    else:  # Keras 2: the first layer carries batch_input_shape
        in_name = "input_1"
        shape = _input_shape(first.get("config", {}))
        dtype = first.get("config", {}).get("dtype", "float32")
    if shape is None:
        raise PtoolsError(f"{source}: the Sequential model has no input shape in its config", hint="build it first")
    input_shapes[in_name] = shape
    dtypes[in_name] = dtype if isinstance(dtype, str) else "float32"
    calls.append(Call(in_name, "InputLayer", {"name": in_name}, 0, []))
    prev: Ref = (in_name, 0, 0)
    for layer in layers:
        lname = _layer_name(layer)
        calls.append(Call(lname, layer["class_name"], layer.get("config", {}), 0, [prev]))
        prev = (lname, 0, 0)
    return Graph(name, "Sequential", [(in_name, 0, 0)], [prev], calls, input_shapes, dtypes)


def _functional(cfg: dict[str, Any], cls: str, source: str) -> Graph:
    layers = cfg.get("layers", [])
    calls: list[Call] = []
    input_shapes: dict[str, tuple[int | None, ...]] = {}
    dtypes: dict[str, str] = {}
    for layer in layers:
        lname = _layer_name(layer)
        lcfg = layer.get("config", {})
        if layer.get("class_name") == "InputLayer":
            shape = _input_shape(lcfg)
            if shape is None:
                raise PtoolsError(f"{source}: input {lname} has no shape in the config")
            input_shapes[lname] = shape
            dtype = lcfg.get("dtype", "float32")
            dtypes[lname] = dtype if isinstance(dtype, str) else "float32"
            calls.append(Call(lname, "InputLayer", lcfg, 0, []))
            continue
        for i, (refs, kwargs, tkw) in enumerate(_parse_nodes(layer)):
            calls.append(Call(lname, layer["class_name"], lcfg, i, refs, kwargs, tkw))
    inputs = _ref_list(cfg.get("input_layers"))
    outputs = _ref_list(cfg.get("output_layers"))
    if not outputs:
        raise PtoolsError(f"{source}: the model config lists no outputs")
    return Graph(cfg.get("name", "model"), cls, inputs, outputs, _toposort(calls, source), input_shapes, dtypes)


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
