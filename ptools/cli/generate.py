"""`ptools generate` (lands with its own issue)."""

from __future__ import annotations

from ptools.cli._common import not_implemented

HELP = "Not implemented yet."


def generate_command() -> None:
    not_implemented("generate")
