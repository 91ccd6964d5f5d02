"""`ptools check-conv`: arithmetic, range table, model scan; JSON fields and exit codes."""

from __future__ import annotations

import json
import math

import pytest

from ptools.cli import app
from tests.conftest import run_ptools


def invoke_json(runner, *args: str, code: int = 0) -> dict:
    result = runner.invoke(app, ["check-conv", *args, "--json"])
    assert result.exit_code == code, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "ptools.check-conv/1"
    return doc


def tf_same(size: int, k: int, s: int, d: int = 1) -> tuple[int, list[int]]:
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return out, [total // 2, total - total // 2]


@pytest.mark.parametrize(("size", "k", "s", "d"), [(299, 3, 2, 1), (224, 3, 2, 1), (224, 7, 2, 1), (33, 3, 1, 4)])
def test_arithmetic_json(runner, size, k, s, d):
    doc = invoke_json(runner, "--input", str(size), "--kernel", str(k), "--stride", str(s), "--dilation", str(d))
    out, pads = tf_same(size, k, s, d)
    assert doc["op"] == "conv" and doc["input"] == [size, size]
    assert doc["output"] == [out, out]
    assert doc["padding"] == [pads, pads]
    assert (doc["pytorch"] is not None) == (pads[0] == pads[1])
    mistakes = {m["key"]: m for m in doc["mistakes"]}
    assert mistakes["'same'"]["output"] is None if s > 1 else mistakes["'same'"]["matches_tf"]
    floor_out = (size + max((size // s - 1) * s + (k - 1) * d + 1 - size, 0) - (k - 1) * d - 1) // s + 1
    assert mistakes["floor(in/s)"]["output"] == [floor_out, floor_out]


def test_non_square_forms(runner):
    doc = invoke_json(runner, "--input", "224x225", "--kernel", "3x1", "--stride", "2x1")
    assert doc["output"] == [112, 225]
    assert doc["padding"] == [[0, 1], [0, 0]]


def test_transpose_output_is_tf_size(runner):
    doc = invoke_json(runner, "--input", "5x7", "--kernel", "3", "--stride", "2", "--op", "transpose")
    assert doc["output"] == [10, 14]
    assert doc["padding"] == [[0, 1], [0, 1]]  # TF crops the odd cell after
    assert doc["pytorch"] is None
    doc = invoke_json(runner, "--input", "5", "--kernel", "4", "--stride", "2", "--op", "transpose")
    assert doc["pytorch"].endswith("padding=1, output_padding=0)")


def test_pool_ops(runner):
    doc = invoke_json(runner, "--input", "224", "--kernel", "3", "--stride", "2", "--op", "maxpool")
    assert doc["output"] == [112, 112] and "ceil_mode=True" in doc["pytorch"]
    doc = invoke_json(runner, "--input", "10", "--kernel", "3", "--op", "avgpool")  # stride defaults to kernel
    assert doc["stride"] == [3, 3] and doc["output"] == [4, 4]


def test_range_rows(runner):
    doc = invoke_json(runner, "--input", "1..64", "--kernel", "3", "--stride", "2")
    assert [row["input"] for row in doc["rows"]] == [[n, n] for n in range(1, 65)]
    for n, row in enumerate(doc["rows"], start=1):
        out, pads = tf_same(n, 3, 2)
        assert row["output"] == [out, out] and row["padding"] == [pads, pads]


def test_valid_range_marks_sizes_without_output(runner):
    doc = invoke_json(runner, "--input", "1..6", "--kernel", "3", "--stride", "2", "--padding", "valid")
    assert [row["output"] for row in doc["rows"]] == [None, None, [1, 1], [1, 1], [2, 2], [2, 2]]
    assert "larger than the input" in doc["rows"][0]["error"]


def test_human_output(runner):
    result = runner.invoke(app, ["check-conv", "--input", "224", "--kernel", "3", "--stride", "2"])
    assert result.exit_code == 0
    assert "112x112" in result.stdout and "top 0, bottom 1" in result.stdout
    assert "Conv2dSame" in result.stdout
    result = runner.invoke(app, ["check-conv", "--input", "8..12", "--kernel", "3", "--stride", "2"])
    assert result.exit_code == 0 and "12x12" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "0", "--kernel", "3"], "positive"),
        (["--input", "-4", "--kernel", "3"], "positive"),
        (["--input", "abc", "--kernel", "3"], "expected N or HxW"),
        (["--input", "224", "--kernel", "3", "--stride", "0"], "positive"),
        (["--input", "3", "--kernel", "5", "--padding", "valid"], "larger than the input"),
        (["--input", "1..2", "--kernel", "5", "--padding", "valid"], "larger than the input"),
        (["--input", "9..3", "--kernel", "3"], "1 <= A <= B"),
        (["--dilation", "2"], "needs --stride"),
        (["--input", "5", "--kernel", "4", "--stride", "2", "--op", "transpose", "--output-padding", "0"], "rejects"),
        (["--model", "tests.nn.models:drifting_model"], "--input-size"),
        (["--model", "tests.nn.models:drifting_model", "--input-size", "3x0x4"], "positive"),
    ],
)
def test_bad_input_exit_2_one_line(args, message):
    proc = run_ptools("check-conv", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptools: error:") and message in lines[0], proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope", "--input-size", "3x8x8"], "package.module:Factory"),
        (["--model", "tests.nn.models:not_a_module", "--input-size", "3x8x8"], "not a torch nn.Module"),
        (["--model", "torchvision:no_such_net", "--input-size", "3x8x8"], "no_such_net"),
        (["--model", "tests.nn.models:tf_same_model", "--input-size", "3x8"], "CxHxW"),
    ],
)
def test_bad_model_spec_exit_2(runner, args, message):
    result = runner.invoke(app, ["check-conv", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_arithmetic_json_and_range_do_not_import_torch():
    proc = run_ptools("check-conv", "--input", "1..64", "--kernel", "3", "--stride", "2", "--json", check_modules=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="


def test_model_scan_drift_exits_1(runner):
    doc = invoke_json(runner, "--model", "tests.nn.models:drifting_model", "--input-size", "3x16x16", code=1)
    assert [layer["name"] for layer in doc["layers"]] == ["0", "1", "2"]
    first = doc["layers"][0]
    assert first["pytorch_output"] == [8, 8] and first["tf_output"] == [8, 8] and first["ok"] is False
    assert doc["layers"][1]["pytorch_output"] == [9, 9] and doc["layers"][1]["tf_output"] == [8, 8]
    assert doc["ok"] is False and doc["drift"] == 3


def test_model_scan_clean_exits_0(runner):
    doc = invoke_json(runner, "--model", "tests.nn.models:tf_same_model", "--input-size", "3x15x16")
    assert doc["ok"] and all(layer["ok"] for layer in doc["layers"])
    result = runner.invoke(app, ["check-conv", "--model", "tests.nn.models:tf_same_model", "--input-size", "3x15x16"])
    assert result.exit_code == 0 and "all match TF SAME" in result.stdout


def test_model_scan_expect_valid(runner):
    args = ["--model", "tests.nn.models:drifting_model", "--input-size", "3x16x16", "--expect", "valid"]
    doc = invoke_json(runner, *args, code=1)
    assert doc["expect"] == "valid" and doc["layers"][0]["tf_output"] == [7, 7]


def test_model_scan_forward_failure_after_drift_exits_1(runner):
    result = runner.invoke(app, ["check-conv", "--model", "tests.nn.models:Broken", "--input-size", "3x15x16"])
    assert result.exit_code == 1
    assert "forward pass failed" in result.stdout


def test_torchvision_resnet18(runner):
    doc = invoke_json(runner, "--model", "torchvision:resnet18", "--input-size", "3x32x32", code=1)
    layers = {layer["name"]: layer for layer in doc["layers"]}
    # conv1 (k7 s2 padding=3): TF pads (2, 3), so same size but shifted windows.
    assert layers["conv1"]["pytorch_output"] == layers["conv1"]["tf_output"] == [16, 16]
    assert layers["conv1"]["ok"] is False and layers["conv1"]["tf_padding"] == [[2, 3], [2, 3]]
    assert layers["layer1.0.conv1"]["ok"] is True


def test_model_spec_imports_from_current_directory(tmp_path):
    # The console script does not put the working directory on sys.path by itself; `python -m` does.
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "mynet.py").write_text("from torch import nn\n\ndef build():\n    return nn.Conv2d(1, 1, 3, 2, 1)\n")
    script = Path(sys.executable).with_name("ptools")
    if not script.exists():
        pytest.skip("ptools console script not installed next to this Python")
    proc = subprocess.run(
        [str(script), "check-conv", "--model", "mynet:build", "--input-size", "1x8x8", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # k3 s2 padding=1 on an even input: shifted windows
    assert json.loads(proc.stdout)["layers"][0]["tf_padding"] == [[0, 1], [0, 1]]


def test_model_scan_accepts_the_recommended_zero_pad_recipe(runner):
    advice = runner.invoke(app, ["check-conv", "-i", "64", "-k", "3", "-s", "2"]).stdout
    assert "nn.ZeroPad2d((0, 1, 0, 1)) then nn.Conv2d(padding=0)" in advice
    doc = invoke_json(runner, "--model", "tests.nn.models:zero_pad_model", "--input-size", "3x64x64")
    assert doc["ok"] is True and doc["layers"][0]["type"] == "ZeroPad2d+Conv2d"


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_stride_alone_gives_a_table_over_common_kernels_and_sizes(runner, stride):
    """`check-conv --stride 2` (the design card's example): TF's output and pads for the common kernels over two
    periods of input sizes, each the same as the single-op arithmetic gives, and which recipes drift."""
    doc = invoke_json(runner, "--stride", str(stride))
    assert doc["stride"] == stride and doc["kernels"] == [1, 2, 3, 4, 5, 7]
    assert [r["input"] for r in doc["rows"]] == list(range(4 * stride, 6 * stride))
    for row in doc["rows"]:
        for k in doc["kernels"]:
            out, pads = tf_same(row["input"], k, stride)
            assert row["output"] == out and row["pads"][str(k)] == pads
            single = invoke_json(runner, "--input", str(row["input"]), "--kernel", str(k), "--stride", str(stride))
            drift = sorted(m["key"] for m in single["mistakes"] if not m["matches_tf"])
            assert sorted(row["drift"][str(k)]) == drift
    human = runner.invoke(app, ["check-conv", "--stride", str(stride)])
    assert human.exit_code == 0 and "k=7" in human.stdout and "TF out" in human.stdout
    if stride == 2:
        assert "padding='same': refused by PyTorch for stride > 1" in human.stdout
        assert "padding=k//2: differs from TF (k=2,4 at every input; k=3,5,7 at even inputs)" in human.stdout
    sized = invoke_json(runner, "--stride", str(stride), "--input", "224")  # one size, every common kernel
    assert [r["input"] for r in sized["rows"]] == [224]
