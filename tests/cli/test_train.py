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
    bar = monitor.Progress(500_000, 0, every=50, enabled=True, device="cpu")
    for step in range(1, 8):
        bar.update(step, {"d_loss": 1.0})
    err = capsys.readouterr().err
    # 1 step per 20 s: 499,99x steps left = ~115 days, said once, with what to do about it
    assert err.count("will take about") == 1 and "days" in err and "--preset small" in err
    # --log-every 50 is never reached, yet a line comes at least every 30 s (updates are 20 s apart: every other)
    assert [f"step {k}/500000" in err for k in range(1, 8)] == [False, True, False, True, False, True, False]
