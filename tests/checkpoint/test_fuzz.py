"""Hostile and broken input: random, truncated and corrupted bytes end in a PtoolsError, never another exception."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint import summary as sm
from ptools.checkpoint.pickle.restricted import restricted_load
from ptools.checkpoint.pickle.structure import build
from ptools.checkpoint.scan import security_report
from ptools.checkpoint.stats import tensor_stats
from ptools.errors import PtoolsError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _inspect_everything(path: Path) -> None:
    """What the CLI does with a file, every mode that reads; only PtoolsError may escape."""
    try:
        with open_checkpoint(path) as reader:
            security_report(reader)
            sel = sm.select(reader)
            sm.summarize(reader, sel, depth=3, file_size=path.stat().st_size)
            for key in list(sel.infos)[:20]:
                try:
                    tensor_stats(reader, sel.full_keys[key])
                except PtoolsError:
                    pass
    except PtoolsError as e:
        assert "\n" not in str(e)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("samples")
    sd = {"a.weight": torch.randn(3, 4), "a.bias": torch.randn(3).to(torch.bfloat16), "n": torch.arange(4)}
    torch.save({"model": sd, "epoch": 2}, d / "z.pt")
    torch.save(sd, d / "l.pt", _use_new_zipfile_serialization=False)
    save_file(sd, str(d / "s.safetensors"))
    return {name: (d / name).read_bytes() for name in ("z.pt", "l.pt", "s.safetensors")}


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes(tmp_path, data):
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    _inspect_everything(path)


@FUZZ
@given(prefix=st.sampled_from([b"PK\x03\x04", b"\x80\x02", b"\x80\x04", b"cos\nsystem\n", b"\x10\0\0\0\0\0\0\0{"]))
def test_random_bytes_behind_each_magic(tmp_path, prefix):
    for seed in range(5):
        path = tmp_path / f"m{seed}.bin"
        path.write_bytes(prefix + bytes((seed * 37 + i * 11) % 256 for i in range(200)))
        _inspect_everything(path)


@FUZZ
@given(name=st.sampled_from(["z.pt", "l.pt", "s.safetensors"]), frac=st.floats(0, 1, exclude_max=True))
def test_truncated_files(tmp_path, samples, name, frac):
    data = samples[name]
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * frac)])
    _inspect_everything(path)


@FUZZ
@given(
    name=st.sampled_from(["z.pt", "l.pt", "s.safetensors"]),
    flips=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(1, 255)), min_size=1, max_size=8),
)
def test_corrupted_bytes(tmp_path, samples, name, flips):
    data = bytearray(samples[name])
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    path = tmp_path / name
    path.write_bytes(bytes(data))
    _inspect_everything(path)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(1, 255)), min_size=1, max_size=6))
def test_corrupted_data_pkl_with_valid_crc(tmp_path, samples, flips):
    # The zip's CRC would catch random damage; rewrite the archive so the damaged pickle reaches the unpickler.
    src = zipfile.ZipFile(io.BytesIO(samples["z.pt"]))
    path = tmp_path / "z.pt"
    with zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                content = bytearray(content)
                for pos, xor in flips:
                    content[pos % len(content)] ^= xor
                content = bytes(content)
            dst.writestr(item, content)
    _inspect_everything(path)


def test_storage_key_with_a_newline_is_reported_on_one_line(tmp_path, samples):
    # Found by the fuzz test above: a flipped byte turned storage key "0" into "\n".
    src = zipfile.ZipFile(io.BytesIO(samples["z.pt"]))
    path = tmp_path / "z.pt"
    with zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert content.count(b"X\x01\x00\x00\x000") >= 1
                content = content.replace(b"X\x01\x00\x00\x000", b"X\x01\x00\x00\x00\n")
            dst.writestr(item, content)
    with pytest.raises(PtoolsError) as e:
        open_checkpoint(path)
    assert "is missing from the archive" in str(e.value) and "\n" not in str(e.value)


@FUZZ
@given(data=st.binary(max_size=300))
def test_restricted_load_never_raises(data):
    result = restricted_load(b"\x80\x02" + data)
    build(result)


def test_structures_that_nest_deeply_or_refer_to_themselves():
    # MARK x 5000 then LIST x 5000: lists nested 5000 deep (pickle.dumps itself would hit the recursion limit).
    result = restricted_load(b"\x80\x02" + b"(" * 5000 + b"l" * 5000 + b".")
    assert result.error is None
    build(result)  # cut at a fixed depth, no RecursionError
    loop: list = []
    loop.append(loop)
    assert build(restricted_load(pickle.dumps(loop, protocol=2))).structure == ["<reference cycle>"]


def test_safetensors_huge_declared_header(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(PtoolsError):
        open_checkpoint(path)
