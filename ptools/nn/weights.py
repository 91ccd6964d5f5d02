"""Weight helpers for GAN-style models: init_weights (pix2pix schemes) and add_spectral_norm (parametrizations)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

SCHEMES = ("normal", "xavier", "kaiming", "orthogonal")
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.GroupNorm)


def _weighted_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Every conv / transposed conv / linear layer (ours subclass the torch.nn ones)."""
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            yield module


def _raw_weight(module: nn.Module) -> torch.Tensor:
    """The stored weight: `parametrizations.weight.original` under spectral norm, else `weight`.

    Writing to `module.weight` of a parametrized module is impossible (it is recomputed on each access),
    which is how an init applied after spectral norm gets silently lost.
    """
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def _refresh_spectral_norm(module: nn.Module) -> None:
    """Re-estimate the power-iteration vectors after the original weight changed.

    Spectral norm keeps u, v buffers from the weight it saw when registered; in eval mode they are not
    updated, so after an in-place init they would divide by a stale sigma.
    """
    for p in module.parametrizations.weight:
        # Private torch API (stable since the parametrization landed in 1.9); 1-D weights have no vectors.
        if hasattr(p, "_power_method") and hasattr(p, "_u"):
            with torch.no_grad():
                matrix = p._reshape_weight_to_matrix(module.parametrizations.weight.original)
                p._power_method(matrix, 15)


def init_weights(model: nn.Module, scheme: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights in place (biases to 0; norm layers to N(1, gain), bias 0).

    Schemes follow pix2pix/CycleGAN: `normal` N(0, gain); `xavier` xavier_normal_(gain); `kaiming`
    kaiming_normal_(a=0, fan_in; gain unused); `orthogonal` orthogonal_(gain). Call it before
    `add_spectral_norm`; on a module that already has spectral norm it writes to
    `parametrizations.weight.original` and refreshes the power-iteration state, so the result is the same.
    The tensors are the module's own parameters, so the init survives `.to(device)` and `state_dict()`.
    Returns the model.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"init_weights: unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    with torch.no_grad():
        for module in _weighted_modules(model):
            weight = _raw_weight(module)
            if scheme == "normal":
                nn.init.normal_(weight, 0.0, gain)
            elif scheme == "xavier":
                nn.init.xavier_normal_(weight, gain=gain)
            elif scheme == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(weight, gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            if parametrize.is_parametrized(module, "weight"):
                _refresh_spectral_norm(module)
        for module in model.modules():
            if isinstance(module, _NORMS) and getattr(module, "weight", None) is not None:
                nn.init.normal_(module.weight, 1.0, gain)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    return model


def has_spectral_norm(module: nn.Module) -> bool:
    """Whether `module.weight` is already parametrized (spectral norm or any other parametrization)."""
    return parametrize.is_parametrized(module, "weight")


def add_spectral_norm(model: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12) -> nn.Module:
    """Wrap the weight of every conv/transposed-conv/linear layer in spectral norm, in place; returns the model.

    Uses `torch.nn.utils.parametrizations.spectral_norm` (the parametrization API: state_dict keys
    `parametrizations.weight.original` and the `_u`/`_v` buffers move with `.to(device)`). Idempotent:
    layers whose weight is already parametrized are skipped. Transposed convs get dim=1, as torch picks.
    """
    for module in list(_weighted_modules(model)):
        if not has_spectral_norm(module):
            spectral_norm(module, n_power_iterations=n_power_iterations, eps=eps)
    return model
