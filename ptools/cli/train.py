"""`ptools train` (lands with its own issue)."""

from __future__ import annotations

from ptools.cli._common import not_implemented

HELP = "Not implemented yet."


def train_command() -> None:
    not_implemented("train")
