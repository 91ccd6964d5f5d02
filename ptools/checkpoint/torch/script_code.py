"""The code of a TorchScript archive, graded: which operators in `code/**.py` touch files, and whether they run on load.

`torch.jit.load` compiles every class in `code/` and runs each module's `__setstate__` while it loads;
`forward` and the other methods run when the model is called. TorchScript reaches the file system only
through a few operators (`aten::save` writes a pickle to a path, `aten::from_file` maps a file and, with
`shared=True`, writes to it): those are dangerous wherever they sit, and the finding says when they run.
The code is parsed (serialized TorchScript is Python syntax), never compiled or run.
"""

from __future__ import annotations

import ast
import re
from typing import Any

MAX_CODE_BYTES = 16 << 20  # one code file; a real one is kilobytes
MAX_FILES = 10_000

# Operators that reach the file system, by the name TorchScript code calls them with.
IO_OPS: dict[str, str] = {
    "save": "writes a file (aten::save pickles a value to a path)",
    "from_file": "maps a file into a tensor (aten::from_file; with shared=True it writes to the file)",
}
_PREFIXES = ("torch", "ops.aten", "torch.ops.aten")
_SWEEP = re.compile(r"\b(?:torch|aten)\s*\.\s*(save|from_file)\b")


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _io_op(dotted: str) -> str | None:
    for op in IO_OPS:
        for prefix in _PREFIXES:
            if dotted == f"{prefix}.{op}" or dotted.startswith(f"{prefix}.{op}."):  # ops.aten.save.default
                return op
    return None


def grade_code(files: dict[str, bytes]) -> tuple[list[dict[str, Any]], list[str]]:
    """(findings shaped like pickle globals, notes) for the archive's code files ({member name: source})."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    notes: list[str] = []

    def add(file: str, op: str, where: str, on_load: bool) -> None:
        when = "when torch.jit.load runs __setstate__" if on_load else "when the model is called"
        key = (file, op)
        ref = found.get(key)
        if ref is None:
            ref = found[key] = {
                "module": file,
                "name": f"torch.{op}",
                "grade": "dangerous",
                "reason": f"TorchScript code {IO_OPS[op]}",
                "count": 0,
                "where": [],
                "calls": [],
                "source": file,
            }
        ref["count"] += 1
        if on_load and "runs on load" not in ref["reason"]:
            ref["reason"] += " - runs on load (__setstate__)"
        entry = f"{where} ({when})"
        if len(ref["where"]) < 20 and entry not in ref["where"]:
            ref["where"].append(entry)

    for file, raw in list(files.items())[:MAX_FILES]:
        text = raw.decode("utf-8", "replace")
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            # torch.jit.load refuses code it cannot parse; still, name any I/O operator it spells.
            for m in _SWEEP.finditer(text):
                add(file, m.group(1), f"offset {m.start()} (the file does not parse)", False)
            notes.append(f"{file}: not valid TorchScript syntax (torch.jit.load would refuse it)")
            continue
        _walk(tree, file, add)
    return list(found.values()), notes


def _walk(tree: ast.AST, file: str, add: Any) -> None:
    """Every reference to an I/O operator, with the class and method that holds it."""
    stack: list[tuple[ast.AST, str, str | None]] = [(tree, "", None)]
    while stack:
        node, cls, method = stack.pop()
        if isinstance(node, ast.ClassDef):
            cls = node.name
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            method = node.name
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            op = _io_op(dotted) if dotted else None
            if op is not None:
                where = ".".join(p for p in (cls, method) if p) or "module level"
                add(file, op, where, method == "__setstate__")
                continue  # `torch.save.default` is one reference, not two
        for child in ast.iter_child_nodes(node):
            stack.append((child, cls, method))


def setstate_methods(files: dict[str, bytes]) -> list[str]:
    """Classes whose `__setstate__` torch.jit.load runs (shown in the report; graded by what they call)."""
    out: list[str] = []
    for file, raw in files.items():
        cls = "?"
        for m in re.finditer(rb"^class (\w+)\(|^  def __setstate__\(", raw, re.M):
            if m.group(1):
                cls = m.group(1).decode()
            elif len(out) < 50:
                out.append(f"{file}: {cls}.__setstate__")
    return out
