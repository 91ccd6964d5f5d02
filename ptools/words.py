"""Counted nouns for messages: "1 tensor", "3 tensors", "1 key" (never "(1 tensors)")."""

from __future__ import annotations

_IRREGULAR = {"entry": "entries", "index": "indices"}


def counted(n: int, noun: str, fmt: str = "") -> str:
    """`n` and the noun, singular for exactly one; `fmt` formats the number (",": 12,345)."""
    word = noun if n == 1 else _IRREGULAR.get(noun, noun + "s")
    return f"{n:{fmt}} {word}"
