"""MaxPool2dSame and AvgPool2dSame: torch.nn pooling with TensorFlow's SAME/VALID shapes and values."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ptools import padding as tfpad
from ptools.nn.conv2d_same import _mode

IntOrPair = int | Sequence[int]


class MaxPool2dSame(nn.MaxPool2d):
    """`nn.MaxPool2d` with TF padding: SAME pads with -inf, so padded cells never win (as in TF)."""

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: str = "same", dilation: IntOrPair = 1
    ) -> None:
        mode = _mode(padding, "MaxPool2dSame")
        k = tfpad.pair(kernel_size, "kernel_size")
        s = k if stride is None else tfpad.pair(stride, "stride")
        super().__init__(k, s, 0, tfpad.pair(dilation, "dilation"))
        self.tf_padding = mode

    def window(self, input_size: IntOrPair) -> tfpad.Window2d:
        return tfpad.pool2d_window(input_size, self.kernel_size, self.stride, self.tf_padding, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.window((int(x.shape[-2]), int(x.shape[-1]))).torch_pad
        if any(pad):
            x = F.pad(x, pad, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride, 0, self.dilation)


class AvgPool2dSame(nn.AvgPool2d):
    """`nn.AvgPool2d` with TF padding: SAME averages over the valid cells of each window only.

    Zero-padding and dividing by the window size (count_include_pad=True) is wrong at the borders; here
    the window sum is divided by the number of real cells in it.
    """

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: str = "same") -> None:
        mode = _mode(padding, "AvgPool2dSame")
        k = tfpad.pair(kernel_size, "kernel_size")
        s = k if stride is None else tfpad.pair(stride, "stride")
        super().__init__(k, s, 0)
        self.tf_padding = mode

    def window(self, input_size: IntOrPair) -> tfpad.Window2d:
        return tfpad.pool2d_window(input_size, self.kernel_size, self.stride, self.tf_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.window((int(x.shape[-2]), int(x.shape[-1]))).torch_pad
        if not any(pad):
            return F.avg_pool2d(x, self.kernel_size, self.stride)
        total = F.avg_pool2d(F.pad(x, pad), self.kernel_size, self.stride, divisor_override=1)
        ones = torch.ones((1, 1, *x.shape[-2:]), dtype=x.dtype, device=x.device)
        count = F.avg_pool2d(F.pad(ones, pad), self.kernel_size, self.stride, divisor_override=1)
        return total / count
