"""Options that mean the same thing in every command, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

from ptools.devices import parse_device_spec
from ptools.errors import ExitCode, PtoolsError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (schema ptools.<command>/1).")]


def force_option(what: str) -> object:
    """--force/-f, with a help that says what it does in that command (it differs: a file, a folder, a run)."""
    return Annotated[bool, typer.Option("--force", "-f", help=what)]


SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (runs are deterministic for a seed).")]


def _device_callback(value: str) -> str:
    try:
        return parse_device_spec(value)
    except PtoolsError as e:
        raise typer.BadParameter(e.message) from None


DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto|cpu|cuda|cuda:N|mps (auto: cuda, then mps, then cpu).",
        callback=_device_callback,
    ),
]


def not_implemented(command: str) -> None:
    """For commands whose issue has not landed yet: say so plainly, exit 2."""
    raise PtoolsError(f"`ptools {command}` is not implemented yet", exit_code=ExitCode.USAGE)
