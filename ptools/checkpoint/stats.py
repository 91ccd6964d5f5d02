"""Per-tensor statistics and value differences, computed chunk by chunk over memory-mapped data.

A chunk is converted to float64 on its own (bfloat16/float8 decoded there), so memory stays bounded by
the chunk size whatever the tensor's size. Work is bounded by the bytes really stored: a view that
repeats values (stride 0, as `expand` saves it) is reduced to the values it repeats, and a view whose
elements overlap otherwise is not walked at all (2**34 elements can sit on one stored float).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ptools.checkpoint.base import CheckpointReader
from ptools.checkpoint.dtypes import decode

if TYPE_CHECKING:
    import numpy as np

CHUNK = 1 << 22  # elements per chunk: 32 MiB as float64


def _chunks(raw: np.ndarray, dtype: str, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """float64 pieces of a raw view, in C order."""
    import numpy as np

    if raw.ndim == 0:
        yield np.asarray(decode(raw.reshape(1), dtype), dtype=np.float64)
        return
    if raw.flags.c_contiguous:
        flat = raw.reshape(-1)
        for start in range(0, flat.size, chunk):
            yield np.asarray(decode(flat[start : start + chunk], dtype), dtype=np.float64)
        return
    # Non-contiguous views: walk the leading axis in slabs small enough to copy.
    per_row = max(1, raw[0].size if raw.shape[0] else 1)
    rows = max(1, chunk // per_row)
    for start in range(0, raw.shape[0], rows):
        yield np.asarray(decode(np.ascontiguousarray(raw[start : start + rows]), dtype), dtype=np.float64).reshape(-1)


def _stored_items(raw: np.ndarray) -> int:
    """Elements of storage the view spans (what the file holds for it), from its strides."""
    if raw.size == 0:
        return 0
    span = sum((d - 1) * abs(s) for d, s in zip(raw.shape, raw.strides, strict=True))
    return span // max(1, raw.itemsize) + 1


def _without_repeats(raw: np.ndarray) -> tuple[np.ndarray, int]:
    """The view with its stride-0 axes cut to length 1, and how many times each value was repeated."""
    repeat = 1
    index: list[slice] = []
    for d, s in zip(raw.shape, raw.strides, strict=True):
        if s == 0 and d > 1:
            index.append(slice(0, 1))
            repeat *= d
        else:
            index.append(slice(None))
    return (raw[tuple(index)], repeat) if repeat > 1 else (raw, 1)


def _overlap_note(raw: np.ndarray) -> str | None:
    if raw.size > _stored_items(raw):
        return (
            f"no statistics: the view's {raw.size} elements overlap in {_stored_items(raw)} stored values "
            "(strides that revisit memory)"
        )
    return None


# Packed or sub-byte types have no per-element value numpy can compute with (two float4 in one byte).
_PACKED = ("float4_e2m1fn_x2", "bits", "bcomplex32", *(f"{s}int{n}" for s in ("", "u") for n in range(1, 8)))


def numeric(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat", "int", "uint", "bool")) and dtype not in _PACKED


def tensor_stats(reader: CheckpointReader, key: str) -> dict[str, Any]:
    """min/max/mean/std over finite values, and NaN/Inf counts.

    std is the sample standard deviation (divided by n - 1), what `tensor.std()` gives in torch (and
    `np.std(ddof=1)`), so the numbers match what people check them against; None for a single value.
    """
    import numpy as np

    raw, dtype = reader.read_raw(key)
    if not numeric(dtype):
        return {"skipped": f"no statistics for {dtype}"}
    raw, repeat = _without_repeats(raw)
    note = _overlap_note(raw)
    if note:
        return {"skipped": note}
    with np.errstate(all="ignore"):  # overflow in squares of huge values is data, not a warning
        return _stats(raw, dtype, repeat)


def _stats(raw: np.ndarray, dtype: str, repeat: int = 1) -> dict[str, Any]:
    """Statistics of `raw` with every value counted `repeat` times (the stride-0 axes cut away):
    min/max/mean stay, counts and M2 scale by `repeat`, so the sample std is still exact."""
    import numpy as np

    count = nan = inf = 0
    mean = m2 = 0.0
    lo, hi = math.inf, -math.inf
    for chunk in _chunks(raw, dtype):
        isnan = np.isnan(chunk)
        isinf = np.isinf(chunk)
        nan += int(isnan.sum())
        inf += int(isinf.sum())
        finite = chunk[~(isnan | isinf)] if (nan or inf) else chunk
        n = finite.size
        if not n:
            continue
        c_mean = float(finite.mean())
        c_m2 = float(((finite - c_mean) ** 2).sum())
        lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        # Chan et al.: combine (count, mean, M2) of two parts without a second pass.
        total = count + n
        delta = c_mean - mean
        mean += delta * n / total
        m2 += c_m2 + delta * delta * count * n / total
        count = total
    count, m2, nan, inf = count * repeat, m2 * repeat, nan * repeat, inf * repeat
    if not count:
        return {"min": None, "max": None, "mean": None, "std": None, "nan": nan, "inf": inf}
    std = math.sqrt(m2 / (count - 1)) if count > 1 else None  # Bessel's correction, as torch.std
    return {"min": lo, "max": hi, "mean": mean, "std": std, "nan": nan, "inf": inf}


def value_diff(
    a: CheckpointReader, key_a: str, b: CheckpointReader, key_b: str, atol: float = 0.0, rtol: float = 0.0
) -> dict[str, Any]:
    """max |a - b| over positions where both are finite; positions where NaN/Inf-ness differs are counted.

    `differing` counts the positions where |a - b| > atol + rtol * |b| (numpy.isclose's rule; with the
    defaults, any difference), so an fp16 copy of fp32 weights can be called equal within its precision.
    """
    import numpy as np

    raw_a, dt_a = a.read_raw(key_a)
    raw_b, dt_b = b.read_raw(key_b)
    if not (numeric(dt_a) and numeric(dt_b)):
        return {"skipped": f"no value comparison for {dt_a}/{dt_b}"}
    repeat = 1
    if raw_a.shape == raw_b.shape and (0 in raw_a.strides or 0 in raw_b.strides):
        # Cut the axes that repeat on both sides (comparing the repeats again would change nothing).
        both = tuple(
            slice(0, 1) if sa == 0 and sb == 0 and d > 1 else slice(None)
            for d, sa, sb in zip(raw_a.shape, raw_a.strides, raw_b.strides, strict=True)
        )
        for d, sl in zip(raw_a.shape, both, strict=True):
            repeat *= d if sl.stop == 1 else 1
        raw_a, raw_b = raw_a[both], raw_b[both]
    # Stored bytes bound the work: walk the views only when one side really stores every element.
    stored = max(_stored_items(raw_a), _stored_items(raw_b))
    if raw_a.size > stored:
        return {
            "skipped": f"no value comparison: {raw_a.size} elements over {stored} stored values (overlapping strides)"
        }
    with np.errstate(all="ignore"):
        out = _value_diff(raw_a, dt_a, raw_b, dt_b, atol, rtol)
    out["differing"] *= repeat
    out["special_mismatch"] *= repeat
    return out


def _value_diff(
    raw_a: np.ndarray, dt_a: str, raw_b: np.ndarray, dt_b: str, atol: float = 0.0, rtol: float = 0.0
) -> dict[str, Any]:
    import numpy as np

    max_abs = 0.0
    mismatched_special = 0
    differing = 0
    for ca, cb in zip(_chunks(raw_a, dt_a), _chunks(raw_b, dt_b), strict=False):
        fa, fb = np.isfinite(ca), np.isfinite(cb)
        both = fa & fb
        special_a, special_b = ~fa, ~fb
        # Same NaN/Inf at the same place counts as equal (NaN == NaN here; +Inf vs -Inf does not).
        same_special = special_a & special_b & ((np.isnan(ca) & np.isnan(cb)) | (ca == cb))
        mismatched_special += int((special_a | special_b).sum() - same_special.sum())
        if both.any():
            d = np.abs(ca[both] - cb[both])
            max_abs = max(max_abs, float(d.max()))
            limit = atol + rtol * np.abs(cb[both]) if (atol or rtol) else 0.0
            differing += int((d > limit).sum())
    return {"max_abs": max_abs, "differing": differing + mismatched_special, "special_mismatch": mismatched_special}
