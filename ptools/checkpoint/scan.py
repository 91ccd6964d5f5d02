"""The security report behind `inspect --scan` (and the findings every other mode prints)."""

from __future__ import annotations

from typing import Any

from ptools.checkpoint.base import CheckpointReader

_ORDER = {"dangerous": 0, "suspicious": 1, "safe": 2}
PICKLE_FORMATS = {"torch-zip", "torch-legacy", "torch-tar", "torchscript", "pickle", "torch-unsafe"}


def security_report(reader: CheckpointReader) -> dict[str, Any]:
    """Every global the file's pickles name, graded; `grade` is the worst one ("none" without pickles)."""
    views = getattr(reader, "views", [])
    seen = reader.pickle_globals() + [{**g, "loader": v.loader} for v in views for g in v.globals]
    refs = sorted(seen, key=lambda g: (_ORDER.get(g["grade"], 3), g["module"], g["name"]))
    counts = {grade: sum(1 for g in refs if g["grade"] == grade) for grade in ("safe", "suspicious", "dangerous")}
    has_pickle = reader.format in PICKLE_FORMATS or bool(refs)
    if counts["dangerous"]:
        grade = "dangerous"
    elif counts["suspicious"]:
        grade = "suspicious"
    else:
        grade = "safe" if has_pickle else "none"
    meta = reader.metadata()
    findings = [g for g in refs if g["grade"] != "safe"]
    return {
        "pickle": has_pickle,
        "grade": grade,
        "counts": counts,
        "globals": refs,
        "findings": findings,
        "groups": stock_groups(findings),
        "pickle_error": meta.get("pickle_error"),
        "notes": list(getattr(getattr(reader, "scan", None), "notes", []) or []) + [n for v in views for n in v.notes],
        "other_loaders": [v.as_dict() for v in views],
        "error": getattr(getattr(reader, "error", None), "message", None),
        "source": _source(findings, reader.format),
        "note": None if has_pickle else _clean_note(reader.format),
    }


def _source(findings: list[dict[str, Any]], fmt: str) -> str:
    """What the findings come from, in words: pickle, model config, code, or several of them."""
    kinds = set()
    for g in findings:
        src = str(g.get("source") or "")
        kinds.add("model config" if src == "model config" else "code" if src.endswith(".py") else "pickle")
    if not kinds:
        return "pickle" if fmt in PICKLE_FORMATS else "model config"
    return " and ".join(sorted(kinds))


def _clean_note(fmt: str) -> str:
    if fmt in ("npy", "npz"):
        return f"{fmt}: numeric arrays only (no object array, so numpy.load unpickles nothing)"
    if fmt.startswith("keras"):
        return f"{fmt}: no pickle, and the model config names no Lambda layer and no class from outside Keras"
    return f"{fmt} files hold no pickle: nothing in them can run code"


# A whole model saved with torch.save(model) names every layer class it uses: stock classes are listed as
# one line per library instead of one line each.
_STOCK = {"torch.nn": ("torch.nn.", "torch.ao.nn."), "torchvision": ("torchvision.",)}


def stock_groups(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups = []
    for family, prefixes in _STOCK.items():
        members = [g for g in findings if g["grade"] == "suspicious" and g["module"].startswith(prefixes)]
        if len(members) < 2:
            continue
        groups.append(
            {
                "family": family,
                "grade": "suspicious",
                "classes": len(members),
                "uses": sum(g["count"] for g in members),
                "names": [g["name"] for g in members],
                "globals": [f"{g['module']}.{g['name']}" for g in members],
                "reason": f"a pickled model: loading imports {family} and builds these (no weights_only load)",
            }
        )
    return groups
