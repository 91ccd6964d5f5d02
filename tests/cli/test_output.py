"""Output shared by every command: piped tables keep one unwrapped line per row."""

from __future__ import annotations

import pytest
from PIL import Image
from rich.table import Table

from ptools.cli import app
from ptools.cli._output import capped, print_table
from tests.nn.models import long_named_model


def _row_lines(out: str, *needles: str) -> list[str]:
    return [line for line in out.splitlines() if any(n in line for n in needles)]


def test_print_table_does_not_wrap_without_a_terminal(capsys):
    from rich.console import Console

    console = Console(width=40)  # capsys: not a terminal
    table = Table("key", "value")
    long_key = "encoder.layers.11.attention.self.query.weight.with.a.long.tail"
    table.add_row(long_key, "768x768")
    print_table(table, console)
    out = capsys.readouterr().out
    (line,) = _row_lines(out, "encoder")
    assert long_key in line and "768x768" in line
    assert console.width == 40  # restored


def test_capped_says_how_many_were_left_out():
    assert capped([1, 2, 3], 5) == ([1, 2, 3], None)
    shown, more = capped(list(range(10)), 4)
    assert shown == [0, 1, 2, 3] and more is not None and "6 more" in more


def test_check_conv_model_rows_are_whole_lines_when_piped(runner):
    result = runner.invoke(
        app, ["check-conv", "--model", "tests.nn.models:long_named_model", "--input-size", "3x16x16"]
    )
    assert result.exit_code == 1, result.output
    names = [name for name, _ in long_named_model().named_children()]
    for name in names:
        (line,) = _row_lines(result.stdout, name)
        assert "16x16" in line or "8x8" in line  # the row's other cells are on the same line


def test_dataset_check_problem_rows_are_whole_lines_when_piped(runner, tmp_path):
    root = tmp_path / "a_dataset_folder_with_a_name_long_enough_to_push_every_path_past_eighty_columns"
    for label in ("crack", "stain"):
        for sub in ("normal", "defect", "defect_segmentation"):
            (root / label / sub).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / label / "normal" / f"sample_{i}.png")
            Image.new("RGB", (8, 8), (0, i, 0)).save(root / label / "defect" / f"sample_{i}.png")
        # masks missing: one problem per defect image, each naming a long path
    result = runner.invoke(app, ["dataset", "check", str(root)])
    assert result.exit_code == 1, result.output
    rows = [line for line in _row_lines(result.stdout, "missing_mask") if "by kind" not in line]
    assert len(rows) == 4
    for line in rows:
        assert str(root) in line and "defect_segmentation/sample_" in line


# ------------------------------------------------------------------------------ errors, pipes, flags


def test_json_error_document_on_stdout_and_line_on_stderr(runner, tmp_path):
    import json

    missing = tmp_path / "nope.pt"
    result = runner.invoke(app, ["inspect", str(missing), "--json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc == {
        "schema": "ptools.error/1",
        "file": str(missing),
        "error": f"{missing}: no such file",
        "hint": None,
        "exit_code": 2,
    }
    assert result.stderr.startswith("ptools: error: ") and str(missing) in result.stderr
    # Without --json stdout stays empty.
    assert runner.invoke(app, ["inspect", str(missing)]).stdout == ""


def test_json_error_document_for_usage_errors_and_hints(runner):
    import json

    usage = runner.invoke(app, ["check-conv", "--input", "8", "--kernel", "3", "--bogus", "--json"])
    assert usage.exit_code == 2
    doc = json.loads(usage.stdout)
    assert doc["schema"] == "ptools.error/1" and "--bogus" in doc["error"] and doc["exit_code"] == 2
    assert doc["file"] is None
    hinted = runner.invoke(app, ["check-conv", "--json"])
    doc = json.loads(hinted.stdout)
    assert doc["hint"] and "--input" in doc["hint"] and doc["file"] is None


def test_debug_is_accepted_after_the_subcommand(runner, tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope.pt"), "--debug"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "no such file" in result.stderr
    plain = runner.invoke(app, ["inspect", str(tmp_path / "nope.pt")])
    assert "Traceback" not in plain.stderr  # --debug does not stick to later runs


@pytest.mark.parametrize("args", [["inspekt", "x"], ["dataset", "chek", "x"]])
def test_mistyped_command_suggests_once(runner, args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.count("Did you mean") == 1, result.stderr


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_closed_pipe_is_quiet_and_exit_0(extra):
    """`ptools ... | head -1`: far more than a pipe buffer of output, the reader leaves after one line."""
    import subprocess
    import sys

    args = ["check-conv", "--input", "1..4096", "--kernel", "3", "--stride", "2", *extra]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptools", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, stderr
    assert "BrokenPipe" not in stderr and "error" not in stderr, stderr


def test_a_title_wider_than_its_table_stays_on_one_line_when_piped(capsys):
    from rich.console import Console

    console = Console(width=40)
    title = "Values differ (22; largest first) in a title longer than the narrow table under it"
    table = Table("k", "v", title=title)
    table.add_row("a", "1")
    print_table(table, console)
    out = capsys.readouterr().out
    assert any(line.strip() == title for line in out.splitlines()), out


def test_convert_creates_missing_parents_and_writes_readable_files(runner, tmp_path):
    """`convert x out/y.safetensors` into a folder that does not exist yet; the file is 0644 under umask 022."""
    import os
    import stat
    from pathlib import Path

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "keras" / "legacy_model.h5"
    out = tmp_path / "out" / "nested" / "y.safetensors"
    old = os.umask(0o022)
    try:
        result = runner.invoke(app, ["convert", str(fixture), str(out)])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert out.is_file() and stat.S_IMODE(out.stat().st_mode) == 0o644


def test_reader_leaving_keeps_the_verdict(tmp_path):
    """`ptools dataset check broken | head -1` under `set -o pipefail`: the check's exit code (1) survives the
    closed pipe; a clean dataset still exits 0."""
    import subprocess
    import sys

    from ptools.data import synthesize

    data = tmp_path / "data"
    synthesize(data, n=8, size=32, seed=0)
    clean = subprocess.Popen([sys.executable, "-m", "ptools", "dataset", "check", str(data)], stdout=subprocess.PIPE)
    clean.stdout.close()  # the reader is gone before the first line is written
    assert clean.wait(timeout=120) == 0
    for png in list((data / "crack" / "defect").glob("*.png")):
        png.write_bytes(b"not an image")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptools", "dataset", "check", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, stderr
    assert "BrokenPipe" not in stderr and "Traceback" not in stderr
