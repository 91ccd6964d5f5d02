"""Values of the TF-padding layers against independent references, and the weight helpers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptools.nn import (
    AvgPool2dSame,
    Conv2dSame,
    ConvTranspose2dSame,
    MaxPool2dSame,
    add_spectral_norm,
    has_spectral_norm,
    init_weights,
)

# The TF rule, written out here on its own so the references do not reuse ptools.padding.


def tf_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    k_eff = (k - 1) * d + 1
    out = math.ceil(size / s)
    total = max((out - 1) * s + k_eff - size, 0)
    return total // 2, total - total // 2


def ref_conv_same(x, w, b, stride, dilation, groups=1):
    (sh, sw), (dh, dw) = stride, dilation
    top, bottom = tf_pads(x.shape[-2], w.shape[-2], sh, dh)
    left, right = tf_pads(x.shape[-1], w.shape[-1], sw, dw)
    return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride, 0, dilation, groups)


def ref_pool(x, k, s, reduce):
    """Pooling by hand: each window over the real cells only (TF ignores padded cells)."""
    (kh, kw), (sh, sw) = k, s
    top, _ = tf_pads(x.shape[-2], kh, sh)
    left, _ = tf_pads(x.shape[-1], kw, sw)
    oh, ow = math.ceil(x.shape[-2] / sh), math.ceil(x.shape[-1] / sw)
    out = torch.empty(*x.shape[:-2], oh, ow, dtype=x.dtype)
    for i, j in itertools.product(range(oh), range(ow)):
        r0, c0 = i * sh - top, j * sw - left
        rows = slice(max(r0, 0), min(r0 + kh, x.shape[-2]))
        cols = slice(max(c0, 0), min(c0 + kw, x.shape[-1]))
        cells = x[..., rows, cols].flatten(-2)
        out[..., i, j] = cells.amax(-1) if reduce == "max" else cells.mean(-1)
    return out


def keras_transpose_length(size, k, s, d, output_padding):
    k_eff = (k - 1) * d + 1
    return size * s if output_padding is None else (size - 1) * s + k_eff % 2 + output_padding


def ref_transpose_same(x, w, b, stride, dilation, output_padding, groups=1):
    """TF's definition: conv2d_transpose is the gradient of a SAME conv whose input has the output size."""
    oph, opw = output_padding if output_padding is not None else (None, None)
    lh = keras_transpose_length(x.shape[-2], w.shape[-2], stride[0], dilation[0], oph)
    lw = keras_transpose_length(x.shape[-1], w.shape[-1], stride[1], dilation[1], opw)
    z = torch.zeros(x.shape[0], w.shape[1] * groups, lh, lw, dtype=x.dtype, requires_grad=True)
    forward = ref_conv_same(z, w, None, stride, dilation, groups)
    assert forward.shape[-2:] == x.shape[-2:]
    (grad,) = torch.autograd.grad((forward * x).sum(), z)
    return grad + b.view(1, -1, 1, 1)


CONV_CASES = [
    # (H, W), kernel, stride, dilation
    ((11, 11), (3, 3), (2, 2), (1, 1)),
    ((10, 10), (3, 3), (2, 2), (1, 1)),
    ((12, 9), (4, 4), (1, 1), (1, 1)),  # even kernel: pad (1, 2)
    ((9, 13), (3, 5), (1, 2), (1, 1)),  # non-square kernel and stride
    ((10, 9), (3, 3), (3, 3), (1, 1)),
    ((13, 12), (3, 3), (1, 2), (2, 3)),  # dilation
    ((7, 8), (2, 2), (4, 3), (1, 1)),  # stride > kernel
    ((5, 6), (7, 7), (2, 1), (1, 1)),  # kernel > input
    ((1, 1), (3, 3), (2, 2), (1, 1)),
]


@pytest.mark.parametrize(("size", "k", "s", "d"), CONV_CASES)
def test_conv2d_same_matches_explicit_pad_reference(size, k, s, d):
    torch.manual_seed(0)
    layer = Conv2dSame(3, 4, k, s, dilation=d).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    expected = ref_conv_same(x, layer.weight, layer.bias, s, d)
    got = layer(x)
    assert got.shape[-2:] == (math.ceil(size[0] / s[0]), math.ceil(size[1] / s[1]))
    torch.testing.assert_close(got, expected)


def test_conv2d_same_known_tf_pads():
    # Pads measured against tf.nn.conv2d (TF_FORMATS.md 6.1): 224/k7/s2 -> (2, 3); 224/k3/s2 -> (0, 1).
    assert Conv2dSame(1, 1, 7, 2).window(224).padding == ((2, 3), (2, 3))
    assert Conv2dSame(1, 1, 3, 2).window(224).padding == ((0, 1), (0, 1))
    assert Conv2dSame(1, 1, 4, 1).window(9).padding == ((1, 2), (1, 2))


def test_conv2d_same_differs_from_symmetric_torch_padding_when_pad_is_odd():
    torch.manual_seed(0)
    layer = Conv2dSame(1, 1, 3, 2).double()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    naive = F.conv2d(x, layer.weight, layer.bias, 2, 1)
    assert naive.shape == layer(x).shape
    assert not torch.allclose(naive, layer(x))


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv2d_same(multiplier):
    torch.manual_seed(1)
    layer = Conv2dSame(4, 4 * multiplier, 3, 2, groups=4).double()
    x = torch.randn(1, 4, 9, 10, dtype=torch.float64)
    torch.testing.assert_close(layer(x), ref_conv_same(x, layer.weight, layer.bias, (2, 2), (1, 1), groups=4))


def test_conv2d_same_valid_mode():
    layer = Conv2dSame(2, 3, 3, 2, padding="valid").double()
    x = torch.randn(1, 2, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, 2))


@pytest.mark.parametrize(("size", "k", "s", "d"), CONV_CASES)
def test_static_conv2d_same_equals_dynamic(size, k, s, d):
    torch.manual_seed(0)
    dynamic = Conv2dSame(3, 2, k, s, dilation=d).double()
    static = Conv2dSame(3, 2, k, s, dilation=d, input_size=size).double()
    static.load_state_dict(dynamic.state_dict())
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(static(x), dynamic(x))


def test_static_symmetric_conv2d_same_does_not_pad_at_run_time(monkeypatch):
    layer = Conv2dSame(3, 2, 3, 2, input_size=(225, 225))  # pad total 2: (1, 1)
    assert layer.padding == (1, 1)
    x = torch.randn(1, 3, 225, 225)

    def no_pad(*args, **kwargs):
        raise AssertionError("F.pad called")

    monkeypatch.setattr(F, "pad", no_pad)
    assert layer(x).shape[-2:] == (113, 113)


def test_static_conv2d_same_rejects_another_size():
    layer = Conv2dSame(1, 1, 3, 2, input_size=(10, 10))
    with pytest.raises(ValueError, match="built for input size"):
        layer(torch.randn(1, 1, 12, 10))


def test_torch_style_padding_argument_is_refused():
    with pytest.raises(ValueError, match="'same' or 'valid'"):
        Conv2dSame(3, 8, 3, 2, 1)
    with pytest.raises(ValueError, match="'same' or 'valid'"):
        ConvTranspose2dSame(3, 8, 3, 2, 1)


TRANSPOSE_CASES = [
    # (H, W), kernel, stride, dilation, output_padding
    ((5, 5), (3, 3), (2, 2), (1, 1), None),  # k - s odd: the case torch padding= cannot express
    ((4, 6), (4, 4), (2, 2), (1, 1), None),
    ((5, 4), (5, 5), (2, 2), (1, 1), None),
    ((3, 3), (3, 3), (3, 3), (1, 1), None),
    ((3, 4), (2, 2), (3, 3), (1, 1), None),  # stride > kernel: zero-extended, bias only
    ((4, 4), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((4, 4), (3, 3), (2, 2), (1, 1), (0, 0)),
    ((4, 5), (4, 4), (2, 2), (1, 1), (1, 1)),
    ((3, 4), (5, 5), (3, 3), (1, 1), (2, 2)),
    ((4, 3), (2, 2), (2, 2), (1, 1), (1, 1)),
    ((4, 5), (3, 2), (2, 1), (1, 1), None),  # non-square
    ((5, 4), (3, 3), (1, 1), (2, 2), None),  # dilation
]


@pytest.mark.parametrize(("size", "k", "s", "d", "op"), TRANSPOSE_CASES)
def test_conv_transpose2d_same_matches_gradient_definition(size, k, s, d, op):
    torch.manual_seed(0)
    layer = ConvTranspose2dSame(3, 2, k, s, output_padding=op, dilation=d).double()
    nn.init.normal_(layer.bias)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(layer(x), ref_transpose_same(x, layer.weight, layer.bias, s, d, op))


def test_conv_transpose2d_same_grouped():
    torch.manual_seed(0)
    layer = ConvTranspose2dSame(4, 6, 3, 2, groups=2).double()
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), ref_transpose_same(x, layer.weight, layer.bias, (2, 2), (1, 1), None, 2))


def test_conv_transpose2d_same_is_not_torch_padding_1_output_padding_1():
    torch.manual_seed(0)
    layer = ConvTranspose2dSame(1, 1, 3, 2).double()
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    naive = F.conv_transpose2d(x, layer.weight, layer.bias, 2, 1, 1)
    assert naive.shape == layer(x).shape == (1, 1, 10, 10)
    assert not torch.allclose(naive, layer(x))


def test_conv_transpose2d_rejects_combinations_tf_rejects():
    with pytest.raises(Exception, match="TF rejects"):
        ConvTranspose2dSame(1, 1, 4, 2, output_padding=0)
    with pytest.raises(Exception, match="smaller than the stride"):
        ConvTranspose2dSame(1, 1, 3, 2, output_padding=2)


POOL_CASES = [
    ((7, 7), (3, 3), (2, 2)),
    ((8, 8), (3, 3), (2, 2)),
    ((6, 9), (2, 3), (2, 1)),
    ((5, 5), (2, 2), (3, 3)),  # stride > kernel
    ((4, 5), (5, 5), (1, 1)),  # window larger than input
    ((9, 8), (3, 3), (3, 3)),
]


@pytest.mark.parametrize(("size", "k", "s"), POOL_CASES)
@pytest.mark.parametrize("reduce", ["max", "avg"])
def test_pools_match_hand_reference(size, k, s, reduce):
    torch.manual_seed(0)
    layer = MaxPool2dSame(k, s) if reduce == "max" else AvgPool2dSame(k, s)
    x = torch.randn(2, 3, *size, dtype=torch.float64) - 5  # all negative: a zero pad would win a max
    torch.testing.assert_close(layer(x), ref_pool(x, k, s, reduce))


def test_pool_stride_defaults_to_kernel():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    assert MaxPool2dSame(2)(x).shape[-2:] == (3, 3)
    torch.testing.assert_close(AvgPool2dSame(2)(x), F.avg_pool2d(x, 2))


def test_avg_pool_border_is_not_zero_padded_mean():
    x = torch.ones(1, 1, 4, 4)
    torch.testing.assert_close(AvgPool2dSame(3, 2)(x), torch.ones(1, 1, 2, 2))


# Weight helpers


def small_gan_block() -> nn.Sequential:
    return nn.Sequential(
        Conv2dSame(3, 8, 3, 2),
        nn.BatchNorm2d(8),
        nn.LeakyReLU(0.2),
        ConvTranspose2dSame(8, 4, 3, 2),
        nn.Conv2d(4, 4, 1),
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 2),
    )


def weight_of(module: nn.Module) -> torch.Tensor:
    if has_spectral_norm(module):
        return module.parametrizations.weight.original
    return module.weight


@pytest.mark.parametrize("scheme", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_weights_sets_distribution(scheme):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64))
    init_weights(model, scheme, gain=0.02)
    w = model[0].weight
    std = {"normal": 0.02, "xavier": 0.02 * math.sqrt(2 / (64 * 9 * 2)), "kaiming": math.sqrt(2 / (64 * 9))}
    if scheme in std:
        assert w.std().item() == pytest.approx(std[scheme], rel=0.05)
    assert torch.count_nonzero(model[0].bias) == 0
    assert model[1].weight.mean().item() == pytest.approx(1.0, abs=0.02)


def test_init_weights_unknown_scheme():
    with pytest.raises(ValueError, match="unknown scheme"):
        init_weights(nn.Linear(2, 2), "uniform")


def test_add_spectral_norm_wraps_every_weighted_layer_once():
    model = add_spectral_norm(small_gan_block())
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    assert len(weighted) == 4 and all(has_spectral_norm(m) for m in weighted)
    add_spectral_norm(model)
    assert all(len(m.parametrizations.weight) == 1 for m in weighted)
    model.train()
    for _ in range(30):  # power iterations converge: largest singular value of each weight is 1
        model(torch.randn(1, 3, 16, 16))
    for m in weighted:
        # spectral norm views a transposed conv's weight with its output channels (dim 1) first
        w = m.weight.transpose(0, 1) if isinstance(m, nn.ConvTranspose2d) else m.weight
        assert torch.linalg.matrix_norm(w.flatten(1), 2).item() == pytest.approx(1.0, rel=1e-3)


def test_init_then_spectral_norm_survives_to_and_state_dict(tmp_path):
    torch.manual_seed(0)
    model = add_spectral_norm(init_weights(small_gan_block(), "normal", gain=0.02))
    originals = [weight_of(m).detach().clone() for m in model.modules() if has_spectral_norm(m)]
    assert all(w.std().item() == pytest.approx(0.02, rel=0.3) for w in originals)
    moved = model.to(torch.float64).to(torch.float32)  # .to() replaces tensors, as a device move does
    for w, m in zip(originals, [m for m in moved.modules() if has_spectral_norm(m)], strict=True):
        torch.testing.assert_close(weight_of(m), w)
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    fresh = add_spectral_norm(small_gan_block()).eval()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    torch.testing.assert_close(fresh(x), model(x))


def test_init_after_spectral_norm_writes_original_and_refreshes_sigma():
    torch.manual_seed(0)
    model = add_spectral_norm(nn.Sequential(nn.Conv2d(8, 8, 3)))
    init_weights(model, "normal", gain=0.5)
    conv = model[0]
    assert conv.parametrizations.weight.original.std().item() == pytest.approx(0.5, rel=0.2)
    conv.eval()  # no power iteration in eval: sigma must already match the new weight
    sigma = torch.linalg.matrix_norm(conv.parametrizations.weight.original.flatten(1), 2)
    torch.testing.assert_close(conv.weight, conv.parametrizations.weight.original / sigma, rtol=1e-3, atol=1e-4)
