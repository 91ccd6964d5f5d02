"""`ptools train` end to end: synth + train + JSON, refusing to clobber a run, resume, bad input, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptools.cli import app
from ptools.defectgan.config import DefectGANConfig, to_toml
from tests.conftest import run_ptools
from tests.defectgan.conftest import TINY


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(to_toml(DefectGANConfig(**TINY)))
    return path


def test_train_help_does_not_import_torch():
    proc = run_ptools("train", "--help", check_modules=True)
    assert proc.returncode == 0, proc.stderr
    assert "--resume" in proc.stdout and proc.stdout.strip().splitlines()[-1] == "HEAVY="


def test_train_synthesizes_trains_refuses_to_clobber_and_resumes(runner, tmp_path, tiny_toml):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--steps", "2", "--synth-n", "8", "--config", str(tiny_toml), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "ptools.train/1"
    assert (doc["start_step"], doc["step"], doc["interrupted"]) == (0, 2, False)
    assert doc["config"]["g_width"] == TINY["g_width"]  # from --config
    assert (run / "data" / "synth.json").is_file()  # no --data: the synthetic set was made in the run folder
    assert Path(doc["checkpoint"]) == run / "checkpoints" / "latest.pt"
    assert (run / "metrics.csv").is_file() and (run / "config.toml").is_file()
    assert "step 2/2" in result.stderr  # plain progress lines when not on a terminal

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already holds a training run" in again.stderr

    resumed = runner.invoke(app, ["train", "--resume", str(run), "--steps", "3", "--json"])
    assert resumed.exit_code == 0, resumed.output
    doc = json.loads(resumed.stdout)
    assert (doc["start_step"], doc["step"]) == (2, 3)

    other = runner.invoke(app, ["train", "--resume", str(run), "--steps", "4", "--batch-size", "3"])
    assert other.exit_code == 2
    assert "batch_size: checkpoint 2 != now 3" in other.stderr
    # the reason is the first line (and the only one: no 46-line config before it)
    assert other.stderr.splitlines()[0].startswith(f"ptools: error: {run / 'checkpoints'}")
    assert len(other.stderr.strip().splitlines()) == 1


def test_train_bad_data_exits_2_before_training(runner, tmp_path, tiny_toml):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "nope" in result.stderr
    bad = tmp_path / "bad" / "crack" / "defect"
    bad.mkdir(parents=True)
    (bad / "a.png").write_bytes(b"garbage")
    (tmp_path / "bad" / "crack" / "normal").mkdir()
    (tmp_path / "bad" / "crack" / "normal" / "a.png").write_bytes(b"garbage")
    result = runner.invoke(
        app, ["train", "--data", str(tmp_path / "bad"), "--out", str(tmp_path / "r"), "--steps", "1"]
    )
    assert result.exit_code == 2
    assert "a.png" in result.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_bad_flag_values_exit_2(runner, tmp_path):
    result = runner.invoke(app, ["train", "--image-size", "100", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "image_size" in result.stderr
    result = runner.invoke(app, ["train", "--amp", "fp8", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "amp" in result.stderr


def test_ctrl_c_saves_interrupted_checkpoint_and_exits_130(tmp_path, tiny_toml):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ptools", "train", "--out", str(run), "--steps", "5000", "--synth-n", "8"]
    cmd += ["--config", str(tiny_toml), "--device", "cpu", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        metrics = run / "metrics.csv"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:  # header + 2 steps
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert (run / "checkpoints" / "interrupted.pt").is_file()
    doc = json.loads(out)
    assert doc["interrupted"] is True and 2 <= doc["step"] < 5000


def test_log_tensorboard_without_the_package_is_a_clear_error(runner, tmp_path, tiny_toml):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorboard is installed: the events are written instead")
    args = ["train", "--out", str(tmp_path / "r"), "--steps", "1", "--synth-n", "8", "--config", str(tiny_toml)]
    result = runner.invoke(app, [*args, "--log", "tensorboard", "--device", "cpu"])
    assert result.exit_code == 2 and "ptools-port[tensorboard]" in result.stderr


def test_cuda_without_cuda_fails_before_writing_anything(runner, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(run), "--steps", "1", "--synth-n", "8", "--device", "cuda"])
    assert result.exit_code == 2
    assert "CUDA is not available" in result.stderr
    assert "config" not in result.stderr and "synthetic" not in result.stderr
    assert not run.exists()
    result = runner.invoke(app, ["train", "--out", str(run), "--synth-n", "8", "--device", "cpu", "--amp", "fp16"])
    assert result.exit_code == 2 and "fp16" in result.stderr and not run.exists()


def test_progress_prints_an_estimate_and_lines_by_time(monkeypatch, capsys):
    from ptools.defectgan import monitor

    clock = iter(float(t) for t in range(0, 10_000, 20))  # every update 20 s after the previous one
    monkeypatch.setattr(monitor.time, "perf_counter", lambda: next(clock))
    bar = monitor.Progress(500_000, 0, every=50, enabled=True, device="cpu (2 threads)")
    for step in range(1, 8):
        bar.update(step, {"d_loss": 1.0})
    err = capsys.readouterr().err
    # 1 step per 20 s: 499,99x steps left = ~115 days, said once, with what to do about it
    assert err.count("will take about") == 1 and "days" in err and "--preset small" in err
    assert "step/s on cpu (2 threads) over the first steps" in err  # the threads the run took
    # --log-every 50 is never reached, yet a line comes at least every 30 s (updates are 20 s apart: every other)
    assert [f"step {k}/500000" in err for k in range(1, 8)] == [False, True, False, True, False, True, False]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_force_removes_only_the_files_train_wrote_and_keeps_the_users(runner, tmp_path, tiny_toml):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--steps", "2", "--synth-n", "8", "--config", str(tiny_toml), "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    assert json.loads((run / "run.json").read_text())["generator"] == "ptools train"
    mine = {
        "checkpoints/best_v3.pt": b"my best checkpoint",
        "samples/fig.png": b"my figure",
        "notes.txt": b"my notes",
        "checkpoints/old/step_00000001.pt": b"a folder of my own, even with train's names in it",
    }
    for name, data in mine.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    (run / "samples" / "step_00000002.png").write_bytes(b"stale sample")  # train's name: train's file

    forced = runner.invoke(app, [*args, "--steps", "3", "--force"])
    assert forced.exit_code == 0, forced.output
    after = _tree(run)
    for name, data in mine.items():
        assert after[name] == data, name
    assert "checkpoints/step_00000002.pt" not in after  # the earlier run's checkpoint went
    assert "checkpoints/step_00000003.pt" in after and "samples/step_00000003.png" in after
    assert "samples/step_00000002.png" not in after
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]  # a fresh log, not the old one continued

    assert "only those" in runner.invoke(app, args).stderr  # refused without --force, and says what --force does


def test_force_removes_nothing_without_the_marker_or_when_a_check_fails(runner, tmp_path, tiny_toml):
    # Files at train's names in a folder train did not mark: possibly the user's own (a config.toml of theirs).
    run = tmp_path / "mine"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text("# my own config\n")
    (run / "checkpoints" / "latest.pt").write_bytes(b"my model")
    before = _tree(run)
    args = ["train", "--out", str(run), "--steps", "1", "--synth-n", "8", "--config", str(tiny_toml), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 2 and "no run.json" in result.stderr and "removes nothing" in result.stderr
    assert _tree(run) == before

    # A real run, then --force with data that fails its check: refused before anything is removed.
    run = tmp_path / "run"
    assert runner.invoke(app, [*args[:2], str(run), *args[3:]]).exit_code == 0
    before = _tree(run)
    bad = tmp_path / "bad" / "crack"
    for sub in ("normal", "defect"):
        (bad / sub).mkdir(parents=True)
        (bad / sub / "a.png").write_bytes(b"not a png")
    result = runner.invoke(app, [*args[:2], str(run), *args[3:], "--force", "--data", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "a.png" in result.stderr
    assert _tree(run) == before

    # run/data that synth did not write is never trained on silently nor replaced.
    other = tmp_path / "other"
    (other / "data" / "crack").mkdir(parents=True)
    result = runner.invoke(app, [*args[:2], str(other), *args[3:], "--force"])
    assert result.exit_code == 2 and "not a synthetic set written by ptools" in result.stderr
    assert "--data" in result.stderr and not (other / "run.json").exists()


def test_synthetic_set_made_with_other_settings_is_refused_or_made_again(runner, tmp_path, tiny_toml):
    from ptools.data import synthesize

    run = tmp_path / "run"
    synthesize(run / "data", n=8, size=64, seed=0)  # e.g. left by a run that stopped before training
    base = ["train", "--out", str(run), "--steps", "1", "--config", str(tiny_toml), "--device", "cpu"]
    result = runner.invoke(app, [*base, "--synth-n", "12", "--seed", "5"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith(f"ptools: error: {run / 'data'}: the synthetic set there")
    assert "--synth-n 8 (now 12), --seed 0 (now 5)" in result.stderr and "--force" in result.stderr
    assert not (run / "checkpoints").exists()

    same = runner.invoke(app, [*base, "--synth-n", "8"])  # the same settings: the set is used as it is
    assert same.exit_code == 0 and "synthetic samples" not in same.stderr

    forced = runner.invoke(app, [*base, "--synth-n", "12", "--seed", "5", "--force"])
    assert forced.exit_code == 0, forced.output
    meta = json.loads((run / "data" / "synth.json").read_text())
    assert (meta["n"], meta["seed"], meta["size"]) == (12, 5, 64)
    assert len(list((run / "data").rglob("defect/*.png"))) == 12


def test_unwritable_run_folder_is_one_line_before_any_data(runner, tmp_path, tiny_toml, unwritable_dir):
    run = unwritable_dir / "run"
    args = ["train", "--out", str(run), "--steps", "1", "--synth-n", "8", "--config", str(tiny_toml)]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ptools: error: {run}: cannot write here"), lines
    assert ".tmp" not in result.stderr and "synthetic" not in result.stderr


def test_closed_stderr_does_not_stop_training(tmp_path, tiny_toml):
    """`ptools train ... 2>&1 | head -1`: once the reader leaves, progress goes quiet and the run still ends
    (checkpoint written, exit 0)."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ptools", "train", "--out", str(run), "--steps", "3", "--synth-n", "8"]
    cmd += ["--config", str(tiny_toml), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout.readline().startswith(b"ptools train: no --data")  # head -1 reads its line, and leaves
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0
    assert (run / "checkpoints" / "step_00000003.pt").is_file()
    assert len((run / "metrics.csv").read_text().splitlines()) == 4
