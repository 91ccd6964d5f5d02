"""Losses: WGAN-GP against a critic whose gradient is known, BCE scale, signs, cycle terms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ptools.defectgan import losses


def test_gradient_penalty_of_a_linear_critic():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)

    def critic(x):
        # A 2x2 patch map whose mean is <w, x>: the gradient of the critic value is w everywhere.
        score = (x * w).sum(dim=(1, 2, 3))
        return score.view(-1, 1, 1, 1).expand(-1, 1, 2, 2), None

    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    gp = losses.gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)


def test_gradient_penalty_has_a_gradient_and_draws_eps_per_sample():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 1, 3)
    gp = losses.gradient_penalty(
        lambda x: (torch.tanh(conv(x)), None), torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    )
    gp.backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_classification_is_multilabel_bce_on_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 4.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1).mean()
    assert losses.classification(logits, targets).item() == pytest.approx(expected.item())


def test_adversarial_signs():
    real, fake = torch.full((2, 1, 2, 2), 3.0), torch.full((2, 1, 2, 2), -1.0)
    assert losses.d_adversarial(real, fake).item() == -4.0  # D is happy: low loss
    assert losses.g_adversarial(fake).item() == 1.0


def test_cycle_map_cycle_and_sparsity():
    a, b = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    assert losses.cycle(b, a).item() == 1.0
    assert losses.map_cycle(a[:, :1], b[:, :1] * 0.5).item() == 0.5
    assert losses.sparsity(torch.full((2, 1, 2, 2), 0.25)).item() == 0.25


def test_mask_bce_balances_inside_and_outside_and_skips_unmasked_samples():
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, 0, 0] = 1  # one defect pixel of 16
    # Logits that are wrong only on the defect pixel: the balanced loss is half the pixel's BCE.
    logits = torch.full((2, 1, 4, 4), -20.0)
    wrong = F.binary_cross_entropy_with_logits(torch.tensor(-20.0), torch.tensor(1.0)).item()
    got = losses.mask_bce(logits, mask, torch.tensor([1.0, 1.0])).item()
    assert got == pytest.approx(0.5 * wrong, rel=1e-4)
    # A sample without a mask (weight 0) does not count, whatever its logits.
    logits[1] = 20.0
    assert losses.mask_bce(logits, mask, torch.tensor([1.0, 0.0])).item() == pytest.approx(got, rel=1e-4)
    assert losses.mask_bce(logits, mask, torch.tensor([0.0, 0.0])).item() == 0.0
    # Its gradient pulls the map open on the defect and shut elsewhere.
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    losses.mask_bce(logits, mask[:1], torch.ones(1)).backward()
    assert logits.grad[0, 0, 0, 0] < 0 and (logits.grad[0, 0].flatten()[1:] > 0).all()


def test_paired_l1_averages_inside_and_outside_separately():
    target = torch.zeros(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1  # 4 of 16 pixels
    out = torch.zeros(1, 3, 4, 4)
    out[..., :2, :2] = 1.0  # wrong by 1 inside the mask only
    assert losses.paired_l1(out, target, mask, torch.ones(1)).item() == pytest.approx(0.5)
    assert losses.paired_l1(out, target, mask, torch.zeros(1)).item() == 0.0


def test_mask_dice_prefers_the_exact_mask_to_a_halo():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 3, :] = 1  # a 1-px line
    exact = torch.where(mask > 0, 6.0, -6.0)
    halo = exact.clone()
    halo[..., 2:5, :] = 6.0  # the line painted 3 px wide
    shut = torch.full_like(exact, -6.0)
    one = torch.ones(1)
    maps = {"exact": exact, "halo": halo, "shut": shut}
    dice = {k: losses.mask_dice(z, mask, one).item() for k, z in maps.items()}
    balanced = {k: losses.mask_bce(z, mask, one).item() for k, z in maps.items()}
    assert dice["exact"] < 0.05 and balanced["exact"] < 0.05
    # Painting twice the line's area wrong costs more than missing the line; the class-balanced BCE
    # (line pixels weigh 7x the others here) prefers the halo by far: why "dice" is the default.
    assert dice["halo"] > dice["shut"]
    assert balanced["halo"] < balanced["shut"] / 2
    assert losses.mask_dice(halo, mask, torch.zeros(1)).item() == 0.0


def test_masked_l1_sees_only_the_mask():
    target = torch.zeros(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, 0, 0] = 1  # sample 1 has an empty mask: it does not count
    out = torch.full((2, 3, 4, 4), 5.0)
    out[0, :, 0, 0] = 0.5
    assert losses.masked_l1(out, target, mask, torch.ones(2)).item() == pytest.approx(0.5)


def test_class_gradient_penalty_of_a_linear_classifier():
    torch.manual_seed(0)
    w = torch.randn(2, 3, 4, 4)  # two classes, each logit <w_c, x>

    def critic(x):
        return None, torch.einsum("nchw,kchw->nk", x, w)

    x = torch.zeros(5, 3, 4, 4)  # logits 0: sigmoid 1/2, so d BCE / d logit = 1/2 - y
    y = torch.tensor([[1.0, 0.0]] * 5)
    expected = ((0.5 - 1.0) * w[0] + 0.5 * w[1]).pow(2).sum().item()
    assert losses.class_gradient_penalty(critic, x, y).item() == pytest.approx(expected, rel=1e-5)
    # a classifier that ignores its input has no penalty; the penalty has a gradient in the weights
    assert losses.class_gradient_penalty(lambda x: (None, x.sum() * 0 + torch.ones(5, 2)), x, y).item() == 0
    wp = w.clone().requires_grad_(True)
    losses.class_gradient_penalty(lambda x: (None, torch.einsum("nchw,kchw->nk", x, wp)), x, y).backward()
    assert wp.grad is not None and wp.grad.abs().sum() > 0
