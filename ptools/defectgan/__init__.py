"""DefectGAN (Zhang et al., WACV 2021): config, generator, discriminator, losses, trainer, generation."""
