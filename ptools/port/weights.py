"""The stored weights of a Keras file, found by the path of their layer through nested models."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ptools.checkpoint.keras.h5 import to_snake_case
from ptools.errors import PtoolsError
from ptools.port.layers import Weights

Path = tuple[str, ...]  # layer names from the top model down: ("dense",), ("mobilenetv2", "block_1_expand")


class FileWeights:
    """Each layer's arrays in its variable order, keyed by the layer's path.

    The three families keep nested models' weights differently: a Keras 3 file under the whole path
    (`layers/functional/layers/conv2d/vars/0`, the names in each `vars` group's `name` attribute), a legacy
    `.h5` in the group of the top-level layer under the innermost layer's name (`model_weights/base/Conv1/
    kernel:0`), a tf_keras SavedModel by the innermost layer's name alone (`Conv1/kernel`). A lookup tries
    the most specific key first; a key that two layers of the model would both take is refused.
    """

    def __init__(self, arrays: dict[Path, Weights], scheme: str) -> None:
        self.arrays = arrays
        self.scheme = scheme  # "path" (Keras 3), "top_leaf" (legacy h5), "leaf" (SavedModel)
        self.taken: dict[Path, Path] = {}  # stored key -> the layer path that took it
        self.partly: dict[Path, set[int]] = {}  # stored key -> entries taken by inner layers (Keras 3 .h5)

    def candidates(self, path: Path, groups: Path | None = None) -> list[Path]:
        if self.scheme == "path":
            out = [path]
            if groups is not None and groups != path:
                out.append(groups)  # Keras 3 without `name` attributes: the h5 group names
            return out
        if self.scheme == "top_leaf":
            return [path] if len(path) == 1 else [(path[0], path[-1])]
        return [path[-1:]]

    def get(self, path: Path, groups: Path | None = None) -> Weights | None:
        for key in self.candidates(path, groups):
            if key in self.arrays:
                other = self.taken.get(key)
                if other is not None and other != path:
                    raise PtoolsError(
                        f"layers {'/'.join(other)} and {'/'.join(path)} both match the weights stored as "
                        f"{'/'.join(key)}: which belongs to which is not determined by the file"
                    )
                self.taken[key] = path
                return self.arrays[key]
        if self.scheme == "top_leaf" and len(path) > 1 and path[:1] in self.arrays:
            return self._inner(path)
        return None

    def _inner(self, path: Path) -> Weights | None:
        """Keras 3's legacy .h5 keeps a nested model's weights in its group under their whole path
        (`stem/stem_conv/kernel`): the entries of the top-level group whose path holds the layer's name."""
        entries = self.arrays[path[:1]]
        leaf = path[-1]
        picked = [i for i, (var, _) in enumerate(entries) if var.startswith(leaf + "/") or f"/{leaf}/" in var]
        if not picked:
            return None
        taken = self.partly.setdefault(path[:1], set())
        if taken & set(picked):
            raise PtoolsError(f"weights of {'/'.join(path[:1])} match {'/'.join(path)} and another layer")
        taken |= set(picked)
        return [(entries[i][0].split(f"{leaf}/", 1)[1], entries[i][1]) for i in picked]

    def unused(self) -> list[str]:
        out = []
        for k, entries in self.arrays.items():
            if k in self.taken:
                continue
            if k in self.partly and len(self.partly[k]) == len(entries):
                continue
            out.append("/".join(k))
        return out


def from_reader(reader: Any) -> FileWeights:
    """Group a KerasReader's tensors by layer path (see FileWeights); the path kept with each array tells
    Bidirectional's forward and backward halves apart."""
    infos = [t for t in reader.tensors() if t.extra.get("role") == "weight"]
    keras3 = getattr(reader, "format", "") == "keras-v3"
    arrays: dict[Path, Weights] = {}
    for info in infos:
        top = str(info.extra.get("layer"))
        h5_path = str(info.extra.get("h5_path", info.key))
        if keras3:
            rest = info.key[len(top) + 1 :] if info.key.startswith(top + "/") else info.key
            path: Path = (top,)
            while rest.startswith("layers/") and rest.count("/") >= 2:
                seg, rest = rest[len("layers/") :].split("/", 1)
                path += (seg,)
            var = rest
        else:
            group = str(info.extra.get("h5_group", top))  # the legacy .h5 group of the top-level layer
            path = (top,) if group == top else (group, top)
            var = info.key[len(top) + 1 :] if info.key.startswith(top + "/") else h5_path
        arrays.setdefault(path, []).append((var, np.asarray(reader.read(info.key))))
    return FileWeights(arrays, "path" if keras3 else "top_leaf")


def keras3_group_names(layers: list[tuple[str, str]]) -> dict[str, str]:
    """Keras 3 names the h5 group of each layer of a model after its class, numbered in model order
    (`conv2d`, `conv2d_1`); InputLayers and operations have none. `layers`: (name, class) in config order."""
    counts: dict[str, int] = {}
    out: dict[str, str] = {}
    for name, cls in layers:
        base = to_snake_case(cls)
        n = counts.get(base, 0)
        counts[base] = n + 1
        out[name] = base if n == 0 else f"{base}_{n}"
    return out


_LAYER_EDGE = re.compile(r"layer-(\d+)")
# Children of a layer object that list variables a second time (or belong to other objects).
_NOT_OWN = re.compile(
    r"layer-\d+|layer_with_weights-\d+|variables|trainable_variables|non_trainable_variables|"
    r"trainable_weights|non_trainable_weights|weights|keras_api|_random_generator|regularization_losses"
)
_MAX_DEPTH = 6  # layer -> forward_layer -> cell -> kernel; deeper object paths are not Keras layers' own


def from_saved_model(reader: Any, model_config: dict[str, Any]) -> FileWeights | None:
    """A tf_keras SavedModel's weights by layer path, through the object graph: tf_keras tracks a model's
    layers as children `layer-N` (its Functional config's layers in order, a Sequential's without the
    InputLayer), and a layer's variables as its own children (`kernel`, `cell/kernel`), in creation
    order, which is Keras' variable order. Names (`conv/kernel`) are not used: adapted layers' variables
    have none (`mean`), and nested models repeat them. None when the graph has no `layer-N` children."""
    graph = reader.object_graph()
    if not graph or not any(_LAYER_EDGE.fullmatch(local) for _, local in graph[0].children):
        return None
    keys: dict[int, str] = {}
    for i, node in enumerate(graph):
        for attr in node.attributes:
            if attr.name == "VARIABLE_VALUE":
                keys.setdefault(i, attr.checkpoint_key)
    arrays: dict[Path, Weights] = {}
    seen: set[int] = set()

    def layer_vars(i: int, prefix: str, depth: int, out: Weights) -> None:
        for child, local in graph[i].children:
            if _NOT_OWN.fullmatch(local) or child in seen or not 0 <= child < len(graph) or depth > _MAX_DEPTH:
                continue
            seen.add(child)
            if child in keys:
                out.append((prefix + local, np.asarray(reader.read(keys[child]))))
            layer_vars(child, f"{prefix}{local}/", depth + 1, out)

    def walk(i: int, cfg: dict[str, Any], path: Path, depth: int) -> None:
        layers = _checkpoint_layers(cfg)
        for child, local in graph[i].children:
            m = _LAYER_EDGE.fullmatch(local)
            if not m or not 0 <= child < len(graph) or depth > 16:
                continue
            n = int(m.group(1))
            if n >= len(layers):
                raise PtoolsError(f"object graph: {'/'.join(path) or 'the model'} has no layer {n} in its config")
            lcfg = layers[n]
            name = str(lcfg.get("config", {}).get("name", lcfg.get("name")))
            if _checkpoint_layers(lcfg):
                walk(child, lcfg, (*path, name), depth + 1)
                continue
            ws: Weights = []
            layer_vars(child, "", 0, ws)
            if ws:
                arrays[(*path, name)] = ws

    walk(0, model_config, (), 0)
    return FileWeights(arrays, "path")


def _checkpoint_layers(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """A model config's layers as tf_keras numbers them in a checkpoint ([] for a layer that is no model)."""
    inner = cfg.get("config")
    if cfg.get("class_name") not in ("Functional", "Model", "Sequential"):
        return []
    layers = inner.get("layers", []) if isinstance(inner, dict) else inner
    if not isinstance(layers, list):
        return []
    if cfg.get("class_name") == "Sequential" and layers and layers[0].get("class_name") == "InputLayer":
        return layers[1:]
    return layers
