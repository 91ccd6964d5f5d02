"""Dtype names shared by the readers, their sizes, and numpy views of raw bytes (bfloat16, float8 included).

Names follow torch's spelling without the `torch.` prefix (float32, bfloat16, float8_e4m3fn), which is
also numpy's spelling wherever numpy has the type. numpy is imported only by the functions that need it.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ITEMSIZE: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2": 1,
    "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1,
    "complex128": 16,
    "complex64": 8,
    "complex32": 4,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint64": 8,
    "uint32": 4,
    "uint16": 2,
    "uint8": 1,
    "bool": 1,
    "qint8": 1,
    "quint8": 1,
    "qint32": 4,
    "quint4x2": 1,
    "quint2x4": 1,
    # Bit containers and sub-byte types torch.load(weights_only=True) accepts: stored as raw bytes.
    "bits8": 1,
    "bits16": 2,
    "bits1x8": 1,
    "bits2x4": 1,
    "bits4x2": 1,
    "float4_e2m1fn_x2": 1,
    "bcomplex32": 4,
    **{f"{s}int{n}": 1 for s in ("", "u") for n in range(1, 8)},
}

# numpy has these natively; the rest are reinterpreted from an unsigned integer of the same width.
_NATIVE = {
    "float64",
    "float32",
    "float16",
    "complex128",
    "complex64",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint64",
    "uint32",
    "uint16",
    "uint8",
    "bool",
}
_RAW = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64", 16: "complex128"}
_QUANTIZED_RAW = {"qint8": "int8", "quint8": "uint8", "qint32": "int32", "quint4x2": "uint8", "quint2x4": "uint8"}

# Legacy storage class names (torch.FloatStorage ...) -> dtype.
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
    "Float8_e4m3fnStorage": "float8_e4m3fn",
    "Float8_e5m2Storage": "float8_e5m2",
    "Float8_e4m3fnuzStorage": "float8_e4m3fnuz",
    "Float8_e5m2fnuzStorage": "float8_e5m2fnuz",
    "UInt16Storage": "uint16",
    "UInt32Storage": "uint32",
    "UInt64Storage": "uint64",
    "UntypedStorage": "uint8",
}

# torch.<name> dtype globals that pickles reference (e.g. in _rebuild_meta_tensor_no_storage).
TORCH_DTYPE_NAMES: dict[str, str] = {
    **{n: n for n in ITEMSIZE},
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
    "chalf": "complex32",
}


def itemsize(dtype: str) -> int:
    return ITEMSIZE.get(dtype, 1)


def is_floating(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def raw_numpy_dtype(dtype: str, byteorder: str = "little") -> np.dtype:
    """The numpy dtype to view stored bytes with (same width; bfloat16/float8 as unsigned ints)."""
    import numpy as np

    if dtype in _NATIVE:
        name = dtype
    elif dtype in _QUANTIZED_RAW:
        name = _QUANTIZED_RAW[dtype]
    else:
        name = _RAW.get(itemsize(dtype), "uint8")
    dt = np.dtype(name)
    if dt.itemsize > 1 and dt.kind != "b":
        dt = dt.newbyteorder("<" if byteorder == "little" else ">")
    return dt


def decode(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Turn a raw view (from `raw_numpy_dtype`) into values numpy can compute with.

    bfloat16 becomes float32 (its bits are the top half of a float32), float8 variants go through a
    256-entry table; everything else is returned as is (byte-swapped to native if needed).
    """
    import numpy as np

    if dtype == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype.startswith("float8") or dtype == "float8_e8m0fnu":
        return _float8_table(dtype)[raw.astype(np.intp)]
    if dtype == "complex32":
        halves = raw.view(np.uint16).view(np.float16).astype(np.float32)
        return halves[..., 0::2] + 1j * halves[..., 1::2] if halves.ndim else halves
    if raw.dtype.byteorder not in ("=", "|") and raw.dtype.byteorder != _native_order():
        return raw.astype(raw.dtype.newbyteorder("="))
    return raw


def _native_order() -> str:
    import sys

    return "<" if sys.byteorder == "little" else ">"


@cache
def _float8_table(dtype: str) -> np.ndarray:
    """Value of each of the 256 bit patterns, from the format's exponent/mantissa layout."""
    import numpy as np

    if dtype == "float8_e8m0fnu":  # exponent only, bias 127, 0xff is NaN
        table = np.ldexp(1.0, np.arange(256) - 127).astype(np.float32)
        table[255] = np.nan
        return table
    exp_bits, man_bits = (4, 3) if "e4m3" in dtype else (5, 2)
    fnuz = dtype.endswith("fnuz")
    bias = (1 << (exp_bits - 1)) - 1 + (1 if fnuz else 0)
    out = np.empty(256, dtype=np.float32)
    for bits in range(256):
        sign = -1.0 if bits & 0x80 else 1.0
        e = (bits >> man_bits) & ((1 << exp_bits) - 1)
        m = bits & ((1 << man_bits) - 1)
        if fnuz and bits == 0x80:
            out[bits] = np.nan
            continue
        if not fnuz and dtype == "float8_e5m2" and e == (1 << exp_bits) - 1:
            out[bits] = sign * np.inf if m == 0 else np.nan
            continue
        if not fnuz and dtype == "float8_e4m3fn" and e == 15 and m == 7:
            out[bits] = np.nan
            continue
        if e == 0:
            out[bits] = sign * (m / (1 << man_bits)) * 2.0 ** (1 - bias)
        else:
            out[bits] = sign * (1 + m / (1 << man_bits)) * 2.0 ** (e - bias)
    return out
