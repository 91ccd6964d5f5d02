"""The Click group every ptools command group uses: one "Did you mean" per mistyped command."""

from __future__ import annotations

import click
from typer.core import TyperGroup

_SUGGESTION = "Did you mean"


class SuggestOnceGroup(TyperGroup):
    """Typer and Click 8.2+ both add a suggestion to "No such command"; keep the first one only."""

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[override]
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            # Click 8.4's NoSuchCommand formats its own suggestion from `possibilities`; Typer appended one
            # to the message already. Older Click has none: Typer's stays.
            cut = e.message.find(f". {_SUGGESTION}")
            if getattr(e, "possibilities", None) and cut > 0:
                e.message = e.message[:cut] + "."
            raise
