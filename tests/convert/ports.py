"""PyTorch ports of the Keras fixture model (tests/fixtures/make_keras_fixtures.py), written by hand.

`FixturePort` uses the Keras layer names, so conversion matches by name; `RenamedPort` registers the same
layers in Keras' order under unrelated names, so only order/role/shape matching can fill it.
"""

from __future__ import annotations

import torch
from torch import nn

from ptools.nn import Conv2dSame, ConvTranspose2dSame


class Separable(nn.Module):
    def __init__(self, cin: int, mult: int, cout: int, k: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin * mult, k, groups=cin, bias=False)  # VALID
        self.pointwise = nn.Conv2d(cin * mult, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _layers() -> list[tuple[str, nn.Module]]:
    # Keras model.layers order (the order weights are stored in).
    return [
        ("conv", Conv2dSame(3, 4, 3, stride=2)),
        ("bn", nn.BatchNorm2d(4, eps=1e-3)),
        ("dw", Conv2dSame(4, 8, 3, groups=4)),
        ("sep", Separable(8, 1, 5, 3)),
        ("emb", nn.Embedding(11, 6)),
        ("deconv", ConvTranspose2dSame(5, 3, 3, stride=2, bias=False)),
        ("lstm", nn.LSTM(6, 5, batch_first=True)),
        ("gru", nn.GRU(5, 4, batch_first=True)),
        ("head", nn.Linear(24, 4)),
        ("ln", nn.LayerNorm(4, eps=1e-3)),
    ]


class _Port(nn.Module):
    names: dict[str, str] = {}

    def __init__(self) -> None:
        super().__init__()
        for name, layer in _layers():
            self.add_module(self.names.get(name, name), layer)

    def _m(self, name: str) -> nn.Module:
        return getattr(self, self.names.get(name, name))

    def forward(self, img: torch.Tensor, tok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self._m("bn")(self._m("conv")(img)))
        x = self._m("deconv")(self._m("sep")(self._m("dw")(x)))
        img_out = self._m("head")(torch.flatten(x, 1))
        s, _ = self._m("lstm")(self._m("emb")(tok))
        s, _ = self._m("gru")(s)
        return img_out, self._m("ln")(s)


class FixturePort(_Port):
    names = {}


class RenamedPort(_Port):
    names = {n: f"block{i}" for i, (n, _) in enumerate(_layers())}
