"""Output as people see it: in a real terminal 80 columns wide (a pseudo-terminal), and piped.

At 80 columns names stay whole (keys, modules, layers), numbers are never cut, the train progress line keeps
its bar, step count and ETA. Piped, every command's tables have one plain style: no box drawing, a header
line, no trailing spaces, nothing folded at 80 columns.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch

from ptools.cli import app

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
BOX = set("┏┓┗┛┃━┡┩│─└┘┌┐╇╈┳┻┣┫╋")


def run_in_terminal(*args: str, cols: int = 80, timeout: float = 240) -> list[str]:
    """`python -m ptools ARGS` with stdout and stderr on a pseudo-terminal of `cols` columns; the text a
    person sees, one entry per terminal line (colour and cursor codes removed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptools", *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    text = ANSI.sub("", out.decode("utf-8", "replace")).replace("\r\n", "\n")
    # a redrawn line: its last state; rich pads terminal lines to the width, a person sees no difference
    return [line.split("\r")[-1].rstrip() for line in text.split("\n")]


@pytest.fixture(scope="module")
def bn_checkpoint(tmp_path_factory) -> Path:
    """A state_dict with long key names, batch-norm counters and values of every magnitude."""
    torch.manual_seed(1917)
    net = torch.nn.Sequential()
    net.add_module("encoder_downsampling_block", torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)))
    net.add_module("decoder_upsampling_block", torch.nn.Sequential(torch.nn.Conv2d(8, 3, 3), torch.nn.BatchNorm2d(3)))
    sd = net.state_dict()
    sd["encoder_downsampling_block.1.running_var"] = torch.rand(8) * 1e-7
    sd["decoder_upsampling_block.0.weight"] = torch.randn(3, 8, 3, 3) * 1e6
    path = tmp_path_factory.mktemp("term") / "net.pt"
    torch.save(sd, path)
    return path


def test_keys_and_stats_at_80_columns_keep_names_whole_and_values_uncut(bn_checkpoint):
    lines = run_in_terminal("inspect", str(bn_checkpoint), "--keys", "--stats")
    sd = torch.load(bn_checkpoint, weights_only=True)
    for key in sd:
        assert key in lines, key  # each key whole, on a line of its own
    table = lines[1 : lines.index("14 keys")]  # (the file's header line and the pickle verdict name its path)
    assert all(len(line) <= 80 for line in table)
    assert not any("…" in line for line in lines)  # no value cut to "2.807e…"
    values = lines[lines.index("decoder_upsampling_block.0.weight") + 1].split()
    assert values[:3] == ["3×8×3×3", "float32", "216"]
    assert float(values[4]) == pytest.approx(float(sd["decoder_upsampling_block.0.weight"].max()), rel=1e-3)


def test_module_tree_at_80_columns_keeps_names_whole(bn_checkpoint):
    lines = run_in_terminal("inspect", str(bn_checkpoint), "--depth", "4")
    assert any(line.strip().startswith("num_batches_tracked") for line in lines), lines
    table = lines[lines.index("Modules (depth 4)") : lines.index("Totals") - 1]
    assert len(table) > 10 and all(len(line) <= 80 for line in table)
    rows = [line for line in lines if line.strip().startswith("running_var")]
    assert rows and all(line.split()[-1] in ("8", "3") for line in rows)  # the shape column is there, whole


def test_train_progress_at_80_columns_keeps_bar_step_and_eta(tmp_path):
    from ptools.defectgan.config import DefectGANConfig, to_toml
    from tests.defectgan.conftest import TINY

    toml = tmp_path / "tiny.toml"
    toml.write_text(to_toml(DefectGANConfig(**TINY)))
    args = ["train", "--out", str(tmp_path / "run"), "--steps", "6", "--synth-n", "8", "--config", str(toml)]
    lines = run_in_terminal(*args, "--device", "cpu")
    bars = [line for line in lines if line.startswith("train ") and "━" in line]
    assert bars, lines[-15:]
    last = bars[-1]
    assert len(last) <= 80 and "6/6" in last and "step/s" in last and "ETA" in last, last
    assert "train finished at step 6/6" in "\n".join(lines)


def _piped_lines(result) -> list[str]:
    assert result.exit_code in (0, 1), result.output
    return result.stdout.splitlines()


def test_piped_tables_have_one_plain_style(runner, tmp_path, bn_checkpoint):
    """check-conv (range, stride table, model scan), dataset check, inspect: no box drawing, no trailing
    spaces, a header line, and every row one line however long."""
    from ptools.data import synthesize

    data = synthesize(tmp_path / "data", n=8, size=32, seed=0)
    long = data / "crack" / "defect" / ("x" * 90 + ".png")
    long.write_bytes(b"not an image")
    outputs = {
        "range": ["check-conv", "--input", "1..6", "--kernel", "3", "--stride", "2"],
        "stride": ["check-conv", "--stride", "2"],
        "scan": ["check-conv", "--model", "tests.nn.models:drifting_model", "--input-size", "3x16x16"],
        "dataset": ["dataset", "check", str(data)],
        "inspect": ["inspect", str(bn_checkpoint)],
        "keys": ["inspect", str(bn_checkpoint), "--keys"],
    }
    for name, args in outputs.items():
        lines = _piped_lines(runner.invoke(app, args))
        assert lines, name
        assert not any(set(line) & BOX for line in lines), (name, lines[:5])
        assert all(line == line.rstrip() for line in lines), name
        if name == "scan":
            header = next(line for line in lines if line.startswith("layer"))
            assert header.split() == ["layer", "type", "input", "k/s/d", "PyTorch", "TF", "vs", "TF"]
        if name == "dataset":
            assert any(long.name in line and "unreadable" in line for line in lines)  # one line, whole name
            by_kind = [line for line in lines if line.startswith("by kind:")]
            assert len(by_kind) == 1


def test_piped_text_is_not_folded(runner, tmp_path):
    """The train summary (stdout), the resuming line (stderr), generate's notes: one line each, piped."""
    from ptools.defectgan.config import DefectGANConfig, to_toml
    from tests.defectgan.conftest import TINY

    toml = tmp_path / "tiny.toml"
    toml.write_text(to_toml(DefectGANConfig(**TINY)))
    run = tmp_path / "a_run_folder_with_a_rather_long_name_so_that_lines_pass_eighty_columns"
    args = ["train", "--out", str(run), "--steps", "1", "--synth-n", "8", "--config", str(toml), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    losses = [line for line in result.stdout.splitlines() if "d_loss=" in line]
    assert len(losses) == 1 and "g_sparsity=" in losses[0] and len(losses[0]) > 80
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--steps", "2"])
    assert resumed.exit_code == 0, resumed.output
    resuming = [line for line in resumed.stderr.splitlines() if "resuming" in line]
    assert len(resuming) == 1 and str(run) in resuming[0] and len(resuming[0]) > 80

    big = tmp_path / "big.png"
    from PIL import Image

    Image.new("RGB", (100, 90), (128, 128, 128)).save(big)
    out = tmp_path / "gen"
    gen = runner.invoke(app, ["generate", str(run), "--input", str(big), "--label", "crack", "--out", str(out)])
    assert gen.exit_code == 0, gen.output
    notes = [line for line in gen.stderr.splitlines() if "resized" in line]
    assert len(notes) == 1 and notes[0].rstrip().endswith("outputs are 64x64"), gen.stderr


def test_one_rule_for_scalar_shapes_and_counted_nouns(runner, tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"bn.num_batches_tracked": torch.tensor(3), "w": torch.ones(2)}, a)
    torch.save({"bn.num_batches_tracked": torch.ones(1, dtype=torch.long), "w": torch.ones(2)}, b)
    diff = runner.invoke(app, ["inspect", str(a), "--diff", str(b)])
    row = next(line for line in diff.stdout.splitlines() if line.startswith("bn.num_batches_tracked"))
    assert row.split()[1:] == ["scalar", "1"], row
    keys = runner.invoke(app, ["inspect", str(a), "--keys"]).stdout
    assert "bn.num_batches_tracked  scalar" in keys
    one = tmp_path / "one.pt"
    torch.save({"model": {"w": torch.ones(1)}, "epoch": 1}, one)
    text = runner.invoke(app, ["inspect", str(one)]).stdout
    assert "(auto-detected, 1 tensor)" in text and "1 tensor, 1 value," in text
    assert not any(f" 1 {noun}s" in text for noun in ("tensor", "key", "value", "param"))
    doc = json.loads(runner.invoke(app, ["inspect", str(one), "--json"]).stdout)
    assert doc["totals"]["tensors"] == 1
