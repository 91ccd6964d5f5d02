"""Matching converted tensors to a target model's state_dict: by name, then by order and role with shapes.

Ambiguity is reported, never guessed: an order alignment is accepted only when it is the single best one.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptools.convert.layouts import Item
from ptools.errors import PtoolsError

MAX_ALIGN_CELLS = 4_000_000  # the order alignment is O(n*m); beyond this only name matches are used


@dataclass(frozen=True)
class TargetTensor:
    key: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def role(self) -> str:
        return self.key.rsplit(".", 1)[-1]


@dataclass
class MatchResult:
    pairs: list[tuple[Item, TargetTensor, str]] = field(default_factory=list)  # (item, target, how)
    unmatched_items: list[Item] = field(default_factory=list)
    unfilled: list[TargetTensor] = field(default_factory=list)
    mismatched: list[tuple[Item, TargetTensor]] = field(default_factory=list)  # same name, different shape
    ambiguous: list[dict[str, Any]] = field(default_factory=list)
    renames: list[dict[str, Any]] = field(default_factory=list)  # systematic renames applied


def load_model_factory(spec: str) -> Any:
    """`package.module:Factory` or `path/to/file.py:Factory`; the factory is called with no arguments."""
    if ":" not in spec:
        raise PtoolsError(f"--model {spec!r}: expected package.module:Factory or file.py:Factory")
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise PtoolsError(f"--model: {path}: no such file")
            mspec = importlib.util.spec_from_file_location(path.stem, path)
            assert mspec is not None and mspec.loader is not None
            module = importlib.util.module_from_spec(mspec)
            sys.modules[path.stem] = module
            mspec.loader.exec_module(module)
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")  # like `python -m`: modules in the working directory are importable
            module = importlib.import_module(mod_name)
    except ImportError as e:
        raise PtoolsError(f"--model {spec!r}: cannot import {mod_name} ({e})") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise PtoolsError(f"--model {spec!r}: {mod_name} has no attribute {attr!r}")
    try:
        model = factory()
    except Exception as e:  # noqa: BLE001 - user code: report it as bad input, not a ptools crash
        raise PtoolsError(f"--model {spec!r}: calling {attr}() failed ({type(e).__name__}: {e})") from None
    return model


def targets_from_model(model: Any) -> list[TargetTensor]:
    sd = model.state_dict()
    return [TargetTensor(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]


def targets_from_template(path: str | Path) -> list[TargetTensor]:
    """Keys/shapes of a reference state_dict (.safetensors header, or .pt loaded with weights_only)."""
    from ptools.checkpoint.base import open_checkpoint

    path = Path(path)
    if not path.exists():
        raise PtoolsError(f"--template {path}: no such file")
    head = path.open("rb").read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        import json
        import struct

        with path.open("rb") as f:
            try:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            except (struct.error, ValueError) as e:
                raise PtoolsError(f"--template {path}: corrupt safetensors header ({e})") from None
        return [
            TargetTensor(k, tuple(v["shape"]), str(v["dtype"]).lower())
            for k, v in header.items()
            if k != "__metadata__"
        ]
    try:
        reader = open_checkpoint(path)
        return [TargetTensor(t.key, tuple(t.shape), t.dtype) for t in reader.tensors()]
    except PtoolsError:
        pass
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is bad input
        raise PtoolsError(f"--template {path}: cannot load as a state_dict ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise PtoolsError(f"--template {path}: not a state_dict (got {type(obj).__name__})")
    return [
        TargetTensor(k, tuple(v.shape), str(v.dtype).replace("torch.", ""))
        for k, v in obj.items()
        if hasattr(v, "shape")
    ]


def _prefix(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


def _role(key: str) -> str:
    return key.rsplit(".", 1)[-1]


@dataclass
class _Group:
    """One module's tensors on either side: matching pairs whole modules, so a layer's weight and bias can
    never be split across two target modules."""

    prefix: str
    members: dict[str, Any]  # role -> Item or TargetTensor

    def signature(self, shape_of: Any) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted(((r, shape_of(m)) for r, m in self.members.items()), key=lambda rs: rs[0]))


class AnyOf:
    """The shapes an item whose layout is still open may take: equal to any of them (for order matching)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shapes: list[tuple[int, ...]]) -> None:
        self.shapes = [tuple(s) for s in shapes]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AnyOf):
            return any(s in other.shapes for s in self.shapes)
        if isinstance(other, tuple):
            return other in self.shapes
        return NotImplemented

    def __repr__(self) -> str:
        return " | ".join(str(s) for s in self.shapes)


def item_shape(it: Item) -> Any:
    """An item's shape for matching: one shape, or the alternatives of an undetermined layout."""
    if it.undetermined is not None and it.undetermined.choices:
        return AnyOf([c.shape_after for c in it.undetermined.choices])
    return tuple(it.shape_after)


def fits(it: Item, shape: tuple[int, ...]) -> bool:
    return item_shape(it) == tuple(shape) or vector_fits(it, shape)


def vector_fits(it: Item, shape: tuple[int, ...]) -> bool:
    """A vector (C,) and a target (1, C, 1, 1) (a per-channel buffer in the target's layout) are the same
    values in the one possible order: the target's shape is taken by a reshape."""
    mine = tuple(it.shape_after)
    if it.undetermined is not None or tuple(shape) == mine or sum(d != 1 for d in mine) > 1:
        return False
    return [d for d in mine if d != 1] == [d for d in shape if d != 1] and len(shape) > 0


def _group(objs: list[Any], key_of: Any) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for o in objs:
        k = key_of(o)
        g = groups.setdefault(_prefix(k), _Group(_prefix(k), {}))
        if _role(k) in g.members:  # same key twice: keep it apart rather than overwrite
            groups[k] = _Group(k, {_role(k): o})
        else:
            g.members[_role(k)] = o
    return list(groups.values())


def _natural(prefix: str) -> list[tuple[str, int]]:
    """`model.dense_10` after `model.dense_2`, `dense` first: auto-named layers in creation order."""
    out = []
    for part in prefix.split("."):
        m = re.fullmatch(r"(.*?)(?:_(\d+))?", part)
        out.append((m.group(1), int(m.group(2) or -1)) if m else (part, -1))
    return out


def _kind(sig: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, int], ...]:
    """Roles and ranks of a module signature: what kind of layer it is, whatever its size."""
    return tuple((r, len(s.shapes[0]) if isinstance(s, AnyOf) else len(s)) for r, s in sig)


def match(
    items: list[Item], targets: list[TargetTensor], fixed: set[int] | None = None, name_sorted: bool = False
) -> MatchResult:
    """Pair items with targets. `fixed` holds indexes of items named by --map rules (matched by name only).

    1. names: an item whose proposed key exists in the target (shape checked);
    2. a systematic rename (`conv2d_1` -> `conv2d_1_1`, a prefix added or dropped) when exactly one fits;
    3. order: the remaining source layers and target modules, aligned in order by their (role, shape)
       signature - accepted only if that alignment is the single best one. `name_sorted` sources (TF1
       Saver keys, sorted by name) first align each layer kind separately, in the order their auto-names
       number them (dense, dense_1, ..., dense_10);
    4. leftovers: a source layer and a target module that are each other's only compatible partner.
    Anything else is reported (unmatched / unfilled / ambiguous with candidates).
    """
    fixed = fixed or set()
    res = MatchResult()
    by_key = {t.key: t for t in targets}
    used: set[str] = set()
    rest_items: list[Item] = []
    for i, it in enumerate(items):
        t = by_key.get(it.target)
        if t is not None and t.key not in used:
            if fits(it, t.shape):
                res.pairs.append((it, t, "rule" if i in fixed else "name"))
            else:
                res.mismatched.append((it, t))
            used.add(t.key)
        elif i in fixed:
            res.unmatched_items.append(it)  # an explicit rule named a key the target lacks: never re-guess
        else:
            rest_items.append(it)
    rest_targets = [t for t in targets if t.key not in used]
    found = systematic_rename(rest_items, rest_targets)
    if found is not None:
        rename, hits = found
        for it, t in hits:
            res.pairs.append((it, t, "rename"))
            used.add(t.key)
        done = {id(it) for it, _ in hits}
        rest_items = [it for it in rest_items if id(it) not in done]
        rest_targets = [t for t in rest_targets if t.key not in used]
        res.renames.append({**rename, "tensors": len(hits)})
    if not rest_items or not rest_targets:
        res.unmatched_items += rest_items
        res.unfilled += rest_targets
        return res
    src_groups = _group(rest_items, lambda it: it.target)
    tgt_groups = _group(rest_targets, lambda t: t.key)
    src_sig = [g.signature(item_shape) for g in src_groups]
    tgt_sig = [g.signature(lambda t: tuple(t.shape)) for g in tgt_groups]
    if len(src_groups) * len(tgt_groups) > MAX_ALIGN_CELLS:
        res.ambiguous.append(
            {
                "reason": f"too many unmatched modules to align by order "
                f"({len(src_groups)} x {len(tgt_groups)}); add --map rules"
            }
        )
        res.unmatched_items += rest_items
        res.unfilled += rest_targets
        return res
    taken_s: set[int] = set()
    taken_t: set[int] = set()
    if name_sorted:
        kinds: dict[Any, tuple[list[int], list[int]]] = {}
        for i, s in enumerate(src_sig):
            kinds.setdefault(_kind(s), ([], []))[0].append(i)
        for j, t in enumerate(tgt_sig):
            kinds.setdefault(_kind(t), ([], []))[1].append(j)
        label = "order" if sum(1 for s, _ in kinds.values() if s) == 1 else "order-per-kind"
        for s_idx, t_idx in kinds.values():
            bases = {_natural(src_groups[i].prefix)[-1][0] for i in s_idx}
            if len(bases) != 1:
                continue  # conv2d_N and depthwise_conv2d_N: their relative order is lost, do not guess
            s_idx.sort(key=lambda i: _natural(src_groups[i].prefix))
            kpairs, kcount = _align([src_sig[i] for i in s_idx], [tgt_sig[j] for j in t_idx])
            if kcount == 1:
                for a, b in kpairs:
                    _pair_groups(res, src_groups[s_idx[a]], tgt_groups[t_idx[b]], label)
                    taken_s.add(s_idx[a])
                    taken_t.add(t_idx[b])
    rest_s = [i for i in range(len(src_groups)) if i not in taken_s]
    rest_t = [j for j in range(len(tgt_groups)) if j not in taken_t]
    pairs, count = _align([src_sig[i] for i in rest_s], [tgt_sig[j] for j in rest_t])
    if count == 1:
        for a, b in pairs:
            _pair_groups(res, src_groups[rest_s[a]], tgt_groups[rest_t[b]], "order")
            taken_s.add(rest_s[a])
            taken_t.add(rest_t[b])
    # Out-of-order leftovers: pair only when each side has exactly one compatible partner.
    left_s = [i for i in range(len(src_groups)) if i not in taken_s]
    left_t = [j for j in range(len(tgt_groups)) if j not in taken_t]
    for i in list(left_s):
        cands = [j for j in left_t if tgt_sig[j] == src_sig[i]]
        if len(cands) == 1 and sum(src_sig[o] == tgt_sig[cands[0]] for o in left_s) == 1:
            _pair_groups(res, src_groups[i], tgt_groups[cands[0]], "unique-shape")
            left_s.remove(i)
            left_t.remove(cands[0])
    for i in left_s:
        cands = [tgt_groups[j].prefix for j in left_t if tgt_sig[j] == src_sig[i]]
        if len(cands) > 1:
            res.ambiguous.append(
                {
                    "source": [s for it in src_groups[i].members.values() for s in it.sources]
                    or [src_groups[i].prefix],
                    "proposed": src_groups[i].prefix,
                    "candidates": cands[:10],
                    "reason": f"{len(cands)} target modules fit and order does not decide",
                }
            )
        res.unmatched_items += list(src_groups[i].members.values())
    for j in left_t:
        res.unfilled += list(tgt_groups[j].members.values())
    return res


Rename = tuple[str, str, str]  # (kind, a, b): ("prefix", old, new) | ("suffix+", "_1", "") | ("suffix-", "", "")
_SUFFIX = re.compile(r"^(.*)(_\d+)$")
MAX_RENAME_PAIRS = 200_000


def _apply_rename(r: Rename, prefix: str) -> str | None:
    kind, a, b = r
    if kind == "prefix":
        if a and prefix != a and not prefix.startswith(a + "."):
            return None
        rest = prefix[len(a) :].lstrip(".") if a else prefix
        return ".".join(x for x in (b, rest) if x)
    head, _, last = prefix.rpartition(".")
    if kind == "suffix+":
        new_last = last + a
    else:
        m = _SUFFIX.match(last)
        if m is None:
            return None
        new_last = m.group(1)
    return f"{head}.{new_last}" if head else new_last


def _describe(r: Rename, example: tuple[str, str]) -> str:
    kind, a, b = r
    what = {
        "prefix": f"module prefix {a or '(none)'!r} -> {b or '(none)'!r}",
        "suffix+": f"{a!r} appended to each layer name",
        "suffix-": "the scope suffix _N dropped from each layer name (Keras 2.0 `conv2d_1_1` -> `conv2d_1`)",
    }[kind]
    return f"{what}, e.g. {example[0]} -> {example[1]}"


def _rename_candidates(src_prefixes: set[str], tgt_prefixes: set[str]) -> list[Rename]:
    seen: dict[Rename, int] = {}
    pairs = 0
    for p in src_prefixes:
        for q in tgt_prefixes:
            pairs += 1
            if pairs > MAX_RENAME_PAIRS:
                break
            if p == q:
                continue
            cands: list[Rename] = []
            if q.startswith(p) and _SUFFIX.fullmatch("x" + q[len(p) :]) and q[len(p) :].startswith("_"):
                cands.append(("suffix+", q[len(p) :], ""))
            if p.startswith(q) and re.fullmatch(r"_\d+", p[len(q) :]):
                cands.append(("suffix-", "", ""))
            ps, qs = p.split("."), q.split(".")
            k = 0
            while k < min(len(ps), len(qs)) and ps[-1 - k] == qs[-1 - k]:
                k += 1
            if k:
                cands.append(("prefix", ".".join(ps[: len(ps) - k]), ".".join(qs[: len(qs) - k])))
            for c in cands:
                seen[c] = seen.get(c, 0) + 1
    return sorted(seen, key=lambda c: -seen[c])[:20]


def systematic_rename(
    items: list[Item], targets: list[TargetTensor]
) -> tuple[dict[str, Any], list[tuple[Item, TargetTensor]]] | None:
    """One rename of module paths that carries many unmatched items onto unfilled targets of their shape:
    a Keras 2.0 `_1` scope suffix added or dropped, or a module prefix replaced (`generator.` -> `gen.`).
    Applied only when it is the single best (no other rename fits as many tensors), maps no two items to
    one target, and carries at least half of the unmatched tensors (two or more): a rename that explains
    one module is a coincidence, not a naming scheme."""
    if not items or not targets:
        return None
    by_key = {t.key: t for t in targets}
    cands = _rename_candidates({_prefix(it.target) for it in items}, {_prefix(t.key) for t in targets})
    scored = []
    for r in cands:
        hits: list[tuple[Item, TargetTensor]] = []
        taken: set[str] = set()
        clash = False
        for it in items:
            new_prefix = _apply_rename(r, _prefix(it.target))
            if new_prefix is None:
                continue
            key = f"{new_prefix}.{_role(it.target)}" if new_prefix else _role(it.target)
            t = by_key.get(key)
            if t is None or not fits(it, t.shape):
                continue
            if key in taken:
                clash = True
                break
            taken.add(key)
            hits.append((it, t))
        if not clash and len(hits) >= max(2, (len(items) + 1) // 2):
            scored.append((len(hits), r, hits))
    if not scored:
        return None
    scored.sort(key=lambda s: -s[0])
    if len(scored) > 1 and scored[1][0] == scored[0][0]:
        return None  # two renames fit equally well: not systematic enough to pick one
    n, r, hits = scored[0]
    example = (_prefix(hits[0][0].target), _prefix(hits[0][1].key))
    return {"kind": r[0], "from": r[1], "to": r[2], "message": _describe(r, example) + f" ({n} tensors)"}, hits


def _pair_groups(res: MatchResult, s: _Group, t: _Group, how: str) -> None:
    for role, it in s.members.items():
        res.pairs.append((it, t.members[role], how))


def _align(a: list[Any], b: list[Any]) -> tuple[list[tuple[int, int]], int]:
    """Longest order-preserving matching of equal signatures, and how many distinct matchings of that
    length exist (capped at 2: we only need to know whether it is unique)."""
    n, m = len(a), len(b)
    comp = [[a[i] == b[j] for j in range(m)] for i in range(n)]
    L = [[0] * (m + 1) for _ in range(n + 1)]
    C = [[1] * (m + 1) for _ in range(n + 1)]  # number of distinct max matchings of prefixes (capped)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            best = max(L[i - 1][j], L[i][j - 1], L[i - 1][j - 1] + 1 if comp[i - 1][j - 1] else -1)
            L[i][j] = best
            c = 0
            if L[i - 1][j] == best:
                c += C[i - 1][j]
            if L[i][j - 1] == best:
                c += C[i][j - 1]
            if L[i - 1][j - 1] == best:
                c -= C[i - 1][j - 1]  # counted twice above
            if comp[i - 1][j - 1] and L[i - 1][j - 1] + 1 == best:
                c += C[i - 1][j - 1]
            C[i][j] = min(max(c, 0), 2)
    pairs: list[tuple[int, int]] = []
    i, j = n, m
    while i > 0 and j > 0:
        if comp[i - 1][j - 1] and L[i][j] == L[i - 1][j - 1] + 1:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif L[i - 1][j] == L[i][j]:
            i -= 1
        else:
            j -= 1
    pairs.reverse()
    return pairs, (C[n][m] if L[n][m] > 0 else 1)
