"""Roles of TensorFlow checkpoint keys: model weights, optimizer slots, counters and EMA shadows.

TF2 object checkpoints are explained by their TrackableObjectGraph: each key's `full_name`, the slot
references optimizers record, and which objects are reachable from the model without passing through an
optimizer (Keras 3 stores model weights under `optimizer/_trainable_variables/N`, so key paths alone
mislead). TF1 name-based checkpoints are explained by TensorFlow's naming conventions (`kernel/Adam`,
`kernel/Adam_1`, `beta1_power`, `global_step`, `<var>/ExponentialMovingAverage`).
"""

from __future__ import annotations

import re
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ptools.checkpoint.tf.bundle import TFBundleReader, VariableInfo
    from ptools.checkpoint.tf.proto import TrackableNode

EMA_SUFFIX = "/ExponentialMovingAverage"
# TF1 slot suffixes: slot_creator names slots "<var>/<optimizer name>[_k]".
_TF1_SLOT = re.compile(
    r"^(Adam|Nadam|Adamax|AdamW|AdamWeightDecayOptimizer|LAMB|Momentum|RMSProp|Adagrad|AdagradDA|"
    r"ProximalAdagrad|Adadelta|Ftrl|LARS|adam_m|adam_v)(_\d+)?$"
)
_TF1_SLOT_NAMES = {
    "Adam": "m",
    "Adam_1": "v",
    "RMSProp": "rms",
    "RMSProp_1": "momentum",
    "Adadelta": "accum",
    "Adadelta_1": "accum_update",
    "Ftrl": "accum",
    "Ftrl_1": "linear",
    "Momentum": "momentum",
    "Adagrad": "accumulator",
    "adam_m": "m",
    "adam_v": "v",
}
_TF1_OPTIMIZER = re.compile(r"^(.*/)?(beta[12]_power|beta_[12]_power)(_\d+)?$")
_COUNTER_NAMES = {"global_step", "save_counter", "iter", "iteration", "iterations", "_iterations"}
# Keras 3 optimizers with use_ema=True keep the moving average as an "<var>_average" optimizer variable.
_KERAS3_EMA_SLOT = "average"
_ITER_CHILDREN = {"iter", "_iterations", "iterations"}
# tf_keras SavedModels track compiled metrics' running state (total, count, ...) under keras_api/metrics/N.
_METRIC_PATH = re.compile(r"(^|/)keras_api/metrics/")
_LR_CHILDREN = {"learning_rate", "_learning_rate", "lr"}


def _strip(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def classify(reader: TFBundleReader) -> list[VariableInfo]:
    graph = reader.object_graph()
    if graph is None:
        return _classify_tf1(reader)
    return _classify_tf2(reader, graph)


def _info(reader: TFBundleReader, key: str, **kw: object) -> VariableInfo:
    from ptools.checkpoint.tf.bundle import VariableInfo

    return VariableInfo(key=key, shape=tuple(reader.entry(key).shape), dtype=reader.dtype_of(key), **kw)  # type: ignore[arg-type]


# --- TF1 -----------------------------------------------------------------------------------------


def _classify_tf1(reader: TFBundleReader) -> list[VariableInfo]:
    keys = reader.keys()
    present = set(keys)
    out = []
    for key in keys:
        base, _, last = key.rpartition("/")
        if key == "global_step" or last == "global_step":
            out.append(_info(reader, key, name=key, role="counter", path=key))
        elif key.endswith(EMA_SUFFIX) and key[: -len(EMA_SUFFIX)] in present:
            out.append(_info(reader, key, name=key[: -len(EMA_SUFFIX)], role="ema", path=key))
        elif base in present and _TF1_SLOT.match(last):
            slot = _TF1_SLOT_NAMES.get(last, last)
            out.append(_info(reader, key, name=key, role="slot", path=key, slot_of=base, slot_name=slot))
        elif _TF1_OPTIMIZER.match(key):
            out.append(_info(reader, key, name=key, role="optimizer", path=key))
        else:
            out.append(_info(reader, key, name=key, role="weight", path=key))
    return out


# --- TF2 -----------------------------------------------------------------------------------------


def _is_optimizer(node: TrackableNode, local_name: str) -> bool:
    if node.slot_variables or local_name == "optimizer":
        return True
    names = {name for _, name in node.children}
    return bool(names & _ITER_CHILDREN) and bool(names & _LR_CHILDREN)


MAX_PATH = 1024  # characters of an object path; real Keras/TF paths stay under ~200


class _Paths:
    """`path.get(i)`: node i's object path ("model/layer-0/kernel"), "" for the root, None when unreachable
    or longer than MAX_PATH (then the checkpoint key names the variable)."""

    def __init__(self, parent: dict[int, tuple[int, str]]) -> None:
        self._parent = parent

    def __contains__(self, i: int) -> bool:
        return i == 0 or i in self._parent

    def get(self, i: int, default: str | None = None) -> str | None:
        if i == 0:
            return ""
        parts: list[str] = []
        size = 0
        while i != 0:
            step = self._parent.get(i)
            if step is None:
                return default
            i, local = step
            parts.append(local)
            size += len(local) + 1
            if size > MAX_PATH:
                return default
        return "/".join(reversed(parts))


def _classify_tf2(reader: TFBundleReader, graph: list[TrackableNode]) -> list[VariableInfo]:
    n = len(graph)
    if not n:
        from ptools.errors import PtoolsError

        raise PtoolsError(f"{reader.index_path}: corrupt object graph: no root object")

    def valid(i: int) -> bool:
        return 0 <= i < n

    # BFS parents (TF names keys after the path) and which nodes are optimizers. Paths are spelled out
    # only for the nodes asked about, and only up to MAX_PATH characters: a crafted chain of N nodes
    # would otherwise hold N**2 / 2 characters of paths.
    parent: dict[int, tuple[int, str]] = {}
    optimizers: set[int] = set()
    queue = deque([0])
    while queue:
        i = queue.popleft()
        for child, local in graph[i].children:
            if valid(child) and child != 0 and child not in parent:
                parent[child] = (i, local)
                if _is_optimizer(graph[child], local):
                    optimizers.add(child)
                queue.append(child)
    path = _Paths(parent)
    optimizers |= {i for i in range(n) if graph[i].slot_variables}
    # Nodes reachable from the root without going through an optimizer: the model's own state.
    model: set[int] = {0}
    queue = deque([0])
    while queue:
        i = queue.popleft()
        for child, _ in graph[i].children:
            if valid(child) and child not in model and child not in optimizers:
                model.add(child)
                queue.append(child)
    slot_of: dict[int, tuple[int, str]] = {}
    for node in graph:
        for ref in node.slot_variables:
            slot_of[ref.slot_variable_node_id] = (ref.original_variable_node_id, ref.slot_name)

    def node_name(i: int) -> str:
        for attr in graph[i].attributes if valid(i) else []:
            if attr.full_name:
                return _strip(attr.full_name)
        return path.get(i, "")

    by_key: dict[str, tuple[int, str]] = {}
    for i, node in enumerate(graph):
        for attr in node.attributes:
            by_key.setdefault(attr.checkpoint_key, (i, _strip(attr.full_name)))

    weights_by_flat: dict[str, str] = {}  # Keras 3 slot names flatten the weight path: d1/kernel -> d1_kernel
    for i in model:
        for attr in graph[i].attributes:
            if attr.full_name:
                weights_by_flat[_strip(attr.full_name).replace("/", "_")] = _strip(attr.full_name)

    out = []
    for key in reader.keys():
        if key not in by_key:
            continue  # the object graph itself, or keys no object claims
        i, full = by_key[key]
        # Slot variables hang off the optimizer's slot references, not its children: no BFS path.
        obj_path = path.get(i) or key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE")
        name = full or obj_path
        local = obj_path.rpartition("/")[2]
        if i in slot_of:
            orig, slot = slot_of[i]
            out.append(
                _info(reader, key, name=name, role="slot", path=obj_path, slot_of=node_name(orig), slot_name=slot)
            )
        elif i in model or i not in path:
            if _METRIC_PATH.search(obj_path):
                role = "metric"
            elif local in _COUNTER_NAMES or name in ("save_counter", "global_step"):
                role = "counter"
            elif name.endswith(EMA_SUFFIX):
                role = "ema"
                name = name[: -len(EMA_SUFFIX)]
            else:
                role = "weight"
            out.append(_info(reader, key, name=name, role=role, path=obj_path))
        elif local in _COUNTER_NAMES or name.rpartition("/")[2] in _COUNTER_NAMES:
            out.append(_info(reader, key, name=name, role="counter", path=obj_path))
        else:
            weight, slot = _keras3_slot(name, weights_by_flat)
            if weight is not None and slot == _KERAS3_EMA_SLOT:
                out.append(_info(reader, key, name=weight, role="ema", path=obj_path))
            elif weight is not None:
                out.append(_info(reader, key, name=name, role="slot", path=obj_path, slot_of=weight, slot_name=slot))
            else:
                out.append(_info(reader, key, name=name, role="optimizer", path=obj_path))
    return out


def _keras3_slot(name: str, weights_by_flat: dict[str, str]) -> tuple[str | None, str | None]:
    """Keras 3 optimizer variables are named '<optimizer>/<flattened weight path>_<slot>'."""
    tail = name.partition("/")[2] if "/" in name else name
    best = None
    for flat, weight in weights_by_flat.items():
        if tail.startswith(flat + "_") and (best is None or len(flat) > len(best[0])):
            best = (flat, weight)
    if best is None:
        return None, None
    return best[1], tail[len(best[0]) + 1 :]


# --- selection -----------------------------------------------------------------------------------


def select(variables: list[VariableInfo], include_optimizer: bool, ema: bool) -> list[VariableInfo]:
    """Weights (EMA shadows swapped in with `ema`), plus optimizer state with `include_optimizer`."""
    shadows = {v.name: v for v in variables if v.role == "ema"} if ema else {}
    out = []
    for v in variables:
        if v.role == "ema":
            continue
        if v.role == "weight":
            out.append(shadows.get(v.name, v))
        elif include_optimizer:
            out.append(v)
    return out


_LAYER_CHILD = re.compile(r"^layer-([0-9]+)$")


def layer_slots(graph: list[TrackableNode]) -> list[list[str]] | None:
    """The model's layers in model order, each as the checkpoint keys of the variables beneath it (empty for a
    layer without weights), or None when the graph holds no Keras layer list.

    tf_keras tracks a model's layers as `layer-N` children (those with weights also as `layer_with_weights-M`),
    Keras 3 as `_operations/N`; both number them in `model.layers` order, weightless layers included, which is
    how a reader learns what sits between two weighted layers. The first list found from the root is the
    model's own; the walk above it and each node below is claimed once, so it stays linear and a child that
    points back up cannot pull the model into a layer.
    """
    n = len(graph)
    seen, queue, done = {0}, deque([0]), set()
    found: list[int] | None = None
    while queue and found is None:
        i = queue.popleft()
        done.add(i)
        layers = sorted((int(m.group(1)), c) for c, name in graph[i].children if (m := _LAYER_CHILD.match(name)))
        ops = [c for c, name in graph[i].children if name == "_operations" and 0 <= c < n]
        if layers:
            found = [c for _, c in layers]
        elif ops:
            done.add(ops[0])
            digits = [(int(name), c) for c, name in graph[ops[0]].children if name.isascii() and name.isdigit()]
            found = [c for _, c in sorted(digits)]
        for c, name in graph[i].children:
            if 0 <= c < n and c not in seen and not _is_optimizer(graph[c], name):
                seen.add(c)
                queue.append(c)
    if not found:
        return None
    claimed = done
    slots = []
    for root in found:
        keys: list[str] = []
        stack = [root] if 0 <= root < n and root not in claimed else []
        claimed.update(stack)
        while stack:
            i = stack.pop()
            keys += [a.checkpoint_key for a in graph[i].attributes]
            for c, name in graph[i].children:
                if 0 <= c < n and c not in claimed and not _is_optimizer(graph[c], name):
                    claimed.add(c)
                    stack.append(c)
        slots.append(keys)
    return slots
