"""Writing converted tensors: `.safetensors` streamed one tensor at a time, or `.pt` (torch.save of a state_dict).

The safetensors header only needs names, dtypes and shapes, so it is computed up front and each tensor's
bytes are produced and written in turn: peak memory is one tensor, whatever the checkpoint size.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.errors import PtoolsError, printable
from ptools.files import atomic_path, atomic_torch_save

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
    chunks: Callable[[Any], Iterator[np.ndarray]] | None = None  # C-order pieces of make(), for streaming


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


def _check_name(path: Path, key: str) -> None:
    """safetensors names are UTF-8 strings: a TF key with other bytes (kept as lone surrogates) would be
    written as a JSON escape that every safetensors reader rejects, so the file would be broken."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise PtoolsError(
            f"{path}: cannot write tensor name {printable(key)!r}: it is not valid UTF-8 (bytes from the source "
            "checkpoint), and safetensors names must be",
            hint="rename it with a --map rule, or write a .pt file",
        ) from None


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
        _check_name(path, t.key)
        code = _st_dtype(t)
        size = _numel(t.shape) * _ITEMSIZE[code]
        header[t.key] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes with spaces
    with atomic_path(path, force) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        from ptools.convert.layouts import BlockPool

        with _BackgroundWriter(f, depth=3) as sink:
            # Buffers in use at once: 3 queued + 1 being written + 1 being filled; one spare.
            pool = BlockPool(6)
            for t in tensors:
                expected = _numel(t.shape) * _ITEMSIZE[_st_dtype(t)]
                written = 0
                pieces = t.chunks(pool) if t.chunks is not None else iter([t.make()])
                for piece in pieces:
                    written += sink.put(_prepare(t, np.asarray(piece)))
                    del piece  # the sink holds the only reference until it is on disk
                if written != expected:
                    raise PtoolsError(f"{t.key}: produced {written} bytes, expected {expected} (internal error)")
                # Wait for this tensor to reach the file before loading the next: memory stays ~one tensor.
                sink.flush()
                if on_tensor:
                    on_tensor(t)


class _BackgroundWriter:
    """Writes pieces on a thread, so transposing the next block overlaps writing this one (both release
    the GIL). At most `depth` pieces wait in the queue."""

    def __init__(self, f: Any, depth: int = 3) -> None:
        import queue
        import threading

        self._f = f
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ptools-writer", daemon=True)

    def _run(self) -> None:
        while True:
            buf = self._q.get()
            try:
                if buf is None:
                    return
                if self._error is None:
                    self._f.write(buf)
            except BaseException as e:  # noqa: BLE001 - handed to the producer thread
                self._error = e
            finally:
                self._q.task_done()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, buf: memoryview) -> int:
        self._check()
        self._q.put(buf)
        return len(buf)

    def flush(self) -> None:
        self._q.join()
        self._check()

    def __enter__(self) -> _BackgroundWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._q.put(None)
        self._thread.join()
        if exc[0] is None:
            self._check()


def _prepare(t: OutTensor, a: np.ndarray) -> memoryview:
    import numpy as np

    if t.dtype == "bfloat16":
        a = bf16_bits(a)
    elif a.dtype != np.dtype(t.dtype):
        a = a.astype(t.dtype)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return memoryview(np.ascontiguousarray(a)).cast("B")


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
    atomic_torch_save(sd, path, force)


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
