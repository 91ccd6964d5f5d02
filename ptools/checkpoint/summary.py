"""What `ptools inspect` shows: the selected state_dict, a tree of module prefixes, totals, shared storages.

Everything here works on `TensorInfo` and the reader's structure only; no tensor data is read.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from ptools.checkpoint.base import CheckpointReader, TensorInfo
from ptools.checkpoint.pickle.structure import MODULE_MARK
from ptools.checkpoint.roles import EMA, NOT_MODEL, optimizer_summary, role_here, tensor_roles
from ptools.errors import PtoolsError
from ptools.words import counted

WRAPPER_PREFIXES = {
    "module.": "DataParallel / DistributedDataParallel wrapper",
    "_orig_mod.": "torch.compile wrapper",
}
# Names a state_dict goes by inside a nested checkpoint, most telling first.
PREFERRED_NAMES = ("state_dict", "model", "model_state_dict", "model_state", "net", "network", "module", "weights")
_SEPARATORS = re.compile(r"([./])")
# Readers that know what each tensor is for tag it in `TensorInfo.extra["role"]` (TF bundles, Keras files):
# only weights form the model tree and its totals; the rest is training state, shown apart.
WEIGHT_ROLE = "weight"
UNTAGGED_ROLE = "untagged"  # no role in a file whose reader tags roles: format metadata (TF object graph)
_ROLE_ORDER = ("slot", "optimizer", "counter", "ema", "metric", "rng", "scheduler", "scaler")
# Last name segments that are buffers (state, not trained) wherever they appear: batch-norm running
# statistics and counters (torch and Keras names), transformer position tables, spectral-norm vectors
# (torch.nn.utils.parametrizations: `parametrizations.weight.0._u`).
BUFFER_NAMES = frozenset(
    {
        "running_mean",
        "running_var",
        "num_batches_tracked",
        "moving_mean",
        "moving_variance",
        "position_ids",
        "relative_position_index",
        "_u",
        "_v",
    }
)
_TF_SUFFIX = re.compile(r"(/\.ATTRIBUTES/VARIABLE_VALUE|/\.OPTIMIZER_SLOT/.*)$")
_NOT_MODEL = re.compile(r"(^|\.)(optim\w*|optimizer_states?|lr_schedulers?|schedulers?|scaler|grad_scaler)(\.|$)")


@dataclass
class Selection:
    """The tensors a command works on: a state_dict inside the file (or all of it), with relative keys."""

    path: str | None  # None: the whole file
    how: str  # "whole file" | "the file is a state_dict" | "auto-detected" | "--key"
    infos: dict[str, TensorInfo]  # relative key -> info (info.key is the relative key too)
    full_keys: dict[str, str]  # relative key -> key in the reader
    candidates: list[str] = field(default_factory=list)
    note: str | None = None


# ------------------------------------------------------------------------------------------- selection


def _is_state_dict(node: Any) -> bool:
    return isinstance(node, dict) and bool(node) and all(isinstance(v, TensorInfo) for v in node.values())


def _tensor_leaves(node: Any) -> list[TensorInfo]:
    out: list[TensorInfo] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, TensorInfo):
            out.append(n)
        elif isinstance(n, dict):
            stack.extend(reversed(list(n.values())))
        elif isinstance(n, (list, tuple)):
            stack.extend(reversed(list(n)))
    return out


def state_dict_candidates(structure: Any, max_depth: int = 3) -> list[str]:
    """Paths of dicts whose values are all tensors (or pickled modules), outside optimizer, RNG, scheduler and
    scaler state: the model state_dicts a --key can name (EMA copies included)."""
    found: list[str] = []

    def visit(node: Any, path: str, depth: int) -> None:
        if depth > max_depth or not isinstance(node, (dict, list, tuple)):
            return
        if path and _NOT_MODEL.search(path):
            return
        if role_here(path.rsplit(".", 1)[-1] if path else None, node) in NOT_MODEL:
            return  # any optimizer's state (Adam moments, SGD momentum...), RNG, scheduler, scaler
        if isinstance(node, (list, tuple)):
            return
        if _is_state_dict(node) or (path and node.get(MODULE_MARK)):  # a state_dict, or a pickled nn.Module
            found.append(path)
            return
        for k, v in node.items():
            if isinstance(v, dict):
                visit(v, f"{path}.{k}" if path else str(k), depth + 1)

    visit(structure, "", 0)
    return found


def resolve_path(structure: Any, path: str) -> tuple[Any, str]:
    """Find `path` (dot- or slash-separated; dict keys may themselves contain dots) in the structure."""
    node, done = structure, []
    rest = path.replace("/", ".").strip(".")
    while rest:
        if isinstance(node, dict):
            keys = sorted((str(k) for k in node), key=len, reverse=True)
            match = next((k for k in keys if rest == k or rest.startswith(k + ".")), None)
        elif isinstance(node, (list, tuple)):
            head = rest.split(".", 1)[0]
            match = head if head.isdigit() and int(head) < len(node) else None
        else:
            match = None
        if match is None:
            here = ".".join(done) or "the top level"
            options = list(node)[:12] if isinstance(node, dict) else []
            raise PtoolsError(
                f"no key {path!r} in the checkpoint (at {here})",
                hint=f"keys there: {', '.join(map(str, options))}"
                if options
                else "run without --key to see the structure",
            )
        node = node[match] if isinstance(node, dict) else node[int(match)]
        done.append(match)
        rest = rest[len(match) :].lstrip(".")
    return node, ".".join(done)


def select(reader: CheckpointReader, key: str | None = None) -> Selection:
    structure = reader.structure()
    all_infos = reader.tensors()
    # Where the reader does not tag roles (torch files), the structure says which tensors are optimizer,
    # EMA, RNG, scheduler or scaler state: those are shown apart, never counted as the model's parameters.
    roles = {} if has_roles(all_infos) else tensor_roles(structure)
    if key:
        node, path = resolve_path(structure, key)
        leaves = _tensor_leaves(node)
        if not leaves:
            raise PtoolsError(f"{reader.path}: --key {key!r} holds no tensors")
        return _tag(_selection(path, "--key", leaves, path), roles)
    if _is_state_dict(structure):
        return _selection(None, "the file is a state_dict", all_infos, "")
    if isinstance(structure, dict) and structure.get(MODULE_MARK):
        return _selection(None, "a whole model (torch.save(model)): its state_dict", all_infos, "")
    candidates = state_dict_candidates(structure)
    ema = [c for c in candidates if _candidate_role(structure, c, roles) == EMA]
    models = [c for c in candidates if c not in ema]
    pick, how = None, "auto-detected"
    if len(models) == 1:
        pick = models[0]
    elif len([c for c in models if c.rsplit(".", 1)[-1] in PREFERRED_NAMES]) == 1:
        # the conventional name is the model (a model beside another state_dict, say a teacher)
        pick, how = next(c for c in models if c.rsplit(".", 1)[-1] in PREFERRED_NAMES), "auto-detected by name"
    elif not models and len(ema) == 1:
        pick, how = ema[0], "auto-detected: the only model state_dict is an EMA copy"
    if pick is not None:
        node, path = resolve_path(structure, pick)
        sel = _tag(_selection(path, how, _tensor_leaves(node), path, candidates), roles)
        others = [c for c in models if c != pick]
        copies = [c for c in ema if c != pick]
        parts = ([f"{_listed(others)}"] if others else []) + ([f"an EMA copy ({_listed(copies)})"] if copies else [])
        if parts:
            sel.note = f"also holds {' and '.join(parts)}: pick another with --key"
        return sel
    sel = _tag(_selection(None, "whole file", all_infos, "", candidates), roles)
    if len(candidates) > 1:
        copies = f" and {len(ema)} EMA copies ({_listed(ema)})" if len(ema) > 1 else ""
        copies = f" and an EMA copy ({ema[0]})" if len(ema) == 1 else copies
        sel.note = f"{len(models)} model state_dicts ({_listed(models)}){copies}: pick one with --key"
    return sel


def _candidate_role(structure: Any, path: str, roles: dict[str, tuple[str, str]]) -> str | None:
    node, _ = resolve_path(structure, path)
    leaves = _tensor_leaves(node)
    return roles[leaves[0].key][0] if leaves and leaves[0].key in roles else None


def _tag(sel: Selection, roles: dict[str, tuple[str, str]]) -> Selection:
    """Tag the selection's tensors with their role (`extra["role"]`, `extra["part"]`: the node that has it).

    A selection that is itself (inside) an EMA copy shows it as the model it is: `--key state_dict_ema`.
    """
    if not roles:
        return sel
    inside = sel.path or ""
    for rel, full in sel.full_keys.items():
        found = roles.get(full)
        if found is None:
            continue
        role, part = found
        if role == EMA and inside and (inside == part or inside.startswith(part + ".")):
            continue
        info = sel.infos[rel]
        sel.infos[rel] = replace(info, extra={**info.extra, "role": role, "part": part})
    if has_roles(sel.infos.values()):  # every other tensor is then explicitly a weight
        for rel, info in sel.infos.items():
            if "role" not in info.extra:
                sel.infos[rel] = replace(info, extra={**info.extra, "role": WEIGHT_ROLE})
    return sel


NAMES_SHOWN = 8  # names listed in one line of human output; JSON (`candidates`) has them all


def _listed(names: list[str], limit: int = NAMES_SHOWN) -> str:
    """Names joined for one line, the rest counted: "a, b, c ... and 40 more"."""
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def _selection(
    path: str | None, how: str, leaves: list[TensorInfo], prefix: str, candidates: list[str] | None = None
) -> Selection:
    infos: dict[str, TensorInfo] = {}
    full: dict[str, str] = {}
    cut = len(prefix) + 1 if prefix else 0
    for info in leaves:
        rel = info.key[cut:] if cut and info.key.startswith(prefix + ".") else info.key
        if info.key == prefix:
            rel = info.key.rsplit(".", 1)[-1]
        infos[rel] = replace(info, key=rel)
        full[rel] = info.key
    return Selection(path, how, infos, full, candidates or [])


def filter_keys(sel: Selection, pattern: str | None) -> list[str]:
    """Keys matching a glob; a pattern without wildcards matches as a substring."""
    keys = list(sel.infos)
    if not pattern:
        return keys
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    # The variable name a reader found matches too: `--filter conv/kernel` finds `layer_with_weights-0/...`.
    return [k for k in keys if fnmatch.fnmatchcase(k, pattern) or _name_matches(sel.infos[k], pattern)]


def filter_miss(pattern: str) -> str:
    """What to say when `--filter` matches nothing: how patterns are matched, with a pattern to try."""
    if not any(c in pattern for c in "*?["):
        return f"no key contains {pattern!r} (a pattern without * ? [ matches anywhere in the key, case-sensitive)"
    loose = pattern if pattern.startswith("*") else "*" + pattern
    loose = loose if loose.endswith("*") else loose + "*"
    return (
        f"no key matches {pattern!r}: a glob must match the whole key (fnmatch, case-sensitive; * also crosses "
        f"dots, so 'layer1.*' matches every key under layer1); try --filter '{loose}'"
    )


def _name_matches(info: TensorInfo | None, pattern: str) -> bool:
    return isinstance(info, TensorInfo) and "name" in info.extra and fnmatch.fnmatchcase(name_of(info), pattern)


# ------------------------------------------------------------------------------------- names and roles


def name_of(info: TensorInfo) -> str:
    """The variable's own name where the reader found one (TF object-graph full name, TF1 name), else the key."""
    name = info.extra.get("name")
    return name if isinstance(name, str) and name else info.key


def has_roles(infos: Any) -> bool:
    return any("role" in i.extra for i in infos)


def role_of(info: TensorInfo, tagged: bool) -> str:
    role = info.extra.get("role")
    if role:
        return str(role)
    return UNTAGGED_ROLE if tagged else WEIGHT_ROLE


def named(sel: Selection, roles: set[str] | None = None) -> Selection:
    """The selection keyed by variable names (`name_of`), limited to `roles` when given.

    A tensor keeps its key where its name is taken: weights claim names first (an EMA shadow carries its
    weight's name), and weights sharing one name (unnamed `tf.Variable`s) all keep their keys.
    """
    tagged = has_roles(sel.infos.values())
    chosen = [(k, i) for k, i in sel.infos.items() if roles is None or role_of(i, tagged) in roles]
    is_weight = {k: role_of(i, tagged) == WEIGHT_ROLE for k, i in chosen}
    weight_names = Counter(name_of(i) for k, i in chosen if is_weight[k])
    new: dict[str, str] = {}
    used: set[str] = set()
    for k, info in sorted(chosen, key=lambda kv: not is_weight[kv[0]]):  # stable: weights first
        name = name_of(info)
        if name in used or (is_weight[k] and weight_names[name] > 1):
            name = k
        base, n = name, 1
        while name in used:
            n += 1
            name = f"{base}#{n}"
        used.add(name)
        new[k] = name
    infos = {new[k]: replace(i, key=new[k]) for k, i in chosen}
    full = {new[k]: sel.full_keys[k] for k, _ in chosen}
    return Selection(sel.path, sel.how, infos, full, sel.candidates, sel.note)


def training_state(infos: list[TensorInfo]) -> list[dict[str, Any]]:
    """What is not a weight, grouped by role: optimizer slots, other optimizer variables, counters, EMA."""
    groups: dict[str, list[TensorInfo]] = {}
    for info in infos:
        role = role_of(info, True)
        if role != WEIGHT_ROLE:
            groups.setdefault(role, []).append(info)
    order = {r: i for i, r in enumerate(_ROLE_ORDER)}
    out = []
    for role in sorted(groups, key=lambda r: (order.get(r, len(order)), r)):
        members = groups[role]
        t = totals(members)
        row: dict[str, Any] = {
            "role": role,
            "tensors": t["tensors"],
            "params": t["params"] + t["buffers"],  # values of training state: no parameter/buffer split
            "bytes": t["bytes"],
            "names": [name_of(m) for m in members],
        }
        if role == "slot":
            row["slot_names"] = sorted({str(m.extra.get("slot_name")) for m in members if m.extra.get("slot_name")})
            row["weights"] = len({m.extra.get("slot_of") for m in members if m.extra.get("slot_of")})
        if role == UNTAGGED_ROLE:
            row["names"] = [m.key for m in members]
        parts = list(dict.fromkeys(str(m.extra["part"]) for m in members if m.extra.get("part") is not None))
        if parts:  # torch files: the entries that hold it (opt_g, opt_d), not every tensor key
            row["parts"] = [p or "(the whole file)" for p in parts]
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------- summaries


def view_id(info: TensorInfo) -> tuple[Any, ...] | None:
    """Two tensors with the same view id are the same memory (tied weights): count them once."""
    if info.storage is None:
        return None
    return (info.storage, info.storage_offset, info.shape, info.dtype, tuple(info.extra.get("stride") or ()))


def wrapper_prefixes(keys: list[str]) -> list[dict[str, Any]]:
    out = []
    for prefix, what in WRAPPER_PREFIXES.items():
        n = sum(1 for k in keys if k.startswith(prefix) or f".{prefix}" in f".{k}")
        if n:
            out.append({"prefix": prefix, "meaning": what, "keys": n, "all": n == len(keys)})
    return out


def _last_name(info: TensorInfo) -> str:
    name = _TF_SUFFIX.sub("", name_of(info))
    return _SEPARATORS.split(name)[-1]


def buffer_keys(infos: list[TensorInfo]) -> set[str]:
    """Keys of the tensors that are buffers, not parameters.

    A file does not say which is which; `extra["buffer"]` does where a model told us (`--against`).
    Otherwise: integer and bool tensors (a parameter is floating point), the known buffer names, and the
    `weight_u`/`weight_v` vectors next to a `weight_orig` (torch.nn.utils.spectral_norm).
    """
    keys = {info.key for info in infos}
    out: set[str] = set()
    for info in infos:
        known = info.extra.get("buffer")
        if known is not None:
            if known:
                out.add(info.key)
            continue
        last = _last_name(info)
        if (
            not info.dtype.startswith(("float", "bfloat", "complex"))
            or last in BUFFER_NAMES
            or (last.endswith(("_u", "_v")) and info.key[:-2] + "_orig" in keys)
        ):
            out.add(info.key)
    return out


def totals(infos: list[TensorInfo], buffers: set[str] | None = None) -> dict[str, Any]:
    """Counts per dtype; tied views counted once in values and bytes.

    `params` counts parameter values and `buffers` buffer values (running statistics, counters...), as
    `sum(p.numel() for p in model.parameters())` and `model.buffers()` would; `buffers` is the set of
    buffer keys (`buffer_keys` by default).
    """
    if buffers is None:
        buffers = buffer_keys(infos)
    seen: set[Any] = set()
    per: dict[str, dict[str, int]] = {}
    tensors = params = buffer_values = buffer_tensors = nbytes = 0
    for info in infos:
        vid = view_id(info)
        dup = vid is not None and vid in seen
        if vid is not None:
            seen.add(vid)
        row = per.setdefault(info.dtype, {"tensors": 0, "params": 0, "buffers": 0, "bytes": 0})
        row["tensors"] += 1
        tensors += 1
        is_buffer = info.key in buffers
        buffer_tensors += is_buffer
        if not dup:
            if is_buffer:
                row["buffers"] += info.numel
                buffer_values += info.numel
            else:
                row["params"] += info.numel
                params += info.numel
            row["bytes"] += info.nbytes
            nbytes += info.nbytes
    return {
        "tensors": tensors,
        "params": params,
        "buffers": buffer_values,
        "buffer_tensors": buffer_tensors,
        "bytes": nbytes,
        "by_dtype": per,
    }


def shared_storages(infos: list[TensorInfo]) -> list[dict[str, Any]]:
    """Groups of tensors backed by one storage (tied weights, views), with the storage's bytes counted once."""
    groups: dict[str, list[TensorInfo]] = {}
    for info in infos:
        if info.storage is not None:
            groups.setdefault(info.storage, []).append(info)
    out = []
    for storage, members in groups.items():
        if len(members) < 2:
            continue
        views = {view_id(m) for m in members}
        nbytes = max(int(m.extra.get("storage_nbytes") or m.nbytes) for m in members)
        out.append(
            {
                "storage": storage,
                "keys": [m.key for m in members],
                "bytes": nbytes,
                "kind": "tied (identical views)" if len(views) == 1 else "views into one storage",
            }
        )
    return out


def module_tree(infos: list[TensorInfo], depth: int, keys: dict[str, str] | None = None) -> dict[str, Any]:
    """Prefix tree of '.'-separated keys, aggregated per node and cut at `depth` levels.

    `keys` maps a tree key (a variable name) to the checkpoint key, given to the leaf where they differ.
    """
    root: dict[str, Any] = {"name": "", "path": "", "children": {}, "infos": []}
    for info in infos:
        node = root
        # torch keys nest with '.', TF/Keras ones with '/': both are module boundaries.
        tokens = _SEPARATORS.split(info.key)
        level, end = 0, 0
        for i in range(0, len(tokens), 2):
            part = tokens[i]
            end += len(part) + (len(tokens[i - 1]) if i else 0)
            if not part and 0 < i < len(tokens) - 1:
                continue  # "a/.b" (TF's "kernel/.ATTRIBUTES"): no empty-named level between separators
            if level > depth:
                # Below the levels shown: the rest of the key only counts in its collapsed ancestor (a key of
                # hundreds of levels, times thousands of keys, must not build a tree nobody sees).
                break
            child = node["children"].get(part)
            if child is None:
                child = node["children"][part] = {"name": part, "path": info.key[:end], "children": {}, "infos": []}
            node = child
            level += 1
        node["infos"].append(info)
    _aggregate(root, buffer_keys(infos))

    def render(node: dict[str, Any], level: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": node["name"],
            "path": node["path"],
            "tensors": node["tensors"],
            "params": node["params"],
            "buffers": node["buffers"],
            "bytes": node["bytes"],
            "dtypes": node["dtypes"],
        }
        tensor = node["infos"][0] if len(node["infos"]) == 1 else None
        if tensor is not None and not node["children"]:
            out["shape"] = list(tensor.shape)
            if keys and keys.get(tensor.key, tensor.key) != tensor.key:
                out["key"] = keys[tensor.key]
        if node["children"]:
            if level < depth:
                out["children"] = [render(c, level + 1) for c in node["children"].values()]
            else:
                out["collapsed"] = True
        return out

    return render(root, 0)


def _aggregate(node: dict[str, Any], buffers: set[str]) -> list[TensorInfo]:
    infos: list[TensorInfo] = list(node["infos"])
    for child in node["children"].values():
        infos.extend(_aggregate(child, buffers))
    t = totals(infos, buffers)
    node.update(
        tensors=t["tensors"], params=t["params"], buffers=t["buffers"], bytes=t["bytes"], dtypes=sorted(t["by_dtype"])
    )
    return infos


# ------------------------------------------------------------------------------------- structure overview


def checkpoint_kind(structure: Any) -> str:
    if _is_state_dict(structure):
        return "state_dict"
    if role_here(None, structure) == "optimizer":
        return "optimizer state_dict (no model weights)"
    if role_here(None, structure) == "rng":
        return "RNG state (no model weights)"
    if isinstance(structure, dict):
        keys = set(map(str, structure))
        if "pytorch-lightning_version" in keys or {"state_dict", "loops"} <= keys or "hyper_parameters" in keys:
            return "lightning"
        if structure.get("__class__") and structure.get("__loaded__") is False:
            return "pickled object"
        return "nested checkpoint"
    if isinstance(structure, TensorInfo):
        return "single tensor"
    if isinstance(structure, (list, tuple)):
        return "list"
    return "other"


def describe(value: Any, limit: int = 80, name: str | None = None) -> str:
    """One short line for a value of the top-level structure (`name`: the key it is stored under)."""
    role = role_here(name, value) if name is not None else None
    opt = optimizer_summary(value)
    if opt is not None:
        leaves = _tensor_leaves(value)
        values = sum(leaf.numel for leaf in leaves)
        entries = ", ".join(opt["entries"]) or "no per-parameter state yet"
        params = opt["parameters"]
        return (
            f"optimizer state: {counted(len(leaves), 'tensor')}, {counted(values, 'value', ',')} ({entries}) for "
            f"{counted(params, 'parameter')}"
        )
    if role in ("rng", "scheduler", "scaler"):
        leaves = _tensor_leaves(value)
        what = {"rng": "RNG state", "scheduler": "scheduler state", "scaler": "loss-scaler state"}[role]
        empty = isinstance(value, (dict, list, tuple)) and not value
        return what + (
            f": {counted(len(leaves), 'tensor')} (not model weights)" if leaves else " (empty)" if empty else ""
        )
    if role == "ema" and _is_state_dict(value):
        t = totals(list(value.values()))
        values = counted(t["params"] + t["buffers"], "value", ",")
        return f"EMA copy (state_dict): {counted(t['tensors'], 'tensor')}, {values}"
    if isinstance(value, (list, tuple)) and value and all(optimizer_summary(v) for v in value):
        leaves = _tensor_leaves(value)
        values = counted(sum(x.numel for x in leaves), "value", ",")
        return f"{counted(len(value), 'optimizer state')}: {counted(len(leaves), 'tensor')}, {values}"
    if isinstance(value, TensorInfo):
        return f"tensor {value.dtype} {list(value.shape)}"
    if _is_state_dict(value):
        t = totals(list(value.values()))
        buffers = f" + {t['buffers']:,} buffer values" if t["buffers"] else ""
        return f"state_dict: {counted(t['tensors'], 'tensor')}, {counted(t['params'], 'param', ',')}{buffers}"
    if isinstance(value, dict) and value.get("__loaded__") is False:
        return f"{value.get('__class__')}(...): not loaded (global outside the allow-list)"
    if isinstance(value, dict):
        leaves = _tensor_leaves(value)
        cls = value.get("__class__")
        keys = [str(k) for k in value if k not in ("__class__", "__loaded__")]
        head = f"{cls} " if cls else ""
        shown = ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "")
        tail = f", {counted(len(leaves), 'tensor')}" if leaves else ""
        return f"{head}{{{shown}}} ({counted(len(keys), 'key')}{tail})"
    if isinstance(value, (list, tuple)):
        leaves = _tensor_leaves(value)
        tail = f", {counted(len(leaves), 'tensor')}" if leaves else ""
        return f"{type(value).__name__}[{len(value)}]{tail}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def top_level(structure: Any) -> list[dict[str, Any]]:
    if not isinstance(structure, dict) or _is_state_dict(structure):
        return []
    return [{"key": str(k), "summary": describe(v, name=str(k))} for k, v in structure.items() if k != "__loaded__"]


def scalar_fields(value: Any, limit: int = 40) -> dict[str, Any]:
    """Plain values of a dict (Lightning hyper_parameters, a config): shown as they are."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            if len(out) >= limit:
                break
            if v is None or isinstance(v, (bool, int, float, str)):
                out[str(k)] = v
            elif isinstance(v, (list, tuple)) and len(v) <= 8 and all(isinstance(x, (int, float, str)) for x in v):
                out[str(k)] = list(v)
    return out


def lightning_info(structure: Any) -> dict[str, Any] | None:
    if checkpoint_kind(structure) != "lightning":
        return None
    info: dict[str, Any] = {}
    for key in ("pytorch-lightning_version", "epoch", "global_step", "hparams_name"):
        if key in structure:
            info[key] = structure[key]
    hp = structure.get("hyper_parameters")
    if hp is not None:
        info["hyper_parameters"] = scalar_fields(hp)
    for key in ("optimizer_states", "lr_schedulers", "callbacks"):
        if key in structure:
            info[key] = describe(structure[key], name=key)
    return info


def summarize(reader: CheckpointReader, selection: Selection, depth: int, file_size: int | None) -> dict[str, Any]:
    """The default report as one JSON-able dict."""
    structure = reader.structure()
    all_infos = reader.tensors()
    sel_infos = list(selection.infos.values())
    tagged = has_roles(sel_infos)
    tree_infos, tree_keys = sel_infos, None
    if tagged:  # the tree by variable names, weights only; slots, counters, EMA are listed apart
        weights = named(selection, {WEIGHT_ROLE})
        tree_infos, tree_keys = list(weights.infos.values()), weights.full_keys
    report: dict[str, Any] = {
        "file": str(reader.path),
        "format": reader.format,
        "file_size": file_size,
        "metadata": reader.metadata(),
        "kind": checkpoint_kind(structure),
        "top_level": top_level(structure),
        "values": scalar_fields(structure) if not _is_state_dict(structure) else {},
        "selection": {
            "path": selection.path,
            "how": selection.how,
            "candidates": selection.candidates,
            "note": selection.note,
        },
        "wrapper_prefixes": wrapper_prefixes(list(selection.infos)),
        "tree": module_tree(tree_infos, depth, tree_keys),
        "tree_by": _tree_by(sel_infos, tagged),
        "depth": depth,
        "totals": totals(tree_infos),
        "training_state": training_state(sel_infos) if tagged else [],
        "file_totals": totals(all_infos),
        "shared_storages": shared_storages(sel_infos),
    }
    lightning = lightning_info(structure)
    if lightning:
        report["lightning"] = lightning
    return report


def _tree_by(infos: list[TensorInfo], tagged: bool) -> str:
    if not tagged:
        return "keys"
    return "variable names, weights only" if any("name" in i.extra for i in infos) else "keys, model weights only"


def key_rows(selection: Selection, keys: list[str]) -> list[dict[str, Any]]:
    """One row per key; where the reader tags roles, each row has its role and name, and a weight's optimizer
    slots follow it."""
    tagged = has_roles(selection.infos.values())
    if tagged:
        keys = _slots_after_weights(selection, keys)
    rows = []
    for k in keys:
        info = selection.infos[k]
        row: dict[str, Any] = {
            "key": k,
            "shape": list(info.shape),
            "dtype": info.dtype,
            "numel": info.numel,
            "bytes": info.nbytes,
        }
        if info.storage is not None:
            row["storage"] = info.storage
        if info.extra.get("kind") not in (None, "dense"):
            row["kind"] = info.extra["kind"]
        if tagged:
            row["role"] = role_of(info, tagged)
            if name_of(info) != k:
                row["name"] = name_of(info)
            for field_name in ("slot_of", "slot_name"):
                if info.extra.get(field_name):
                    row[field_name] = info.extra[field_name]
        rows.append(row)
    return rows


def _slots_after_weights(selection: Selection, keys: list[str]) -> list[str]:
    weights = {name_of(selection.infos[k]) for k in keys if role_of(selection.infos[k], True) == WEIGHT_ROLE}
    slots: dict[str, list[str]] = {}
    for k in keys:
        owner = selection.infos[k].extra.get("slot_of")
        if owner in weights:
            slots.setdefault(str(owner), []).append(k)
    attached = {k for ks in slots.values() for k in ks}
    out: list[str] = []
    for k in keys:
        if k in attached:
            continue  # listed after its weight
        out.append(k)
        info = selection.infos[k]
        if role_of(info, True) == WEIGHT_ROLE:
            out.extend(slots.pop(name_of(info), []))  # pop: weights sharing a name get the slots once
    return out
