"""Writing converted tensors: `.safetensors` streamed one tensor at a time, or `.pt` (torch.save of a state_dict).

The safetensors header only needs names, dtypes and shapes, so it is computed up front and each tensor's
bytes are produced and written in turn: peak memory is one tensor, whatever the checkpoint size.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ptools.errors import PtoolsError
from ptools.files import atomic_path

if TYPE_CHECKING:
    import numpy as np

SAFETENSORS_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
}
_ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "BOOL": 1,
}


@dataclass
class OutTensor:
    key: str
    dtype: str  # numpy-style name; "bfloat16" arrays arrive as float32 values (or uint16 bit patterns)
    shape: tuple[int, ...]
    make: Callable[[], np.ndarray]


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float values, rounded to nearest even; 2-byte input passes through."""
    import numpy as np

    if a.dtype.itemsize == 2 and a.dtype.kind in "ui":
        return np.ascontiguousarray(a).view(np.uint16)
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    nan = np.isnan(a)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def _st_dtype(t: OutTensor) -> str:
    code = SAFETENSORS_DTYPES.get(t.dtype)
    if code is None:
        raise PtoolsError(f"{t.key}: dtype {t.dtype} cannot be written")
    return code


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def write_safetensors(
    path: Path,
    tensors: list[OutTensor],
    metadata: dict[str, str] | None = None,
    force: bool = False,
    on_tensor: Callable[[OutTensor], None] | None = None,
) -> None:
    import numpy as np

    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for t in tensors:
        code = _st_dtype(t)
        size = _numel(t.shape) * _ITEMSIZE[code]
        header[t.key] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes with spaces
    with atomic_path(path, force) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors:
            a = np.asarray(t.make())
            if tuple(a.shape) != tuple(t.shape):
                raise PtoolsError(f"{t.key}: produced shape {tuple(a.shape)}, expected {t.shape} (internal error)")
            if t.dtype == "bfloat16":
                a = bf16_bits(a)
            elif a.dtype != np.dtype(t.dtype):
                a = a.astype(t.dtype)
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))
            f.write(memoryview(np.ascontiguousarray(a)).cast("B"))
            del a  # drop the only reference before producing the next tensor
            if on_tensor:
                on_tensor(t)


def write_pt(path: Path, tensors: Iterable[OutTensor], force: bool = False) -> None:
    """torch.save of a plain {name: tensor} dict; the .pt format needs every tensor at once."""
    import numpy as np
    import torch

    sd: dict[str, torch.Tensor] = {}
    for t in tensors:
        a = np.asarray(t.make())
        if t.dtype == "bfloat16":
            sd[t.key] = torch.from_numpy(bf16_bits(a).view(np.int16)).view(torch.bfloat16).clone()
        else:
            sd[t.key] = torch.from_numpy(np.array(a, dtype=t.dtype, copy=True))
    with atomic_path(path, force) as tmp:
        torch.save(sd, tmp)


def write_state_dict(
    path: Path, tensors: list[OutTensor], force: bool = False, metadata: dict[str, str] | None = None
) -> None:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        write_safetensors(path, tensors, metadata=metadata, force=force)
    elif suffix in (".pt", ".pth", ".bin"):
        write_pt(path, tensors, force=force)
    else:
        raise PtoolsError(f"{path}: unknown output type {suffix or '(none)'}", hint="use .safetensors or .pt")
