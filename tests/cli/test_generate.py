"""`ptools generate`: defacement by label or mask, restoration, several samples, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ptools.cli import app


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 1-step tiny training run: (its latest.pt, its data folder)."""
    from ptools.data import synthesize
    from ptools.defectgan.trainer import train
    from tests.defectgan.conftest import tiny_config

    root = tmp_path_factory.mktemp("gen")
    synthesize(root / "data", n=8, size=64, seed=0)
    result = train(tiny_config(steps=1, d_steps=1), data_root=root / "data", run_dir=root / "run", device="cpu")
    return result.checkpoint, root / "data"


def test_label_n_samples_json(runner, tmp_path, checkpoint):
    ckpt, data = checkpoint
    inputs = data / "crack" / "normal"
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["generate", str(ckpt), "--input", str(inputs), "--label", "spot", "--n", "2", "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "ptools.generate/1" and doc["mode"] == "defacement" and doc["label"] == "spot"
    n_inputs = len(list(inputs.iterdir()))
    assert len(doc["outputs"]) == 2 * n_inputs
    for o in doc["outputs"]:
        assert Image.open(o["image"]).size == (64, 64) and Image.open(o["image"]).mode == "RGB"
        assert Image.open(o["map"]).size == (64, 64)
    again = runner.invoke(app, ["generate", str(ckpt), "--input", str(inputs), "--label", "3", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_mask_and_restore(runner, tmp_path, checkpoint):
    ckpt, data = checkpoint
    normal = next((data / "crack" / "normal").iterdir())
    mask = next((data / "crack" / "defect_segmentation").iterdir())
    result = runner.invoke(
        app, ["generate", str(ckpt), "--input", str(normal), "--mask", str(mask), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / f"{normal.stem}_0.png").is_file()
    assert (tmp_path / "m" / f"{normal.stem}_0_map.png").is_file()
    defect = next((data / "crack" / "defect").iterdir())
    result = runner.invoke(
        app, ["generate", str(ckpt), "--input", str(defect), "--restore", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / f"{defect.stem}_0.png").is_file()


@pytest.mark.parametrize(
    ("extra", "word"),
    [(["--label", "nope"], "labels: 1=crack"), (["--restore", "--label", "spot"], "--restore"), (["--n", "0"], "--n")],
)
def test_bad_arguments_exit_2(runner, tmp_path, checkpoint, extra, word):
    ckpt, data = checkpoint
    args = ["generate", str(ckpt), "--input", str(data / "crack" / "normal"), "--out", str(tmp_path / "o"), *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and word in result.stderr


def test_not_a_checkpoint_exits_2(runner, tmp_path, checkpoint):
    _, data = checkpoint
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"\x80\x04not really")
    result = runner.invoke(app, ["generate", str(bogus), "--input", str(data / "crack" / "normal"), "--label", "1"])
    assert result.exit_code == 2 and "bogus.pt" in result.stderr
