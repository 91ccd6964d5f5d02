"""Build G and D from a config in the one safe order: init weights, add spectral norm, then move."""

from __future__ import annotations

import torch
from torch import nn

from ptools.defectgan.config import DefectGANConfig
from ptools.defectgan.discriminator import Discriminator
from ptools.defectgan.generator import Generator
from ptools.nn import add_spectral_norm, init_weights


def build_generator(config: DefectGANConfig) -> Generator:
    return Generator(
        map_channels=config.num_classes,
        width=config.g_width,
        res_blocks=config.g_res_blocks,
        spade_hidden=config.spade_hidden,
        noise=config.noise,
        skip=config.g_skip,
        upsample=config.g_upsample,
    )


def build_discriminator(config: DefectGANConfig) -> Discriminator:
    return Discriminator(
        image_size=config.image_size,
        num_classes=config.num_classes,
        width=config.d_width,
        layers=config.d_layers,
        max_width=config.d_max_width,
    )


def prepare(model: nn.Module, config: DefectGANConfig, device: torch.device | str = "cpu") -> nn.Module:
    """Init before spectral norm (which re-parametrises the weight) and before .to() (which may copy it):
    the other order writes the init into a tensor the model no longer reads."""
    init_weights(model, scheme=config.init)
    if isinstance(model, Generator):
        nn.init.constant_(model.spatial_map.bias, config.map_bias)
    if config.spectral_norm or (config.d_spectral_norm and isinstance(model, Discriminator)):
        add_spectral_norm(model)
    return model.to(device)


def build_models(config: DefectGANConfig, device: torch.device | str = "cpu") -> tuple[Generator, Discriminator]:
    g = prepare(build_generator(config), config, device)
    d = prepare(build_discriminator(config), config, device)
    return g, d  # type: ignore[return-value]
