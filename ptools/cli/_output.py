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
_verdict = {"exit_code": 0}


def set_verdict(findings: bool) -> None:
    """Say, before printing a report, that it ends with exit 1: when the reader leaves early
    (`ptools dataset check broken | head -1`), the command still exits with the verdict, not 0, so
    `set -o pipefail` pipelines see the problems."""
    _verdict["exit_code"] = 1 if findings else 0


def verdict_exit_code() -> int:
    return _verdict["exit_code"]


@lru_cache(maxsize=1)
def stdout_console() -> Console:
    """Results for people. Colour follows rich's own detection (NO_COLOR, TTY)."""
    from rich.console import Console

    console = Console(soft_wrap=False)
    # Piped into a file or a log, text lines are never folded at rich's assumed 80 columns.
    console.soft_wrap = not console.is_terminal
    console.on_broken_pipe = _on_broken_pipe  # type: ignore[method-assign]
    return console


def silence_stdout() -> None:
    """Point stdout at /dev/null after its reader went away (`ptools ... | head`), so that no later write or
    the interpreter's final flush fails on the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests): nothing to flush
        pass


class QuietWhenClosed:
    """A text stream (stderr) that goes quiet when its reader leaves, instead of ending the command.

    `ptools train ... 2>&1 | head -1`: once head has its line, every progress write would raise
    BrokenPipeError (rich's console then exits 1). Progress is for people; the work is not: the first failed
    write points the descriptor at /dev/null and later writes are dropped, so the run goes on to its end.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._closed = False

    def write(self, text: str) -> int:
        if not self._closed:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ConnectionResetError):
                self._go_quiet()
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except (BrokenPipeError, ConnectionResetError):
                self._go_quiet()

    def _go_quiet(self) -> None:
        import os

        self._closed = True
        try:  # what is still buffered, and the interpreter's last flush, go nowhere instead of failing again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, reconfigure...: the real stream's
        return getattr(self._stream, name)


def quiet_stderr_when_closed() -> None:
    if not isinstance(sys.stderr, QuietWhenClosed):
        sys.stderr = QuietWhenClosed(sys.stderr)  # type: ignore[assignment]


def _on_broken_pipe() -> None:
    """rich's default exits 1; a closed pipe is the reader's choice, so the CLI ends quietly with 0 instead."""
    silence_stdout()
    raise BrokenPipeError


@lru_cache(maxsize=1)
def stderr_console() -> Console:
    """Progress, warnings and logs: never mixed into stdout, which scripts parse."""
    from rich.console import Console

    console = Console(stderr=True)
    console.soft_wrap = not console.is_terminal  # a CI log keeps each message on one line
    return console


MAX_WIDTH = 400  # piped tables are printed at their natural width, up to this many columns


def print_table(table: Any, console: Console | None = None) -> None:
    """Print a rich table (or any renderable) that never wraps when nobody is watching.

    On a terminal it fits the window as rich does, but the first column (names: keys, layers, paths) is
    kept whole: the other columns give way first. Piped into a file, a pager or a CI log, every command's
    tables look alike: plain columns (no box drawing), a header line, each row one line at the table's
    natural width (up to MAX_WIDTH) without trailing spaces, so grep, cut and awk can use them.
    """
    from rich.table import Table

    console = console or stdout_console()
    if console.is_terminal:
        if isinstance(table, Table):
            keep_first_column_whole(table, console.width)
        console.print(table)
        return
    from rich.measure import Measurement

    if isinstance(table, Table):
        table.box, table.show_edge, table.pad_edge, table.show_lines = None, False, False, False
        table.title_justify = "left"
        table.min_width = None
    natural = Measurement.get(console, console.options.update(max_width=MAX_WIDTH), table).maximum
    saved = console.width
    console.width = max(saved, min(natural, MAX_WIDTH))  # print(width=) can only narrow, so widen the console
    try:
        if isinstance(table, Table) and isinstance(table.title, str):
            # The title as its own line(s): rich would fold a title wider than the table.
            title, table.title = table.title, None
            for line in title.split("\n"):
                console.print(line, highlight=False, soft_wrap=True)
        with console.capture() as capture:
            console.print(table)
        text = "\n".join(line.rstrip() for line in capture.get().split("\n"))
        console.file.write(text)
        console.file.flush()
    finally:
        console.width = saved


def keep_first_column_whole(table: Any, width: int) -> None:
    """Give a table's first column the width of its longest cell (up to 60% of the window), unwrapped:
    a key folded into 8-character pieces cannot be read, let alone copied into --key or --filter."""
    from rich.text import Text

    if not table.columns:
        return
    column = table.columns[0]
    cells = [Text.from_markup(c) if isinstance(c, str) else c for c in column._cells]
    longest = max((c.cell_len for c in cells if isinstance(c, Text)), default=0)
    longest = max(longest, Text.from_markup(str(column.header)).cell_len)
    column.min_width = min(longest, int(width * 0.6))
    column.no_wrap = True


def capped(items: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """The first `limit` items and the line that says how many were left out (None when none were).

    Human output stays readable for a 10,000-key checkpoint; --json always carries every item.
    """
    if len(items) <= limit:
        return list(items), None
    return list(items[:limit]), f"... and {len(items) - limit} more (--json lists all)"


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


def print_check_output(con: Any, check: dict[str, Any] | None) -> None:
    """The --check-output verdict line shared by convert and port (nothing when the check was not asked)."""
    if not check:
        return
    verdict = "[green]ok[/green]" if check["ok"] else "[red]too large[/red]"
    con.print(
        f"check-output: max abs error {check['max_abs_error']:.3g} (tolerance {check['tolerance']:g}) {verdict}",
        highlight=False,
        soft_wrap=True,
    )
