"""`ptools convert` as a command: flags, exit codes, output files, JSON, and what it imports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ptools.cli import app
from tests.conftest import run_ptools

KERAS = Path(__file__).resolve().parents[1] / "fixtures" / "keras"


def test_safetensors_output_never_imports_torch(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    r = run_ptools("convert", str(KERAS / "k3_model.keras"), str(out), "--json", check_modules=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "HEAVY="
    doc = json.loads(r.stdout[: r.stdout.rindex("HEAVY=")])
    assert doc["schema"] == "ptools.convert/1" and doc["written"] and doc["ok"]
    assert len(doc["tensors"]) == 26 and out.stat().st_size > 0


def test_pt_output_is_a_plain_state_dict(runner, tmp_path: Path) -> None:
    import torch

    out = tmp_path / "m.pt"
    r = runner.invoke(app, ["convert", str(KERAS / "legacy_model.h5"), str(out)])
    assert r.exit_code == 0, r.output
    sd = torch.load(out, weights_only=True)
    assert sd["gru.bias_hh_l0"].shape == (12,) and sd["bn.num_batches_tracked"].dtype == torch.int64
    assert "settings to change" in r.stdout and "eps" in r.stdout


def test_usage_errors_exit_2(runner, tmp_path: Path) -> None:
    src = str(KERAS / "legacy_model.h5")
    cases = [
        ([src], "missing DST"),
        ([src, str(tmp_path / "x.npz")], "unknown output type"),
        ([src, "--dry-run", "--model", "a:b", "--template", "t.pt"], "exclusive"),
        ([src, "--dry-run", "--check-output"], "--check-output needs"),
        ([str(tmp_path / "nope.h5"), "--dry-run"], "no such file"),
        ([src, "--dry-run", "--model", "no_such_module_xyz:Net"], "cannot import"),
    ]
    for args, message in cases:
        r = runner.invoke(app, ["convert", *args])
        assert r.exit_code == 2, (args, r.output)
        assert message in r.stderr, (args, r.stderr)


def test_corrupt_and_non_keras_files_exit_2(runner, tmp_path: Path) -> None:
    trunc = tmp_path / "t.h5"
    trunc.write_bytes((KERAS / "legacy_model.h5").read_bytes()[:4000])
    bad_zip = tmp_path / "b.keras"
    raw = bytearray((KERAS / "k3_model.keras").read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):  # inside model.weights.h5
        raw[i] ^= 0xFF
    bad_zip.write_bytes(bytes(raw))
    for path in (trunc, bad_zip):
        r = runner.invoke(app, ["convert", str(path), str(tmp_path / "o.safetensors")])
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output and str(path.name) in r.stderr
    assert not (tmp_path / "o.safetensors").exists()


def test_missing_h5py_names_the_extra(runner, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ImportError
    r = runner.invoke(app, ["convert", str(KERAS / "legacy_model.h5"), "--dry-run"])
    assert r.exit_code == 2
    assert "ptools-port[keras]" in r.stderr and "legacy_model.h5" in r.stderr


def test_dry_run_writes_nothing(runner, tmp_path: Path) -> None:
    # k3_model.keras: its config settles every layout (the config-less k3.weights.h5 now exits 1: its
    # Dense after a Flatten is undetermined)
    r = runner.invoke(app, ["convert", str(KERAS / "k3_model.keras"), str(tmp_path / "o.pt"), "--dry-run", "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["output"] is None and doc["written"] is False
    assert not (tmp_path / "o.pt").exists()
