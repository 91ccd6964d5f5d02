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


@pytest.mark.parametrize(("mode", "torch_cls"), [("LSTM", nn.LSTM), ("GRU", nn.GRU), ("RNN", nn.RNN)])
def test_mask_of_padding_equals_the_unpadded_sequences(mode: str, torch_cls: type) -> None:
    """Keras' masked steps keep the states: with padding at the end, each row's last output and states are
    those of torch.nn on that row without its padding (an independent computation); masked outputs repeat
    the last real one, or are zeros with zero_output_for_mask. The backward direction walks the mask back:
    its states equal torch.nn's on the reversed real steps."""
    torch.manual_seed(2)
    ref = torch_cls(5, 4, batch_first=True, bidirectional=True)
    k = KerasRNN(mode, 5, 4, bidirectional=True)
    k.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 6, 5)
    lengths = [6, 3, 1]
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        y, h = k(x, mask=mask)
        yz, _ = k(x, mask=mask, zero_output_for_mask=True)
        for row, n in enumerate(lengths):
            yr, hr = ref(x[row : row + 1, :n])
            h_row = h[0] if mode == "LSTM" else h
            hr_row = hr[0] if mode == "LSTM" else hr
            torch.testing.assert_close(h_row[:, row], hr_row[:, 0], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(y[row, :n], yr[0], atol=1e-6, rtol=1e-5)
            assert torch.equal(y[row, n:, :4], y[row, n - 1 : n, :4].expand(6 - n, 4))  # forward: repeats
            assert torch.equal(y[row, n:, 4:], torch.zeros(6 - n, 4))  # backward: nothing before the end yet
            assert torch.equal(yz[row, n:], torch.zeros(6 - n, 8))
        full, _ = k(x)
        torch.testing.assert_close(k(x, mask=torch.ones(3, 6, dtype=torch.bool))[0], full)
