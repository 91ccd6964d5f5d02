"""The `--map` rules file: regex on source names -> PyTorch names, with an optional per-rule transform.

JSON: {"rules": [{"pattern": "...", "replace": "...", "transform": "...", "skip": false}, ...]}
   or a plain {"pattern": "replace", ...} object.  TOML: [[rule]] tables with the same keys.
`pattern` must match the whole source key (`generator/conv/kernel`). `replace` is either a full PyTorch
key (`features.0.weight`, no `/`) or a renamed TF-style path (`gen/conv/kernel`) that then goes through the
layer rules and name heuristics as the original would have.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptools.convert import layouts
from ptools.errors import PtoolsError


@dataclass
class Rule:
    pattern: re.Pattern[str]
    replace: str | None
    transform: str | None = None
    skip: bool = False
    flatten_shape: tuple[int, ...] | None = None

    def describe(self) -> str:
        return self.pattern.pattern


def _transform_fn(name: str, flatten_shape: tuple[int, ...] | None) -> Callable[[np.ndarray], np.ndarray]:
    if name == "copy":
        return lambda a: a
    if name == "transpose":
        return lambda a: np.ascontiguousarray(a.T)
    if name == "conv":
        return layouts.conv_kernel
    if name == "depthwise":
        return layouts.depthwise_kernel
    if name == "gru_gates":
        return layouts.swap_gates_zr
    if name == "tf1_lstm_gates":
        return layouts.tf1_lstm_reorder
    if name == "dense_after_flatten":
        if not flatten_shape:
            raise PtoolsError('--map: transform dense_after_flatten needs "flatten_shape": [H, W, C]')
        return lambda a: layouts.dense_after_flatten(a, flatten_shape)
    m = re.fullmatch(r"permute\(([\d,\s]+)\)", name)
    if m:
        axes = tuple(int(x) for x in m.group(1).split(","))
        return lambda a: np.ascontiguousarray(a.transpose(axes))
    raise PtoolsError(
        f"--map: unknown transform {name!r}",
        hint="use copy, transpose, conv, depthwise, dense_after_flatten, gru_gates, tf1_lstm_gates or permute(3,2,0,1)",
    )


def transformed_shape(name: str, shape: tuple[int, ...], flatten_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """The shape a transform produces, computed on an empty array of the source shape (no data read)."""
    fn = _transform_fn(name, flatten_shape)
    return tuple(fn(np.empty(shape, dtype=np.uint8)).shape)


def transform_fn(rule: Rule) -> Callable[[np.ndarray], np.ndarray]:
    assert rule.transform is not None
    return _transform_fn(rule.transform, rule.flatten_shape)


def _rule(path: Path, raw: Any, i: int) -> Rule:
    if not isinstance(raw, dict) or "pattern" not in raw:
        raise PtoolsError(f'{path}: rule {i} needs a "pattern"')
    try:
        pattern = re.compile(str(raw["pattern"]))
    except re.error as e:
        raise PtoolsError(f"{path}: rule {i}: bad regex {raw['pattern']!r} ({e})") from None
    replace = raw.get("replace", raw.get("target"))
    skip = bool(raw.get("skip", False))
    if replace is None and not skip and not raw.get("transform"):
        raise PtoolsError(f'{path}: rule {i} ({raw["pattern"]!r}) needs "replace", "transform" or "skip"')
    fs = raw.get("flatten_shape")
    rule = Rule(
        pattern,
        None if replace is None else str(replace),
        raw.get("transform"),
        skip,
        tuple(int(x) for x in fs) if fs else None,
    )
    if rule.transform:
        _transform_fn(rule.transform, rule.flatten_shape)  # validate now, not halfway through writing
    return rule


def load_rules(path: str | Path) -> list[Rule]:
    path = Path(path)
    if not path.is_file():
        raise PtoolsError(f"{path}: no such rules file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, ImportError) as e:
        raise PtoolsError(f"{path}: cannot parse rules ({e})") from None
    if isinstance(data, dict) and ("rules" in data or "rule" in data):
        raw_rules = data.get("rules", data.get("rule"))
    elif isinstance(data, dict):
        raw_rules = [{"pattern": k, "replace": v} for k, v in data.items()]
    else:
        raw_rules = data
    if not isinstance(raw_rules, list):
        raise PtoolsError(f"{path}: expected a list of rules")
    return [_rule(path, r, i) for i, r in enumerate(raw_rules)]


def first_match(rules: list[Rule], key: str) -> tuple[Rule, re.Match[str]] | None:
    for r in rules:
        m = r.pattern.fullmatch(key)
        if m:
            return r, m
    return None
