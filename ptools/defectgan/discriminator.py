"""StarGAN's discriminator: strided convs, a PatchGAN source map and a multi-label class head."""

from __future__ import annotations

import torch
from torch import nn

from ptools.nn import Conv2dSame


class Discriminator(nn.Module):
    """D(x) -> (src, cls): src is a map of real/fake logits (N, 1, h, w), cls is (N, num_classes) logits.

    `layers` x [4x4 stride-2 conv, LeakyReLU(0.01)] with widths width, 2*width, ... capped at max_width.
    D_cls is a conv whose kernel covers the whole remaining map of the configured `image_size`, exactly
    StarGAN's head, so it has no Linear tied to one hard-coded size: D is built for any image size
    divisible by 2**layers. On a larger input the same conv slides over the bigger map and its logits
    are averaged (a patch classifier); a smaller input than it was built for is an error.
    """

    def __init__(
        self,
        image_size: int,
        num_classes: int,
        width: int = 64,
        layers: int = 6,
        max_width: int = 2048,
    ) -> None:
        super().__init__()
        if layers < 1 or image_size % (2**layers):
            raise ValueError(f"image_size {image_size} must be divisible by 2**layers = {2**layers}")
        blocks: list[nn.Module] = []
        c_in, c_out = 3, width
        for _ in range(layers):
            blocks += [Conv2dSame(c_in, c_out, 4, stride=2), nn.LeakyReLU(0.01, inplace=True)]
            c_in, c_out = c_out, min(c_out * 2, max_width)
        self.main = nn.Sequential(*blocks)
        self.final_size = image_size // 2**layers
        self.src = Conv2dSame(c_in, 1, 3, bias=False)
        self.cls = nn.Conv2d(c_in, num_classes, kernel_size=self.final_size, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        if h.shape[-1] < self.final_size or h.shape[-2] < self.final_size:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is smaller than the size this discriminator was built for "
                f"({self.final_size * 2 ** (len(self.main) // 2)} px)"
            )
        # Logits stay raw: the loss is BCE-with-logits (no ReLU or softmax in front of it).
        return self.src(h), self.cls(h).mean(dim=(2, 3))
