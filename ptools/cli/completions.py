"""Shell completion scripts for bash, zsh and fish, generated from the app (see completions/)."""

from __future__ import annotations

SHELLS = {"bash": "ptools.bash", "zsh": "_ptools", "fish": "ptools.fish"}
COMPLETE_VAR = "_PTOOLS_COMPLETE"


def completion_script(shell: str) -> str:
    """The script a shell sources; it calls `ptools` back for every TAB, so it never goes stale by
    itself, but the file must match what this Typer/Click version generates."""
    from click.shell_completion import get_completion_class
    from typer._completion_classes import completion_init
    from typer.main import get_command

    from ptools.cli import app

    completion_init()  # registers Typer's completion classes with Click
    cls = get_completion_class(shell)
    if cls is None:
        raise ValueError(f"unsupported shell {shell!r}")
    return cls(get_command(app), {}, "ptools", COMPLETE_VAR).source()
