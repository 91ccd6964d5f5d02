"""The `ptools` Typer app: global options, error handling, and the command registry.

Each command lives in its own module and imports torch (or anything heavy) inside its function body,
so `ptools --help`, shell completion and the light commands start fast.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from ptools import __version__
from ptools.errors import ExitCode, PtoolsError

# Plain Click help and usage errors. With rich installed, Typer 0.20 escapes "[default: 1]" as
# "\[default: 1]" even in plain help, and imports rich for every --help; our tables use rich directly.
typer.core.HAS_RICH = False

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a check found problems (shape drift, keys missing, unsafe pickle, "
    "dataset defects, files differ); 2 usage or bad input (file missing, corrupt, unsupported); "
    "130 interrupted."
)

_state = {"debug": False}


class PtoolsGroup(TyperGroup):
    """Turns PtoolsError and Ctrl-C into one stderr line and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PtoolsError as e:
            if _state["debug"]:
                traceback.print_exc()
            _print_error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _print_error("interrupted")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # a bug in ptools or a library: still one line unless --debug
            if _state["debug"]:
                raise
            _print_error(f"internal error: {type(e).__name__}: {e}", hint="rerun with --debug for a traceback")
            raise typer.Exit(ExitCode.USAGE) from None


def _print_error(message: str, hint: str | None = None) -> None:
    line = f"ptools: error: {message}" + (f" (hint: {hint})" if hint else "")
    click.echo(line, err=True)


app = typer.Typer(
    name="ptools",
    cls=PtoolsGroup,
    help="Port TensorFlow models to PyTorch and train GANs on defect data.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"ptools {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    _state["debug"] = debug


def _register() -> None:
    # Imported here, not at the top, only to keep the registry in one readable place; these modules
    # import nothing heavy at module level.
    from ptools.cli import check_conv, convert, dataset, generate, inspect, train

    app.command("inspect", help=inspect.HELP)(inspect.inspect_command)
    app.command("convert", help=convert.HELP)(convert.convert_command)
    app.command("check-conv", help=check_conv.HELP)(check_conv.check_conv_command)
    app.add_typer(dataset.app, name="dataset")
    app.command("train", help=train.HELP)(train.train_command)
    app.command("generate", help=generate.HELP)(generate.generate_command)
    app.command("completions")(_completions_command)


def _completions_command(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.")],
) -> None:
    """Print the shell completion script (the files in completions/ are this output)."""
    from ptools.cli.completions import SHELLS, completion_script

    if shell not in SHELLS:
        raise PtoolsError(f"completions: unsupported shell {shell!r}", hint="use bash, zsh or fish")
    typer.echo(completion_script(shell), nl=False)


_register()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="ptools")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
