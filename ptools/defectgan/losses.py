"""DefectGAN losses: WGAN-GP, multi-label classification, cycles, map cycle, sparsity, mask and pair terms."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def critic_value(src: torch.Tensor) -> torch.Tensor:
    """One critic score per sample: the mean over the PatchGAN map (the map is kept; the loss averages it)."""
    return src.flatten(1).mean(dim=1)


def d_adversarial(real_src: torch.Tensor, fake_src: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss: push real scores up and fake scores down."""
    return critic_value(fake_src).mean() - critic_value(real_src).mean()


def g_adversarial(fake_src: torch.Tensor) -> torch.Tensor:
    return -critic_value(fake_src).mean()


def classification(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE on raw logits, summed over classes and averaged over the batch (StarGAN's scale)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum") / logits.shape[0]


def gradient_penalty(
    critic: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    real: torch.Tensor,
    fake: torch.Tensor,
    scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
    inv_scale: float = 1.0,
) -> torch.Tensor:
    """WGAN-GP: (||grad_x D(x_hat)|| - 1)^2 with x_hat = eps * real + (1 - eps) * fake, eps ~ U(0,1) per sample.

    With fp16 AMP, pass the GradScaler's `scale` and `1 / scale` so the inner gradient does not underflow
    (the recipe of the PyTorch AMP notes); `fake` must already be detached.
    """
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    src, _ = critic(x_hat)
    score = critic_value(src).sum()
    if scale is not None:
        score = scale(score)
    (grad,) = torch.autograd.grad(score, x_hat, create_graph=True)
    grad = grad.float() * inv_scale if inv_scale != 1.0 else grad.float()
    norm = grad.flatten(1).norm(2, dim=1)
    return ((norm - 1) ** 2).mean()


def class_gradient_penalty(
    critic: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], images: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean over samples of ||grad_x BCE(D_cls(x), labels)||^2: keeps the classifier's input gradient small.

    `images` must be detached; the penalty is differentiable in D's weights (create_graph).
    """
    x = images.detach().requires_grad_(True)
    _, logits = critic(x)
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="sum")
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    return grad.float().flatten(1).pow(2).sum(1).mean()


def cycle(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    return (reconstruction.float() - original.float()).abs().mean()


def map_cycle(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """L1 between the spatial map of a translation and that of the translation back: defects go where they came."""
    return (first.float() - second.float()).abs().mean()


def sparsity(maps: torch.Tensor) -> torch.Tensor:
    """Mean of the spatial maps: the generator should change as few pixels as it needs to."""
    return maps.float().mean()


def _inside_outside_mean(per_pixel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per sample: (mean over the mask's pixels + mean over the others) / 2; an empty side counts 0.

    Balancing the two sides keeps a thin defect (1-2% of the pixels) from being outvoted by the background.
    """
    values = per_pixel.flatten(1).float()
    inside = mask.flatten(1).float()
    outside = 1.0 - inside
    mean_in = (values * inside).sum(1) / inside.sum(1).clamp_min(1.0)
    mean_out = (values * outside).sum(1) / outside.sum(1).clamp_min(1.0)
    return 0.5 * (mean_in + mean_out)


def _weighted_mean(per_sample: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over the samples with weight > 0 (0 when there are none, so the term vanishes cleanly)."""
    weight = weight.float()
    return (per_sample * weight).sum() / weight.sum().clamp_min(1.0)


def mask_bce(logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE of the spatial map's logits (N,1,H,W) against a binary mask (N,1,H,W).

    Both directions of error cost the same in total: missing defect pixels and painting background.
    `weight` (N,) is 1 for samples that have a mask, 0 for the others.
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), mask.float(), reduction="none")
    return _weighted_mean(_inside_outside_mean(bce, mask), weight)


def paired_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 of a translation to its real paired image, averaged inside and outside the mask separately.

    `weight` (N,) is 1 for samples with a real pair (the seed layout's paired normal / defect).
    """
    per_pixel = (output.float() - target.float()).abs().mean(dim=1, keepdim=True)
    return _weighted_mean(_inside_outside_mean(per_pixel, mask), weight)


def mask_dice(logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain per-pixel BCE of the map's logits plus a soft Dice loss (1 - 2|M.Y| / (|M| + |Y|)) per sample.

    The BCE is calibrated (its optimum is the pixel's true probability), and Dice weighs missed defect
    pixels and painted background the same whatever the defect's area. A class-balanced BCE instead
    weighs a 1-px crack's pixels ~50x the background's, whose optimum paints a wide halo around it.
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), mask.float(), reduction="none").flatten(1).mean(1)
    m = torch.sigmoid(logits.float()).flatten(1)
    y = mask.float().flatten(1)
    dice = 1.0 - (2.0 * (m * y).sum(1) + 1.0) / (m.sum(1) + y.sum(1) + 1.0)
    return _weighted_mean(bce + dice, weight)


def paired_l1_mean(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain L1 of a translation to its real paired image, over every pixel (samples with weight > 0)."""
    per_sample = (output.float() - target.float()).abs().flatten(1).mean(1)
    return _weighted_mean(per_sample, weight)


def masked_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 over the mask's pixels only (per sample), e.g. of the foreground F to the real partner there."""
    per_pixel = (output.float() - target.float()).abs().mean(dim=1, keepdim=True).flatten(1)
    inside = mask.flatten(1).float()
    per_sample = (per_pixel * inside).sum(1) / inside.sum(1).clamp_min(1.0)
    return _weighted_mean(per_sample, weight * (inside.sum(1) > 0).float())
