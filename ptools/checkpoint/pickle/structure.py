"""Turns what the restricted unpickler produced into the reader interface: a structure with TensorInfo leaves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ptools.checkpoint.base import TensorInfo
from ptools.checkpoint.dtypes import itemsize
from ptools.checkpoint.pickle.restricted import (
    AttributeDictData,
    DefaultDictData,
    NamespaceData,
    NumpyArrayData,
    NumpyDtypeData,
    NumpyScalarData,
    Placeholder,
    ScanResult,
    StorageRef,
    StorageType,
    TensorRef,
    TorchDtype,
    TorchMarker,
    join_path,
)

_MAX_DEPTH = 200
# str() of a longer int passes Python's 4300-digit limit and raises; no checkpoint value is that long.
_MAX_INT_BITS = 14_000


def _big_int(value: int) -> str:
    return f"<integer of {value.bit_length()} bits>"


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, int) and not isinstance(k, bool) and k.bit_length() > _MAX_INT_BITS:
        return _big_int(k)
    try:
        return str(k)
    except Exception:  # a tuple holding a huge int, a hostile stand-in
        return f"<{type(k).__name__}>"


def _safe_repr(obj: Any) -> str:
    try:
        return repr(obj)
    except Exception:  # huge ints, hostile stand-ins: the structure must still be built
        return f"<{type(obj).__name__}>"


MAX_NODES = 300_000  # objects the structure may expand to (~100k tensors with their containers)
MODULE_MARK = "__nn_module__"  # set on the dict of a pickled nn.Module, whose keys are its state_dict's


def is_module_state(state: Any) -> bool:
    """The __dict__ of a pickled torch.nn.Module."""
    return isinstance(state, dict) and "_parameters" in state and "_modules" in state and "_buffers" in state


@dataclass
class PickleContents:
    """The structure, its tensors by flat key, and the stand-ins behind them (to find data later)."""

    structure: Any = None
    infos: dict[str, TensorInfo] = field(default_factory=dict)
    refs: dict[str, TensorRef] = field(default_factory=dict)
    embedded_bytes: list[tuple[str, bytes]] = field(default_factory=list)  # bytes values that may hide a pickle
    truncated: bool = False  # the structure hit MAX_NODES


def tensor_info(key: str, ref: TensorRef) -> TensorInfo:
    dtype = ref.tensor_dtype
    numel = 1
    for d in ref.shape:
        numel *= d
    storage = ref.storage
    extra: dict[str, Any] = {"kind": ref.kind}
    if ref.stride is not None:
        extra["stride"] = list(ref.stride)
        extra["contiguous"] = _is_contiguous(ref.shape, ref.stride)
    if ref.requires_grad:
        extra["requires_grad"] = True
    if ref.parameter:
        extra["parameter"] = True
    if storage is not None:
        extra["storage_numel"] = storage.numel
        extra["storage_nbytes"] = storage.numel * itemsize(storage.dtype)
        extra["device"] = storage.location
    if ref.notes:
        extra["notes"] = list(ref.notes)
    return TensorInfo(
        key=key,
        dtype=dtype,
        shape=ref.shape,
        nbytes=numel * itemsize(dtype),
        storage=storage.key if storage is not None else None,
        storage_offset=ref.offset + (storage.view[1] if storage is not None and storage.view else 0),
        extra=extra,
    )


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for d, s in zip(reversed(shape), reversed(stride), strict=False):
        if d != 1 and s != expected:
            return False
        expected *= d
    return True


def build(scan: ScanResult, on_tensor: Callable[[str, TensorRef], None] | None = None) -> PickleContents:
    """Walk the unpickled object once: plain containers stay, stand-ins become values or TensorInfo."""
    out = PickleContents()
    active: set[int] = set()  # containers on the current path, to cut reference cycles

    def add_tensor(path: str, ref: TensorRef) -> TensorInfo:
        key = path or "<root>"
        if key in out.infos:  # e.g. a dict key "a.b" next to a nested a -> b
            n = 2
            while f"{key}#{n}" in out.infos:
                n += 1
            key = f"{key}#{n}"
        info = tensor_info(key, ref)
        out.infos[key] = info
        out.refs[key] = ref
        return info

    budget = [MAX_NODES]

    def walk(obj: Any, path: str, depth: int) -> Any:
        if isinstance(obj, int) and not isinstance(obj, bool) and obj.bit_length() > _MAX_INT_BITS:
            return _big_int(obj)
        if obj is None or isinstance(obj, (bool, int, float, complex)):
            return obj
        if isinstance(obj, str):
            return obj if len(obj) <= 4096 else obj[:4093] + "..."
        # Shared objects are walked once per reference (tied tensors must show under every key), so a
        # graph of shared lists can be exponentially larger than the pickle: stop at a fixed node count.
        budget[0] -= 1
        if budget[0] < 0:
            if budget[0] == -1:
                out.truncated = True
            return "<structure too large: not expanded>"
        if isinstance(obj, (bytes, bytearray)):
            if len(obj) >= 2 and obj[0] == 0x80:
                out.embedded_bytes.append((path, bytes(obj)))
            return f"<{len(obj)} bytes>"
        if depth > _MAX_DEPTH:
            return "<nested too deeply>"
        if isinstance(obj, TensorRef):
            return add_tensor(path, obj)
        if isinstance(obj, StorageRef):  # a storage saved on its own
            return add_tensor(path, TensorRef(storage=obj, offset=0, shape=(obj.numel,), stride=(1,)))
        if isinstance(obj, NumpyArrayData):
            ref = TensorRef(storage=None, offset=0, shape=obj.shape, stride=None, dtype=obj.dtype_name, kind="numpy")
            ref.array = obj
            return add_tensor(path, ref)
        if isinstance(obj, NumpyScalarData):
            return obj.value
        if isinstance(obj, (NumpyDtypeData, TorchDtype, TorchMarker, StorageType)):
            return repr(obj)
        if isinstance(obj, type):
            if issubclass(obj, Placeholder):
                return f"<global {obj.qualname()} (not loaded)>"
            return f"<class {getattr(obj, '__name__', '?')}>"
        if id(obj) in active:
            return "<reference cycle>"
        active.add(id(obj))
        try:
            return walk_container(obj, path, depth)
        finally:
            active.discard(id(obj))

    def walk_container(obj: Any, path: str, depth: int) -> Any:
        if isinstance(obj, dict):
            result = {_key(k): walk(v, join_path(path, k), depth + 1) for k, v in obj.items()}
            if isinstance(obj, DefaultDictData):
                return {"__class__": "collections.defaultdict", **result}
            if isinstance(obj, AttributeDictData):
                return result
            return result
        if isinstance(obj, list):
            return [walk(v, join_path(path, i), depth + 1) for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return tuple(walk(v, join_path(path, i), depth + 1) for i, v in enumerate(obj))
        if isinstance(obj, (set, frozenset)):
            return [walk(v, join_path(path, i), depth + 1) for i, v in enumerate(sorted(obj, key=_safe_repr))]
        if isinstance(obj, NamespaceData):
            return {
                "__class__": "argparse.Namespace",
                **{k: walk(v, join_path(path, k), depth + 1) for k, v in vars(obj).items()},
            }
        if isinstance(obj, Placeholder):
            return placeholder_value(obj, path, depth)
        return f"<{type(obj).__name__}>"

    def placeholder_value(obj: Placeholder, path: str, depth: int) -> dict[str, Any]:
        d = obj.__dict__
        value: dict[str, Any] = {"__class__": obj.qualname(), "__loaded__": False}
        state = d.get("state")
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (dict state, slot state)
        if is_module_state(state):
            return module_value(value, state, path, depth)
        if isinstance(state, dict):
            # A pickled object's attributes (e.g. a whole nn.Module): keep walking so its tensors show.
            for k, v in state.items():
                value[str(k)] = walk(v, join_path(path, k), depth + 1)
        elif state is not None:
            value["__state__"] = walk(state, join_path(path, "__state__"), depth + 1)
        if d.get("args"):
            value["__args__"] = walk(list(d["args"]), join_path(path, "__args__"), depth + 1)
        for k, v in d.get("mapping", {}).items():
            value[str(k)] = walk(v, join_path(path, k), depth + 1)
        if d.get("items"):
            value["__items__"] = walk(list(d["items"]), join_path(path, "__items__"), depth + 1)
        return value

    def module_value(value: dict[str, Any], state: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        """A pickled nn.Module (torch.save(model)): its state_dict, keyed as `model.state_dict()` keys it
        (`features.0.weight`, not `_modules.features._modules.0._parameters.weight`)."""
        value[MODULE_MARK] = True
        skip = state.get("_non_persistent_buffers_set")
        skip = set(skip) if isinstance(skip, (set, frozenset, list, tuple)) else set()
        for group in ("_parameters", "_buffers"):
            members = state.get(group)
            if isinstance(members, dict):
                for k, v in members.items():
                    if v is not None and not (group == "_buffers" and k in skip):
                        value[str(k)] = walk(v, join_path(path, k), depth + 1)
        modules = state.get("_modules")
        if isinstance(modules, dict):
            for k, v in modules.items():
                if v is not None:
                    value[str(k)] = walk(v, join_path(path, k), depth + 1)
        return value

    try:
        out.structure = walk(scan.obj, "", 0)
    except RecursionError:
        out.structure = "<nested too deeply>"
    return out
