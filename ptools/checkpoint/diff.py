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
    set_a, set_b = set(ka), set(kb)
    only_a = [k for k in ka if k not in set_b]
    only_b = [k for k in kb if k not in set_a]
    shape_changes, dtype_changes, value_changes = [], [], []
    same = 0
    for k in ka:
        if k not in set_b:
            continue
        ia, ib = sel_a.infos[k], sel_b.infos[k]
        if ia.shape != ib.shape:
            shape_changes.append({"key": k, "a": list(ia.shape), "b": list(ib.shape)})
            continue
        if ia.dtype != ib.dtype:
            dtype_changes.append({"key": k, "a": ia.dtype, "b": ib.dtype})
        if values:
            d = value_diff(a, sel_a.full_keys[k], b, sel_b.full_keys[k])
            if d.get("differing"):
                value_changes.append({"key": k, **d})
            elif ia.dtype == ib.dtype and "skipped" not in d:
                same += 1
        elif ia.dtype == ib.dtype:
            same += 1
    hint = None
    if only_a and only_b:
        # Would the keys line up without a wrapper prefix (module., _orig_mod.)?
        stripped_a, stripped_b = {_strip(k) for k in only_a}, {_strip(k) for k in only_b}
        overlap = len(stripped_a & stripped_b)
        if overlap >= max(1, min(len(only_a), len(only_b)) // 2):
            hint = "the keys match once the module./_orig_mod. wrapper prefixes are stripped"
    differ = bool(only_a or only_b or shape_changes or dtype_changes or value_changes)
    return {
        "a": {"file": str(a.path), "format": a.format, "selection": sel_a.path, "tensors": len(ka)},
        "b": {"file": str(b.path), "format": b.format, "selection": sel_b.path, "tensors": len(kb)},
        "only_in_a": only_a,
        "only_in_b": only_b,
        "shape_changed": shape_changes,
        "dtype_changed": dtype_changes,
        "values_compared": values,
        "value_changed": value_changes,
        "identical": same,
        "hint": hint,
        "differ": differ,
    }
