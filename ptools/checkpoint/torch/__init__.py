"""PyTorch files without torch: zip checkpoints and TorchScript (`zip`, `zip_members`), legacy/tar/pickle (`legacy`)."""
