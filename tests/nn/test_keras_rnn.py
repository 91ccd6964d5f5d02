"""KerasRNN: equal to torch.nn's layers where the formulas agree, Keras' own formulas where they do not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptools.nn import KerasRNN


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize(("mode", "torch_cls"), [("LSTM", nn.LSTM), ("GRU", nn.GRU), ("RNN", nn.RNN)])
def test_matches_torch_nn_with_torch_formulas(mode: str, torch_cls: type, bidirectional: bool) -> None:
    torch.manual_seed(0)
    ref = torch_cls(5, 4, batch_first=True, bidirectional=bidirectional)
    k = KerasRNN(mode, 5, 4, bidirectional=bidirectional)
    k.load_state_dict(ref.state_dict(), strict=True)  # same names, shapes and gate orders
    x = torch.randn(3, 7, 5)
    with torch.no_grad():
        (yr, hr), (yk, hk) = ref(x), k(x)
    torch.testing.assert_close(yk, yr, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(hk, hr, atol=1e-6, rtol=1e-5)


def test_gru_reset_before_matmul_and_hard_sigmoid_by_hand() -> None:
    """One GRU step with reset_after=False and Keras 2's hard_sigmoid, written out."""
    torch.manual_seed(1)
    k = KerasRNN("GRU", 2, 3, recurrent_activation="hard_sigmoid_k2", reset_after=False)
    x = torch.randn(1, 1, 2)
    with torch.no_grad():
        y, _ = k(x)
        gi = x[0, 0] @ k.weight_ih_l0.T + k.bias_ih_l0
        h = torch.zeros(3)
        w_r, w_z, w_n = k.weight_hh_l0.split(3)
        b_r, b_z, b_n = k.bias_hh_l0.split(3)
        hs = lambda v: torch.clamp(0.2 * v + 0.5, 0, 1)  # noqa: E731
        r = hs(gi[:3] + h @ w_r.T + b_r)
        z = hs(gi[3:6] + h @ w_z.T + b_z)
        n = torch.tanh(gi[6:] + (r * h) @ w_n.T + b_n)
    torch.testing.assert_close(y[0, 0], (1 - z) * n + z * h)


def test_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="mode"):
        KerasRNN("CELL", 2, 3)
    with pytest.raises(ValueError, match="activation"):
        KerasRNN("LSTM", 2, 3, recurrent_activation="softsign")
