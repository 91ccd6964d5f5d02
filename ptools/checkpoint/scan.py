"""The security report behind `inspect --scan` (and the findings every other mode prints)."""

from __future__ import annotations

from typing import Any

from ptools.checkpoint.base import CheckpointReader

_ORDER = {"dangerous": 0, "suspicious": 1, "safe": 2}
PICKLE_FORMATS = {"torch-zip", "torch-legacy", "torch-tar", "torchscript", "pickle", "torch-unsafe"}


def security_report(reader: CheckpointReader) -> dict[str, Any]:
    """Every global the file's pickles name, graded; `grade` is the worst one ("none" without pickles)."""
    refs = sorted(reader.pickle_globals(), key=lambda g: (_ORDER.get(g["grade"], 3), g["module"], g["name"]))
    counts = {grade: sum(1 for g in refs if g["grade"] == grade) for grade in ("safe", "suspicious", "dangerous")}
    has_pickle = reader.format in PICKLE_FORMATS or bool(refs)
    if counts["dangerous"]:
        grade = "dangerous"
    elif counts["suspicious"]:
        grade = "suspicious"
    else:
        grade = "safe" if has_pickle else "none"
    meta = reader.metadata()
    return {
        "pickle": has_pickle,
        "grade": grade,
        "counts": counts,
        "globals": refs,
        "findings": [g for g in refs if g["grade"] != "safe"],
        "pickle_error": meta.get("pickle_error"),
        "note": None if has_pickle else f"{reader.format} files hold no pickle: nothing in them can run code",
    }
