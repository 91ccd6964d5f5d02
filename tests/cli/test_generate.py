"""`ptools generate`: defacement by label or mask, restoration, several samples, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
    config = tiny_config(steps=1, d_steps=1, threads=1)
    result = train(config, data_root=root / "data", run_dir=root / "run", device="cpu")
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
        app,
        [
            "generate",
            str(ckpt),
            "--input",
            str(normal),
            "--label",
            "crack",
            "--mask",
            str(mask),
            "--out",
            str(tmp_path / "m"),
        ],
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


def test_the_runs_cpu_threads_apply_as_in_training(checkpoint):
    import torch

    from ptools.defectgan.generate import load_generator

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        load_generator(checkpoint[0], "cpu")
        assert torch.get_num_threads() == 1  # the run's `threads`
    finally:
        torch.set_num_threads(before)


def test_not_a_checkpoint_exits_2(runner, tmp_path, checkpoint):
    _, data = checkpoint
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"\x80\x04not really")
    result = runner.invoke(app, ["generate", str(bogus), "--input", str(data / "crack" / "normal"), "--label", "1"])
    assert result.exit_code == 2 and "bogus.pt" in result.stderr


def test_no_label_with_several_labels_exits_2_listing_them(runner, tmp_path, checkpoint):
    ckpt, data = checkpoint
    normal = next((data / "crack" / "normal").iterdir())
    mask = next((data / "crack" / "defect_segmentation").iterdir())
    for extra in ([], ["--mask", str(mask)]):
        result = runner.invoke(app, ["generate", str(ckpt), "--input", str(normal), "--out", str(tmp_path), *extra])
        assert result.exit_code == 2, result.output
        assert "--label is required" in result.stderr and "1=crack, 2=scratch, 3=spot, 4=stain" in result.stderr
    assert not list(tmp_path.glob("*.png"))


def test_run_folder_is_accepted_like_resume(runner, tmp_path, checkpoint):
    ckpt, data = checkpoint
    run_dir = ckpt.parent.parent
    normal = next((data / "crack" / "normal").iterdir())
    args = ["--input", str(normal), "--label", "spot", "--json"]
    result = runner.invoke(app, ["generate", str(run_dir), *args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["label"] == "spot"
    empty = tmp_path / "empty_run"
    empty.mkdir()
    result = runner.invoke(app, ["generate", str(empty), *args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "no checkpoint" in result.stderr


def test_mask_and_input_of_other_sizes_and_grey_masks_are_noted(runner, tmp_path, checkpoint):
    ckpt, data = checkpoint
    big = tmp_path / "big.png"
    Image.new("RGB", (512, 384), (90, 100, 110)).save(big)
    grey = np.zeros((100, 100), np.uint8)
    grey[20:60, 20:60] = 200
    grey[30:40, 30:40] = 90  # a third level: not binary
    Image.fromarray(grey).save(tmp_path / "grey.png")
    args = ["generate", str(ckpt), "--input", str(big), "--label", "crack", "--mask", str(tmp_path / "grey.png")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert any("100x100 resized to 64x64" in t for t in notes)
    assert any("not binary" in t and "above 127" in t for t in notes)
    assert any("512x384" in t and "outputs are 64x64" in t for t in notes)
    assert "512x384" in result.stderr  # said on stderr as well, not only in the JSON
    Image.new("L", (64, 64), 0).save(tmp_path / "blank.png")
    result = runner.invoke(app, [*args[:-1], str(tmp_path / "blank.png"), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "marks no pixel" in result.stderr


def test_a_folder_shows_progress_on_stderr(runner, tmp_path, checkpoint):
    ckpt, data = checkpoint
    inputs = data / "crack" / "normal"
    result = runner.invoke(app, ["generate", str(ckpt), "--input", str(inputs), "--label", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    total = len(list(inputs.iterdir()))
    assert f"generate {total}/{total}" in result.stderr  # plain lines without a terminal


def test_dataset_is_a_balanced_seed_layout_that_dataset_check_accepts(runner, tmp_path, checkpoint):
    from ptools.data import check_dataset

    ckpt, data = checkpoint
    out = tmp_path / "gen"
    args = ["generate", str(ckpt), "--input", str(data / "crack" / "normal"), "--dataset", str(out), "--n", "2"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    # --n counts per label: every label gets exactly that many.
    assert doc["mode"] == "dataset" and doc["counts"] == {"crack": 2, "scratch": 2, "spot": 2, "stain": 2}
    report = check_dataset(out)
    assert report.ok, report.problems
    assert report.layout == "seed" and report.paired and report.counts == doc["counts"]
    for seg in out.glob("*/defect_segmentation/*.png"):
        values = set(np.unique(np.asarray(Image.open(seg))).tolist())
        assert values == {0, 255}
        stem = seg.stem
        label = seg.parent.parent
        assert Image.open(label / "defect" / f"{stem}.png").size == (64, 64)
        assert Image.open(label / "normal" / f"{stem}.png").size == (64, 64)
    manifest = json.loads((out / "generated.json").read_text())
    assert len(manifest["samples"]) == 8 and "spatial map" in manifest["mask_rule"]
    assert manifest["n_per_label"] == 2
    check = runner.invoke(app, ["dataset", "check", str(out)])
    assert check.exit_code == 0, check.output

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.stderr
    forced = runner.invoke(app, [*args[:-1], "3", "--label", "spot", "--force", "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["counts"] == {"spot": 3}
    assert sorted(p.name for p in out.iterdir()) == ["generated.json", "spot"]
    mine = tmp_path / "mine"
    (mine / "keep").mkdir(parents=True)
    refused = runner.invoke(app, [*args[:4], "--dataset", str(mine), "--force"])
    assert refused.exit_code == 2 and "refusing" in refused.stderr and (mine / "keep").is_dir()


def _files(root: Path) -> dict[str, bytes]:
    """Every image of a generated set by relative name (the manifest names the output folder: left out)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_dataset_same_seed_same_files_and_samples_do_not_depend_on_n_or_labels(runner, tmp_path, checkpoint):
    ckpt, data = checkpoint
    base = ["generate", str(ckpt), "--input", str(data / "crack" / "normal"), "--device", "cpu"]

    def make(name: str, *extra: str) -> dict[str, bytes]:
        result = runner.invoke(app, [*base, "--dataset", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        return _files(tmp_path / name)

    first = make("a", "--n", "3", "--seed", "5")
    assert len(first) == 4 * 3 * 3  # labels x samples x (normal, defect, mask)
    assert make("b", "--n", "3", "--seed", "5") == first  # the same seed: the same bytes
    other = make("c", "--n", "3", "--seed", "6")
    assert other.keys() == first.keys()
    changed = [k for k in first if "/defect/" in k and first[k] != other[k]]
    assert len(changed) == 12  # another seed: every synthetic defect differs
    # A smaller --n writes the first samples of a larger one; one --label writes that label's samples.
    assert make("d", "--n", "2", "--seed", "5") == {k: v for k, v in first.items() if not k.endswith("02.png")}
    spot = make("e", "--n", "3", "--seed", "5", "--label", "spot")
    assert spot == {k: v for k, v in first.items() if k.startswith("spot/")}


def test_dataset_progress_counts_every_label(runner, tmp_path, checkpoint):
    ckpt, data = checkpoint
    args = ["generate", str(ckpt), "--input", str(data / "crack" / "normal"), "--dataset", str(tmp_path / "g")]
    result = runner.invoke(app, [*args, "--n", "2"])
    assert result.exit_code == 0, result.output
    assert "generate 8/8" in result.stderr  # plain lines without a terminal: 2 per label, 4 labels
    assert "8 samples (crack 2, scratch 2, spot 2, stain 2)" in result.stdout


def test_dataset_refuses_when_the_map_never_marks_a_pixel(runner, tmp_path, checkpoint, monkeypatch):
    import ptools.defectgan.generate as gen

    ckpt, data = checkpoint
    monkeypatch.setattr(gen, "MASK_THRESHOLD", 1.5)  # a sigmoid map is never above it: every draw is empty
    out = tmp_path / "g"
    args = ["generate", str(ckpt), "--input", str(data / "crack" / "normal"), "--dataset", str(out), "--n", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "train it longer" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".g.*"))  # nothing half-written is left


def test_dataset_masks_from_an_existing_dataset(runner, tmp_path, checkpoint):
    ckpt, data = checkpoint
    out = tmp_path / "gen"
    args = ["generate", str(ckpt), "--input", str(data / "spot" / "normal"), "--dataset", str(out), "--n", "1"]
    result = runner.invoke(app, [*args, "--masks", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert str(data) in json.loads(result.stdout)["mask_source"]
    assert not list(tmp_path.glob(".gen.*"))  # no staging folder left behind


def _one_error_line(result, path) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("ptools: error: ") and str(path) in lines[0] and ".tmp" not in lines[0], lines
    return lines[0]


def test_unwritable_out_and_out_file_are_one_line(runner, tmp_path, checkpoint, unwritable_dir):
    ckpt, data = checkpoint
    inputs = str(data / "crack" / "normal")
    out = unwritable_dir / "gen"
    result = runner.invoke(app, ["generate", str(ckpt), "--input", inputs, "--label", "crack", "--out", str(out)])
    assert "cannot write here" in _one_error_line(result, out)
    target = unwritable_dir / "set"
    result = runner.invoke(app, ["generate", str(ckpt), "--input", inputs, "--dataset", str(target), "--n", "2"])
    assert "cannot write here" in _one_error_line(result, target)
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    result = runner.invoke(app, ["generate", str(ckpt), "--input", inputs, "--label", "crack", "--out", str(a_file)])
    assert "exists and is not a folder" in _one_error_line(result, a_file)
    assert a_file.read_text() == "mine"


def test_label_without_mask_places_a_drawn_shape_per_sample(runner, tmp_path, checkpoint):
    """The README's `generate ... --label crack --out gen/`: each sample gets its own placement mask (a
    synthetic crack shape, written beside it), not a request to paint the whole image."""
    ckpt, data = checkpoint
    inputs = data / "crack" / "normal"
    out = tmp_path / "gen"
    args = ["generate", str(ckpt), "--input", str(inputs), "--label", "crack", "--n", "2", "--out", str(out)]
    doc = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert doc["placement"] == "synthetic shapes"
    masks = [np.asarray(Image.open(o["placement_mask"]).convert("L")) for o in doc["outputs"]]
    assert len(masks) == 2 * len(list(inputs.iterdir()))
    for m in masks:
        assert set(np.unique(m)) <= {0, 255}
        assert 0.001 < (m > 0).mean() < 0.5  # a defect's shape: some pixels, far from the whole image
    assert len({m.tobytes() for m in masks}) == len(masks)  # drawn per sample
    again = json.loads(runner.invoke(app, [*args, "--out", str(tmp_path / "again"), "--json"]).stdout)
    for a, b in zip(doc["outputs"], again["outputs"], strict=True):  # seeded: the same placements
        assert Image.open(a["placement_mask"]).tobytes() == Image.open(b["placement_mask"]).tobytes()

    whole = runner.invoke(app, [*args[:-1], str(tmp_path / "whole"), "--whole-image", "--json"])
    doc = json.loads(whole.stdout)
    assert doc["placement"] == "whole image" and all(o["placement_mask"] is None for o in doc["outputs"])
    assert not list((tmp_path / "whole").glob("*_mask.png"))
    both = runner.invoke(app, [*args, "--whole-image", "--mask", str(next((data / "crack" / "defect").iterdir()))])
    assert both.exit_code == 2 and "give one" in both.stderr
