"""Keras weight files without TensorFlow: legacy `.h5`, Keras 3 `.weights.h5` and `.keras` archives (h5py).

Every tensor gets a Keras-style key `layer/var` (`conv/kernel`, `lstm/lstm_cell/bias`), the same names a
TF2 object graph or a tf.keras `.h5` uses, so the converter treats all sources alike. Keras 3 files store
only ordinal variable indices (`layers/conv2d/vars/0`), so names come from the layer class (config.json
or the group name) and the class's documented variable order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.checkpoint._text import oneline
from ptools.checkpoint.base import CheckpointReader, TensorInfo
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# config.json / metadata.json / the model_config attribute: a ResNet-152 config is ~0.5 MB. Larger ones
# are refused before they are inflated or parsed (a zip member can claim any size, and expand 1000x).
MAX_CONFIG_BYTES = 16 << 20
MIB = 1 << 20

# Variables in `_trainable_variables + _non_trainable_variables` order (Layer.save_own_variables).
_CONV = ["kernel", "bias"]
VAR_NAMES: dict[str, list[str]] = {
    "Conv1D": _CONV,
    "Conv2D": _CONV,
    "Conv3D": _CONV,
    "Conv1DTranspose": _CONV,
    "Conv2DTranspose": _CONV,
    "Conv3DTranspose": _CONV,
    "Dense": _CONV,
    "DepthwiseConv1D": ["depthwise_kernel", "bias"],
    "DepthwiseConv2D": ["depthwise_kernel", "bias"],
    "SeparableConv1D": ["depthwise_kernel", "pointwise_kernel", "bias"],
    "SeparableConv2D": ["depthwise_kernel", "pointwise_kernel", "bias"],
    "BatchNormalization": ["gamma", "beta", "moving_mean", "moving_variance"],
    "LayerNormalization": ["gamma", "beta"],
    "GroupNormalization": ["gamma", "beta"],
    "Embedding": ["embeddings"],
    "PReLU": ["alpha"],
    "Normalization": ["mean", "variance", "count"],
    "LSTMCell": ["kernel", "recurrent_kernel", "bias"],
    "GRUCell": ["kernel", "recurrent_kernel", "bias"],
    "SimpleRNNCell": ["kernel", "recurrent_kernel", "bias"],
}
_RNN_CELLS = {"LSTM": "LSTMCell", "GRU": "GRUCell", "SimpleRNN": "SimpleRNNCell"}
_RNN_LAYERS = ["LSTM", "GRU", "SimpleRNN"]


def to_snake_case(name: str) -> str:
    """Keras 3's group naming: `Conv2DTranspose` -> `conv2d_transpose`, `ReLU` -> `re_lu`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


_SNAKE_TO_CLASS = {to_snake_case(c): c for c in [*VAR_NAMES, *_RNN_LAYERS, "Bidirectional", "TimeDistributed"]}


@dataclass
class KerasLayer:
    """One layer as the file describes it: its class and settings (when a config is present)."""

    name: str
    class_name: str | None
    config: dict[str, Any] = field(default_factory=dict)
    weights: list[str] = field(default_factory=list)  # tensor keys, in the layer's variable order
    input_shape: tuple[int | None, ...] | None = None  # from build_config / inbound keras tensors
    # var path inside the layer ("kernel", "lstm_cell/kernel", "moving_mean") -> tensor key
    variables: dict[str, str] = field(default_factory=dict)
    # The scope the file stores the weights under when it is not the layer name (Keras 2.0: `conv2d_1_1`).
    stored_as: str | None = None
    # Keras 3 files: the layer's group under `layers/`, its class in snake case (`reshape_1`) whatever its name.
    group: str | None = None


@dataclass(frozen=True)
class WeightRef:
    """Where one stored legacy-h5 weight belongs: `layer` (a config layer name when there is a config) and the
    variable path inside it, `var` ("kernel", "lstm_cell/kernel"); `stored` is the name as written in the file."""

    group: str  # the h5 layer group (an entry of layer_names)
    stored: str  # the weight name as stored, e.g. "conv2d_1_1/kernel:0"
    layer: str
    var: str


MODEL_CLASSES = {"Sequential", "Functional", "Model"}


def config_layers_by_name(model_config: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Every layer config in a model config by name, nested models' inner layers included."""
    out: dict[str, dict[str, Any]] = {}

    def walk(cfg: dict[str, Any] | None) -> None:
        for lc in _config_layers(cfg):
            name = lc.get("config", {}).get("name", lc.get("name"))
            if isinstance(name, str):
                out.setdefault(name, lc)
            if _is_model_config(lc):
                walk(lc)

    walk(model_config)
    return out


def _is_model_config(layer_cfg: dict[str, Any]) -> bool:
    inner = layer_cfg.get("config")
    return layer_cfg.get("class_name") in MODEL_CLASSES or (
        isinstance(inner, (dict, list)) and bool(_config_layers(layer_cfg))
    )


def _scope_suffix_of(scope: str, layer: str) -> bool:
    """`conv2d_1_1` is `conv2d_1` under a TF name-scope uniquifying suffix (Keras 2.0-era files)."""
    return scope == layer or re.fullmatch(re.escape(layer) + r"_\d+", scope) is not None


def associate_legacy_weights(
    layer_names: list[str], weight_names: dict[str, list[str]], model_config: dict[str, Any] | None
) -> list[WeightRef]:
    """Which layer (and which variable of it) each weight of a legacy Keras `.h5` belongs to.

    Works across the naming schemes of Keras 2.0-2.15, tf_keras and Keras 3's legacy writer, which all put
    a layer's weights in the h5 group named after the layer but name the weights differently:
    `conv/kernel:0` (Keras 2.x, tf_keras), `conv/kernel` (Keras 3), `conv2d_1_1/kernel:0` (Keras 2.0.x,
    whose TF name scopes got a uniquifying `_1`, so the scope is not the layer name). Matching weight
    scopes to config names would lose the `_1` files; the group is what Keras itself loads by. So the
    weights of group L are L's own, var = the name after the first scope, unless L is a nested model
    (config class Sequential/Functional/Model, or, without a config, weights whose scopes are not L's):
    then each weight belongs to the inner layer its scope names (a `_N` suffix resolved against the
    inner config names).
    """
    configs = config_layers_by_name(model_config)
    refs: list[WeightRef] = []
    for group in layer_names:
        names = weight_names.get(group, [])
        cleaned = [_strip_suffix(w) for w in names]
        scopes = [_weight_scope(c, group) for c in cleaned]
        cfg = configs.get(group)
        if cfg is not None:
            nested = _is_model_config(cfg)
        else:
            nested = any(not _scope_suffix_of(s, group) for s in scopes)
        for stored, clean, scope in zip(names, cleaned, scopes, strict=True):
            var = clean[len(scope) + 1 :] if clean.startswith(scope + "/") else clean
            if not nested:
                refs.append(WeightRef(group, stored, group, var))
                continue
            owner = scope
            if scope not in configs:
                base = re.sub(r"_\d+$", "", scope)
                if base in configs and base != group:
                    owner = base
            refs.append(WeightRef(group, stored, owner, var))
    return refs


def _weight_scope(name: str, group: str) -> str:
    """The scope of a stored weight name (`conv/kernel` -> `conv`). A layer name may hold "/" (tf_keras'
    MobileNetV3: "Conv/BatchNorm", weights "Conv/BatchNorm/gamma:0"): a name under the whole group name is
    the group's own."""
    if name.startswith(group + "/"):
        return group
    return name.split("/", 1)[0] if "/" in name else group


def _require_h5py(path: Path | str | None = None) -> Any:
    try:
        import h5py
    except ImportError:
        from ptools import install_hint

        where = f"{path}: " if path is not None else ""
        raise PtoolsError(
            f"{where}reading Keras .h5/.keras files needs h5py, which is not installed", hint=install_hint("keras")
        ) from None
    return h5py


def _attr_list(group: Any, name: str) -> list[str] | None:
    """A string-list attribute, joining Keras' chunked form (`name0`, `name1`, ... for attrs > 64 KB)."""
    if name in group.attrs:
        values = list(group.attrs[name])
    elif f"{name}0" in group.attrs:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values.extend(group.attrs[f"{name}{i}"])
            i += 1
    else:
        return None
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _strip_suffix(name: str) -> str:
    return re.sub(r":\d+$", "", name)


def _snake_class(group_name: str) -> str | None:
    base = re.sub(r"_\d+$", "", group_name)
    return _SNAKE_TO_CLASS.get(base) or _SNAKE_TO_CLASS.get(group_name)


def _config_layers(model_config: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not model_config:
        return []
    cfg = model_config.get("config", {})
    layers = cfg.get("layers", []) if isinstance(cfg, dict) else cfg
    return [layer for layer in layers if isinstance(layer, dict)]


def _input_shape(layer_cfg: dict[str, Any]) -> tuple[int | None, ...] | None:
    bc = layer_cfg.get("build_config") or {}
    shape = bc.get("input_shape")
    if isinstance(shape, list) and shape and all(d is None or isinstance(d, int) for d in shape):
        return tuple(shape)
    return None


class KerasReader(CheckpointReader):
    """Legacy `.h5`, Keras 3 `.weights.h5` or `.keras` zip, read through h5py (file-like for the zip)."""

    pickles: Any = None  # ScanResult of the pickles PyTables would load (hdf5_pickles)

    def __init__(self, path: Path, *, probe: bool = True) -> None:
        super().__init__(path)
        _require_h5py(path)
        self._zip: zipfile.ZipFile | None = None
        self._h5: Any = None
        self.model_config: dict[str, Any] | None = None
        self.keras_version: str | None = None
        self._file_size = _file_size(path)
        self._datasets: dict[str, Any] = {}  # key -> h5py dataset (once the file is open here)
        self._infos: list[TensorInfo] = []
        self._layers: list[KerasLayer] = []
        # key -> (file, byte offset, nbytes) of a contiguous, unfiltered dataset: read without HDF5
        self._locations: dict[str, tuple[str, int, int] | None] = {}
        self._container = "hdf5"
        state = probe_hdf5(path) if probe else None
        if state is not None:
            self._restore(state)  # the child indexed the file: this process never parses its HDF5 structure
        else:
            self._open()

    def _open(self) -> None:
        """Open the HDF5 structure here and index it (the probe child does this, or a platform without fork)."""
        h5py = _require_h5py(self.path)
        path = self.path
        self._infos, self._layers, self._datasets = [], [], {}
        try:
            if zipfile.is_zipfile(path):
                self._zip = zipfile.ZipFile(path)
                self._container = "zip"
                names = set(self._zip.namelist())
                if "model.weights.h5" not in names:
                    hint = "saved with weights_format='npz'?" if "model.weights.npz" in names else None
                    raise PtoolsError(f"{path}: .keras archive without model.weights.h5", hint=hint)
                if "config.json" in names:
                    self.model_config = _parse_config(path, "config.json", _read_small(path, self._zip, "config.json"))
                if "metadata.json" in names:
                    meta = _parse_config(path, "metadata.json", _read_small(path, self._zip, "metadata.json"))
                    version = meta.get("keras_version") if isinstance(meta, dict) else None
                    self.keras_version = version if isinstance(version, str) else None
                weights = _weights_member(path, self._zip)  # size checked before anything is inflated
                self._member = weights
                _check_member_crc(path, self._zip, "model.weights.h5")
                self._h5 = h5py.File(weights, "r")
                self.format = "keras-v3"
            elif _is_shard_index(path):
                self._h5 = _open_shards(path, h5py)
                self.format = "keras-v3"
            else:
                self._h5 = h5py.File(path, "r")
        except PtoolsError:
            self.close()
            raise
        except MemoryError:
            self.close()
            raise
        except Exception as e:  # noqa: BLE001 - h5py raises RuntimeError, KeyError, ... on damaged files
            self.close()
            raise PtoolsError(f"{path}: corrupt or unreadable Keras file ({oneline(e)})") from None
        try:
            from ptools.checkpoint.keras.hdf5_pickles import scan_hdf5

            # Pickles PyTables would load from this file (attributes, object VLArrays), graded first.
            self.pickles = scan_hdf5(self._h5, max(4 * self._file_size, 512 * MIB))
        except Exception as e:  # noqa: BLE001 - h5py raises anything on damaged metadata
            self.close()
            raise PtoolsError(f"{path}: corrupt or unreadable HDF5 file ({oneline(e)})") from None
        try:
            self._index()
        except PtoolsError:
            self.close()
            raise
        except MemoryError:
            self.close()
            raise
        except Exception as e:  # noqa: BLE001 - damaged HDF5 metadata surfaces as any h5py/json/type error
            self.close()
            raise PtoolsError(f"{path}: corrupt Keras file ({oneline(e)})") from None

    # -- the probe child's index, handed to the parent ----------------------------------------------------
    def _export(self) -> dict[str, Any]:
        """Everything the index holds, as JSON, plus where each plain dataset's bytes lie in its file."""
        base: int | None = 0
        if self._zip is not None:
            try:
                base = _member_data_offset(self.path, self._zip, "model.weights.h5")
            except PtoolsError:
                base = None  # a deflated member: its bytes are not in the archive as they are
        locations: dict[str, Any] = {}
        for info in self._infos:
            locations[info.key] = self._locate(info.key, base) if base is not None else None
        return {
            "format": self.format,
            "container": self._container,
            "model_config": self.model_config,
            "keras_version": self.keras_version,
            "infos": [[t.key, t.dtype, list(t.shape), t.nbytes, t.extra] for t in self._infos],
            "layers": [
                [
                    k.name,
                    k.class_name,
                    k.config,
                    k.weights,
                    list(k.input_shape) if k.input_shape else None,
                    k.variables,
                    k.stored_as,
                    k.group,
                ]
                for k in self._layers
            ],
            "locations": locations,
            "pickles": [g.as_dict() for g in self.pickles.globals.values()] if self.pickles else [],
            "pickle_notes": list(self.pickles.notes) if self.pickles else [],
        }

    def _locate(self, key: str, base: int) -> list[Any] | None:
        """[file, offset, nbytes] of a dataset stored as one run of raw bytes (no chunks, no filters, a plain
        numeric dtype), checked against what HDF5 reads for its first and last element; None otherwise."""
        import numpy as np

        ds = self._datasets[key]
        try:
            self._check_size(key, ds)
            if _marked_bfloat16(ds) and not _bfloat16_bits(ds):
                return None  # a contradiction read_raw refuses through HDF5
            offset = ds.id.get_offset()
            dt = ds.dtype
            if offset is None or ds.chunks is not None or ds.compression or dt.kind not in "fiub" or dt.fields:
                return None
            nbytes = int(dt.itemsize) * int(ds.size)
            file = (
                str(self.path) if self._zip is not None or not isinstance(self._h5, _MergedGroup) else ds.file.filename
            )
            at = base + int(offset)
            if nbytes == 0 or at + nbytes > _file_size(Path(file)):
                return None
            flat = np.asarray(ds[()]).reshape(-1) if ds.size <= 16 else None
            with open(file, "rb") as f:
                for i in (0, int(ds.size) - 1):
                    f.seek(at + i * dt.itemsize)
                    raw = np.frombuffer(f.read(dt.itemsize), dtype=dt)
                    want = flat[i] if flat is not None else ds[np.unravel_index(i, ds.shape)]
                    if raw.tobytes() != np.asarray(want, dtype=dt).tobytes():
                        return None
            return [file, at, nbytes, dt.str]
        except Exception:  # noqa: BLE001 - anything unusual: the parent reads it through HDF5
            return None

    def _restore(self, state: dict[str, Any]) -> None:
        self.format = state["format"]
        self._container = state["container"]
        self.model_config = state["model_config"]
        self.keras_version = state["keras_version"]
        self._infos = [
            TensorInfo(key=k, dtype=d, shape=tuple(sh), nbytes=n, extra=e) for k, d, sh, n, e in state["infos"]
        ]
        self._layers = [
            KerasLayer(name, cls, cfg or {}, list(ws), tuple(ish) if ish else None, dict(vs), sa, group)
            for name, cls, cfg, ws, ish, vs, sa, group in state["layers"]
        ]
        self._locations = {k: tuple(v) if v else None for k, v in state["locations"].items()}
        from ptools.checkpoint.pickle.restricted import GlobalRef, ScanResult

        self.pickles = ScanResult(notes=list(state["pickle_notes"]))
        for g in state["pickles"]:
            self.pickles.globals[(g["module"], g["name"])] = GlobalRef(**g)

    def _dataset(self, key: str) -> Any:
        """The h5py dataset of `key`, opening the file here the first time one is needed."""
        if key not in self._datasets and self._h5 is None:
            infos, layers = self._infos, self._layers
            self._open()
            self._infos, self._layers = infos, layers
        if key not in self._datasets:
            raise PtoolsError(f"{self.path}: no tensor {key!r}")
        return self._datasets[key]

    # -- indexing ---------------------------------------------------------------------------------
    def _index(self) -> None:
        f = self._h5
        if self.model_config is None and "model_config" in f.attrs:
            raw = f.attrs["model_config"]
            self.model_config = _parse_config(
                self.path, "model_config", raw if isinstance(raw, bytes) else str(raw).encode()
            )
        if self.keras_version is None and "keras_version" in f.attrs:
            kv = f.attrs["keras_version"]
            self.keras_version = kv.decode() if isinstance(kv, bytes) else str(kv)
        if isinstance(f, _MergedGroup):
            pass  # sharded Keras 3 weights: always the layers/... layout
        elif self._zip is None:
            if "layer_names" in f.attrs or "layer_names0" in f.attrs:
                self.format = "keras-h5"
                self._index_legacy(f, role="weight")
            elif "model_weights" in f:
                self.format = "keras-h5"
                self._index_legacy(f["model_weights"], role="weight")
            elif "layers" in f or "vars" in f:
                self.format = "keras-v3"
            elif self.pickles.globals:
                self.format = "hdf5"  # not Keras, but holds pickles PyTables would load: reported, not refused
                return
            else:
                raise PtoolsError(
                    f"{self.path}: HDF5 file without Keras weights (no layer_names, model_weights or layers)"
                )
            if "optimizer_weights" in f:
                self._index_optimizer(f["optimizer_weights"])
        if self.format == "keras-v3":
            self._index_v3(f)

    def _add(self, key: str, ds: Any, role: str, layer: str, extra: dict[str, Any] | None = None) -> str:
        base, n = key, 1
        while key in self._datasets:  # nested models can repeat inner names; keep every tensor
            n += 1
            key = f"{base}_{n}"
        self._datasets[key] = ds
        dtype = "bfloat16" if _bfloat16_bits(ds) else str(ds.dtype)
        shape = tuple(int(d) for d in ds.shape)
        nbytes = int(ds.dtype.itemsize) * int(ds.size) if ds.dtype.kind != "O" else 0
        info = {"role": role, "layer": layer, "h5_path": ds.name, **(extra or {})}
        self._infos.append(TensorInfo(key=key, dtype=dtype, shape=shape, nbytes=nbytes, extra=info))
        return key

    def _index_legacy(self, group: Any, role: str) -> None:
        layer_names = _attr_list(group, "layer_names") or []
        cfg_by_name = config_layers_by_name(self.model_config)
        weight_names: dict[str, list[str]] = {}
        for lname in layer_names:
            if lname not in group:
                raise PtoolsError(f"{self.path}: layer {lname!r} listed in layer_names but missing from the file")
            weight_names[lname] = _attr_list(group[lname], "weight_names") or []
        layers: dict[str, KerasLayer] = {}

        def layer_for(name: str) -> KerasLayer:
            if name not in layers:
                lcfg = cfg_by_name.get(name, {})
                layers[name] = KerasLayer(
                    name, lcfg.get("class_name"), lcfg.get("config", {}), input_shape=_input_shape(lcfg)
                )
                self._layers.append(layers[name])
            return layers[name]

        refs = associate_legacy_weights(layer_names, weight_names, self.model_config)
        by_group: dict[str, list[WeightRef]] = {}
        for r in refs:
            by_group.setdefault(r.group, []).append(r)
        for lname in layer_names:
            layer_for(lname)
            lgroup = group[lname]
            for r in by_group.get(lname, []):
                if r.stored not in lgroup:
                    raise PtoolsError(f"{self.path}: weight {lname}/{r.stored} listed in weight_names but missing")
                layer = layer_for(r.layer)
                scope = _weight_scope(_strip_suffix(r.stored), lname)
                if scope != r.layer and r.layer == lname:
                    layer.stored_as = scope
                key = self._add(f"{r.layer}/{r.var}", lgroup[r.stored], role, r.layer, {"h5_group": lname})
                layer.weights.append(key)
                layer.variables[r.var] = key

    def _index_optimizer(self, group: Any) -> None:
        names = _attr_list(group, "weight_names") or []
        for wname in names:
            if wname in group:
                clean = _strip_suffix(wname)
                role = "counter" if re.search(r"(^|/)(iter|iterations|iteration)$", clean) else "optimizer"
                self._add(f"optimizer/{clean}", group[wname], role, "optimizer")

    def _index_v3(self, f: Any) -> None:
        cfg_layers = _config_layers(self.model_config)
        cfg_by_name = {lc.get("config", {}).get("name", lc.get("name")): lc for lc in cfg_layers}
        layers_group = f.get("layers") or f.get("_layer_checkpoint_dependencies")
        groups = list(layers_group.keys()) if layers_group is not None else []
        # Without attrs['name'] (older Keras 3), pair groups with config layers of the same class in order.
        unnamed = [lc for lc in cfg_layers]
        if cfg_layers:
            order = sorted(groups, key=lambda g: _group_order(g, cfg_layers))
        elif getattr(f, "layer_order", None):
            rank = {g: i for i, g in enumerate(f.layer_order)}
            order = sorted(groups, key=lambda g: (rank.get(g, len(rank)), g))
        else:  # no config: datasets are written in model order, so their file offsets give that order
            order = sorted(groups, key=lambda g: (_first_offset(layers_group[g]), g))
        for gname in order:
            g = layers_group[gname]
            vars_g = g.get("vars")
            lname = _attr_str(vars_g, "name") if vars_g is not None else None
            cls = _snake_class(gname)
            lcfg: dict[str, Any] = cfg_by_name.get(lname, {}) if lname else {}
            if not lcfg:
                for lc in unnamed:
                    if lc.get("class_name") == cls:
                        lcfg = lc
                        break
            if lcfg in unnamed:
                unnamed.remove(lcfg)
            lname = lname or lcfg.get("config", {}).get("name") or gname
            cls = lcfg.get("class_name", cls)
            layer = KerasLayer(lname, cls, lcfg.get("config", {}), input_shape=_input_shape(lcfg), group=gname)
            self._index_v3_vars(g, lname, cls, layer.config, layer, prefix=lname)
            self._layers.append(layer)
        if "vars" in f and len(f["vars"]):
            for i, ds_name in enumerate(_numeric(f["vars"])):
                self._add(f"model/vars/{i}", f["vars"][ds_name], "weight", "model")
        if "optimizer" in f and "vars" in f["optimizer"]:
            for ds_name in _numeric(f["optimizer"]["vars"]):
                role = "counter" if ds_name == "0" else "optimizer"
                self._add(f"optimizer/vars/{ds_name}", f["optimizer"]["vars"][ds_name], role, "optimizer")

    def _index_v3_vars(
        self, g: Any, lname: str, cls: str | None, cfg: dict[str, Any], layer: KerasLayer, prefix: str
    ) -> None:
        vars_g = g.get("vars")
        if vars_g is not None and len(vars_g):
            names = _var_names(cls, cfg, len(vars_g))
            for i, ds_name in enumerate(_numeric(vars_g)):
                vname = names[i] if names else f"vars/{ds_name}"
                key = self._add(f"{prefix}/{vname}", vars_g[ds_name], "weight", lname)
                layer.weights.append(key)
                layer.variables[key[len(lname) + 1 :] if key.startswith(lname + "/") else key] = key
        for sub in g:
            if sub == "vars":
                continue
            child = g[sub]
            if not hasattr(child, "keys"):
                continue
            sub_vars = child.get("vars")
            sub_name = _attr_str(sub_vars, "name") if sub_vars is not None else None
            sub_cls, sub_cfg = _sub_layer(cls, cfg, sub)
            if sub_cls is None and sub_name:  # no config: the `name` attribute (`lstm_cell`, `dense`) says it
                sub_cls = _snake_class(sub_name)
            # Keep the legacy/TF naming for RNN cells (`lstm/lstm_cell/kernel`).
            sub_prefix = f"{prefix}/{sub_name or sub}"
            self._index_v3_vars(child, lname, sub_cls, sub_cfg, layer, prefix=sub_prefix)

    # -- CheckpointReader ---------------------------------------------------------------------------
    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def layers(self) -> list[KerasLayer]:
        """Layers in model order with class and config where the file has them."""
        return list(self._layers)

    def pickle_globals(self) -> list[dict[str, Any]]:
        """Code the model config makes Keras run on load (Lambda bytecode, custom classes), like pickle globals,
        and the globals of pickles PyTables would load from the HDF5 file."""
        pickled = [g.as_dict() for g in self.pickles.globals.values()] if self.pickles else []
        return config_code_findings(self.model_config) + pickled

    def findings(self) -> list[dict[str, Any]]:
        return self.pickle_globals()

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"container": self._container}
        if self.keras_version:
            meta["keras_version"] = self.keras_version
        if self.model_config:
            meta["model_class"] = self.model_config.get("class_name")
            meta["layers"] = len(_config_layers(self.model_config))
        return meta

    def read_raw(self, key: str) -> tuple[np.ndarray, str]:
        """Stored values; bfloat16 datasets (attr dtype='bfloat16') come back as their uint16 bits."""
        import numpy as np

        loc = self._locations.get(key)
        if loc is not None:
            return self._read_located(key, loc)
        if key not in self._datasets and not any(t.key == key for t in self._infos):
            raise PtoolsError(f"{self.path}: no tensor {key!r}")
        ds = self._dataset(key)
        self._check_size(key, ds)
        try:
            arr = np.asarray(ds[()])
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - h5py raises RuntimeError, OSError, ... on damaged data
            raise PtoolsError(f"{self.path}: cannot read {key} ({oneline(e)})") from None
        if _marked_bfloat16(ds):
            if not _bfloat16_bits(ds):
                raise PtoolsError(
                    f"{self.path}: {key} is marked bfloat16 but stores {ds.dtype} ({ds.dtype.itemsize} bytes a value, "
                    "not 2): the file contradicts itself, its values are not read"
                )
            return arr.view(np.uint16), "bfloat16"
        return arr, str(arr.dtype)

    def _read_located(self, key: str, loc: tuple[Any, ...]) -> tuple[np.ndarray, str]:
        import numpy as np

        file, offset, nbytes, dtype = loc
        info = next(t for t in self._infos if t.key == key)
        arr = np.empty(nbytes, dtype=np.uint8)
        try:
            with open(file, "rb", buffering=0) as f:
                f.seek(offset)
                got = f.readinto(memoryview(arr))
        except OSError as e:
            raise PtoolsError(f"{self.path}: cannot read {key} ({oneline(e)})") from None
        if got != nbytes:
            raise PtoolsError(f"{self.path}: cannot read {key} (the file ends inside it)")
        values = arr.view(np.dtype(dtype)).reshape(info.shape)
        if info.dtype == "bfloat16":
            return values.view(np.uint16), "bfloat16"
        if values.dtype.byteorder == ">":
            values = values.astype(values.dtype.newbyteorder("="))
        return values, str(values.dtype)

    def _check_size(self, key: str, ds: Any) -> None:
        """Refuse, before reading, a dataset the file cannot really hold: HDF5 can declare any shape and
        leave it unwritten (reads then return fill values, all of them allocated)."""
        try:
            declared = int(ds.dtype.itemsize) * int(ds.size)
            stored = int(ds.id.get_storage_size())
            filtered = bool(ds.compression) or ds.dtype.kind == "O"
        except Exception as e:  # noqa: BLE001
            raise PtoolsError(f"{self.path}: cannot read {key} ({oneline(e)})") from None
        budget = max(4 * self._file_size, 512 * MIB)
        if declared > budget or (not filtered and stored < declared):
            raise PtoolsError(
                f"{self.path}: tensor {key} declares {declared} bytes ({list(ds.shape)} {ds.dtype}) but the file "
                f"stores {stored} of them (never written, or a corrupt shape)"
            )

    def read(self, key: str) -> np.ndarray:
        """Values numpy computes with: bfloat16 widened to float32 (exact)."""
        import numpy as np

        arr, name = self.read_raw(key)
        if name == "bfloat16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        return arr

    def close(self) -> None:
        h5 = getattr(self, "_h5", None)
        if h5 is not None:
            try:
                h5.close()
            except Exception:  # noqa: BLE001 - closing a half-open file must not mask the real error
                pass
            self._h5 = None
        if getattr(self, "_zip", None) is not None:
            self._zip.close()
            self._zip = None
        member = getattr(self, "_member", None)
        if member is not None:
            member.close()
            self._member = None


PROBE_SECONDS = 10.0  # CPU seconds: a real file indexes in well under one; an endless HDF5 loop burns them
PROBE_WALL_SECONDS = 300.0  # a backstop for a child that hangs without using CPU (a stalled disk)
PROBE_READ_BYTES = 64 * MIB  # below this, the probe also reads every tensor once
MAX_INDEX_BYTES = 512 * MIB  # the child's index (JSON): far above any real model's


def probe_hdf5(path: Path, timeout: float = PROBE_SECONDS) -> dict[str, Any] | None:
    """Index (and, when small, read) the file in a forked child before this process touches it; return
    the child's index, so the parent need not parse the HDF5 structure again (None: read it here).

    A damaged HDF5 file can make the C library loop forever or crash, and h5py holds the GIL while it
    does: no thread or signal handler of this process could stop it. The child runs under a CPU-time
    limit (`timeout` seconds of CPU, so a busy machine does not make a sound file look like a loop) and
    can be killed; then the file is refused on one line. On platforms without fork the file is read
    directly. The child also finds where each plain dataset's bytes lie, so tensors are read with one
    `readinto` each instead of through HDF5 (and, in a `.keras`, through zipfile).
    """
    if not hasattr(os, "fork"):
        return None
    import resource
    import tempfile

    fd, out = tempfile.mkstemp(prefix="ptools-h5-index-")
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                cpu = max(1, int(-(-timeout // 1)))
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                with KerasReader(path, probe=False) as reader:
                    state = reader._export()
                    # What the parent will read through HDF5 is read here first, where a loop can be cut.
                    through_hdf5 = [t for t in reader.tensors() if state["locations"].get(t.key) is None]
                    if sum(t.nbytes for t in through_hdf5) <= PROBE_READ_BYTES:
                        for t in through_hdf5:
                            reader.read_raw(t.key)
                    data = json.dumps(state).encode()
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            except BaseException:  # noqa: BLE001 - errors are the parent's to report: it meets them again
                pass
            os._exit(0)
        os.close(fd)
        status = _wait(pid, path, timeout)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig in (signal.SIGXCPU, signal.SIGKILL):
                raise PtoolsError(
                    f"{path}: its HDF5 structure could not be read in {timeout:g} s of CPU time (a damaged file "
                    "sends the HDF5 library into an endless loop)",
                    hint="the file is corrupt; re-export it",
                )
            raise PtoolsError(
                f"{path}: the HDF5 library crashed reading this file (signal {sig})",
                hint="the file is corrupt; re-export it",
            )
        size = os.path.getsize(out)
        if size == 0 or size > MAX_INDEX_BYTES:
            return None  # the child met an error: this process meets it again and reports it
        try:
            state = json.loads(Path(out).read_bytes())
        except ValueError:
            return None
        return state if isinstance(state, dict) else None
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass


def _wait(pid: int, path: Path, timeout: float) -> int:
    """The child's exit status; it is killed past the wall-clock backstop."""
    deadline = time.monotonic() + max(PROBE_WALL_SECONDS, 10 * timeout)
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise PtoolsError(
                f"{path}: its HDF5 structure could not be read in {max(PROBE_WALL_SECONDS, 10 * timeout):g} s "
                "(the reading process stalled)",
                hint="the file is corrupt or its storage does not answer",
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _member_data_offset(path: Path, zf: zipfile.ZipFile, name: str) -> int:
    """Where a stored zip member's bytes start in the archive (after its local header)."""
    import struct

    info = zf.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04" or info.compress_type != zipfile.ZIP_STORED:
        raise PtoolsError(f"{path}: {name} has no stored local header")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_small(path: Path, zf: zipfile.ZipFile, name: str) -> bytes:
    """A JSON member, read no further than MAX_CONFIG_BYTES whatever its header claims (deflate bombs)."""
    with zf.open(name) as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise PtoolsError(f"{path}: {name} is larger than {MAX_CONFIG_BYTES >> 20} MiB, too large for a Keras config")
    return data


def _parse_config(path: Path, name: str, raw: bytes) -> Any:
    """JSON of a Keras config: one line naming the file for invalid, too deep or oversized text."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise PtoolsError(f"{path}: {name} is larger than {MAX_CONFIG_BYTES >> 20} MiB, too large for a Keras config")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PtoolsError(f"{path}: {name} is not valid JSON ({oneline(e)})") from None
    if name != "metadata.json" and not isinstance(value, dict):
        raise PtoolsError(f"{path}: {name} is not a Keras model config (a JSON {type(value).__name__}, not an object)")
    return value


def _weights_member(path: Path, zf: zipfile.ZipFile) -> Any:
    """model.weights.h5 as a seekable file. Keras stores it uncompressed: zipfile seeks in it for free.

    A re-zipped (deflated) member would be inflated again from its start on every backward seek h5py
    makes; it is read into memory instead, if its size fits the memory every command promises."""
    import io

    info = zf.getinfo("model.weights.h5")
    if info.compress_type == zipfile.ZIP_STORED:
        return _MemberView(path, _member_data_offset(path, zf, "model.weights.h5"), info.file_size)
    limit = max(4 * _file_size(path), 512 * MIB)
    if info.file_size > limit:
        raise PtoolsError(
            f"{path}: model.weights.h5 is compressed and claims {info.file_size} bytes, more than this file "
            "could hold (a zip bomb?)"
        )
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise PtoolsError(f"{path}: model.weights.h5 inflates past {limit} bytes (a zip bomb?)")
    return io.BytesIO(data)


class _MemberView:
    """A stored zip member as a seekable binary file, read straight from the archive.

    zipfile's own member file updates a CRC on every read and, before Python 3.12, answers a backward
    seek by reading again from the member's start; h5py seeks back and forth, which made indexing a
    100 MB `.keras` take seconds. The CRC is checked once, separately (_check_member_crc)."""

    def __init__(self, path: Path, start: int, size: int) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close(), which h5py calls
        self._start, self._size, self._pos = start, size, 0
        if start + size > _file_size(path):
            self._f.close()
            raise PtoolsError(f"{path}: model.weights.h5 runs past the end of the archive")

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self._f.fileno(), n, self._start + self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(memoryview(buf).cast("B")))
        memoryview(buf).cast("B")[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed


def _check_member_crc(path: Path, zf: zipfile.ZipFile, name: str) -> None:
    """h5py reads the member at random offsets, so zipfile never gets to check its CRC: do it once, streaming."""
    import zlib

    info = zf.getinfo(name)
    crc = 0
    if info.compress_type == zipfile.ZIP_STORED:  # one pass over the raw bytes (zipfile would CRC them twice)
        view = _MemberView(path, _member_data_offset(path, zf, name), info.file_size)
        try:
            while chunk := view.read(8 << 20):
                crc = zlib.crc32(chunk, crc)
        finally:
            view.close()
    else:
        with zf.open(info) as f:
            f._expected_crc = None  # type: ignore[attr-defined]  # we compare ourselves, with a clear message
            while chunk := f.read(1 << 20):
                crc = zlib.crc32(chunk, crc)
    if crc != info.CRC:
        raise PtoolsError(
            f"{path}: {name} is corrupt (zip CRC-32 {crc:08x}, expected {info.CRC:08x})",
            hint="the .keras archive was damaged; re-export it",
        )


def _is_shard_index(path: Path) -> bool:
    return path.name.endswith(".json")


def _open_shards(path: Path, h5py: Any) -> _MergedGroup:
    """Keras 3 sharded weights: `X.weights.json` maps each `/layers/<name>/vars` to the shard files holding
    it (one layer's variables can be split over two files); the shards are read as one tree."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PtoolsError(f"{path}: not a Keras sharded-weights index ({e})") from None
    names: list[str] = []
    for v in weight_map.values():
        for n in v if isinstance(v, list) else [v]:
            if n not in names:
                names.append(n)
    files = []
    for n in names:
        shard = path.parent / n
        if not shard.is_file():
            raise PtoolsError(f"{path}: shard {n} is missing (expected next to the index)")
        files.append(h5py.File(shard, "r"))
    merged = _MergedGroup(files)
    # The index lists groups in the order Keras saved them, i.e. model order.
    merged.layer_order = [k.strip("/").split("/")[1] for k in weight_map if k.strip("/").startswith("layers/")]
    return merged


class _MergedGroup:
    """Several h5py groups with the same layout read as one: children are merged by name, datasets come
    from whichever shard holds them (the union h5py itself cannot give across files)."""

    def __init__(self, groups: list[Any]) -> None:
        self._groups = groups
        self.name = groups[0].name if groups else "/"
        self.layer_order: list[str] = []

    @property
    def attrs(self) -> Any:
        for g in self._groups:
            if len(g.attrs):
                return g.attrs
        return self._groups[0].attrs

    def keys(self) -> list[str]:
        out: list[str] = []
        for g in self._groups:
            out += [k for k in g.keys() if k not in out]
        return out

    def __iter__(self) -> Any:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: str) -> bool:
        return any(key in g for g in self._groups)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __getitem__(self, key: str) -> Any:
        found = [g[key] for g in self._groups if key in g]
        if not found:
            raise KeyError(key)
        if not hasattr(found[0], "keys"):
            return found[0]  # a dataset
        return _MergedGroup(found)

    def visititems(self, fn: Any) -> None:
        for g in self._groups:
            g.visititems(fn)

    def close(self) -> None:
        for g in self._groups:
            if hasattr(g, "close"):
                g.close()


def _attr_str(group: Any, name: str) -> str | None:
    if group is None or name not in group.attrs:
        return None
    v = group.attrs[name]
    return v.decode() if isinstance(v, bytes) else str(v)


def _numeric(group: Any) -> list[str]:
    """Dataset names sorted numerically ("10" after "9", not after "1")."""
    return sorted(group.keys(), key=lambda k: (0, int(k)) if k.isdigit() else (1, k))


def _group_order(gname: str, cfg_layers: list[dict[str, Any]]) -> tuple[int, int, str]:
    # h5 groups are stored alphabetically; model order is the config order of that class, then suffix.
    m = re.match(r"^(.*?)(?:_(\d+))?$", gname)
    base, n = (m.group(1), int(m.group(2) or 0)) if m else (gname, 0)
    cls = _SNAKE_TO_CLASS.get(base)
    positions = [i for i, lc in enumerate(cfg_layers) if lc.get("class_name") == cls]
    pos = positions[n] if n < len(positions) else 10**6
    return (pos, n, gname)


def _first_offset(group: Any) -> int:
    offsets: list[int] = []

    def visit(_name: str, obj: Any) -> None:
        if hasattr(obj, "id") and hasattr(obj.id, "get_offset"):
            off = obj.id.get_offset()
            if off is not None:
                offsets.append(int(off))

    group.visititems(visit)
    return min(offsets, default=2**62)


def _sub_layer(cls: str | None, cfg: dict[str, Any], sub: str) -> tuple[str | None, dict[str, Any]]:
    """Class and config of a Keras 3 sub-layer group: an RNN's `cell`, a Bidirectional's `forward_layer` /
    `backward_layer`, a TimeDistributed's `layer` (named from the wrapper's config, so their variables get
    their names instead of `vars/N`), else the class its snake_case group name says."""
    if sub == "cell":
        return _RNN_CELLS.get(cls or ""), cfg
    inner: Any = None
    if cls == "Bidirectional" and sub in ("forward_layer", "backward_layer"):
        inner = (cfg.get("backward_layer") if sub == "backward_layer" else None) or cfg.get("layer")
    elif cls == "TimeDistributed" and sub == "layer":
        inner = cfg.get("layer")
    if isinstance(inner, dict) and isinstance(inner.get("class_name"), str):
        inner_cfg = inner.get("config")
        return inner["class_name"], inner_cfg if isinstance(inner_cfg, dict) else {}
    return _snake_class(sub), {}


def _var_names(cls: str | None, cfg: dict[str, Any], count: int) -> list[str] | None:
    names = list(VAR_NAMES.get(cls or "", []))
    if not names:
        return None
    if cls in ("BatchNormalization", "LayerNormalization", "GroupNormalization"):
        if cfg.get("scale") is False:
            names.remove("gamma")
        if cfg.get("center") is False:
            names.remove("beta")
    elif "bias" in names and cfg.get("use_bias") is False:
        names.remove("bias")
    if len(names) == count + 1 and names[-1] == "bias" and not cfg:
        names.pop()  # no config to say use_bias=False, but bias is always stored last
    if len(names) != count:
        return None
    return names


def _marked_bfloat16(ds: Any) -> bool:
    try:
        return ds.attrs.get("dtype") in ("bfloat16", b"bfloat16")
    except Exception:  # noqa: BLE001 - an unreadable attribute is no mark
        return False


def _bfloat16_bits(ds: Any) -> bool:
    """Keras stores bfloat16 as 2-byte raw values with attr dtype="bfloat16"; another width contradicts the mark."""
    return _marked_bfloat16(ds) and ds.dtype.itemsize == 2 and ds.dtype.kind in "uif"


def sniff_h5(path: Path, head: bytes) -> bool:
    """HDF5 superblock at 0, 512, 1024, 2048, ... (a user block of any power-of-two size may precede it)."""
    if any(head[off : off + 8] == HDF5_MAGIC for off in (0, 512, 1024, 2048)):
        return True
    if len(head) < 4096:
        return False
    from ptools.checkpoint.loaders import hdf5_superblock
    from ptools.checkpoint.torch.zip_members import FileBytes

    with open(path, "rb") as f:
        return hdf5_superblock(FileBytes(f.fileno())) is not None


def sniff_keras_shards(path: Path, head: bytes) -> bool:
    """`X.weights.json`: a JSON index whose weight_map points at `.weights.h5` shards."""
    return head.lstrip().startswith(b"{") and b'"weight_map"' in head and b".weights.h5" in head


def sniff_keras_zip(path: Path, head: bytes) -> bool:
    if not head.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "config.json" in names and ("model.weights.h5" in names or "model.weights.npz" in names)


def open_reader(path: Path) -> CheckpointReader:
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except (OSError, zipfile.BadZipFile, ValueError):
            names = set()
        if "model.weights.npz" in names and "model.weights.h5" not in names:
            return KerasNpzReader(path)
    return KerasReader(path)


class KerasNpzReader(CheckpointReader):
    """A `.keras` archive saved with weights_format="npz": the config's code findings, and the weights'
    npz read as numpy's (Keras loads it with numpy.load(allow_pickle=True): every pickle in it is graded)."""

    format = "keras-v3"

    def __init__(self, path: Path) -> None:
        from ptools.checkpoint.npy import NumpyReader
        from ptools.checkpoint.torch.zip import size_limit
        from ptools.checkpoint.torch.zip_members import FileBytes, ZipError, list_members, read_member

        super().__init__(path)
        self.model_config: dict[str, Any] | None = None
        self.keras_version: str | None = None
        with zipfile.ZipFile(path) as zf:
            if "config.json" in zf.namelist():
                self.model_config = _parse_config(path, "config.json", _read_small(path, zf, "config.json"))
            if "metadata.json" in zf.namelist():
                meta = _parse_config(path, "metadata.json", _read_small(path, zf, "metadata.json"))
                version = meta.get("keras_version") if isinstance(meta, dict) else None
                self.keras_version = version if isinstance(version, str) else None
        try:
            with open(path, "rb") as f:
                buf = FileBytes(f.fileno())
                # The member zipfile (and so Keras) reads: the last central entry of that name.
                member = [m for m in list_members(buf) if m.name == "model.weights.npz" and m.origin == "central"][-1]
                data = read_member(buf, member, size_limit(path))
        except (OSError, ZipError, IndexError) as e:
            raise PtoolsError(f"{path}: model.weights.npz cannot be read ({oneline(e)})") from None
        try:
            self._npz = NumpyReader(path, npz=True, data=data)
        except PtoolsError as e:
            where = f"{path}: model.weights.npz: "
            raise PtoolsError(where + e.message.removeprefix(f"{path}: "), hint=e.hint, exit_code=e.exit_code) from None

    def tensors(self) -> list[TensorInfo]:
        return [t for t in self._npz.tensors() if t.dtype != "object"]

    def pickle_globals(self) -> list[dict[str, Any]]:
        found = []
        for g in self._npz.pickle_globals():
            found.append({**g, "source": f"model.weights.npz: {g['source']}"})
        return config_code_findings(self.model_config) + found

    def findings(self) -> list[dict[str, Any]]:
        return [g for g in self.pickle_globals() if g["grade"] != "safe"]

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"container": "zip", "weights": "model.weights.npz (numpy arrays, pickled per layer)"}
        if self.keras_version:
            meta["keras_version"] = self.keras_version
        if self.model_config:
            meta["model_class"] = self.model_config.get("class_name")
        return meta

    def read(self, key: str) -> np.ndarray:
        return self._npz.read(key)

    def read_raw(self, key: str) -> tuple[np.ndarray, str]:
        return self._npz.read_raw(key)

    def close(self) -> None:
        self._npz.close()


def model_layers(reader: KerasReader) -> list[KerasLayer]:
    """All layers of an open Keras file in model order, weightless ones (pooling, padding, Flatten) included.

    Each has its class and config where the file has a config, and `variables` ({var path: tensor key},
    read with `reader.read(key)`), whatever naming scheme wrote the file (see associate_legacy_weights).
    """
    stored = {layer.name: layer for layer in reader.layers()}
    out: list[KerasLayer] = []
    for name, lc in config_layers_by_name(reader.model_config).items():
        if name in stored:
            out.append(stored.pop(name))
        else:
            out.append(KerasLayer(name, lc.get("class_name"), lc.get("config", {}), input_shape=_input_shape(lc)))
    return out + list(stored.values())


def keras_model_layers(path: str | Path) -> tuple[dict[str, Any] | None, list[KerasLayer]]:
    """(model config, layers in model order) of a Keras `.h5`/`.keras`/`.weights.h5` file; see model_layers."""
    reader = KerasReader(Path(path))
    try:
        return reader.model_config, model_layers(reader)
    finally:
        reader.close()


# Modules whose classes come with Keras itself: a config naming any other module makes Keras import it.
_KERAS_MODULES = (
    "keras",
    "tf_keras",
    "tensorflow.keras",
    "tensorflow.python.keras",
    "keras_nlp",
    "keras_hub",
    "keras_cv",
)
_MAX_FINDINGS = 10_000
# Keras' own families: their classes register as "package>Name" (keras_hub>GemmaBackbone).
_FAMILIES = ("keras_hub", "keras_nlp", "keras_cv")
# Layers that run code or load files by design, whatever module names them.
_CODE_LAYERS = {
    "TFSMLayer": "loads and runs a TensorFlow SavedModel from a path in the config",
    "TorchModuleWrapper": "holds a pickled torch module that Keras unpickles with torch.load",
    "JaxLayer": "calls functions given in the config",
    "FlaxLayer": "calls functions given in the config",
}
# TensorFlow ops a tf_keras TFOpLambda may name that reach files, processes or Python code.
_TF_OP_RISKY = ("io.", "data.", "py_function", "numpy_function", "py_func", "print", "summary.", "saved_model", "load")


def _family_class(registered: str, module: str | None) -> bool:
    """A "package>Name" registered name of one of Keras' families, naming a class that family exports (its
    exported functions, such as keras_hub's upload_preset, stay flagged)."""
    from ptools.checkpoint.keras.allowed import FAMILY_CLASSES

    pkg, _, cls = registered.partition(">")
    return cls in FAMILY_CLASSES.get(pkg, ()) and str(module or pkg).split(".")[0] == pkg


def _keras_own_problem(module: str, cls: str, config: Any, registered: Any) -> str | None:
    """Why an object a Keras module names is not safe to build, or None: Keras imports `module` and takes
    `cls` from it, class or function alike, and a functional model calls it with the node's arguments,
    so anything outside the allow-list of layer (and other known-safe) classes is flagged."""
    from ptools.checkpoint.keras.allowed import CLASSES, FUNCTIONS

    package = module.split(".")[0]
    if cls in _CODE_LAYERS:
        return f"{cls}: {_CODE_LAYERS[cls]}"
    if cls in ("TFOpLambda", "SlicingOpLambda"):
        fn = config.get("function") if isinstance(config, dict) else None
        if isinstance(fn, str) and any(part in fn for part in _TF_OP_RISKY):
            return f"{cls} calls the TensorFlow op {fn}, which reaches files or runs Python"
        return None
    if cls == "function":
        fn = config if isinstance(config, str) else None
        if module == "builtins" or (fn in FUNCTIONS and package not in _FAMILIES):
            return None
        return f"names the function {module}.{fn}, not an activation, loss or metric: Keras would call it"
    if package in _FAMILIES:
        from ptools.checkpoint.keras.allowed import FAMILY_CLASSES

        if cls in FAMILY_CLASSES[package] and (not isinstance(registered, str) or _family_class(registered, module)):
            return None
        return f"names {module}.{cls}, not a class {package} exports: Keras would import and call it"
    if cls in CLASSES:
        return None
    return f"names {module}.{cls}, not a layer or other known-safe Keras class: Keras would import and call it"


def config_code_findings(config: Any) -> list[dict[str, Any]]:
    """Lambda layers (marshalled Python bytecode) and classes from modules outside Keras in a model config.

    Loading the model runs both: Keras unmarshals and calls a Lambda's function, and imports the module of
    a custom (`registered_name`) class to build it. Reported in the shape of a pickle global, graded
    dangerous, so `inspect` exits 1 for them as for an unsafe pickle.
    """
    found: dict[tuple[str, str], dict[str, Any]] = {}

    def add(module: str, name: str, reason: str, where: str) -> None:
        ref = found.get((module, name))
        if ref is None:
            if len(found) >= _MAX_FINDINGS:
                return
            ref = found[(module, name)] = {
                "module": module,
                "name": name,
                "grade": "dangerous",
                "reason": reason,
                "count": 0,
                "where": [],
                "calls": [],
                "source": "model config",
            }
        ref["count"] += 1
        if len(ref["where"]) < 20:
            ref["where"].append(where)

    stack: list[tuple[Any, str, int]] = [(config, "", 0)]
    seen = 0
    while stack and seen < 1_000_000:
        node, path, depth = stack.pop()
        seen += 1
        if depth > 200:
            continue
        if isinstance(node, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        cls = node.get("class_name")
        cfg = node.get("config") if isinstance(node.get("config"), dict) else {}
        name = cfg.get("name") if isinstance(cfg.get("name"), str) else path or "<root>"
        if cls == "Lambda":
            add("keras.layers", "Lambda", "Lambda layer: its function (marshalled Python bytecode) runs on load", name)
        elif cls == "__lambda__" or node.get("function_type") == "lambda":
            add("keras", "__lambda__", "marshalled Python bytecode in the config runs on load", name)
        module = node.get("module")
        registered = node.get("registered_name")
        if isinstance(cls, str) and isinstance(module, str) and module and not module.startswith(_KERAS_MODULES):
            add(module, cls, "class from a module outside Keras: loading imports and runs it", name)
        elif isinstance(cls, str) and isinstance(module, str) and module:
            problem = _keras_own_problem(module, cls, node.get("config"), registered)
            if problem:
                target = node.get("config") if cls == "function" and isinstance(node.get("config"), str) else cls
                add(module, str(target), problem, name)
        elif isinstance(registered, str) and registered and registered != cls and "builtins" not in (module or ""):
            if not str(module or "keras").startswith(_KERAS_MODULES) or not _family_class(registered, module):
                add(str(module or "<registered>"), registered, "custom registered class: loading runs its code", name)
        for k, v in node.items():
            if isinstance(v, (dict, list)):
                stack.append((v, f"{path}.{k}" if path else str(k), depth + 1))
    return list(found.values())
