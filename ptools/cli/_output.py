"""Output helpers shared by every command: JSON documents on stdout, rich consoles, error lines."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
from functools import lru_cache
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich costs ~50 ms to import: only commands that print tables pay for it
    from rich.console import Console

SCHEMA_VERSION = 1


@lru_cache(maxsize=1)
def stdout_console() -> Console:
    """Results for people. Colour follows rich's own detection (NO_COLOR, TTY)."""
    from rich.console import Console

    return Console(soft_wrap=False)


@lru_cache(maxsize=1)
def stderr_console() -> Console:
    """Progress, warnings and logs: never mixed into stdout, which scripts parse."""
    from rich.console import Console

    return Console(stderr=True)


def to_jsonable(obj: Any) -> Any:
    """Convert the types our library returns (dataclasses, paths, numpy scalars, tuples) to JSON types."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        # JSON has no NaN/Infinity; strict parsers (jq, JSON.parse) reject them.
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, without importing numpy here
        return to_jsonable(obj.tolist())
    return str(obj)


def emit_json(command: str, payload: dict[str, Any]) -> None:
    """Write one JSON document for `command` on stdout, with its `ptools.<command>/1` schema tag.

    Written with plain `sys.stdout`, never through rich, so nothing is wrapped or coloured.
    """
    doc = {"schema": f"ptools.{command}/{SCHEMA_VERSION}", **to_jsonable(payload)}
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    stderr_console().print(f"[yellow]ptools: warning:[/yellow] {message}", highlight=False)


def info(message: str) -> None:
    stderr_console().print(message, highlight=False)
