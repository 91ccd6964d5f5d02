"""`ptools check-conv` (lands with its own issue)."""

from __future__ import annotations

from ptools.cli._common import not_implemented

HELP = "Not implemented yet."


def check_conv_command() -> None:
    not_implemented("check-conv")
