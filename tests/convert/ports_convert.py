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


class K20StyleNHWCInput(K20Style):
    """The same model taking NHWC input (it permutes first) and flattening NCHW: called with the config's
    input shape as NCHW it fails, so only --input-size HxWxC lets it be traced."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 3, 1, 2))


class Flatten(nn.Module):
    """tf2_flatten / k2_flatten*: Conv(2->3, 3, valid) -> Flatten -> Dense(4) -> Dense(2), input 2x7x5."""

    example_input_array = torch.zeros(1, 2, 7, 5)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.dense = nn.Linear(45, 4)
        self.out = nn.Linear(4, 2)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dense(self.flat(self.conv(x))))


class FlattenNoExample(Flatten):
    example_input_array = None


class FlattenNHWC(Flatten):
    """A port that flattens in TF's order (permute to NHWC first): its Linear wants TF's rows as they are."""

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Flatten()(x.permute(0, 2, 3, 1))


class FlattenGap(Flatten):
    """A wrong port (global pooling where Keras flattens) with the same shapes is not this model: its Dense
    input is a vector, so the trace settles the question as 'no permutation', and outputs differ."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(45, 4)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1).repeat(1, 15)


class K3Depthwise(nn.Module):
    """k3_depthwise*: Conv(3->4, same) -> DepthwiseConv(x2, same) -> Conv 1x1 (8->5) -> GAP -> Dense(3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding="same")
        self.dw = nn.Conv2d(4, 8, 3, padding="same", groups=4)
        self.pw = nn.Conv2d(8, 5, 1)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(self.conv(x)))
        return self.head(x.mean((2, 3)))


class TF1LayerNorm(nn.Module):
    """tf1_layernorm: Dense(4->6) -> LN -> relu -> Dense(6->6) -> LN -> relu -> Dense(3), LN eps 1e-3."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.ln1 = nn.LayerNorm(6, eps=1e-3)
        self.fc2 = nn.Linear(6, 6)
        self.ln2 = nn.LayerNorm(6, eps=1e-3)
        self.fc3 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.ln1(self.fc1(x)))
        return self.fc3(torch.relu(self.ln2(self.fc2(x))))


class MetricsModel(nn.Module):
    """saved_model_metrics: Dense(5->4, relu) -> Dense(2)."""

    def __init__(self) -> None:
        super().__init__()
        self.d1 = nn.Linear(5, 4)
        self.d2 = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d2(torch.relu(self.d1(x)))


class Wrappers(nn.Module):
    """wrappers*: Normalization -> Bidirectional(LSTM 4, sequences) -> TimeDistributed(Dense 3) -> SimpleRNN(2)
    and Bidirectional(GRU 2, sum) -> Concatenate -> Dense(2); input (6, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("norm_mean", torch.zeros(3))
        self.register_buffer("norm_variance", torch.ones(3))
        self.bilstm = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
        self.td = nn.Linear(8, 3)
        self.srnn = nn.RNN(3, 2, batch_first=True)
        self.bigru = nn.GRU(3, 2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.norm_mean) / torch.clamp(self.norm_variance.sqrt(), min=1e-7)
        x = self.td(self.bilstm(x)[0])
        a = self.srnn(x)[0][:, -1]
        h = self.bigru(x)[1]
        return self.head(torch.cat([a, h[0] + h[1]], dim=-1))


class Transfer(nn.Module):
    """nested*: a base model (Conv 3->4 same, BN, ReLU) -> global average pooling -> Dense(3)."""

    def __init__(self) -> None:
        super().__init__()
        self.base = nn.ModuleDict({"b_conv": nn.Conv2d(3, 4, 3, padding="same"), "b_bn": nn.BatchNorm2d(4, eps=1e-3)})
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.base["b_bn"](self.base["b_conv"](x)))
        return self.head(x.mean((2, 3)))


class FlattenParts(nn.Module):
    """flatten_parts*: Conv(3->3, 2) on 5x4x3 -> flatten (NCHW) -> BN -> LN -> PReLU(36), then Dense on
    cat([vec(4), that])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 2)
        self.bn = nn.BatchNorm1d(36, eps=1e-3)
        self.ln = nn.LayerNorm(36, eps=1e-3)
        self.prelu = nn.PReLU(36)
        self.head = nn.Linear(40, 3)

    def forward(self, img: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.ln(self.bn(torch.flatten(self.conv(img), 1))))
        return self.head(torch.cat([vec, x], dim=1))


class LnAxesCL(nn.Module):
    """ln_axes: Conv1d(3->2, k3) -> LayerNorm over (L, C) = (2, 2) on a channels-last view, back to (N, C, L)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 2, 3)
        self.ln = nn.LayerNorm((2, 2), eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, L, C) as Keras
        return self.ln(self.conv(x.transpose(1, 2)).transpose(1, 2))  # (N, L, C)


class FlattenOps(nn.Module):
    """flatten_ops*: x - 0.5, crop ((1, 0), (0, 1)) of 6x5x3 -> flatten (NCHW, 60) -> (elu - flat) / 2 -> nested
    Dense `block.inner` (60 -> 4) -> Dense `head` (4 -> 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleDict({"inner": nn.Linear(60, 4)})
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.flatten((x - 0.5)[:, :, 1:, :-1], 1)
        return self.head(self.block["inner"]((torch.nn.functional.elu(f) - f) / 2.0))
