"""The canonical intermediate every source becomes: ordered Keras-style `layer/var` tensors + layer metadata."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.checkpoint.base import CheckpointReader, TensorInfo, open_checkpoint
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np

ROLES = ("weight", "optimizer", "counter", "ema", "metric", "meta")

_OPTIMIZER = re.compile(
    r"(^|/)(optimizer|optimizer_weights)(/|$)|/\.OPTIMIZER_SLOT/|/(Adam|Adam_1|Momentum|RMSProp|RMSProp_1|Adagrad|"
    r"Adadelta|Adadelta_1|Ftrl|Ftrl_1|adam_m|adam_v)$|(^|/)(beta1_power|beta2_power)$|AdamWeightDecayOptimizer"
)
_COUNTER = re.compile(r"(^|/)(global_step|save_counter|iter|iterations|_iterations)$")
_EMA = re.compile(r"/ExponentialMovingAverage$")
WRITABLE_DTYPES = {
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
}
_ATTRIBUTES = re.compile(r"/\.ATTRIBUTES/[^/]+$")
# Object paths only Keras 3 models produce in TF2 checkpoints (functional _operations, LoRA-ready _kernel).
_KERAS3_PATH = re.compile(r"(^|/)(_operations|_functional|_trainable_variables)/|(^|/)_kernel/\.ATTRIBUTES/")
_ROLE_ALIASES = {"slot": "optimizer"}  # the TF bundle reader's names for roles
_RNN_CELL = re.compile(r"^(.*)/(lstm_cell|gru_cell|simple_rnn_cell|cell)$")
_MODEL_CLASSES = {"Sequential", "Functional", "Model"}
_WRAPPERS = {"Bidirectional", "TimeDistributed", "LSTM", "GRU", "SimpleRNN"}  # weights in sub-layer scopes
_DIRECTION_SCOPE = re.compile(r"^(.+)/(forward|backward)_[^/]+$")


@dataclass
class SourceTensor:
    """One tensor of the source checkpoint under its canonical name."""

    key: str  # canonical Keras-style name: "conv/kernel", "lstm/lstm_cell/bias"
    layer: str  # the layer it belongs to: "conv", "lstm"
    var: str  # last name component: "kernel", "moving_mean"
    shape: tuple[int, ...]
    dtype: str
    role: str  # weight | optimizer | counter | ema | meta
    load: Callable[[], np.ndarray]
    source_key: str = ""  # the key inside the file, when it differs (TF2 object-graph keys)
    ema_of: str | None = None  # for EMA shadows: the canonical name of the weight they shadow
    position: tuple[int, int] | None = None  # (shard, byte offset) in TF bundles: TF writes in model order
    attr: str | None = None  # TF2 checkpoints: the object attribute holding it (`_kernel` vs `kernel`)


@dataclass
class LayerMeta:
    """A layer's class and settings where the source records them (Keras config); None when inferred."""

    name: str
    class_name: str | None
    config: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int | None, ...] | None = None
    class_inferred: bool = False
    stored_as: str | None = None  # the file's scope for this layer's weights when it is not the name
    config_name: str | None = None  # its name in the model config when `name` is a path (nested models)

    @property
    def config_key(self) -> str:
        return self.config_name or self.name


@dataclass
class Canonical:
    path: Path
    format: str
    tensors: dict[str, SourceTensor]  # insertion order = model order
    layers: dict[str, LayerMeta]
    model_config: dict[str, Any] | None = None
    skipped: list[SourceTensor] = field(default_factory=list)  # optimizer/counter/ema left out
    keras3: bool = False  # written by Keras 3 (its Conv and DepthwiseConv2D kernels are both `kernel`)
    model_order: bool = True  # tensors are in model order (False: TF1 name-based bundles, sorted by name)
    # Every layer in model order, weightless ones included ("" for one the file does not name: a TF2
    # checkpoint's `layer-N`), where the file places them (legacy .h5 layer_names, TF2 object graphs); else None.
    sequence: list[str] | None = None
    # Keras 3 weights files list their weightless layers by class (`reshape`, `flatten_1`) but not in order.
    unplaced: list[str] = field(default_factory=list)

    def weights(self) -> list[SourceTensor]:
        return [t for t in self.tensors.values() if t.role == "weight"]


def classify(key: str) -> str:
    """Role of a tensor from its name alone (readers that know better set `extra['role']`)."""
    if key == "_CHECKPOINTABLE_OBJECT_GRAPH":
        return "meta"
    if re.search(r"(^|/)keras_api/metrics/", key):
        return "metric"  # compiled metrics' running state (tf_keras SavedModel): never model weights
    if key.startswith("keras_api/"):
        return "meta"
    key = _ATTRIBUTES.sub("", key)
    if _EMA.search(key):
        return "ema"
    if _COUNTER.search(key):
        return "counter"
    if _OPTIMIZER.search(key):
        return "optimizer"
    return "weight"


def layer_of(key: str) -> str:
    """The layer a TF-named variable belongs to: its scope (RNN cell scopes are folded later)."""
    return key.rsplit("/", 1)[0] if "/" in key else ""


def _reader_layers(reader: CheckpointReader) -> list[Any]:
    layers = getattr(reader, "layers", None)
    return list(layers()) if callable(layers) else []


def _name_of(info: TensorInfo) -> str:
    # TF bundle readers may expose the object graph's full_name (the Keras variable name) separately.
    for k in ("full_name", "name"):
        v = info.extra.get(k)
        if isinstance(v, str) and v:
            return re.sub(r":\d+$", "", v)
    return _ATTRIBUTES.sub("", info.key)


def from_reader(reader: CheckpointReader, include_optimizer: bool = False, ema: bool = False) -> Canonical:
    """Build the canonical intermediate from any reader (Keras readers add class/config per layer)."""
    infos = reader.tensors()
    layers: dict[str, LayerMeta] = {}
    for kl in _reader_layers(reader):
        layers[kl.name] = LayerMeta(
            kl.name, kl.class_name, dict(kl.config or {}), kl.input_shape, stored_as=getattr(kl, "stored_as", None)
        )
    tensors: dict[str, SourceTensor] = {}
    skipped: list[SourceTensor] = []
    moved: set[str] = set()
    names = [_name_of(i) for i in infos]
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    for info, name in zip(infos, names, strict=True):
        given = info.extra.get("role")
        # A reader that knows the roles (object graph, slot references) is trusted; names are the fallback.
        role = _ROLE_ALIASES.get(given, given) if given else classify(info.key)
        if not given and role == "weight" and classify(name) != "weight":
            role = classify(name)
        if role == "meta" or info.dtype in ("string", "object", "variant", "resource"):
            continue
        if counts[name] > 1:
            name = _ATTRIBUTES.sub("", info.key)  # unnamed tf.Variables all share "Variable": use object paths
        ema_of = None
        if role == "ema":
            ema_of = _EMA.sub("", name)
            name = info.key if name == ema_of else name
        layer = info.extra.get("layer") if isinstance(info.extra.get("layer"), str) else layer_of(name)
        scope = layer_of(name)
        wrapper = layer in layers and layers[layer].class_name in _WRAPPERS
        nested = _nested_name(name, layer, info, layers)
        if nested is not None:
            # A nested model (a base model inside a Functional): its inner layers are the real layers, named
            # by their path (`base/conv`), the way a PyTorch port nests modules.
            name, layer, inner = nested
            if layer not in layers:
                layers[layer] = _nested_meta(layer, inner, layers, getattr(reader, "model_config", None))
            moved.add(inner)
        elif scope != layer and not _RNN_CELL.match(scope) and not wrapper and _is_model(layers.get(layer)):
            layer = scope  # a nested model the reader could not split: its inner scopes are its layers
        dtype = info.dtype
        if dtype.startswith("float8"):
            dtype = "float32"  # read() widens float8 exactly; written as float32
        st = SourceTensor(
            key=name,
            layer=layer,
            var=name.rsplit("/", 1)[-1],
            shape=tuple(info.shape),
            dtype=dtype,
            role=role,
            load=_loader(reader, info.key),
            source_key=info.key,
            ema_of=ema_of,
            position=_position(info),
            attr=_ATTRIBUTES.sub("", info.key).rsplit("/", 1)[-1] if _ATTRIBUTES.search(info.key) else None,
        )
        if dtype not in WRITABLE_DTYPES:
            st.role = f"unsupported dtype {dtype}"
            skipped.append(st)
        elif role == "weight" or (role in ("optimizer", "counter") and include_optimizer):
            tensors[name] = st
        elif role == "ema":
            tensors[name] = st  # resolved below
        else:
            skipped.append(st)
    _apply_ema(tensors, skipped, ema)
    _fold_rnn_layers(tensors)
    for inner in moved - {t.layer for t in tensors.values()}:
        layers.pop(inner, None)  # a nested layer the legacy reader listed by its inner name alone
    config = getattr(reader, "model_config", None)
    by_name = _config_by_name(config) if config and not layers else {}
    for t in tensors.values():
        if t.layer not in layers:
            lc = by_name.get(t.layer, {})  # a SavedModel's keras_metadata: classes for the bundle's layers
            cfg = lc.get("config") if isinstance(lc.get("config"), dict) else {}
            layers[t.layer] = LayerMeta(t.layer, lc.get("class_name"), dict(cfg))
    ordered = _order_layers(layers, tensors)
    object_keys = [i.key for i in infos if _ATTRIBUTES.search(i.key)]
    version = str(getattr(reader, "keras_version", None) or "")
    return Canonical(
        path=Path(reader.path),
        format=reader.format,
        tensors=tensors,
        layers=ordered,
        model_config=getattr(reader, "model_config", None),
        skipped=skipped,
        keras3=reader.format == "keras-v3"
        or version.startswith("3")
        or any(_KERAS3_PATH.search(k) for k in object_keys),
        model_order=reader.format != "tf-bundle" or bool(object_keys),
        **_sequence(reader, tensors),
    )


def _sequence(reader: CheckpointReader, tensors: dict[str, SourceTensor]) -> dict[str, Any]:
    """`sequence` / `unplaced` for Canonical: where the file's layers without weights sit."""
    layer_of_key = {t.source_key: t.layer for t in tensors.values()}

    def place(keys: list[str], name: str) -> list[str]:
        # A slot with weights holds their layers (a nested model's, in their order); one without, its name.
        return list(dict.fromkeys(layer_of_key[k] for k in keys if k in layer_of_key)) or [name]

    if reader.format == "keras-h5":
        return {"sequence": [n for kl in _reader_layers(reader) for n in place(kl.weights, kl.name)]}
    if reader.format == "keras-v3":
        return {"unplaced": [kl.group or kl.name for kl in _reader_layers(reader) if not kl.weights]}
    graph = reader.object_graph() if reader.format == "tf-bundle" else None
    if not graph:
        return {}
    from ptools.checkpoint.tf.vars import layer_slots

    slots = layer_slots(graph)
    return {} if slots is None else {"sequence": [n for keys in slots for n in place(keys, "")]}


_K3_NESTED = re.compile(r"^(.*/layers/[^/]+)/(.+)$")


def _nested_name(name: str, layer: str, info: TensorInfo, layers: dict[str, LayerMeta]) -> tuple[str, str, str] | None:
    """(canonical name, layer path, inner layer name) of a weight of a layer inside a nested model, or None.

    Keras 3 files keep the path (`base/layers/conv/kernel`); legacy `.h5` files keep the inner layer's name
    under the nested model's group (`model_weights/base/conv/kernel:0`)."""
    m = _K3_NESTED.match(name)
    if m and "/layers/" in name:
        head, rest = m.group(1), m.group(2)
        # An RNN cell or wrapper below the inner layer stays in the variable path (`lstm/lstm_cell/kernel`).
        path = head.replace("/layers/", "/")
        return f"{path}/{rest}", path, path.rsplit("/", 1)[-1]
    h5_path = info.extra.get("h5_path")
    if isinstance(h5_path, str):
        parts = h5_path.strip("/").split("/")
        parts = parts[1:] if parts and parts[0] == "model_weights" else parts
        group = parts[0] if len(parts) > 2 else None
        meta = layers.get(group or "")
        if group and group != layer and meta is not None and meta.class_name in _MODEL_CLASSES:
            return f"{group}/{name}", f"{group}/{layer}", layer
    return None


def _config_by_name(config: Any) -> dict[str, dict[str, Any]]:
    from ptools.checkpoint.keras.h5 import config_layers_by_name

    return config_layers_by_name(config) if isinstance(config, dict) else {}


def _is_model(meta: LayerMeta | None) -> bool:
    return meta is not None and meta.class_name in _MODEL_CLASSES


def _nested_meta(path: str, inner: str, layers: dict[str, LayerMeta], model_config: Any) -> LayerMeta:
    from ptools.checkpoint.keras.h5 import config_layers_by_name

    known = layers.get(inner)
    if known is not None and known.class_name is not None:
        return LayerMeta(path, known.class_name, known.config, known.input_shape, config_name=inner)
    lc = config_layers_by_name(model_config if isinstance(model_config, dict) else None).get(inner, {})
    cfg = lc.get("config") if isinstance(lc.get("config"), dict) else {}
    return LayerMeta(path, lc.get("class_name"), dict(cfg), config_name=inner)


def _apply_ema(tensors: dict[str, SourceTensor], skipped: list[SourceTensor], ema: bool) -> None:
    """With --ema, an `X/ExponentialMovingAverage` shadow replaces X's value; otherwise shadows are skipped."""
    for key in [k for k, t in tensors.items() if t.role == "ema"]:
        shadow = tensors.pop(key)
        base = shadow.ema_of or _EMA.sub("", key)
        if ema and base in tensors:
            orig = tensors[base]
            orig.load = shadow.load
            orig.source_key = shadow.source_key or shadow.key
        else:
            skipped.append(shadow)


def _fold_rnn_layers(tensors: dict[str, SourceTensor]) -> None:
    """Keras LSTM under TF names (`lstm/lstm_cell/{kernel,recurrent_kernel,bias}`) belongs to layer `lstm`;
    a TF1 `rnn/lstm_cell` (no recurrent_kernel) stays its own layer."""
    by_layer: dict[str, list[SourceTensor]] = {}
    for t in tensors.values():
        by_layer.setdefault(t.layer, []).append(t)
    for layer, ts in by_layer.items():
        m = _RNN_CELL.match(layer)
        if m and any(t.var == "recurrent_kernel" for t in ts):
            for t in ts:
                t.layer = m.group(1)
    # Bidirectional RNNs in TF2 checkpoints: `bilstm/forward_lstm` and `bilstm/backward_lstm` are one layer,
    # `bilstm` (as in .h5 files), whose rule gives the backward weights torch's `_reverse` names.
    halves: dict[str, set[str]] = {}
    for t in tensors.values():
        m = _DIRECTION_SCOPE.match(t.layer)
        if m and t.var in ("kernel", "recurrent_kernel", "bias"):
            halves.setdefault(m.group(1), set()).add(m.group(2))
    for t in tensors.values():
        m = _DIRECTION_SCOPE.match(t.layer)
        if m and halves.get(m.group(1)) == {"forward", "backward"}:
            t.layer = m.group(1)


def _loader(reader: CheckpointReader, key: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        arr = reader.read(key)
        if reader.format == "tf-bundle":
            # Numeric data is a view of the reader's memory map, which is the cheapest source (no fresh
            # pages to zero, no copy). Dropping the reader's cached maps lets this one close once the
            # tensor is written, so touched pages do not pile up in resident memory across tensors.
            reader.close()
        return arr

    return load


def _position(info: TensorInfo) -> tuple[int, int] | None:
    shard, offset = info.extra.get("shard"), info.extra.get("offset")
    if isinstance(shard, int) and isinstance(offset, int):
        return (shard, offset)
    return None


def _order_layers(layers: dict[str, LayerMeta], tensors: dict[str, SourceTensor]) -> dict[str, LayerMeta]:
    """Layers in model order, which order-based matching relies on.

    Keras files list layers in model order. TF bundle keys are sorted by name, which is not model order
    (`layer_with_weights-10` < `-2`; Keras 3 splits a layer between `model/...` and `optimizer/...`), but TF
    writes the data in model order, so a layer's first byte offset orders it.
    """
    first: dict[str, tuple[int, int, int]] = {}
    for i, t in enumerate(tensors.values()):
        pos = (0, *t.position) if t.position is not None else (1, i, 0)
        if t.layer not in first or pos < first[t.layer]:
            first[t.layer] = pos
    if any(t.position is not None for t in tensors.values()):
        sorted_names = sorted(first, key=lambda n: first[n])
        reordered = {k: v for n in sorted_names for k, v in tensors.items() if v.layer == n}
        tensors.clear()
        tensors.update(reordered)
    order: dict[str, LayerMeta] = {}
    for t in tensors.values():
        if t.layer not in order:
            order[t.layer] = layers[t.layer]
    for name, meta in layers.items():
        order.setdefault(name, meta)
    return order


def load_source(
    path: str | Path, include_optimizer: bool = False, ema: bool = False, verify: bool = False
) -> Canonical:
    """Open any supported TF/Keras checkpoint and return its canonical form (the reader stays open)."""
    reader = open_checkpoint(path)
    if verify and hasattr(reader, "verify"):
        reader.verify = True  # TF bundles: check each tensor's CRC32C as it is read
    if reader.format in ("torch-zip", "torch-legacy", "safetensors"):
        raise PtoolsError(f"{path}: already a PyTorch checkpoint ({reader.format}); convert reads TF/Keras files")
    folder = Path(path)
    if reader.format == "tf-bundle" and folder.is_dir() and getattr(reader, "model_config", None) is None:
        from ptools.checkpoint.keras.saved_model import keras_metadata

        meta = keras_metadata(folder)  # a tf_keras SavedModel: its architecture settles layouts as a .h5's does
        if meta is not None:
            reader.model_config, reader.keras_version = meta  # type: ignore[attr-defined]
    return from_reader(reader, include_optimizer=include_optimizer, ema=ema)
