"""Progress on stderr for item loops: a rich bar on a terminal, plain periodic lines in logs and CI."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PLAIN_EVERY_S = 10.0  # without a TTY: a line at least this often (and at 10% steps), never per item


@contextmanager
def item_progress(name: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield `update(done, total=None)`; renders a bar on a TTY, else 'name done/total (elapsed)' lines on
    stderr. `total` may be given later (0 until then), when the work is known only once it has started."""
    from ptools.cli._output import stderr_console

    console = stderr_console()
    if not enabled:
        yield lambda done, total=None: None
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
            task = bar.add_task(name, total=total or None)
            yield lambda done, total=None: bar.update(task, completed=done, total=total)
        return
    t0 = time.monotonic()
    state = {"last_t": t0, "last_decile": 0, "total": total}

    def update(done: int, total: int | None = None) -> None:
        if total is not None:
            state["total"] = total
        now = time.monotonic()
        decile = (10 * done) // max(state["total"], 1)
        if done == state["total"] or decile > state["last_decile"] or now - state["last_t"] >= PLAIN_EVERY_S:
            state["last_t"], state["last_decile"] = now, decile
            print(f"{name} {done}/{state['total']} ({now - t0:.1f} s)", file=sys.stderr, flush=True)

    yield update
