"""safetensors files: the JSON header read directly (8-byte little-endian length + JSON), data memory-mapped.

The header is validated before anything is trusted: offsets inside the data section, sizes matching
dtype x shape, no overlaps. The `safetensors` package is not needed on this path.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.checkpoint._text import oneline
from ptools.checkpoint.base import MAX_DIM, CheckpointReader, TensorInfo
from ptools.checkpoint.dtypes import decode, itemsize, raw_numpy_dtype
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np

MAX_HEADER = 100 << 20  # the format's own limit

DTYPES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "C64": "complex64",
    "C128": "complex128",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}


def sniff(path: Path, head: bytes) -> bool:
    if len(head) < 10:
        return False
    n = struct.unpack_from("<Q", head)[0]
    return 2 <= n <= MAX_HEADER and head[8:9] == b"{"


def open_reader(path: Path) -> CheckpointReader:
    return SafetensorsReader(path)


class SafetensorsReader(CheckpointReader):
    format = "safetensors"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._mm: mmap.mmap | None = None
        self._file: Any = None
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(8)
                n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
                if not 2 <= n <= MAX_HEADER or 8 + n > size:
                    raise PtoolsError(f"{path}: corrupted safetensors header (length {n}, file {size} bytes)")
                raw = f.read(n)
        except OSError as e:
            raise PtoolsError(f"{path}: cannot read ({e.strerror})") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            # ValueError beyond JSONDecodeError: an integer literal of thousands of digits (Python's limit).
            why = "a number of thousands of digits" if "digits" in str(e) else oneline(e)
            raise PtoolsError(f"{path}: corrupted safetensors header (invalid JSON: {why})") from None
        if not isinstance(header, dict):
            raise PtoolsError(f"{path}: corrupted safetensors header (not a JSON object)")
        self._data_start = 8 + n
        self._data_size = size - self._data_start
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict):
            raise PtoolsError(f"{path}: corrupted safetensors header (__metadata__ is not an object)")
        self._user_meta = {str(k): v for k, v in meta.items()}
        self._infos: dict[str, TensorInfo] = {}
        self._parse(header)

    def _parse(self, header: dict[str, Any]) -> None:
        spans: list[tuple[int, int, str]] = []
        for key, entry in header.items():
            bad = f"{self.path}: corrupted safetensors header (tensor {key!r}"
            if not isinstance(entry, dict):
                raise PtoolsError(f"{bad}: not an object)")
            st_dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
            if st_dtype not in DTYPES:
                raise PtoolsError(f"{bad}: unknown dtype {st_dtype!r})")
            if not isinstance(shape, list) or not all(isinstance(d, int) and 0 <= d <= MAX_DIM for d in shape):
                raise PtoolsError(f"{bad}: bad shape {shape!r})")
            if not (
                isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            ) or not (0 <= offsets[0] <= offsets[1] <= self._data_size):
                raise PtoolsError(f"{bad}: data offsets {offsets!r} outside the {self._data_size}-byte data section)")
            dtype = DTYPES[st_dtype]
            numel = 1
            for d in shape:
                numel *= d
            nbytes = numel * itemsize(dtype)
            if offsets[1] - offsets[0] != nbytes:
                raise PtoolsError(f"{bad}: {offsets[1] - offsets[0]} bytes for {numel} {dtype} values)")
            if nbytes:
                spans.append((offsets[0], offsets[1], key))
            self._infos[key] = TensorInfo(
                key=key,
                dtype=dtype,
                shape=tuple(shape),
                nbytes=nbytes,
                storage=f"bytes {offsets[0]}-{offsets[1]}",
                storage_offset=0,
                extra={"data_offsets": offsets},
            )
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise PtoolsError(f"{self.path}: corrupted safetensors header (tensors {a!r} and {b!r} overlap)")
        # File order = data order, as the format writes it.
        self._infos = dict(sorted(self._infos.items(), key=lambda kv: kv[1].extra["data_offsets"][0]))

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos.values())

    def metadata(self) -> dict[str, Any]:
        return {
            "reader": "safetensors header (JSON), data memory-mapped",
            "header_bytes": self._data_start - 8,
            "user_metadata": self._user_meta,
        }

    def read(self, key: str) -> np.ndarray:
        raw, dtype = self.read_raw(key)
        return decode(raw, dtype)

    def read_raw(self, key: str) -> tuple[np.ndarray, str]:
        import numpy as np

        info = self._infos.get(key)
        if info is None:
            raise PtoolsError(f"{self.path}: no tensor {key!r}")
        raw_dt = raw_numpy_dtype(info.dtype)
        if info.nbytes == 0:
            return np.zeros(info.shape, dtype=raw_dt), info.dtype
        if self._mm is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open for the mapping's lifetime
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        start = self._data_start + info.extra["data_offsets"][0]
        arr = np.frombuffer(self._mm, dtype=raw_dt, count=info.numel, offset=start)
        return arr.reshape(info.shape), info.dtype

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass
            self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None
