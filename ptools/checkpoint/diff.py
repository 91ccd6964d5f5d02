"""`inspect A --diff B`: keys only in one file, shape/dtype changes, and (with --stats) value differences."""

from __future__ import annotations

from typing import Any

from ptools.checkpoint.base import CheckpointReader
from ptools.checkpoint.summary import WRAPPER_PREFIXES, Selection


def _strip(key: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def diff_selections(
    a: CheckpointReader,
    sel_a: Selection,
    b: CheckpointReader,
    sel_b: Selection,
    *,
    values: bool = False,
    keys: list[str] | None = None,
) -> dict[str, Any]:
    """The comparison as one JSON-able dict; `differ` says whether anything differs."""
    from ptools.checkpoint.stats import value_diff

    ka = [k for k in sel_a.infos if keys is None or k in keys]
    kb = [k for k in sel_b.infos if keys is None or k in keys]
    # Keys are paired by name; when they differ only by wrapper prefixes (module., _orig_mod.), they are
    # paired by their stripped names instead, so a DDP checkpoint can still be compared with a plain one.
    names_a, names_b = {k: k for k in ka}, {k: k for k in kb}
    aligned = False
    if set(ka) != set(kb):
        stripped_a, stripped_b = {_strip(k): k for k in ka}, {_strip(k): k for k in kb}
        unambiguous = len(stripped_a) == len(ka) and len(stripped_b) == len(kb)
        if unambiguous and len(stripped_a.keys() & stripped_b.keys()) > len(set(ka) & set(kb)):
            names_a, names_b, aligned = stripped_a, stripped_b, True
    only_a = [orig for name, orig in names_a.items() if name not in names_b]
    only_b = [orig for name, orig in names_b.items() if name not in names_a]
    renamed = [{"a": names_a[n], "b": names_b[n]} for n in names_a if n in names_b and names_a[n] != names_b[n]]
    shape_changes, dtype_changes, value_changes = [], [], []
    same = 0
    for name, k in names_a.items():
        if name not in names_b:
            continue
        kb_name = names_b[name]
        ia, ib = sel_a.infos[k], sel_b.infos[kb_name]
        if ia.shape != ib.shape:
            shape_changes.append({"key": k, "a": list(ia.shape), "b": list(ib.shape)})
            continue
        if ia.dtype != ib.dtype:
            dtype_changes.append({"key": k, "a": ia.dtype, "b": ib.dtype})
        if values:
            d = value_diff(a, sel_a.full_keys[k], b, sel_b.full_keys[kb_name])
            if d.get("differing"):
                value_changes.append({"key": k, **d})
            elif ia.dtype == ib.dtype and "skipped" not in d:
                same += 1
        elif ia.dtype == ib.dtype:
            same += 1
    hint = None
    if aligned:
        hint = (
            f"{len(renamed)} keys differ only by the module./_orig_mod. wrapper prefixes; "
            "they were paired after stripping them"
        )
    differ = bool(only_a or only_b or renamed or shape_changes or dtype_changes or value_changes)
    return {
        "a": {"file": str(a.path), "format": a.format, "selection": sel_a.path, "tensors": len(ka)},
        "b": {"file": str(b.path), "format": b.format, "selection": sel_b.path, "tensors": len(kb)},
        "only_in_a": only_a,
        "only_in_b": only_b,
        "renamed": renamed,
        "shape_changed": shape_changes,
        "dtype_changed": dtype_changes,
        "values_compared": values,
        "value_changed": value_changes,
        "identical": same,
        "hint": hint,
        "differ": differ,
    }
