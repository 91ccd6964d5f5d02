"""`ptools dataset preview|check|synth` (lands with the data issue)."""

from __future__ import annotations

import typer

from ptools.cli._common import not_implemented

app = typer.Typer(help="Defect datasets: synthesize, validate, preview.", no_args_is_help=True)


@app.command("synth")
def synth_command() -> None:
    """Not implemented yet."""
    not_implemented("dataset synth")


@app.command("check")
def check_command() -> None:
    """Not implemented yet."""
    not_implemented("dataset check")


@app.command("preview")
def preview_command() -> None:
    """Not implemented yet."""
    not_implemented("dataset preview")
