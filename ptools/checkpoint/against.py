"""`inspect FILE --against SPEC`: would `model.load_state_dict(sd, strict=True)` accept this file, and if not, why.

SPEC is `package.module:Factory` or `torchvision:NAME`, optionally with literal arguments:
`torchvision:resnet18(num_classes=10)`. The model is built (weights=None for torchvision) to read its
state_dict keys and shapes; torch is imported only here.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Callable
from typing import Any

from ptools.checkpoint._text import oneline
from ptools.checkpoint.base import CheckpointReader
from ptools.checkpoint.summary import WRAPPER_PREFIXES, Selection, resolve_path, state_dict_candidates
from ptools.errors import PtoolsError


def parse_spec(spec: str) -> tuple[str, str, list[Any], dict[str, Any]]:
    """(module, attribute, args, kwargs) from 'pkg.mod:Factory(1, x=2)'."""
    if ":" not in spec:
        raise PtoolsError(
            f"--against {spec!r}: expected package.module:Factory or torchvision:NAME",
            hint="e.g. --against torchvision:resnet18 or --against mypkg.models:build_model",
        )
    module, _, rest = spec.partition(":")
    name, args, kwargs = rest, [], {}
    if "(" in rest:
        name = rest[: rest.index("(")]
        try:
            call = ast.parse(f"f{rest[rest.index('(') :]}", mode="eval").body
            if not isinstance(call, ast.Call):
                raise ValueError
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
        except (SyntaxError, ValueError) as e:
            raise PtoolsError(f"--against {spec!r}: arguments must be Python literals ({oneline(e)})") from None
    if not module or not name.replace(".", "").replace("_", "").isalnum():
        raise PtoolsError(f"--against {spec!r}: bad module or factory name")
    return module, name, args, kwargs


def build_model(spec: str) -> Any:
    module_name, attr, args, kwargs = parse_spec(spec)
    import importlib

    import torch

    if module_name == "torchvision":
        try:
            import torchvision
        except ImportError as e:
            raise PtoolsError(f"--against {spec}: torchvision is not installed ({oneline(e)})") from None

        try:
            return torchvision.models.get_model(attr, weights=None, **kwargs)
        except (ValueError, TypeError) as e:
            raise PtoolsError(f"--against {spec}: {oneline(e)}", hint="see torchvision.models.list_models()") from None
    if os.getcwd() not in sys.path:  # the console script does not put the working directory on the path
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise PtoolsError(f"--against {spec}: cannot import {module_name} ({oneline(e)})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PtoolsError(f"--against {spec}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    model = obj
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise PtoolsError(f"--against {spec}: {attr} is neither a module nor callable")
        try:
            model = obj(*args, **kwargs)
        except Exception as e:
            raise PtoolsError(f"--against {spec}: building the model failed ({oneline(e)})") from None
    if not isinstance(model, torch.nn.Module):
        raise PtoolsError(f"--against {spec}: {attr} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def expected_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _compare(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        {"key": k, "model": list(expected[k]), "file": list(found[k])}
        for k in expected
        if k in found and tuple(expected[k]) != tuple(found[k])
    ]
    return {"missing": missing, "unexpected": unexpected, "shape_mismatch": mismatched}


def _score(result: dict[str, Any]) -> int:
    return len(result["missing"]) + len(result["unexpected"]) + len(result["shape_mismatch"])


def _first_segment(keys: list[str]) -> str | None:
    heads = {k.split(".", 1)[0] for k in keys if "." in k}
    return heads.pop() if len(heads) == 1 and all("." in k for k in keys) else None


def _transforms(found: list[str], expected: list[str]) -> list[tuple[str, Callable[[str], str]]]:
    out: list[tuple[str, Callable[[str], str]]] = []
    for prefix in WRAPPER_PREFIXES:
        if any(k.startswith(prefix) for k in found):
            out.append((f"strip the '{prefix}' prefix", lambda k, p=prefix: k[len(p) :] if k.startswith(p) else k))
    if all(any(k.startswith(p) for p in WRAPPER_PREFIXES) for k in found) and len(out) > 1:

        def strip_all(k: str) -> str:
            changed = True
            while changed:
                changed = False
                for p in WRAPPER_PREFIXES:
                    if k.startswith(p):
                        k, changed = k[len(p) :], True
            return k

        out.append(("strip the 'module.' and '_orig_mod.' prefixes", strip_all))
    head = _first_segment(found)
    if head and head + "." not in WRAPPER_PREFIXES:
        out.append((f"strip the '{head}.' prefix", lambda k, p=head + ".": k[len(p) :] if k.startswith(p) else k))
    want = _first_segment(expected)
    if want:
        out.append((f"add the '{want}.' prefix", lambda k, p=want + ".": p + k))
    return out


def count_by_model(model: Any, selection: Selection, expected: list[str]) -> dict[str, Any]:
    """The file's values split as the model splits them: parameters, buffers, and keys the model lacks.

    Exact where the guess of `inspect` is not: the model's own `named_parameters()`/`named_buffers()`
    decide. Keys are matched as they are, or after the key fix that matches the most of them.
    """
    from ptools.checkpoint.summary import totals

    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    buffers = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    found = list(selection.infos)
    best: Callable[[str], str] = lambda k: k  # noqa: E731
    best_hits = sum(k in params or k in buffers for k in found)
    for _label, fn in _transforms(found, expected):
        hits = sum(fn(k) in params or fn(k) in buffers for k in found)
        if hits > best_hits:
            best, best_hits = fn, hits
    as_buffer = {k for k in found if best(k) in buffers}
    known = [i for k, i in selection.infos.items() if best(k) in params or best(k) in buffers]
    t = totals(known, as_buffer)
    other = [k for k in found if best(k) not in params and best(k) not in buffers]
    return {
        "params": t["params"],
        "buffers": t["buffers"],
        "buffer_tensors": t["buffer_tensors"],
        "not_in_model": len(other),
    }


def check_against(reader: CheckpointReader, selection: Selection, spec: str, model: Any = None) -> dict[str, Any]:
    """Missing / unexpected / shape-mismatched keys as strict loading sees them, and fixes that would help."""
    model = model if model is not None else build_model(spec)
    expected = expected_shapes(model)
    found = {k: tuple(i.shape) for k, i in selection.infos.items()}
    result = _compare(expected, found)
    base = _score(result)
    fixes: list[dict[str, Any]] = []
    if base:
        for label, fn in _transforms(list(found), list(expected)):
            renamed = {fn(k): v for k, v in found.items()}
            after = _compare(expected, renamed)
            if _score(after) < base:
                fixes.append(
                    {
                        "fix": label,
                        "problems_after": _score(after),
                        "matched_after": len(expected) - len(after["missing"]),
                    }
                )
        structure = reader.structure()
        for cand in state_dict_candidates(structure):
            if cand == (selection.path or ""):
                continue
            node, _ = resolve_path(structure, cand) if cand else (structure, "")
            after = _compare(expected, {str(k): tuple(v.shape) for k, v in node.items()})
            if _score(after) < base:
                fixes.append(
                    {
                        "fix": f"use --key {cand}",
                        "problems_after": _score(after),
                        "matched_after": len(expected) - len(after["missing"]),
                    }
                )
        fixes.sort(key=lambda f: f["problems_after"])
    return {
        "spec": spec,
        "counts": count_by_model(model, selection, list(expected)),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_keys": len(expected),
        "file_keys": len(found),
        **result,
        "ok": base == 0,
        "fixes": fixes,
    }
