"""PyTorch ports of the models in tests/fixtures/make_convert_fixtures.py, written by hand from the Keras code."""

from __future__ import annotations

import torch
from torch import nn

from ptools.nn import MaxPool2dSame


class K20Style(nn.Module):
    """k20_style.h5 under the Keras layer names (conv2d_1, ...); MaxPooling2D(3, 2, 'same') needs MaxPool2dSame."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2d_1 = nn.Conv2d(3, 4, 3, padding="same")
        self.batch_normalization_1 = nn.BatchNorm2d(4, eps=0.01)
        self.max_pooling2d_1 = MaxPool2dSame(3, 2)
        self.conv2d_2 = nn.Conv2d(4, 6, 3)
        self.dense_1 = nn.Linear(36, 5)
        self.dense_2 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.max_pooling2d_1(torch.relu(self.batch_normalization_1(self.conv2d_1(x))))
        x = torch.flatten(self.conv2d_2(x), 1)
        return self.dense_2(torch.relu(self.dense_1(x)))


class K20StyleScopes(K20Style):
    """The same model, its modules named after the file's weight scopes (conv2d_1_1, ...)."""

    def __init__(self) -> None:
        super().__init__()
        for name in ["conv2d_1", "batch_normalization_1", "conv2d_2", "dense_1", "dense_2"]:
            self.add_module(name + "_1", self._modules.pop(name))

    def __getattr__(self, name: str):  # forward() uses the layer names
        modules = self.__dict__["_modules"]
        if name + "_1" in modules:
            return modules[name + "_1"]
        return super().__getattr__(name)
