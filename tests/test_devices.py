"""Device specs parse without torch and resolve to what the machine has."""

from __future__ import annotations

import pytest

from ptools.devices import parse_device_spec, resolve_device
from ptools.errors import PtoolsError


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:1", "mps", " CPU "])
def test_valid_specs(spec):
    assert parse_device_spec(spec) == spec.strip().lower()


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "", "tpu"])
def test_invalid_specs(spec):
    with pytest.raises(PtoolsError):
        parse_device_spec(spec)


def test_auto_resolves_to_an_available_device():
    import torch

    dev = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert dev.type == expected
    else:
        assert dev.type in ("mps", "cpu")


def test_cuda_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(PtoolsError, match="CUDA is not available"):
            resolve_device("cuda")
