"""The source printer: identifiers from Keras names, literals, and line splitting that ruff format keeps."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ptools.port.code import call, identifier, lit, wrap

ROOT = Path(__file__).resolve().parents[2]


def test_identifiers_are_valid_unique_and_never_shadow() -> None:
    taken: set[str] = set()
    names = [identifier(n, taken) for n in ["conv2d_1", "block-1/conv", "1x1", "class", "forward", "min", "conv2d_1"]]
    assert names == ["conv2d_1", "block_1_conv", "l_1x1", "class_", "forward_", "min_", "conv2d_1_2"]
    assert all(n.isidentifier() for n in names)


def test_literals_round_trip() -> None:
    assert lit(1e-05) == "1e-5" and float(lit(1e-05)) == 1e-05
    assert lit((3,)) == "(3,)" and lit((1, 2)) == "(1, 2)" and lit('a"b') == '"a\\"b"'
    assert call("nn.Conv2d", 3, 4, kernel_size=(3, 1), bias=False) == "nn.Conv2d(3, 4, kernel_size=(3, 1), bias=False)"


def test_long_lines_are_split_as_ruff_format_does(tmp_path: Path) -> None:
    """Statements over 120 columns, split by wrap(), are left alone by `ruff format --check`."""
    long = "separable_conv_1_reduction_right2_stem"  # NASNet-like names
    stmts = [
        f"{long} = self.{long}_pointwise(self.{long}_depthwise({long}_input_tensor_padded))",
        f"{long} = {long}_left_branch_output + {long}_right_branch_output",
        f"{long} = torch.cat([{long}, {long}, {long}], dim=1)",
        "bidirectional_encoder_fwd_h, bidirectional_encoder_fwd_c, bidirectional_encoder_bwd_h = "
        "bidirectional_encoder_h[0], bidirectional_encoder_c[0], bidirectional_encoder_h[1]",
        f"self.{long} = nn.Conv2d(" + ", ".join(str(i) for i in range(60)) + ")",
    ]
    body = ["import torch", "", "", "def f(self):"]
    for s in stmts:
        lines = wrap(s, 4)
        assert len(lines) > 1 and all(len(ln) <= 120 for ln in lines)
        body += lines
    (tmp_path / "m.py").write_text("\n".join(body) + "\n")
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is part of [dev]; install it")
    r = subprocess.run(
        [ruff, "format", "--check", "--diff", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
