"""Raw-byte decoding matches torch for every bit pattern of the dtypes numpy lacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptools.checkpoint.dtypes import decode, raw_numpy_dtype


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"])
def test_float8_every_bit_pattern(name):
    bits = torch.arange(256, dtype=torch.uint8)
    expected = bits.view(getattr(torch, name)).float().numpy()
    got = decode(bits.numpy().view(raw_numpy_dtype(name)), name)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_array_equal(got[finite], expected[finite])


def test_bfloat16_every_bit_pattern():
    bits = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    expected = bits.view(torch.bfloat16).float().numpy()
    got = decode(bits.numpy().view(raw_numpy_dtype("bfloat16")), "bfloat16")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_array_equal(got[finite], expected[finite])
