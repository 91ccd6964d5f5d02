"""Options that mean the same thing in every command, declared once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from ptools.devices import parse_device_spec
from ptools.errors import ExitCode, PtoolsError


def json_option(schema: str) -> object:
    """--json, with the schema tag of the command's document in its help."""
    return Annotated[
        bool, typer.Option("--json", help=f"Print one JSON document on stdout (schema ptools.{schema}/1).")
    ]


def force_option(what: str) -> object:
    """--force/-f, with a help that says what it does in that command (it differs: a file, a folder, a run)."""
    return Annotated[bool, typer.Option("--force", "-f", help=what)]


SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (runs are deterministic for a seed).")]


def complete_from(*values: str) -> Callable[[str], list[str]]:
    """A TAB-completion callback offering `values` (the shell filters by what was typed; so do we)."""

    def complete(incomplete: str) -> list[str]:
        return [v for v in values if v.startswith(incomplete)]

    return complete


# cuda:N for the first GPUs: listing the real ones would import torch on every TAB.
DEVICE_VALUES = ("auto", "cpu", "cuda", "mps", *(f"cuda:{i}" for i in range(8)))
AMP_VALUES = ("auto", "bf16", "fp16", "off")
LAYOUT_VALUES = ("auto", "seed", "folders", "csv")
SHELL_VALUES = ("bash", "zsh", "fish")


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
        autocompletion=complete_from(*DEVICE_VALUES),
    ),
]


def not_implemented(command: str) -> None:
    """For commands whose issue has not landed yet: say so plainly, exit 2."""
    raise PtoolsError(f"`ptools {command}` is not implemented yet", exit_code=ExitCode.USAGE)
