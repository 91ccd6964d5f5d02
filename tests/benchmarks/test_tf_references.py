"""Scripts that compute Keras' reference outputs turn oneDNN off before TensorFlow is imported.

TF 2.21's oneDNN float32 Conv2D returned garbage for a 7x6 input, 5x5 kernel, strides (1, 3), batch 2
(fuzz seed 47213 model 310: the port was right, the reference wrong by 7.8); TF reads the switch once, when
it loads, so it must be set before the first import of tensorflow, tf_keras or keras.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [
    "benchmarks/port_fuzz_keras.py",
    "benchmarks/port_apps.py",
    "tests/fixtures/make_port_fixtures.py",
    "tests/fixtures/make_keras_fixtures.py",
    "tests/fixtures/make_convert_fixtures.py",
]
TF_MODULES = {"tensorflow", "tf_keras", "keras"}


def _sets_onednn_off(node: ast.AST) -> bool:
    if not isinstance(node, ast.Assign) or len(node.targets) != 1:
        return False
    t = node.targets[0]
    return (
        isinstance(t, ast.Subscript)
        and ast.unparse(t.value) == "os.environ"
        and isinstance(t.slice, ast.Constant)
        and t.slice.value == "TF_ENABLE_ONEDNN_OPTS"
        and isinstance(node.value, ast.Constant)
        and node.value.value == "0"
    )


def _imports_tf(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] in TF_MODULES for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] in TF_MODULES
    return False


@pytest.mark.parametrize("script", SCRIPTS)
def test_onednn_off_before_tensorflow(script: str) -> None:
    tree = ast.parse((ROOT / script).read_text())
    # Source order of every statement in the file (module level and inside functions alike).
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, ast.stmt)), key=lambda n: (n.lineno, n.col_offset))
    off = [n.lineno for n in nodes if _sets_onednn_off(n)]
    imports = [n.lineno for n in nodes if _imports_tf(n)]
    assert imports, f"{script} imports no TensorFlow: drop it from this list"
    assert off, f"{script} never sets TF_ENABLE_ONEDNN_OPTS=0"
    assert min(off) < min(imports), f"{script} imports TensorFlow (line {min(imports)}) before turning oneDNN off"
