"""The DefectGAN generator: encoder, residual bottleneck, SPADE decoder with noise, composition heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptools.nn import Conv2dSame, ConvTranspose2dSame


class ResidualBlock(nn.Module):
    """StarGAN's bottleneck block: conv-IN-ReLU-conv-IN plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Conv2dSame(channels, channels, 3, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(inplace=True),
            Conv2dSame(channels, channels, 3, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SPADE(nn.Module):
    """Parameter-free instance norm, then a per-pixel scale and shift predicted from the control map.

    The map is resized to the feature size with nearest sampling so a pixel mask stays a mask.
    """

    def __init__(self, channels: int, map_channels: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(Conv2dSame(map_channels, hidden, 3), nn.ReLU(inplace=True))
        self.gamma = Conv2dSame(hidden, channels, 3)
        self.beta = Conv2dSame(hidden, channels, 3)

    def forward(self, h: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        a = F.interpolate(control.to(h.dtype), size=h.shape[-2:], mode="nearest")
        s = self.shared(a)
        return self.norm(h) * (1 + self.gamma(s)) + self.beta(s)


class NoiseInjection(nn.Module):
    """Adaptive noise: fresh Gaussian noise on every pass, scaled per channel by a learned weight.

    The scale starts at zero (StyleGAN's form) so training decides how much stochastic detail to use.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(h.shape[0], 1, h.shape[2], h.shape[3], device=h.device, dtype=h.dtype)
        return h + self.scale.to(h.dtype) * noise


class UpStage(nn.Module):
    """x2 upsampling (transposed conv, TF-same; or nearest x2 + 3x3 conv), noise, SPADE on the control map, ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, map_channels: int, hidden: int, noise: bool, mode: str = "transposed"
    ) -> None:
        super().__init__()
        if mode == "nearest":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), Conv2dSame(in_channels, out_channels, 3, bias=False)
            )
        else:
            self.up = ConvTranspose2dSame(in_channels, out_channels, 4, stride=2, bias=False)
        self.noise = NoiseInjection(out_channels) if noise else nn.Identity()
        self.spade = SPADE(out_channels, map_channels, hidden)
        self.act = nn.ReLU(inplace=True)

    def forward(self, h: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        return self.act(self.spade(self.noise(self.up(h)), control))


class Generator(nn.Module):
    """G(x, A) -> (M * F + (1 - M) * x, M): one network for defacement and restoration, chosen by A.

    `map_channels` is the control map's channel count (1 + number of defect labels).
    """

    def __init__(
        self,
        map_channels: int,
        width: int = 64,
        res_blocks: int = 6,
        spade_hidden: int = 128,
        noise: bool = True,
        skip: bool = False,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            Conv2dSame(3, w, 7, bias=False),
            nn.InstanceNorm2d(w, affine=True),
            nn.ReLU(inplace=True),
        )
        self.encoder = nn.Sequential(
            Conv2dSame(w, 2 * w, 4, stride=2, bias=False),
            nn.InstanceNorm2d(2 * w, affine=True),
            nn.ReLU(inplace=True),
            Conv2dSame(2 * w, 4 * w, 4, stride=2, bias=False),
            nn.InstanceNorm2d(4 * w, affine=True),
            nn.ReLU(inplace=True),
        )
        self.bottleneck = nn.Sequential(*[ResidualBlock(4 * w) for _ in range(res_blocks)])
        self.up1 = UpStage(4 * w, 2 * w, map_channels, spade_hidden, noise, upsample)
        self.up2 = UpStage(2 * w, w, map_channels, spade_hidden, noise, upsample)
        # (choice, off in the paper) `skip` joins the full-resolution stem features to the last decoder
        # stage (a U-Net skip): without it every output pixel comes through the stride-4 bottleneck. It
        # did not sharpen the map in 600-step CPU runs (the halo came from the loss; see config.mask_loss).
        self.skip = skip
        head_in = 2 * w if skip else w
        self.foreground = Conv2dSame(head_in, 3, 7)
        self.spatial_map = Conv2dSame(head_in, 1, 7)

    def forward(self, x: torch.Tensor, control: torch.Tensor, with_parts: bool = False) -> tuple[torch.Tensor, ...]:
        """(output, M), or with `with_parts` (output, M, logit of M, foreground F) for losses on the parts."""
        s = self.stem(x)
        h = self.bottleneck(self.encoder(s))
        h = self.up2(self.up1(h, control), control)
        if self.skip:
            h = torch.cat([h, s], dim=1)
        fg = torch.tanh(self.foreground(h))
        logit = self.spatial_map(h)
        m = torch.sigmoid(logit)
        # Layer-wise composition: the map decides where the foreground replaces the input.
        out = m * fg + (1 - m) * x
        return (out, m, logit, fg) if with_parts else (out, m)
