"""What each part of a torch training checkpoint is for, from its structure alone: model weights, an EMA copy,
optimizer state, RNG state, a scheduler or a loss scaler.

A training checkpoint holds much besides the model (nanoGPT's {model, optimizer}, timm's state_dict_ema,
Lightning's optimizer_states, Hugging Face's optimizer.pt and rng_state.pth, ptools' own latest.pt): counted
as parameters, Adam's two moments alone triple the figure. Optimizer state is recognised by its shape, the
one every torch optimizer's `state_dict()` has (`state` keyed by parameter index, `param_groups` listing the
indices), whatever the optimizer and whatever the key it is stored under; the other parts by the names
trainers give them (`ema`, `rng`, `scheduler`, `scaler` as a word of the key). Nothing is read but the structure.
"""

from __future__ import annotations

import re
from typing import Any

from ptools.checkpoint.base import TensorInfo

OPTIMIZER = "optimizer"
EMA = "ema"
RNG = "rng"
SCHEDULER = "scheduler"
SCALER = "scaler"
# Roles that are never a model: their subtrees are not offered as state_dicts.
NOT_MODEL = (OPTIMIZER, RNG, SCHEDULER, SCALER)

_WORDS = re.compile(r"[^a-z0-9]+")
_EMA_WORDS = frozenset({"ema", "shadow", "swa", "averaged"})
_RNG_WORDS = frozenset({"rng", "rngs"})
_OPTIMIZER_WORDS = frozenset({"optimizer", "optimizers", "optim", "optimizer_states"})
_SCHEDULER_WORDS = frozenset({"scheduler", "schedulers", "lr_scheduler", "lr_schedulers"})
_SCALER_WORDS = frozenset({"scaler", "grad_scaler", "loss_scaler"})
# Hugging Face Trainer's rng_state.pth (and accelerate's random_states_N.pkl): one entry per generator.
_RNG_FILE_KEYS = frozenset({"python", "numpy", "cpu", "cuda", "mps", "xpu", "npu", "hpu", "mlu", "musa", "torch"})


def _words(name: str) -> set[str]:
    lowered = str(name).lower()
    words = {w for w in _WORDS.split(lowered) if w}
    # "lr_scheduler" and "grad_scaler" are single words to trainers; keep the joined forms too.
    return words | {lowered}


def _is_state_dict(node: Any) -> bool:
    return isinstance(node, dict) and bool(node) and all(isinstance(v, TensorInfo) for v in node.values())


def is_optimizer_state(node: Any) -> bool:
    """A torch optimizer's `state_dict()`: {"state": {index: {...}}, "param_groups": [{"params": [...], ...}]}."""
    if not isinstance(node, dict) or "state" not in node or "param_groups" not in node:
        return False
    state, groups = node["state"], node["param_groups"]
    return (
        isinstance(state, dict)
        and all(isinstance(v, dict) for v in state.values())
        and isinstance(groups, (list, tuple))
        and bool(groups)
        and all(isinstance(g, dict) and "params" in g for g in groups)
    )


def _is_rng_file(node: Any) -> bool:
    """{python, numpy, cpu, cuda}: the generators' states as Hugging Face Trainer saves them."""
    if not isinstance(node, dict) or not node:
        return False
    keys = {str(k) for k in node}
    return keys <= _RNG_FILE_KEYS and bool(keys & {"python", "cpu"})


def role_here(name: str | None, node: Any) -> str | None:
    """The role a node has by itself (its shape, or the name it is stored under); None: not known here."""
    if is_optimizer_state(node):
        return OPTIMIZER
    if isinstance(node, (list, tuple)) and node and all(is_optimizer_state(n) for n in node):
        return OPTIMIZER  # Lightning's optimizer_states: one per optimizer
    if name is None:
        return RNG if _is_rng_file(node) else None
    words = _words(name)
    if words & _RNG_WORDS or str(name).lower() in ("rng_state", "rng_states", "random_state", "random_states"):
        return RNG
    if words & _SCHEDULER_WORDS:
        return SCHEDULER
    if words & _SCALER_WORDS:
        return SCALER
    if words & _OPTIMIZER_WORDS:
        return OPTIMIZER
    if words & _EMA_WORDS:
        return EMA
    return None


def tensor_roles(structure: Any) -> dict[str, tuple[str, str]]:
    """{tensor key: (role, path of the node that has it)} for every tensor that is not plain model weights.

    A role is inherited by everything below the node that has it; the first (outermost) one wins, so the
    Adam moments of an `ema_optimizer` are optimizer state and an EMA copy's buffers are EMA.
    """
    out: dict[str, tuple[str, str]] = {}
    stack: list[tuple[Any, str | None, str, tuple[str, str] | None]] = [(structure, None, "", None)]
    while stack:
        node, name, path, inherited = stack.pop()
        here = inherited
        if here is None:
            role = role_here(name, node)
            if role is not None:
                here = (role, path)
        if isinstance(node, TensorInfo):
            if here is not None:
                out[node.key] = here
        elif here is None and _is_state_dict(node):
            continue  # a model's own keys ("encoder.rng.weight") are never read as names of training state
        elif isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, (dict, list, tuple, TensorInfo)):
                    stack.append((v, str(k), f"{path}.{k}" if path else str(k), here))
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                if isinstance(v, (dict, list, tuple, TensorInfo)):
                    # A list element is named by its list: Lightning's optimizer_states[0] is still an optimizer.
                    stack.append((v, name, f"{path}.{i}" if path else str(i), here))
    return out


def optimizer_summary(node: Any) -> dict[str, Any] | None:
    """What an optimizer state holds: parameters with state, the per-parameter entries, the hyperparameters."""
    if not is_optimizer_state(node):
        return None
    entries: dict[str, None] = {}
    for per_param in node["state"].values():
        entries.update(dict.fromkeys(str(k) for k in per_param))
    groups = node["param_groups"]
    params = sum(len(g["params"]) for g in groups if isinstance(g.get("params"), (list, tuple)))
    hyper: dict[str, Any] = {}
    for key in ("lr", "betas", "momentum", "weight_decay", "eps", "nesterov", "amsgrad"):
        values = [g[key] for g in groups if key in g]
        if values and all(v == values[0] for v in values):
            hyper[key] = list(values[0]) if isinstance(values[0], tuple) else values[0]
    return {
        "parameters": params,
        "with_state": len(node["state"]),
        "groups": len(groups),
        "entries": list(entries),
        "hyperparameters": hyper,
    }
