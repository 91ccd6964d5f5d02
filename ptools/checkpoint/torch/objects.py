"""Readers backed by torch itself: legacy data (after a clean scan) and the explicit `--unsafe` full load.

TorchScript archives are not here: `torch.jit.load` runs the archive's own code, so they are read by the
restricted unpickler like any zip checkpoint (`torch.zip.open_torchscript`).

torch is imported only inside these functions; the zip and safetensors paths never reach this module.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.checkpoint._text import oneline
from ptools.checkpoint.base import CheckpointReader, TensorInfo
from ptools.checkpoint.pickle.restricted import ScanResult, join_path
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np


def tensor_to_numpy(t: Any) -> np.ndarray:
    """A CPU numpy copy/view; dtypes numpy lacks become float32 (bfloat16 exactly so)."""
    import torch

    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.cpu()
    name = str(t.dtype).removeprefix("torch.")
    if name in ("bfloat16", "complex32") or name.startswith(("float8", "float4")):
        t = t.to(torch.complex64 if t.is_complex() else torch.float32)
    elif name.startswith(("uint16", "uint32", "uint64")):
        t = t.to(torch.int64)
    return t.numpy()


def _info(key: str, t: Any) -> TensorInfo:
    import torch

    dtype = str(t.dtype).removeprefix("torch.")
    extra: dict[str, Any] = {"kind": "dense" if t.layout == torch.strided else str(t.layout)}
    storage = None
    if t.layout == torch.strided and t.device.type != "meta":
        try:
            st = t.untyped_storage()
            storage = f"ptr{st.data_ptr():x}" if st.nbytes() else None
            extra["storage_nbytes"] = st.nbytes()
            extra["stride"] = list(t.stride())
            extra["contiguous"] = t.is_contiguous()
        except Exception:  # tensor subclasses without storage
            storage = None
    if isinstance(t, torch.nn.Parameter):
        extra["parameter"] = True
    if t.requires_grad:
        extra["requires_grad"] = True
    return TensorInfo(
        key=key,
        dtype=dtype,
        shape=tuple(t.shape),
        nbytes=t.numel() * t.element_size(),
        storage=storage,
        storage_offset=t.storage_offset() if t.layout == torch.strided else 0,
        extra=extra,
    )


def flatten_torch(obj: Any) -> tuple[Any, dict[str, TensorInfo], dict[str, Any]]:
    """(structure with TensorInfo leaves, infos by flat key, tensors by flat key) with the same key
    spelling as the restricted-unpickler path, so both sides of a legacy file line up."""
    import torch

    infos: dict[str, TensorInfo] = {}
    tensors: dict[str, Any] = {}
    active: set[int] = set()

    def walk(o: Any, path: str, depth: int) -> Any:
        if o is None or isinstance(o, (bool, int, float, str, complex)):
            return o
        if isinstance(o, (bytes, bytearray)):
            return f"<{len(o)} bytes>"
        if isinstance(o, torch.Tensor):
            key = path or "<root>"
            n = 2
            while key in infos:
                key = f"{path}#{n}"
                n += 1
            infos[key] = _info(key, o)
            tensors[key] = o
            return infos[key]
        if isinstance(o, (torch.dtype, torch.device, torch.Size)) or depth > 200:
            return repr(o) if depth <= 200 else "<nested too deeply>"
        if id(o) in active:
            return "<reference cycle>"
        active.add(id(o))
        try:
            if isinstance(o, torch.nn.Module):
                return {
                    "__class__": f"{type(o).__module__}.{type(o).__qualname__}",
                    **walk(o.state_dict(), path, depth),
                }
            if isinstance(o, dict):
                return {str(k): walk(v, join_path(path, k), depth + 1) for k, v in o.items()}
            if isinstance(o, list):
                return [walk(v, join_path(path, i), depth + 1) for i, v in enumerate(o)]
            if isinstance(o, tuple):
                return tuple(walk(v, join_path(path, i), depth + 1) for i, v in enumerate(o))
            if isinstance(o, (set, frozenset)):
                return [walk(v, join_path(path, i), depth + 1) for i, v in enumerate(sorted(o, key=repr))]
            if hasattr(o, "__dict__") and not isinstance(o, type):
                fields = {k: walk(v, join_path(path, k), depth + 1) for k, v in vars(o).items()}
                return {"__class__": f"{type(o).__module__}.{type(o).__qualname__}", **fields}
            if hasattr(o, "item") and hasattr(o, "dtype") and getattr(o, "shape", None) == ():
                return o.item()  # numpy scalar
            return repr(o)
        finally:
            active.discard(id(o))

    return walk(obj, "", 0), infos, tensors


class TorchObjectReader(CheckpointReader):
    """A checkpoint already turned into torch objects (by torch.jit.load or torch.load)."""

    def __init__(self, path: Path, obj: Any, fmt: str, meta: dict[str, Any], scan: ScanResult | None = None) -> None:
        super().__init__(path)
        self.format = fmt
        self._structure, self._infos, self._tensors = flatten_torch(obj)
        self._meta = meta
        self._scan = scan

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos.values())

    def structure(self) -> Any:
        return self._structure

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    scanned_globals: list[dict[str, Any]] | None = None  # set by callers that scanned the file beforehand

    def pickle_globals(self) -> list[dict[str, Any]]:
        if self.scanned_globals is not None:
            return self.scanned_globals
        return [g.as_dict() for g in self._scan.globals.values()] if self._scan else []

    def findings(self) -> list[dict[str, Any]]:
        return [g for g in self.pickle_globals() if g["grade"] != "safe"]

    def read(self, key: str) -> np.ndarray:
        t = self._tensors.get(key)
        if t is None:
            raise PtoolsError(f"{self.path}: no tensor {key!r}")
        return tensor_to_numpy(t)


def open_unsafe(path: Path) -> CheckpointReader:
    """torch.load(weights_only=False): runs whatever the pickle says. Only behind --unsafe."""
    import torch

    kwargs: dict[str, Any] = {"map_location": "cpu", "weights_only": False}
    if zipfile.is_zipfile(path):
        kwargs["mmap"] = True
    try:
        obj = torch.load(str(path), **kwargs)
    except Exception as e:
        raise PtoolsError(f"{path}: torch.load failed ({oneline(e)})") from None
    meta = {"reader": "torch.load(weights_only=False): full unpickling (--unsafe)"}
    return TorchObjectReader(path, obj, "torch-unsafe", meta)
