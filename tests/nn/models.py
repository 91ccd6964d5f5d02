"""Small models for the scan tests and `check-conv --model tests.nn.models:...`."""

from __future__ import annotations

from torch import nn

from ptools.nn import AvgPool2dSame, Conv2dSame, ConvTranspose2dSame, MaxPool2dSame


def tf_same_model() -> nn.Module:
    """Every layer TF-exact: the scan finds nothing."""
    return nn.Sequential(
        Conv2dSame(3, 4, 3, 2),
        MaxPool2dSame(3, 2),
        Conv2dSame(4, 4, 3, 1, dilation=2, groups=4),
        AvgPool2dSame(2),
        ConvTranspose2dSame(4, 2, 3, 2),
        nn.Conv2d(2, 2, 3, 1, padding=1),  # stride 1, odd kernel: symmetric pad is TF-exact
        nn.Conv2d(2, 2, 1, 2),  # 1x1 stride 2 on even input: no pad in TF either
    )


def drifting_model() -> nn.Module:
    """The usual port mistakes: padding=k//2 at stride 2, and padding=1/output_padding=1 transposed conv."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, 2, padding=1),  # same size as TF on even input, windows shifted
        nn.Conv2d(4, 4, 4, 1, padding=2),  # even kernel: one row too many
        nn.ConvTranspose2d(4, 2, 3, 2, padding=1, output_padding=1),
    )


class Broken(nn.Module):
    """Drifts, then fails in a skip connection, as a mis-padded U-Net does."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 3, 3, 2)  # VALID-like: 15 -> 7
        self.up = nn.ConvTranspose2d(3, 3, 2, 2)  # 7 -> 14

    def forward(self, x):
        return self.up(self.down(x)) + x


def not_a_module() -> int:
    return 3


def long_named_model() -> nn.Module:
    """Layer names far wider than 80 columns: piped output must keep each one whole on its row."""
    from collections import OrderedDict

    return nn.Sequential(
        OrderedDict(
            [
                ("encoder_stage_one_downsampling_convolution_with_a_long_name", nn.Conv2d(3, 4, 3, 2, padding=1)),
                ("encoder_stage_two_pointwise_projection_convolution_long_name", nn.Conv2d(4, 4, 1)),
            ]
        )
    )


def zero_pad_model() -> nn.Module:
    """The recipe `check-conv -i 64 -k 3 -s 2` recommends: nn.ZeroPad2d((0,1,0,1)) + nn.Conv2d(padding=0)."""
    return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3, 2, padding=0))
