"""Progress on stderr for item loops: a rich bar on a terminal, plain periodic lines in logs and CI."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PLAIN_EVERY_S = 10.0  # without a TTY: a line at least this often (and at 10% steps), never per item


@contextmanager
def item_progress(name: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield `update(done)`; renders a bar on a TTY, else 'name done/total (elapsed)' lines on stderr."""
    from ptools.cli._output import stderr_console

    console = stderr_console()
    if not enabled:
        yield lambda done: None
        return
    if console.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn(name), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(name, total=total)
            yield lambda done: bar.update(task, completed=done)
        return
    t0 = time.monotonic()
    state = {"last_t": t0, "last_decile": 0}

    def update(done: int) -> None:
        now = time.monotonic()
        decile = (10 * done) // max(total, 1)
        if done == total or decile > state["last_decile"] or now - state["last_t"] >= PLAIN_EVERY_S:
            state["last_t"], state["last_decile"] = now, decile
            print(f"{name} {done}/{total} ({now - t0:.1f} s)", file=sys.stderr, flush=True)

    yield update
