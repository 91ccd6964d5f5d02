"""CRC-32C (Castagnoli) and the LevelDB/TensorFlow CRC mask, fast without any compiled dependency.

TensorFlow checksums every table block and every tensor with CRC-32C (not zlib's CRC-32). `google_crc32c`
is used when installed (the `[tf]` extra: `pip install 'ptools-port[tf]'`); otherwise small inputs go through
a table-driven Python loop and large ones through a numpy version that runs thousands of independent lanes at once and
joins their results with the GF(2) "shift by n zero bytes" maps (CRC is linear, so crc(A+B) can be
computed from crc(A), crc(B) and len(B)).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8
_M32 = 0xFFFFFFFF


def _make_tables() -> list[list[int]]:
    t0 = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        t0.append(c)
    tables = [t0]
    # Slicing-by-4 tables: tk[n] is the CRC of byte n followed by k zero bytes.
    for _ in range(3):
        prev = tables[-1]
        tables.append([(prev[n] >> 8) ^ t0[prev[n] & 0xFF] for n in range(256)])
    return tables


_TABLES = _make_tables()
_T0 = _TABLES[0]
_NP_TABLES = [np.array(t, dtype=np.uint32) for t in _TABLES]

try:  # optional C implementation
    import google_crc32c as _google  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    _google = None

# Below this size the plain loop beats numpy's per-call overhead.
_VECTOR_MIN = 1 << 15
_LANE_BYTES = 256  # bytes each numpy lane handles per piece
_MAX_LANES = 1 << 16  # lanes per piece: 16 MiB pieces bound the temporary copies
_GOOGLE_PIECE = 1 << 24


def mask(crc: int) -> int:
    """The stored form of a CRC (rotated and offset so that CRCs of CRCs stay well distributed)."""
    return ((((crc >> 15) | (crc << 17)) & _M32) + _MASK_DELTA) & _M32


def unmask(masked: int) -> int:
    """Inverse of `mask`."""
    rot = (masked - _MASK_DELTA) & _M32
    return ((rot >> 17) | (rot << 15)) & _M32


def _as_bytes_view(data: Any) -> memoryview:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    mv = memoryview(data)
    if mv.ndim != 1 or mv.itemsize != 1 or not mv.c_contiguous:
        mv = mv.cast("B") if mv.c_contiguous else memoryview(bytes(mv))
    return mv


def _raw_python(reg: int, data: memoryview | bytes) -> int:
    """Run the CRC register over `data` (no init/xorout handling)."""
    t0 = _T0
    for b in bytes(data):
        reg = t0[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


# --- GF(2) linear maps on the 32-bit register, stored as the images of the 32 unit vectors ---------


def _apply(cols: tuple[int, ...], x: int) -> int:
    out = 0
    i = 0
    while x:
        if x & 1:
            out ^= cols[i]
        x >>= 1
        i += 1
    return out


def _compose(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The map x -> a(b(x))."""
    return tuple(_apply(a, c) for c in b)


@lru_cache(maxsize=64)
def _zeros_pow2(log2n: int) -> tuple[int, ...]:
    """The map 'run the register over 2**log2n zero bytes'."""
    if log2n == 0:
        return tuple(_T0[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32))
    half = _zeros_pow2(log2n - 1)
    return _compose(half, half)


def _zeros(n: int) -> tuple[int, ...]:
    cols = tuple(1 << i for i in range(32))
    k = 0
    while n:
        if n & 1:
            cols = _compose(_zeros_pow2(k), cols)
        n >>= 1
        k += 1
    return cols


@lru_cache(maxsize=64)
def _byte_tables(log2n: int) -> np.ndarray:
    """The zero-shift map for 2**log2n bytes as four 256-entry lookup tables (one per register byte)."""
    cols = np.array(_zeros_pow2(log2n), dtype=np.uint32)
    v = np.arange(256, dtype=np.uint32)
    out = np.zeros((4, 256), dtype=np.uint32)
    for j in range(4):
        for bit in range(8):
            out[j] ^= np.where((v >> np.uint32(bit)) & np.uint32(1), cols[8 * j + bit], np.uint32(0))
    return out


def _apply_tables(tables: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (tables[0][x & 0xFF] ^ tables[1][(x >> 8) & 0xFF] ^ tables[2][(x >> 16) & 0xFF] ^ tables[3][x >> 24]).astype(
        np.uint32, copy=False
    )


def _raw_numpy_piece(piece: np.ndarray) -> int:
    """Raw CRC (register starting at 0) of a uint8 array of lanes * _LANE_BYTES bytes, lanes a power of 2."""
    lanes = piece.size // _LANE_BYTES
    words = np.ascontiguousarray(piece.view("<u4").reshape(lanes, _LANE_BYTES // 4).T)
    t0, t1, t2, t3 = _NP_TABLES
    reg = np.zeros(lanes, dtype=np.uint32)
    for row in words:  # slicing-by-4 in every lane at once
        reg ^= row
        reg = t3[reg & 0xFF] ^ t2[(reg >> 8) & 0xFF] ^ t1[(reg >> 16) & 0xFF] ^ t0[reg >> 24]
    # Join neighbouring lanes: crc(A+B) = shift_len(B)(crc(A)) ^ crc(B), halving the lane count each round.
    log2len = _LANE_BYTES.bit_length() - 1
    while reg.size > 1:
        reg = _apply_tables(_byte_tables(log2len), reg[0::2]) ^ reg[1::2]
        log2len += 1
    return int(reg[0])


def _extend_numpy(reg: int, buf: np.ndarray) -> int:
    pos, n = 0, buf.size
    while n - pos >= _VECTOR_MIN:
        lanes = min((n - pos) // _LANE_BYTES, _MAX_LANES)
        lanes = 1 << (lanes.bit_length() - 1)
        size = lanes * _LANE_BYTES
        reg = _apply(_zeros_pow2(size.bit_length() - 1), reg) ^ _raw_numpy_piece(buf[pos : pos + size])
        pos += size
    return _raw_python(reg, memoryview(buf[pos:]).cast("B")) if pos < n else reg


def extend_fallback(crc: int, data: Any) -> int:
    """`extend` without google_crc32c (used directly by tests to cross-check both paths)."""
    mv = _as_bytes_view(data)
    reg = crc ^ _M32
    if len(mv) >= _VECTOR_MIN:
        reg = _extend_numpy(reg, np.frombuffer(mv, dtype=np.uint8))
    else:
        reg = _raw_python(reg, mv)
    return reg ^ _M32


def extend(crc: int, data: Any) -> int:
    """CRC-32C of (the bytes whose CRC is `crc`) followed by `data` (any bytes-like object)."""
    if _google is not None:
        if isinstance(data, bytes):
            return _google.extend(crc, data)
        # The C extension only takes `bytes`: copy in bounded pieces so huge tensors never double in memory.
        mv = _as_bytes_view(data)
        for i in range(0, len(mv), _GOOGLE_PIECE):
            crc = _google.extend(crc, bytes(mv[i : i + _GOOGLE_PIECE]))
        return crc
    return extend_fallback(crc, data)


def value(data: Any) -> int:
    """CRC-32C of `data`."""
    return extend(0, data)


def shift_zeros(crc_reg: int, n: int) -> int:
    """Advance a raw register over n zero bytes (exposed for tests of the lane-joining maths)."""
    return _apply(_zeros(n), crc_reg)


def implementation() -> str:
    """Which implementation `value` uses: 'google-crc32c' or 'numpy'."""
    return "google-crc32c" if _google is not None else "numpy"
