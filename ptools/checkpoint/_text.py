"""Error text helpers: messages built from library exceptions must stay on one line."""

from __future__ import annotations

_LIMIT = 300


def oneline(error: BaseException | str) -> str:
    """`Type: message` (or the text) with newlines collapsed and long messages cut."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= _LIMIT else text[: _LIMIT - 3] + "..."
