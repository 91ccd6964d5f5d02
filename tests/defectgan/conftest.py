"""Fixtures for the DefectGAN tests: a tiny config and a tiny synthetic dataset, so each run takes seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptools.defectgan.config import DefectGANConfig

# Small widths and few layers: the same code paths as the paper's model at a fraction of the cost.
TINY = {
    "image_size": 64,
    "batch_size": 2,
    "d_steps": 2,
    "g_width": 8,
    "g_res_blocks": 1,
    "spade_hidden": 8,
    "d_width": 8,
    "d_layers": 3,
    "d_max_width": 32,
    "workers": 0,
    "sample_every": 0,
    "ckpt_every": 0,
    "deterministic": False,  # CPU kernels are deterministic anyway; the resume test turns it on
    "log_every": 1000,
}


def tiny_config(**overrides: object) -> DefectGANConfig:
    return DefectGANConfig(**{**TINY, **overrides}).validate()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic samples at 64 px (3 per label), written once per test session."""
    from ptools.data import synthesize

    root = tmp_path_factory.mktemp("defectgan_data") / "data"
    synthesize(root, n=12, size=64, seed=0)
    return root


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the suite runs 2 workers on 2 cores, and tiny convs only lose from threading."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
