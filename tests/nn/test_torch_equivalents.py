"""The PyTorch formulas and "can symmetric padding= express it" answers in ptools.padding, checked on real torch."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from ptools import padding as tfpad
from ptools.nn import AvgPool2dSame, Conv2dSame, ConvTranspose2dSame, MaxPool2dSame

GRID = list(itertools.product(range(1, 12), range(1, 6), range(1, 4)))  # size, kernel, stride


def line(size: int) -> torch.Tensor:
    torch.manual_seed(size)
    return torch.randn(1, 1, 1, size, dtype=torch.float64) - 3  # negative: a zero pad would win a max


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b)


@pytest.mark.parametrize("dilation", [1, 2])
def test_torch_output_formulas(dilation):
    for size, k, s in GRID:
        x = line(size)
        span = (k - 1) * dilation + 1
        for p in range(k // 2 + 1):
            if size + 2 * p >= span:
                got = F.conv2d(x, torch.ones(1, 1, 1, k, dtype=x.dtype), None, (1, s), (0, p), (1, dilation))
                assert got.shape[-1] == tfpad.torch_conv_output(size, k, s, p, dilation)
                for ceil_mode in (False, True):
                    got = F.max_pool2d(x, (1, k), (1, s), (0, p), (1, dilation), ceil_mode=ceil_mode)
                    assert got.shape[-1] == tfpad.torch_pool_output(size, k, s, p, dilation, ceil_mode)
            for op in range(max(s, dilation)):
                w = torch.ones(1, 1, 1, k, dtype=x.dtype)
                if tfpad.torch_transpose_output(size, k, s, p, op, dilation) >= 1:
                    got = F.conv_transpose2d(x, w, None, (1, s), (0, p), (0, op), 1, (1, dilation))
                    assert got.shape[-1] == tfpad.torch_transpose_output(size, k, s, p, op, dilation)


def test_conv_padding_answer():
    for size, k, s in GRID:
        x = line(size)
        layer = Conv2dSame(1, 1, (1, k), (1, s)).double()
        want = layer(x)
        p = tfpad.torch_conv_padding(tfpad.conv_window(size, k, s))
        options = {q: F.conv2d(x, layer.weight, layer.bias, (1, s), (0, q)) for q in range(k) if size + 2 * q >= k}
        if p is None:
            assert not any(same(got, want) for got in options.values())
        else:
            assert same(options[p], want)


def test_pool_padding_answer():
    for size, k, s in GRID:
        x = line(size)
        want_max, want_avg = MaxPool2dSame((1, k), (1, s))(x), AvgPool2dSame((1, k), (1, s))(x)
        answer = tfpad.torch_pool_padding(tfpad.pool_window(size, k, s))
        options = {}
        for p, ceil_mode in itertools.product(range(k // 2 + 1), (False, True)):
            try:  # ceil_mode accepts a window wider than the padded input; floor mode has no output then
                mx = F.max_pool2d(x, (1, k), (1, s), (0, p), ceil_mode=ceil_mode)
                avg = F.avg_pool2d(x, (1, k), (1, s), (0, p), ceil_mode=ceil_mode, count_include_pad=False)
            except RuntimeError:
                continue
            options[(p, ceil_mode)] = (mx, avg)
        if answer is None:
            assert not any(same(mx, want_max) for mx, _ in options.values())
        else:
            mx, avg = options[answer]
            assert same(mx, want_max) and same(avg, want_avg), (size, k, s, answer)


def test_transpose_padding_answer():
    for size, k, s in GRID:
        x = line(size)
        layer = ConvTranspose2dSame(1, 1, (1, k), (1, s)).double()
        torch.nn.init.normal_(layer.bias)
        want = layer(x)
        answer = tfpad.torch_transpose_padding(tfpad.transpose_window(size, k, s))
        options = {
            (p, op): F.conv_transpose2d(x, layer.weight, layer.bias, (1, s), (0, p), (0, op))
            for p in range(k)
            for op in range(s)
            if tfpad.torch_transpose_output(size, k, s, p, op) >= 1
        }
        if answer is None:
            assert not any(same(got, want) for got in options.values()), (size, k, s)
        else:
            assert same(options[answer], want)
