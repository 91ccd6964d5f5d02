"""Layout rules checked against numpy re-implementations of TF's layer equations (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ptools.convert import layouts
from ptools.convert.writer import bf16_bits

rng = np.random.default_rng(0)


def _tf_conv_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """TF Conv2D VALID, stride 1, NHWC x HWIO, by definition."""
    n, h, w, _ = x.shape
    kh, kw, _, co = k.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, co))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", x[:, i : i + kh, j : j + kw, :], k)
    return out


def _tf_depthwise_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """TF DepthwiseConv2D VALID: output channel c*M + m = sum x[..., c] * k[..., c, m]."""
    n, h, w, c = x.shape
    kh, kw, _, m = k.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, c * m))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            patch = x[:, i : i + kh, j : j + kw, :]
            out[:, i, j, :] = np.einsum("nhwc,hwcm->ncm", patch, k).reshape(n, c * m)
    return out


def test_conv2d_kernel() -> None:
    x, k = rng.standard_normal((2, 6, 5, 3)), rng.standard_normal((3, 2, 3, 4))
    ref = _tf_conv_valid(x, k)
    got = F.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(layouts.conv_kernel(k)))
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), ref, atol=1e-10)


def test_conv1d_and_conv3d_axes() -> None:
    k1 = rng.standard_normal((3, 2, 5))  # (k, in, out)
    assert layouts.conv_kernel(k1).shape == (5, 2, 3)
    np.testing.assert_array_equal(layouts.conv_kernel(k1)[4, 1, 2], k1[2, 1, 4])
    k3 = rng.standard_normal((2, 3, 4, 5, 6))  # (d, h, w, in, out)
    assert layouts.conv_kernel(k3).shape == (6, 5, 2, 3, 4)
    np.testing.assert_array_equal(layouts.conv_kernel(k3)[1, 2, 1, 0, 3], k3[1, 0, 3, 2, 1])


@pytest.mark.parametrize("mult", [1, 2, 3])
def test_depthwise_with_multiplier(mult: int) -> None:
    x, k = rng.standard_normal((1, 5, 5, 3)), rng.standard_normal((3, 3, 3, mult))
    ref = _tf_depthwise_valid(x, k)
    w = torch.from_numpy(layouts.depthwise_kernel(k))
    got = F.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), w, groups=3)
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), ref, atol=1e-10)


def test_dense_after_flatten() -> None:
    h, w, c, out = 3, 2, 4, 5
    x, k = rng.standard_normal((2, h, w, c)), rng.standard_normal((h * w * c, out))
    ref = x.reshape(2, -1) @ k  # Keras flattens NHWC
    lin = layouts.dense_after_flatten(k, (h, w, c))
    got = torch.flatten(torch.from_numpy(x).permute(0, 3, 1, 2), 1).numpy() @ lin.T
    np.testing.assert_allclose(got, ref, atol=1e-10)
    # Without the permutation the result is wrong (guards against a no-op implementation).
    assert np.abs(torch.flatten(torch.from_numpy(x).permute(0, 3, 1, 2), 1).numpy() @ k - ref).max() > 1e-3


def _sig(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def test_gru_reset_after() -> None:
    n_in, u, T = 3, 4, 5
    k, rk, b = rng.standard_normal((n_in, 3 * u)), rng.standard_normal((u, 3 * u)), rng.standard_normal((2, 3 * u))
    xs = rng.standard_normal((1, T, n_in))
    h = np.zeros((1, u))
    for t in range(T):  # Keras GRU, reset_after=True, gates z, r, h
        mx = xs[:, t] @ k + b[0]
        mh = h @ rk + b[1]
        z = _sig(mx[:, :u] + mh[:, :u])
        r = _sig(mx[:, u : 2 * u] + mh[:, u : 2 * u])
        hh = np.tanh(mx[:, 2 * u :] + r * mh[:, 2 * u :])
        h = z * h + (1 - z) * hh
    gru = torch.nn.GRU(n_in, u, batch_first=True).double()
    sd = {
        "weight_ih_l0": layouts.swap_gates_zr(layouts.dense_kernel(k)),
        "weight_hh_l0": layouts.swap_gates_zr(layouts.dense_kernel(rk)),
        "bias_ih_l0": layouts.swap_gates_zr(b[0]),
        "bias_hh_l0": layouts.swap_gates_zr(b[1]),
    }
    gru.load_state_dict({n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in sd.items()})
    out, _ = gru(torch.from_numpy(xs))
    np.testing.assert_allclose(out[:, -1].detach().numpy(), h, atol=1e-10)


def test_tf1_lstm_cell_with_forget_bias() -> None:
    from ptools.convert.source import LayerMeta, SourceTensor

    n_in, u, T, fb = 3, 2, 4, 1.0
    kernel, bias = rng.standard_normal((n_in + u, 4 * u)), rng.standard_normal(4 * u)
    xs = rng.standard_normal((1, T, n_in))
    h, c = np.zeros((1, u)), np.zeros((1, u))
    for t in range(T):  # tf.compat.v1.nn.rnn_cell.LSTMCell: [x, h] @ kernel + bias, gates i, j, f, o
        z = np.concatenate([xs[:, t], h], 1) @ kernel + bias
        i, j, f, o = np.split(z, 4, axis=1)
        c = c * _sig(f + fb) + _sig(i) * np.tanh(j)
        h = _sig(o) * np.tanh(c)

    def src(var: str, a: np.ndarray) -> SourceTensor:
        return SourceTensor(f"rnn/lstm_cell/{var}", "rnn/lstm_cell", var, a.shape, "float64", "weight", lambda: a)

    meta = LayerMeta("rnn/lstm_cell", None)
    items, notes = layouts.convert_layer(
        meta, {"kernel": src("kernel", kernel), "bias": src("bias", bias)}, "rnn", layouts.LayerOptions(forget_bias=fb)
    )
    assert meta.class_name == "TF1LSTMCell" and meta.class_inferred
    assert any(n.setting == "forget_bias" for n in notes)
    lstm = torch.nn.LSTM(n_in, u, batch_first=True).double()
    lstm.load_state_dict({i.role: torch.from_numpy(np.asarray(i.make(), dtype=np.float64)) for i in items})
    out, _ = lstm(torch.from_numpy(xs))
    np.testing.assert_allclose(out[:, -1].detach().numpy(), h, atol=1e-10)


def test_infer_class_from_names_and_shapes() -> None:
    from ptools.convert.source import SourceTensor

    def t(shape: tuple[int, ...]) -> SourceTensor:
        return SourceTensor("x", "l", "v", shape, "float32", "weight", lambda: np.zeros(shape))

    assert layouts.infer_class("l", {"kernel": t((3, 3, 2, 4)), "bias": t((4,))}) == "Conv2D"
    assert layouts.infer_class("up/conv2d_transpose", {"kernel": t((3, 3, 2, 4))}) == "Conv2DTranspose"
    assert layouts.infer_class("l", {"kernel": t((4, 5))}) == "Dense"
    assert layouts.infer_class("l", {"kernel": t((3, 8)), "recurrent_kernel": t((2, 8)), "bias": t((8,))}) == "LSTM"
    assert layouts.infer_class("l", {"kernel": t((3, 6)), "recurrent_kernel": t((2, 6)), "bias": t((2, 6))}) == "GRU"
    assert layouts.infer_class("rnn/gru_cell/gates", {"kernel": t((5, 4)), "bias": t((4,))}) == "TF1GRUCellPart"
    assert layouts.infer_class("l", {"beta": t((4,)), "moving_mean": t((4,)), "moving_variance": t((4,))}) == (
        "BatchNormalization"
    )


def test_bf16_rounding_matches_torch() -> None:
    a = rng.standard_normal(1000).astype(np.float32) * 100
    ours = bf16_bits(a).view(np.int16)
    ref = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy()
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("shape", [(5, 3), (300, 129), (3, 3, 130, 260), (2, 257), (4, 1, 3, 2, 140)])
def test_tiled_transpose_and_chunks_match_numpy(shape: tuple[int, ...]) -> None:
    k = rng.standard_normal(shape).astype(np.float32)
    n = k.ndim
    ref = k.transpose(n - 1, n - 2, *range(n - 2))
    np.testing.assert_array_equal(layouts.conv_kernel(k), ref)
    joined = np.concatenate([c.reshape(-1) for c in layouts.swap_chunks(k)])
    np.testing.assert_array_equal(joined, ref.reshape(-1))


# (class, config as tf_keras 2.21 saves it, input shape, the output shape tf_keras computed): a Flatten after
# these layers needs the shape, else the Dense after it is an open question (fuzz seed 58807 models 18, 20).
KERAS_SHAPES = [
    ("ZeroPadding1D", {"padding": [2, 2]}, (6, 1), (10, 1)),
    ("ZeroPadding1D", {"padding": [1, 3]}, (6, 2), (10, 2)),
    ("ZeroPadding2D", {"padding": [[1, 0], [2, 3]]}, (5, 4, 3), (6, 9, 3)),
    ("ZeroPadding3D", {"padding": [[1, 1], [2, 2], [0, 0]]}, (3, 4, 5, 2), (5, 8, 5, 2)),
    ("Cropping1D", {"cropping": [1, 2]}, (7, 3), (4, 3)),
    ("Cropping2D", {"cropping": [[1, 0], [0, 1]]}, (6, 5, 3), (5, 4, 3)),
    ("Cropping3D", {"cropping": [[1, 0], [0, 1], [1, 1]]}, (4, 5, 6, 2), (3, 4, 4, 2)),
    ("Embedding", {"output_dim": 4}, (6,), (6, 4)),
]


@pytest.mark.parametrize(("cls", "cfg", "x", "want"), KERAS_SHAPES)
def test_output_shapes_of_padding_cropping_and_embedding(cls: str, cfg: dict, x: tuple, want: tuple) -> None:
    from ptools.convert.shapes import output_shape

    assert output_shape(cls, cfg, [x]) == want
