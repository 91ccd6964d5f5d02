"""Generator and discriminator: shapes, composition, noise, init order, spectral norm, any D size."""

from __future__ import annotations

import pytest
import torch

from ptools.defectgan.discriminator import Discriminator
from ptools.defectgan.generator import NoiseInjection
from ptools.defectgan.models import build_models
from ptools.nn import has_spectral_norm
from tests.defectgan.conftest import tiny_config


def _inputs(n: int, size: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 3, size, size) * 2 - 1
    a = torch.zeros(n, classes, size, size)
    a[:, 1, : size // 2] = 1
    a[:, 0] = 1 - a[:, 1]
    return x, a


@pytest.mark.parametrize("size", [64, 128])
def test_generator_shapes_and_composition(size):
    torch.manual_seed(0)
    config = tiny_config(image_size=size, labels=["a", "b"])
    g, _ = build_models(config)
    x, a = _inputs(2, size, config.num_classes)
    out, m = g(x, a)
    assert out.shape == x.shape and m.shape == (2, 1, size, size)
    assert 0 <= m.min() and m.max() <= 1
    # out = M*F + (1-M)*x with F in [-1,1]: the change at a pixel is bounded by 2*M there.
    assert torch.all((out - x).abs() <= 2 * m + 1e-5)
    assert out.abs().max() <= 1 + 1e-5


@pytest.mark.parametrize(("size", "layers"), [(64, 6), (128, 6), (192, 6), (256, 6), (64, 3)])
def test_discriminator_any_size_divisible(size, layers):
    d = Discriminator(size, num_classes=5, width=4, layers=layers, max_width=16)
    src, cls = d(torch.randn(2, 3, size, size))
    final = size // 2**layers
    assert src.shape == (2, 1, final, final)
    assert cls.shape == (2, 5)


def test_discriminator_larger_input_is_a_patch_classifier_smaller_is_an_error():
    d = Discriminator(64, num_classes=3, width=4, layers=3, max_width=16)
    _, cls = d(torch.randn(1, 3, 128, 128))
    assert cls.shape == (1, 3)
    with pytest.raises(ValueError, match="smaller"):
        d(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        Discriminator(100, num_classes=3, layers=6)


def test_noise_is_fresh_every_pass():
    torch.manual_seed(0)
    g, _ = build_models(tiny_config(labels=["a"]))
    g.eval()  # in train mode spectral norm advances its power iteration on every pass
    x, a = _inputs(1, 64, 2)
    same = [g(x, a)[0] for _ in range(2)]
    assert torch.equal(*same)  # scales start at zero: noise is there but has no effect yet
    for module in g.modules():
        if isinstance(module, NoiseInjection):
            module.scale.data.fill_(0.5)
    first, second = (g(x, a)[0] for _ in range(2))
    assert not torch.equal(first, second)
    g_off, _ = build_models(tiny_config(labels=["a"], noise=False))
    assert not any(isinstance(m, NoiseInjection) for m in g_off.modules())


def test_init_survives_spectral_norm_and_move():
    torch.manual_seed(0)
    config = tiny_config(labels=["a"], init="normal")
    g, d = build_models(config, device="cpu")
    g = g.to(torch.float64)  # a real copy of every tensor, like a move to another device
    convs = [m for m in [*g.modules(), *d.modules()] if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert convs and all(has_spectral_norm(m) for m in convs)
    originals = torch.cat([m.parametrizations.weight.original.detach().flatten().double() for m in convs])
    # init_weights(normal) draws N(0, 0.02); torch's default init would give std around 0.05-0.2 here.
    assert 0.015 < originals.std().item() < 0.025
    scales = [m.scale for m in g.modules() if isinstance(m, NoiseInjection)]
    assert scales and all(torch.count_nonzero(s) == 0 for s in scales)
    # Spectral norm is active: the effective weight has spectral norm ~1 after a few power iterations.
    conv = convs[3]
    for _ in range(20):
        weight = conv.weight
    sigma = torch.linalg.matrix_norm(weight.detach().flatten(1).double(), ord=2)
    assert sigma.item() == pytest.approx(1.0, rel=0.05)


def test_spectral_norm_can_be_turned_off():
    g, d = build_models(tiny_config(labels=["a"], spectral_norm=False))
    assert not any(has_spectral_norm(m) for m in [*g.modules(), *d.modules()])


def test_class_logits_are_raw():
    torch.manual_seed(0)
    d = Discriminator(64, num_classes=4, width=8, layers=3, max_width=32)
    _, cls = d(torch.randn(16, 3, 64, 64) * 3)
    assert (cls < 0).any() and (cls > 0).any()  # no ReLU / sigmoid / softmax in front of the loss


def test_nearest_upsampling_generator_and_spectral_norm_on_d_alone():
    from torch import nn

    torch.manual_seed(0)
    config = tiny_config(labels=["a"], g_upsample="nearest", spectral_norm=False, d_spectral_norm=True)
    g, d = build_models(config)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    assert any(isinstance(m, nn.Upsample) for m in g.modules())
    x, a = _inputs(2, config.image_size, config.num_classes)
    out, m = g(x, a)
    assert out.shape == x.shape and m.shape == (2, 1, config.image_size, config.image_size)
    assert not any(has_spectral_norm(m) for m in g.modules())
    assert any(has_spectral_norm(m) for m in d.modules())
    with pytest.raises(Exception, match="g_upsample"):
        tiny_config(g_upsample="bilinear")
