"""Small helpers that print Python source the way `ruff format` would leave it (literals, calls, wrapping)."""

from __future__ import annotations

import builtins
import keyword
import re
from collections.abc import Sequence
from typing import Any

LINE = 120

# Names a module attribute or local must not take: nn.Module's own attributes and the module's imports.
_RESERVED = {
    "self",
    "torch",
    "nn",
    "F",
    "ptnn",
    "forward",
    "training",
    "eval",
    "train",
    "to",
    "cuda",
    "cpu",
    "half",
    "float",
    "double",
    "type",
    "apply",
    "parameters",
    "buffers",
    "children",
    "modules",
    "state_dict",
    "load_state_dict",
    "named_modules",
    "named_parameters",
    "named_buffers",
    "named_children",
    "register_buffer",
    "register_parameter",
    "register_module",
    "add_module",
    "get_submodule",
    "get_parameter",
    "get_buffer",
    "zero_grad",
    "requires_grad_",
    "share_memory",
    "extra_repr",
    "dump_patches",
    "call_super_init",
    "compile",
    "bfloat16",
    "ipu",
    "xpu",
    "mtia",
    "to_empty",
    "set_extra_state",
    "get_extra_state",
}


_BUILTINS = set(dir(builtins))


def identifier(name: str, taken: set[str]) -> str:
    """A Python identifier for a Keras name (`conv2d_1`, `block-1/conv` -> `block_1_conv`), unique in `taken`."""
    ident = re.sub(r"\W", "_", name).strip("_") or "layer"
    if ident[0].isdigit():
        ident = "l_" + ident
    if keyword.iskeyword(ident) or ident in _RESERVED or ident in _BUILTINS or ident.startswith("_"):
        ident += "_"
    base, n = ident, 1
    while ident in taken:
        n += 1
        ident = f"{base}_{n}"
    taken.add(ident)
    return ident


def lit(v: Any) -> str:
    """A Python literal: tuples with their commas, floats exact (repr round-trips), strings double-quoted."""
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float):
        r = repr(v)
        return r.replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple):
        if len(v) == 1:
            return f"({lit(v[0])},)"
        return "(" + ", ".join(lit(x) for x in v) + ")"
    if isinstance(v, list):
        return "[" + ", ".join(lit(x) for x in v) + "]"
    raise TypeError(f"no literal for {v!r}")


def one(v: Sequence[int] | int) -> Any:
    """(3, 3) -> 3: the short form torch accepts when every dimension is the same."""
    if isinstance(v, (tuple, list)):
        return v[0] if len(set(v)) == 1 else tuple(v)
    return v


def call(func: str, *args: Any, **kwargs: Any) -> str:
    """`func(a, b, k=v)`: non-str arguments become literals, str arguments are code (use lit() for text)."""
    parts = [a if isinstance(a, str) else lit(a) for a in args]
    parts += [f"{k}={v if isinstance(v, str) else lit(v)}" for k, v in kwargs.items()]
    return f"{func}({', '.join(parts)})"


def _split_args(inner: str) -> list[str]:
    out, depth, cur, quote = [], 0, "", ""
    for ch in inner:
        if quote:
            cur += ch
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _split_top(expr: str, ops: tuple[str, ...]) -> list[str]:
    """`a + b - c` -> ["a", "+ b", "- c"] at bracket depth 0 for the given operators; [] if none."""
    out, depth, start, i = [], 0, 0, 0
    while i < len(expr):
        ch = expr[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and any(expr.startswith(op, i) for op in ops):
            out.append(expr[start:i])
            start = i + 1  # keep "+ b"
            i += 3
            continue
        i += 1
    if not out:
        return []
    out.append(expr[start:])
    return [out[0].strip()] + [t.strip() for t in out[1:]]


def _trailing_call(line: str) -> int | None:
    """Index of the "(" that matches the line's final ")", or None."""
    if not line.endswith(")"):
        return None
    depth = 0
    for i in range(len(line) - 1, -1, -1):
        if line[i] == ")":
            depth += 1
        elif line[i] == "(":
            depth -= 1
            if depth == 0:
                return i
    return None


def wrap(line: str, indent: int) -> list[str]:
    """One statement at `indent`, split the way ruff format / black do when it is longer than the limit:
    at its trailing call's parentheses (arguments on one indented line, a lone call argument split again,
    or one argument per line with a trailing comma), else a right-hand side in parentheses."""
    pad = " " * indent
    if len(pad + line) <= LINE:
        return [pad + line]
    i = _trailing_call(line)
    if i is None or i == 0 or line[:i].endswith(" = "):
        lhs, sep, rhs = line.partition(" = ")
        if not sep or rhs.startswith("("):
            return [pad + line]
        elems = _split_args(rhs)
        if len(elems) > 1:  # a tuple: ruff puts one element per line, with a trailing comma
            return [pad + lhs + " = (", *[pad + "    " + e + "," for e in elems], pad + ")"]
        if len(pad + "    " + rhs) <= LINE:
            return [pad + lhs + " = (", pad + "    " + rhs, pad + ")"]
        terms = _split_top(rhs, (" + ", " - ")) or _split_top(rhs, (" * ", " / "))
        if terms:  # one operand per line, the operator first (black's binary-operator split)
            return [pad + lhs + " = (", *[pad + "    " + t for t in terms], pad + ")"]
        return [pad + line]
    head, inner = line[: i + 1], line[i + 1 : -1]
    args = _split_args(inner)
    if len(pad + "    " + inner) <= LINE and not inner.rstrip().endswith(","):
        return [pad + head, pad + "    " + inner, pad + ")"]
    if len(args) == 1 and _trailing_call(args[0]):
        return [pad + head, *wrap(args[0], indent + 4), pad + ")"]
    out = [pad + head]
    for a in args:
        opener = a[:1]
        closer = {"[": "]", "(": ")"}.get(opener)
        if len(pad + "    " + a + ",") > LINE and closer and a.endswith(closer) and len(_split_args(a[1:-1])) > 1:
            elems = _split_args(a[1:-1])  # a list or tuple literal: one element per line, as ruff does
            out += [pad + "    " + opener, *[pad + "        " + e + "," for e in elems], pad + "    " + closer + ","]
        else:
            out.append(pad + "    " + a + ",")
    return [*out, pad + ")"]
