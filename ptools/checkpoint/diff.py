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


def _common_head(keys: list[str]) -> str | None:
    """The first segment every key shares (Lightning's `model.` for a LightningModule's `self.model`)."""
    heads = {k.split(".", 1)[0] for k in keys}
    if len(heads) != 1 or not all("." in k for k in keys):
        return None
    return heads.pop() + "."


def _alignments(ka: list[str], kb: list[str]) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """Ways to pair keys that differ by a prefix: (what was stripped, name -> key for A, for B)."""
    out = [("module./_orig_mod. wrapper prefixes", {_strip(k): k for k in ka}, {_strip(k): k for k in kb})]
    wa = [_strip(k) for k in ka]
    wb = [_strip(k) for k in kb]
    head_a, head_b = _common_head(wa), _common_head(wb)
    for head, side in ((head_a, "a"), (head_b, "b")):
        if head is None or head_a == head_b:
            continue
        strip = lambda k, h=head: k[len(h) :] if k.startswith(h) else k  # noqa: E731
        na = {strip(_strip(k)) if side == "a" else _strip(k): k for k in ka}
        nb = {strip(_strip(k)) if side == "b" else _strip(k): k for k in kb}
        out.append((f"the '{head}' prefix (Lightning's self.{head[:-1]}) on {side.upper()}'s keys", na, nb))
    return out


def diff_selections(
    a: CheckpointReader,
    sel_a: Selection,
    b: CheckpointReader,
    sel_b: Selection,
    *,
    values: bool = False,
    keys: list[str] | None = None,
    atol: float = 0.0,
    rtol: float = 0.0,
) -> dict[str, Any]:
    """The comparison as one JSON-able dict; `differ` says whether anything differs.

    With a tolerance (`atol`/`rtol`, numpy.isclose's rule) values are compared within it, and a dtype
    change alone (an fp16 copy of fp32 weights) is reported but does not make the files differ.
    """
    from ptools.checkpoint.stats import value_diff

    ka = [k for k in sel_a.infos if keys is None or k in keys]
    kb = [k for k in sel_b.infos if keys is None or k in keys]
    # Keys are paired by name; when they differ only by wrapper prefixes (module., _orig_mod.), they are
    # paired by their stripped names instead, so a DDP checkpoint can still be compared with a plain one.
    # A Lightning checkpoint's `model.` prefix (self.model inside the LightningModule) is paired away too.
    names_a, names_b = {k: k for k in ka}, {k: k for k in kb}
    aligned: str | None = None
    if set(ka) != set(kb):
        best = len(set(ka) & set(kb))
        for what, stripped_a, stripped_b in _alignments(ka, kb):
            unambiguous = len(stripped_a) == len(ka) and len(stripped_b) == len(kb)
            paired = len(stripped_a.keys() & stripped_b.keys())
            if unambiguous and paired > best:
                names_a, names_b, aligned, best = stripped_a, stripped_b, what, paired
    only_a = [orig for name, orig in names_a.items() if name not in names_b]
    only_b = [orig for name, orig in names_b.items() if name not in names_a]
    renamed = [{"a": names_a[n], "b": names_b[n]} for n in names_a if n in names_b and names_a[n] != names_b[n]]
    shape_changes, dtype_changes, value_changes = [], [], []
    same = 0
    tolerant = bool(atol or rtol)
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
            d = value_diff(a, sel_a.full_keys[k], b, sel_b.full_keys[kb_name], atol=atol, rtol=rtol)
            if d.get("differing"):
                value_changes.append({"key": k, **d})
            elif (ia.dtype == ib.dtype or tolerant) and "skipped" not in d:
                same += 1
        elif ia.dtype == ib.dtype:
            same += 1
    hint = None
    if aligned:
        hint = f"{len(renamed)} keys differ only by {aligned}; they were paired after stripping it"
    # Largest differences first: the tensor that broke is at the top, not wherever the file put it.
    value_changes.sort(key=lambda r: (-r.get("special_mismatch", 0), -r.get("max_abs", 0.0)))
    dtype_counts = bool(dtype_changes) and not tolerant
    differ = bool(only_a or only_b or renamed or shape_changes or dtype_counts or value_changes)
    return {
        "a": {"file": str(a.path), "format": a.format, "selection": sel_a.path, "tensors": len(ka)},
        "b": {"file": str(b.path), "format": b.format, "selection": sel_b.path, "tensors": len(kb)},
        "only_in_a": only_a,
        "only_in_b": only_b,
        "renamed": renamed,
        "shape_changed": shape_changes,
        "dtype_changed": dtype_changes,
        "values_compared": values,
        "atol": atol,
        "rtol": rtol,
        "value_changed": value_changes,
        "identical": same,
        "hint": hint,
        "differ": differ,
    }
