"""TF padding arithmetic against brute-force definitions: windows enumerated over a padded line."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptools import padding as tfpad
from ptools.errors import PtoolsError

sizes = st.integers(1, 80)
kernels = st.integers(1, 9)
strides = st.integers(1, 6)
dilations = st.integers(1, 4)


def window_starts(length: int, span: int, stride: int) -> list[int]:
    """Every start position of a window of `span` cells sliding by `stride` over `length` cells."""
    starts, p = [], 0
    while p + span <= length:
        starts.append(p)
        p += stride
    return starts


def brute_same(size: int, k: int, s: int, d: int) -> tuple[int, int, int]:
    """TF SAME by search: the smallest total pad whose padded line holds ceil(size/s) windows, split with
    the odd cell after. Returns (output, before, after)."""
    span = (k - 1) * d + 1
    wanted = -(-size // s)
    total = 0
    while len(window_starts(size + total, span, s)) < wanted:
        total += 1
    return wanted, total // 2, total - total // 2


@given(sizes, kernels, strides, dilations)
def test_same_matches_brute_force(size, k, s, d):
    w = tfpad.conv_window(size, k, s, d, "same")
    assert (w.output, w.pad_before, w.pad_after) == brute_same(size, k, s, d)
    span = (k - 1) * d + 1
    # Every window over the padded line starts inside the real cells or the before-pad, i.e. sees data.
    starts = [p - w.pad_before for p in window_starts(size + w.pad_total, span, s)]
    assert len(starts) == w.output
    assert all(p + span > 0 and p < size for p in starts)


@given(sizes, kernels, strides, dilations)
def test_valid_counts_windows(size, k, s, d):
    span = (k - 1) * d + 1
    if span > size:
        with pytest.raises(PtoolsError, match="larger than the input"):
            tfpad.conv_window(size, k, s, d, "valid")
        return
    w = tfpad.conv_window(size, k, s, d, "valid")
    assert w.output == len(window_starts(size, span, s))
    assert (w.pad_before, w.pad_after) == (0, 0)


def tf_transpose_by_adjoint(x: list[int], w: list[int], s: int, d: int, length: int) -> list[int]:
    """TF's conv_transpose: the adjoint of the SAME/VALID forward conv over `length` cells (pads searched)."""
    k = len(w)
    _, before, _ = brute_same(length, k, s, d)
    out = [0] * length
    for q, xq in enumerate(x):
        for j, wj in enumerate(w):
            p = q * s - before + j * d
            if 0 <= p < length:
                out[p] += xq * wj
    return out


def full_scatter(x: list[int], w: list[int], s: int, d: int) -> list[int]:
    """PyTorch's conv_transpose with padding=0: each input scatters its kernel at q*s."""
    out = [0] * ((len(x) - 1) * s + (len(w) - 1) * d + 1)
    for q, xq in enumerate(x):
        for j, wj in enumerate(w):
            out[q * s + j * d] += xq * wj
    return out


def keras_same_length(size: int, k: int, s: int, d: int, op: int | None) -> int:
    span = (k - 1) * d + 1
    return size * s if op is None else (size - 1) * s + span % 2 + op


@given(st.integers(1, 12), kernels, strides, st.integers(1, 3), st.none() | st.integers(0, 5), st.randoms())
def test_transpose_same_matches_adjoint_of_forward_conv(size, k, s, d, op, rnd):
    length = keras_same_length(size, k, s, d, op)
    consistent = op is None or (op < s and length >= 1 and brute_same(length, k, s, d)[0] == size)
    if not consistent:
        with pytest.raises(PtoolsError):
            tfpad.transpose_window(size, k, s, d, "same", op)
        return
    t = tfpad.transpose_window(size, k, s, d, "same", op)
    assert t.output == length
    x = [rnd.randint(-9, 9) for _ in range(size)]
    w = [rnd.randint(-9, 9) for _ in range(k)]
    full = full_scatter(x, w, s, d)
    assert t.full == len(full)
    ours = (full + [0] * max(-t.crop_after, 0))[t.crop_before : t.crop_before + t.output]
    assert ours == tf_transpose_by_adjoint(x, w, s, d, length)


@given(st.integers(1, 12), kernels, strides, st.none() | st.integers(0, 5))
def test_transpose_valid_length_and_no_crop(size, k, s, op):
    span = k
    length = (size - 1) * s + span + (max(span, s) - span if op is None else op)
    if op is not None and op >= s:
        with pytest.raises(PtoolsError):
            tfpad.transpose_window(size, k, s, 1, "valid", op)
        return
    t = tfpad.transpose_window(size, k, s, 1, "valid", op)
    assert (t.output, t.crop_before) == (length, 0)
    assert len(window_starts(length, span, s)) == size  # its forward VALID conv gives the input back


def test_known_tf_values():
    # Measured with TensorFlow (TF_FORMATS.md 6.1 / 6.3).
    assert tfpad.conv2d_window(224, 7, 2).padding == ((2, 3), (2, 3))
    assert tfpad.conv2d_window((10, 9), 3, 3).output == (4, 3)
    t = tfpad.transpose_window(5, 3, 2)
    assert (t.output, t.crop_before, t.crop_after) == (10, 0, 1)
    with pytest.raises(PtoolsError):
        tfpad.transpose_window(5, 4, 2, output_padding=0)


def test_2d_dimensions_are_independent():
    w = tfpad.conv2d_window((299, 224), (3, 5), (2, 1), (1, 2))
    assert w.h == tfpad.conv_window(299, 3, 2, 1)
    assert w.w == tfpad.conv_window(224, 5, 1, 2)
    assert w.torch_pad == (w.w.pad_before, w.w.pad_after, w.h.pad_before, w.h.pad_after)


def test_pool_stride_defaults_to_kernel():
    assert tfpad.pool_window(10, 3).stride == 3
    assert tfpad.pool2d_window((10, 7), (2, 3)).output == (5, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input": 0, "kernel": 3},
        {"input": 5, "kernel": -1},
        {"input": 5, "kernel": 3, "stride": 0},
        {"input": 5, "kernel": 3, "dilation": 0},
        {"input": 5, "kernel": 3, "padding": "full"},
        {"input": True, "kernel": 3},
    ],
)
def test_bad_numbers_raise(kwargs):
    with pytest.raises(PtoolsError):
        tfpad.conv_window(**kwargs)


def test_pair():
    assert tfpad.pair(3) == (3, 3)
    assert tfpad.pair([2, 5]) == (2, 5)
    assert tfpad.pair(np.int64(4)) == (4, 4) and tfpad.pair((np.int32(1), 2)) == (1, 2)
    for bad in ((1, 2, 3), 2.0, (1.0, 2), "3"):
        with pytest.raises(PtoolsError):
            tfpad.pair(bad)


@given(sizes, kernels, strides, st.integers(0, 4), st.integers(1, 3), st.booleans())
def test_torch_pool_output_ceil_mode_rule(size, k, s, p, d, ceil_mode):
    span = (k - 1) * d + 1
    if size + 2 * p < span or 2 * p > k:  # torch refuses padding over half the kernel
        return
    # torch: windows start at i*s - p; floor mode keeps those that fit in the padded line, ceil mode also
    # keeps one that runs past it as long as it starts inside the input or the left padding.
    fitting = len(window_starts(size + 2 * p, span, s))
    expected = fitting
    if ceil_mode and (size + 2 * p - span) % s and fitting * s < size + p:
        expected += 1
    assert tfpad.torch_pool_output(size, k, s, p, d, ceil_mode) == expected
