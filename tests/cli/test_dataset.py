"""`ptools dataset synth|check|preview` through the app: outputs, JSON, exit codes, lazy imports."""

from __future__ import annotations

import json

from PIL import Image

from ptools.cli import app
from ptools.data.preview import COLUMNS, HEADER_HEIGHT, LEGEND_ROW_HEIGHT, PAD
from tests.conftest import run_ptools


def _synth(runner, root, *extra):
    return runner.invoke(app, ["dataset", "synth", str(root), "--n", "8", "--size", "24", *extra])


def test_synth_json_and_overwrite_rules(runner, tmp_path):
    root = tmp_path / "set"
    result = _synth(runner, root, "--labels", "crack,stain", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "ptools.dataset.synth/1"
    assert doc["labels"] == ["crack", "stain"] and doc["counts"] == {"crack": 4, "stain": 4}
    assert len(list((root / "stain" / "defect_segmentation").iterdir())) == 4
    again = _synth(runner, root)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert _synth(runner, root, "--force", "--format", "jpg").exit_code == 0
    assert len(list((root / "crack" / "defect").glob("*.jpg"))) == 2
    bad = _synth(runner, tmp_path / "other", "--labels", "banana")
    assert bad.exit_code == 2 and "banana" in bad.stderr


def test_check_exit_codes(runner, tmp_path):
    root = tmp_path / "set"
    assert _synth(runner, root).exit_code == 0
    ok = runner.invoke(app, ["dataset", "check", str(root)])
    assert ok.exit_code == 0, ok.output
    assert "no problems" in ok.stdout and "scratch" in ok.stdout
    mask = next((root / "spot" / "defect_segmentation").iterdir())
    Image.new("L", (24, 24), 0).save(mask)
    found = runner.invoke(app, ["dataset", "check", str(root), "--json"])
    assert found.exit_code == 1
    doc = json.loads(found.stdout)
    assert doc["schema"] == "ptools.dataset.check/1" and doc["ok"] is False
    assert doc["problems"] == [
        {"kind": "mask_empty", "path": str(mask), "detail": "the mask marks no pixel", "severity": "error"}
    ]
    assert runner.invoke(app, ["dataset", "check", str(root)]).exit_code == 1
    (tmp_path / "empty").mkdir()
    missing = runner.invoke(app, ["dataset", "check", str(tmp_path / "empty")])
    assert missing.exit_code == 2 and "not a dataset" in missing.stderr


def test_preview_png_terminal_and_json(runner, tmp_path):
    root = tmp_path / "set"
    assert _synth(runner, root).exit_code == 0
    out = tmp_path / "grid.png"
    args = ["dataset", "preview", str(root), "--n", "3", "--size", "32", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        rows = (img.height - HEADER_HEIGHT - PAD - 3 * (32 + PAD)) / LEGEND_ROW_HEIGHT
        assert img.width == len(COLUMNS) * (32 + PAD) + PAD and rows in (1, 2, 3)
    assert runner.invoke(app, args).exit_code == 2  # exists: needs --force
    doc = json.loads(runner.invoke(app, [*args, "--force", "--augmented", "--label", "crack", "--json"]).stdout)
    assert doc["schema"] == "ptools.dataset.preview/1" and doc["augmented"] is True
    assert {tuple(s["labels"]) for s in doc["samples"]} == {("crack",)} and len(doc["samples"]) == 2
    term = runner.invoke(app, ["dataset", "preview", str(root), "--n", "1", "--size", "16", "--terminal"])
    # captured, not a terminal: text titles and legend, the pixels as characters (no colour codes to show)
    assert term.exit_code == 0 and term.stdout.split()[:5] == ["normal", "defect", "mask", "overlay", "control"]
    assert "control colours:" in term.stdout and "▀" not in term.stdout
    assert not (tmp_path / "preview.png").exists()
    unknown = runner.invoke(app, ["dataset", "preview", str(root), "--label", "nope", "--out", str(tmp_path / "x.png")])
    assert unknown.exit_code == 2 and not (tmp_path / "x.png").exists()


def test_check_and_synth_do_not_import_torch(tmp_path):
    proc = run_ptools("dataset", "synth", str(tmp_path / "s"), "--n", "4", "--size", "16", check_modules=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="
    proc = run_ptools("dataset", "check", str(tmp_path / "s"), "--json", check_modules=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="


def test_preview_format_from_extension_folders_and_missing_parents(runner, tmp_path):
    root = tmp_path / "set"
    assert _synth(runner, root, "--n", "4").exit_code == 0
    base = ["dataset", "preview", str(root), "--n", "1", "--size", "16"]
    jpg = tmp_path / "new" / "sub" / "x.jpg"  # parents missing: created
    assert runner.invoke(app, [*base, "--out", str(jpg)]).exit_code == 0
    with Image.open(jpg) as img:
        assert img.format == "JPEG"
    folder = tmp_path / "previews"
    result = runner.invoke(app, [*base, "--out", f"{folder}/", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["out"] == str(folder / "preview.png")
    with Image.open(folder / "preview.png") as img:
        assert img.format == "PNG"
    # An existing folder without the slash is a folder too.
    assert runner.invoke(app, [*base, "--out", str(folder), "--force"]).exit_code == 0
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "x.txt")])
    assert bad.exit_code == 2 and "x.txt" in bad.stderr and ".jpg" in bad.stderr
    assert not (tmp_path / "x.txt").exists()


def test_synth_creates_missing_parent_folders(runner, tmp_path):
    result = _synth(runner, tmp_path / "data" / "synth")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "synth" / "crack" / "defect").is_dir()


def test_check_wrong_layout_and_label_folder_are_one_line_errors(runner, tmp_path):
    root = tmp_path / "set"
    assert _synth(runner, root).exit_code == 0
    wrong = runner.invoke(app, ["dataset", "check", str(root), "--layout", "folders"])
    assert wrong.exit_code == 2 and "internal error" not in wrong.stderr and "StopIteration" not in wrong.stderr
    assert "seed-layout" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    label = runner.invoke(app, ["dataset", "check", str(root / "crack")])
    assert label.exit_code == 2 and "pass its parent" in label.stderr and label.stdout == ""


def test_unwritable_folders_are_one_line_naming_the_users_path(runner, tmp_path, unwritable_dir):
    for args, path in (
        (["dataset", "synth", str(unwritable_dir / "ds"), "--n", "4", "--size", "32"], unwritable_dir / "ds"),
        (["dataset", "synth", str(unwritable_dir), "--n", "4", "--size", "32", "--force"], unwritable_dir),
    ):
        result = runner.invoke(app, args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert str(path) in lines[0] and ".tmp" not in lines[0] and "internal error" not in lines[0], lines
    data = tmp_path / "data"
    assert runner.invoke(app, ["dataset", "synth", str(data), "--n", "4", "--size", "32"]).exit_code == 0
    out = unwritable_dir / "preview.png"
    result = runner.invoke(app, ["dataset", "preview", str(data), "--out", str(out)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and f"{out}: cannot write here" in lines[0], result.output
