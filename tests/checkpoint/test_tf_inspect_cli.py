"""`ptools inspect` on TensorFlow checkpoints: found through open_checkpoint, no torch, corrupt files exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ptools.cli import app
from tests.conftest import run_ptools

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tf"


def test_inspect_tf_checkpoint_json_without_torch() -> None:
    result = run_ptools("inspect", str(FIX / "tf1_saver.index"), "--json", "--keys", check_modules=True)
    assert result.returncode == 0, result.stderr
    out, heavy = result.stdout.rsplit("HEAVY=", 1)
    assert heavy.strip() == ""
    doc = json.loads(out)
    assert doc["schema"] == "ptools.inspect/1"
    text = json.dumps(doc)
    assert "tf-bundle" in text and "generator/dense/kernel/Adam_1" in text


def test_inspect_corrupt_tf_index_exits_2_naming_the_crc(runner, tmp_path: Path) -> None:
    for f in FIX.glob("tf2_dtypes.*"):
        shutil.copy(f, tmp_path / f.name)
    index = tmp_path / "tf2_dtypes.index"
    blob = bytearray(index.read_bytes())
    blob[20] ^= 0x40
    index.write_bytes(bytes(blob))
    result = runner.invoke(app, ["inspect", str(tmp_path / "tf2_dtypes")])
    assert result.exit_code == 2
    assert "CRC32C mismatch in data block 0" in result.output
    assert "Traceback" not in result.output
