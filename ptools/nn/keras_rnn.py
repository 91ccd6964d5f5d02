"""KerasRNN: LSTM/GRU/SimpleRNN with Keras' formulas where torch.nn's recurrent layers differ.

torch.nn.LSTM/GRU hard-code sigmoid gates and tanh, and GRU applies the reset gate after the recurrent
matmul (Keras' `reset_after=True`). Keras 2.0-2.2 models default to `recurrent_activation="hard_sigmoid"`
and GRU `reset_after=False`; this layer computes those exactly. Parameters have torch.nn's names, shapes
and gate orders (LSTM i,f,g,o; GRU r,z,n; `_reverse` for the backward direction), so weights converted
for torch.nn load unchanged, and the call returns what torch.nn's would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def keras_activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """The Keras activations RNNs use. `hard_sigmoid` is Keras 3's relu6(x + 3) / 6; `hard_sigmoid_k2` is
    Keras 2 / tf_keras' clip(0.2 x + 0.5, 0, 1)."""
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "hard_sigmoid":
        return F.hardsigmoid(x)
    if name == "hard_sigmoid_k2":
        return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)
    if name == "relu":
        return torch.relu(x)
    if name == "linear":
        return x
    raise ValueError(f"unsupported activation {name!r}")


ACTIVATIONS = ("sigmoid", "tanh", "hard_sigmoid", "hard_sigmoid_k2", "relu", "linear")


class KerasRNN(nn.Module):
    """One recurrent layer (batch first) with Keras' activations and GRU reset placement.

    `mode` is "LSTM", "GRU" or "RNN" (Keras SimpleRNN). `reset_after=False` (GRU only) applies the reset
    gate to the state before the recurrent matmul: `n = act(x W_in + b_in + (r * h) W_hn + b_hn)`.
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        activation: str = "tanh",
        recurrent_activation: str = "sigmoid",
        reset_after: bool = True,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        if mode not in GATES:
            raise ValueError(f"mode must be LSTM, GRU or RNN, got {mode!r}")
        for act in (activation, recurrent_activation):
            if act not in ACTIVATIONS:
                raise ValueError(f"unsupported activation {act!r}; one of {', '.join(ACTIVATIONS)}")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.activation, self.recurrent_activation = activation, recurrent_activation
        self.reset_after, self.bidirectional, self.bias = reset_after, bidirectional, bias
        g = GATES[mode] * hidden_size
        for suffix in ("", "_reverse") if bidirectional else ("",):
            self.register_parameter(f"weight_ih_l0{suffix}", nn.Parameter(torch.empty(g, input_size)))
            self.register_parameter(f"weight_hh_l0{suffix}", nn.Parameter(torch.empty(g, hidden_size)))
            if bias:
                self.register_parameter(f"bias_ih_l0{suffix}", nn.Parameter(torch.empty(g)))
                self.register_parameter(f"bias_hh_l0{suffix}", nn.Parameter(torch.empty(g)))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)  # torch.nn's RNN init

    def _direction(
        self,
        x: torch.Tensor,
        suffix: str,
        h0: torch.Tensor,
        c0: torch.Tensor | None,
        mask: torch.Tensor | None = None,
        zero_output_for_mask: bool = False,
    ):
        w_ih, w_hh = getattr(self, f"weight_ih_l0{suffix}"), getattr(self, f"weight_hh_l0{suffix}")
        b_ih = getattr(self, f"bias_ih_l0{suffix}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l0{suffix}") if self.bias else None
        gi = F.linear(x, w_ih, b_ih)  # (N, T, G*u): the input part of every step at once
        act, rec = self.activation, self.recurrent_activation
        u = self.hidden_size
        h, c = h0, c0
        outs = []
        steps = range(x.shape[1] - 1, -1, -1) if suffix else range(x.shape[1])
        prev_out = x.new_zeros(x.shape[0], u)
        for t in steps:
            h_prev, c_prev = h, c
            if self.mode == "RNN":
                h = keras_activation(act, gi[:, t] + F.linear(h, w_hh, b_hh))
            elif self.mode == "LSTM":
                z = gi[:, t] + F.linear(h, w_hh, b_hh)
                i, f, g, o = z.split(u, dim=-1)
                c = keras_activation(rec, f) * c + keras_activation(rec, i) * keras_activation(act, g)
                h = keras_activation(rec, o) * keras_activation(act, c)
            else:
                x_r, x_z, x_n = gi[:, t].split(u, dim=-1)
                if self.reset_after:
                    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).split(u, dim=-1)
                    r, z = keras_activation(rec, x_r + h_r), keras_activation(rec, x_z + h_z)
                    n = keras_activation(act, x_n + r * h_n)
                else:
                    w_r, w_z, w_n = w_hh.split(u, dim=0)
                    b_r, b_z, b_n = b_hh.split(u) if b_hh is not None else (None, None, None)
                    r = keras_activation(rec, x_r + F.linear(h, w_r, b_r))
                    z = keras_activation(rec, x_z + F.linear(h, w_z, b_z))
                    n = keras_activation(act, x_n + F.linear(r * h, w_n, b_n))
                h = (1 - z) * n + z * h
            if mask is None:
                outs.append(h)
                continue
            # Keras: a masked step keeps the states and repeats the previous output (or gives zeros).
            m = mask[:, t, None]
            out = torch.where(m, h, torch.zeros_like(h) if zero_output_for_mask else prev_out)
            h = torch.where(m, h, h_prev)
            if c is not None and c_prev is not None:
                c = torch.where(m, c, c_prev)
            outs.append(out)
            prev_out = out
        if suffix:
            outs.reverse()
        return torch.stack(outs, dim=1), h, c

    def forward(self, x: torch.Tensor, hx=None, mask: torch.Tensor | None = None, zero_output_for_mask: bool = False):
        """x: (N, T, input_size). Returns (output, h_n) or, for LSTM, (output, (h_n, c_n)), as torch.nn.

        `mask` (N, T), True where a step is real (Keras' mask, e.g. from `Embedding(mask_zero=True)`): masked
        steps keep the states and output the previous step's output, or zeros with `zero_output_for_mask`
        (Keras' Bidirectional with return_sequences); the backward direction walks the mask backwards."""
        n_dir = 2 if self.bidirectional else 1
        zeros = x.new_zeros(n_dir, x.shape[0], self.hidden_size)
        if hx is None:
            h0, c0 = zeros, zeros
        elif self.mode == "LSTM":
            h0, c0 = hx
        else:
            h0, c0 = hx, zeros
        outs, hs, cs = [], [], []
        for d, suffix in enumerate(("", "_reverse")[:n_dir]):
            o, h, c = self._direction(x, suffix, h0[d], c0[d], mask, zero_output_for_mask)
            outs.append(o)
            hs.append(h)
            cs.append(c)
        output = torch.cat(outs, dim=-1) if n_dir == 2 else outs[0]
        h_n = torch.stack(hs)
        if self.mode == "LSTM":
            return output, (h_n, torch.stack(cs))
        return output, h_n

    def extra_repr(self) -> str:
        return (
            f"{self.mode}, {self.input_size}, {self.hidden_size}, activation={self.activation!r}, "
            f"recurrent_activation={self.recurrent_activation!r}, reset_after={self.reset_after}, "
            f"bidirectional={self.bidirectional}"
        )
