"""Whatever a common loader would execute from a file's bytes, the scan sees and grades (tests/checkpoint/twins.py).

For each class of file two loaders read differently, seeded generators build a benign twin and a malicious
case. On the twin, ptools' reading of "which bytes torch unpickles" is compared with torch.load(weights_only=True)
itself (keys and values); on the malicious case, `inspect F`, `inspect F --scan --json` and `inspect F --keys`
must all exit 1 with the payload's global graded dangerous, and nothing may run.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint.scan import security_report
from ptools.checkpoint.torch.legacy import TorchLegacyReader
from ptools.cli import app
from tests.checkpoint import twins

SEEDS = (5101, 5102)  # per class; every class gets at least two generated cases of each kind


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, weights_only=True)


def _same_as_torch(values: dict[str, np.ndarray], path: Path) -> None:
    expected = _torch_load(path)
    assert sorted(values) == sorted(expected)
    for key, t in expected.items():
        np.testing.assert_array_equal(values[key], t.numpy())


def _ptools_values(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with open_checkpoint(path) as reader:
        report = security_report(reader)
        return {t.key: np.array(reader.read(t.key)) for t in reader.tensors()}, report


def _assert_flagged(path: Path, target: Path, name: str = "posix.system") -> None:
    runner = CliRunner()
    for mode in ([], ["--scan", "--json"], ["--keys"]):
        result = runner.invoke(app, ["inspect", str(path), *mode])
        assert result.exit_code == 1, (mode, result.output)
        if mode:
            continue
        assert name in result.output
    doc = json.loads(runner.invoke(app, ["inspect", str(path), "--scan", "--json"]).stdout)
    graded = {f"{g['module']}.{g['name']}": g["grade"] for g in doc["security"]["findings"]}
    assert graded.get(name) == "dangerous", graded
    assert not target.exists()  # nothing ran


# ------------------------------------------------------------------------------------------ zip classes


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", sorted(twins.ZIP_CLASSES))
def test_zip_twin_reads_what_torch_reads(tmp_path, kind, seed):
    rng = random.Random(f"{kind}-{seed}")
    sd = twins.state(rng)
    path = tmp_path / "twin.pt"
    path.write_bytes(twins.ZIP_CLASSES[kind](rng, twins.torch_members(sd), twins.renamed_data_pkl(sd)))
    values, report = _ptools_values(path)
    _same_as_torch(values, path)
    assert report["grade"] == "safe" and report["findings"] == []


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", sorted(twins.ZIP_CLASSES))
def test_zip_payload_where_torch_reads_is_flagged(tmp_path, kind, seed):
    rng = random.Random(f"{kind}-{seed}")
    target = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(twins.ZIP_CLASSES[kind](rng, twins.torch_members(twins.state(rng)), twins.payload_pickle(target)))
    _assert_flagged(path, target)


def test_the_twins_are_ambiguous_for_zipfile(tmp_path):
    """The classes are real: Python's zipfile refuses or misreads what torch reads (so did ptools before)."""
    import zipfile

    rng = random.Random(11)
    sd = twins.state(rng)
    twin = twins.renamed_data_pkl(sd)
    refused = []
    for kind in ("crc", "case", "local-name", "eocd-window", "zip64"):
        blob = twins.ZIP_CLASSES[kind](rng, twins.torch_members(sd), twin)
        path = tmp_path / f"{kind}.pt"
        path.write_bytes(blob)
        try:
            with zipfile.ZipFile(path) as zf:
                got = zf.read("archive/data.pkl")
        except (zipfile.BadZipFile, KeyError):
            got = None
        refused.append(got != twin)
        assert sorted(_torch_load(path)) == sorted(k + "_twin" for k in sd)
    assert all(refused)


def test_uninitialised_data_pkl_is_dangerous(tmp_path):
    for seed in SEEDS:
        rng = random.Random(seed)
        target = tmp_path / "ran"
        path = tmp_path / f"dir-{seed}.pt"
        members = twins.torch_members(twins.state(rng))
        path.write_bytes(twins.zip_uninitialised(rng, members, twins.payload_pickle(target)))
        _assert_flagged(path, target)
        with open_checkpoint(path) as reader:
            kinds = {g["module"] for g in reader.findings()}
        assert "<uninitialised record>" in kinds


def test_torch_cannot_open_but_zipfile_can_is_still_read(tmp_path):
    """An entry outside the archive folder: torch.load refuses the archive; zipfile-based loaders do not."""
    rng = random.Random(3)
    sd = twins.state(rng)
    entries = [twins.RawEntry(n.encode(), d) for n, d in twins.torch_members(sd)]
    entries.append(twins.RawEntry(b"elsewhere/readme.txt", b"hi"))
    path = tmp_path / "odd.pt"
    path.write_bytes(twins.write_zip(entries))
    with pytest.raises(RuntimeError):
        _torch_load(path)
    with open_checkpoint(path) as reader:
        assert "zipfile" in reader.metadata()["zip_reader"]
        assert sorted(t.key for t in reader.tensors()) == sorted(sd)


# --------------------------------------------------------------------------------------------- polyglots


@pytest.mark.parametrize("seed", SEEDS)
def test_safetensors_that_is_a_legacy_torch_file(tmp_path, seed):
    rng = random.Random(seed)
    sd = twins.state(rng)
    path = tmp_path / "model.bin"  # not *.safetensors: torch.load unpickles it
    path.write_bytes(twins.safetensors_pickle(rng, twins.legacy_bytes(sd)))
    with TorchLegacyReader(path) as legacy:  # ptools' reading of what torch.load unpickles
        _same_as_torch({t.key: legacy.read(t.key) for t in legacy.tensors()}, path)
    with open_checkpoint(path) as reader:
        report = security_report(reader)
        assert reader.format == "safetensors"
    assert report["pickle"] and report["grade"] == "safe"
    assert [v["loader"] for v in report["other_loaders"]] == ["pickle.load / torch.load"]


@pytest.mark.parametrize("seed", SEEDS)
def test_safetensors_that_is_a_malicious_pickle(tmp_path, seed):
    rng = random.Random(seed)
    target = tmp_path / "ran"
    path = tmp_path / "model.bin"
    path.write_bytes(twins.safetensors_pickle(rng, twins.payload_pickle(target)))
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:  # a valid safetensors file all the same
        assert list(f.keys()) == ["t"]
    _assert_flagged(path, target)


@pytest.mark.parametrize("seed", SEEDS)
def test_legacy_file_followed_by_a_zip(tmp_path, seed):
    rng = random.Random(seed)
    sd, other = twins.state(rng), twins.state(rng)
    path = tmp_path / "both.pt"
    path.write_bytes(twins.pickle_then_zip(rng, twins.legacy_bytes(sd), twins.zip_bytes(other)))
    values, report = _ptools_values(path)
    _same_as_torch(values, path)  # torch.load reads the legacy file, so does ptools' main reader
    assert report["grade"] == "safe"

    target = tmp_path / "ran"
    evil = tmp_path / "evil.pt"  # the zip's data.pkl is what zipfile-based loaders would unpickle
    evil.write_bytes(
        twins.pickle_then_zip(rng, twins.legacy_bytes(sd), twins.zip_bytes(other, twins.payload_pickle(target)))
    )
    _assert_flagged(evil, target)
    evil.write_bytes(twins.pickle_then_zip(rng, twins.payload_pickle(target), twins.zip_bytes(other)))
    _assert_flagged(evil, target)


@pytest.mark.parametrize("seed", SEEDS)
def test_pickle_in_an_hdf5_user_block(tmp_path, seed):
    rng = random.Random(seed)
    sd = twins.state(rng)
    path = tmp_path / "weights.h5"
    path.write_bytes(twins.hdf5_with_user_block(rng, twins.legacy_bytes(sd), tmp_path))
    values, report = _ptools_values(path)
    _same_as_torch(values, path)
    assert report["grade"] == "safe"

    target = tmp_path / "ran"
    evil = tmp_path / "evil.h5"  # a pickle no sniffer recognises in its first 4 KiB, before an HDF5 file
    evil.write_bytes(
        twins.hdf5_with_user_block(rng, twins.long_string_pickle(rng, twins.payload_pickle(target)), tmp_path)
    )
    _assert_flagged(evil, target)
    evil.write_bytes(twins.hdf5_with_user_block(rng, twins.legacy_bytes(sd), tmp_path, lambda_layer=True))
    _assert_flagged(evil, target, "keras.layers.Lambda")


# ----------------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize("seed", SEEDS)
def test_a_first_pickle_longer_than_the_sniff_window(tmp_path, seed):
    rng = random.Random(seed)
    target = tmp_path / "ran"
    path = tmp_path / "long.pkl"
    path.write_bytes(twins.long_string_pickle(rng, twins.payload_pickle(target)))
    _assert_flagged(path, target)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(twins.long_string_pickle(rng, b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s."))
    with open_checkpoint(plain) as reader:
        assert reader.format == "pickle" and security_report(reader)["findings"] == []


@pytest.mark.parametrize("seed", SEEDS)
def test_pickles_past_the_stream_cap_are_flagged_never_passed(tmp_path, seed):
    rng = random.Random(seed)
    target = tmp_path / "ran"
    path = tmp_path / "stacked.pkl"
    path.write_bytes(twins.stacked_pickles(rng, twins.payload_pickle(target)))
    _assert_flagged(path, target)
    harmless = tmp_path / "harmless.pkl"
    harmless.write_bytes(twins.stacked_pickles(rng, b"N."))
    with open_checkpoint(harmless) as reader:
        report = security_report(reader)
    assert report["grade"] == "suspicious"  # past the cap: flagged, but nothing there is dangerous
    assert [g["module"] for g in report["findings"]] == ["<scan limit>"]


@pytest.mark.parametrize("seed", SEEDS)
def test_hdf5_after_a_user_block_of_8_kib_or_more(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "w.h5"
    path.write_bytes(twins.hdf5_with_user_block(rng, bytes(9000), tmp_path))  # user block >= 16 KiB
    with open_checkpoint(path) as reader:
        assert reader.format == "keras-h5" and [t.key for t in reader.tensors()] == ["dense/kernel"]
    target = tmp_path / "ran"
    evil = tmp_path / "evil.h5"
    evil.write_bytes(twins.hdf5_with_user_block(rng, bytes(9000), tmp_path, lambda_layer=True))
    _assert_flagged(evil, target, "keras.layers.Lambda")
