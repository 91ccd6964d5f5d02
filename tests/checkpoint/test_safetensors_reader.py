"""safetensors: header parsed directly, metadata, dtypes, memory-mapped values, corrupt headers rejected."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint.stats import tensor_stats
from ptools.errors import PtoolsError


def _write(path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_header_metadata_dtypes_and_values(tmp_path):
    tensors = {
        "enc.w": torch.randn(4, 3),
        "enc.b16": torch.randn(5).to(torch.bfloat16),
        "half": torch.randn(2, 2).half(),
        "ids": torch.arange(6, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "f8": torch.tensor([0.5, -2.0, 448.0, 0.015625]).to(torch.float8_e4m3fn),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "author": "tests"})
    with open_checkpoint(path) as reader:
        assert reader.format == "safetensors"
        assert reader.metadata()["user_metadata"] == {"format": "pt", "author": "tests"}
        infos = {t.key: t for t in reader.tensors()}
        assert infos["enc.b16"].dtype == "bfloat16" and infos["f8"].dtype == "float8_e4m3fn"
        assert infos["enc.w"].shape == (4, 3) and infos["enc.w"].nbytes == 48
        for key, t in tensors.items():
            expected = t.float().numpy() if t.dtype in (torch.bfloat16, torch.float8_e4m3fn) else t.numpy()
            np.testing.assert_array_equal(reader.read(key), expected, err_msg=key)
        stats = tensor_stats(reader, "enc.b16")
        as_float = tensors["enc.b16"].float()
        assert stats["min"] == pytest.approx(float(as_float.min())) and stats["nan"] == 0


@pytest.mark.parametrize(
    ("header", "data", "match"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 8, "outside"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "8 bytes for 3 float32"),
        ({"a": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "bad shape"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "overlap",
        ),
    ],
)
def test_corrupt_headers_are_ptools_errors(tmp_path, header, data, match):
    path = tmp_path / "bad.safetensors"
    _write(path, header, data)
    with pytest.raises(PtoolsError, match=match):
        open_checkpoint(path)


def test_invalid_json_and_truncated_header(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 20) + b'{"a": nope}' + b" " * 9)
    with pytest.raises(PtoolsError, match="invalid JSON"):
        open_checkpoint(path)
    path.write_bytes(struct.pack("<Q", 4000) + b'{"a": 1}')
    with pytest.raises(PtoolsError):
        open_checkpoint(path)
