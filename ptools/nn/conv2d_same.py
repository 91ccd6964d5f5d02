"""Conv2dSame and ConvTranspose2dSame: torch.nn convolutions with TensorFlow's SAME/VALID shapes and values."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ptools import padding as tfpad

IntOrPair = int | Sequence[int]


def _mode(padding: object, layer: str) -> str:
    # An int here is almost always torch-style `padding=1` (or dilation passed positionally): refuse it
    # rather than silently meaning something else.
    if padding not in tfpad.PAD_MODES:
        raise ValueError(
            f"{layer}: padding must be 'same' or 'valid' (TF semantics), got {padding!r}; "
            "the layer computes TF's pads itself"
        )
    return str(padding)


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` whose padding follows TensorFlow: SAME (default) or VALID, any stride and dilation.

    SAME pads `pad_total // 2` before and the rest after (the odd pixel goes bottom/right), computed from
    the input size at each call. Pass `input_size=(H, W)` when the size is fixed to compute the pads once:
    symmetric pads then go into the convolution itself (no `F.pad` at run time, friendlier to export),
    asymmetric ones into one constant `F.pad`; a call with another size raises.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: str = "same",
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        input_size: IntOrPair | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        mode = _mode(padding, "Conv2dSame")
        super().__init__(
            in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias, device=device, dtype=dtype
        )
        self.tf_padding = mode
        self.input_size: tuple[int, int] | None = None
        self.static_pad: tuple[int, int, int, int] | None = None
        if input_size is not None:
            self.input_size = tfpad.pair(input_size, "input_size")
            window = self.window(self.input_size)
            if window.symmetric:
                self.padding = (window.h.pad_before, window.w.pad_before)
                self.static_pad = (0, 0, 0, 0)
            else:
                self.static_pad = window.torch_pad

    def window(self, input_size: IntOrPair) -> tfpad.Window2d:
        """TF arithmetic of this layer for an input of `input_size` (H, W)."""
        return tfpad.conv2d_window(input_size, self.kernel_size, self.stride, self.dilation, self.tf_padding)

    def _pad_for(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if self.static_pad is None:
            return self.window(size).torch_pad
        if size != self.input_size:
            raise ValueError(f"Conv2dSame was built for input size {self.input_size}, got {size}")
        return self.static_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self._pad_for(x)
        if any(pad):
            x = F.pad(x, pad)
        return self._conv_forward(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        extra = f", input_size={self.input_size}" if self.input_size else ""
        return super().extra_repr() + f", tf_padding={self.tf_padding!r}{extra}"


class ConvTranspose2dSame(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` with TensorFlow/Keras output size and values (SAME default, or VALID).

    Runs the full transposed conv (padding=0) and keeps TF's window of it: TF crops the odd extra cell on
    the bottom/right, which PyTorch's symmetric `padding`/`output_padding` cannot express (k=3, s=2 is the
    common case). `output_padding=None` is Keras' default (output = input * stride for SAME); an int
    follows Keras' rule and must be below the stride.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: str = "same",
        output_padding: IntOrPair | None = None,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrPair = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        mode = _mode(padding, "ConvTranspose2dSame")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            0,
            0,
            groups,
            bias,
            dilation,
            device=device,
            dtype=dtype,
        )
        self.tf_padding = mode
        self.tf_output_padding = None if output_padding is None else tfpad.pair(output_padding, "output_padding")
        # Fail at construction, not at the first forward, on combinations TF rejects.
        self.window(1 if output_padding is None else 2)

    def window(self, input_size: IntOrPair) -> tfpad.Transpose2d:
        """TF arithmetic of this layer for an input of `input_size` (H, W)."""
        return tfpad.transpose2d_window(
            input_size, self.kernel_size, self.stride, self.dilation, self.tf_padding, self.tf_output_padding
        )

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None:
            raise ValueError("ConvTranspose2dSame: output_size is fixed by the TF rule; use output_padding")
        w = self.window((int(x.shape[-2]), int(x.shape[-1])))
        y = F.conv_transpose2d(x, self.weight, None, self.stride, 0, 0, self.groups, self.dilation)
        (top, bottom), (left, right) = w.crop
        # Negative crops are cells past the full result: TF fills them with zeros (then the bias).
        y = F.pad(y, (-left, -right, -top, -bottom))
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tf_padding={self.tf_padding!r}, tf_output_padding={self.tf_output_padding}"
