"""The `ptools` Typer app: global options, error handling, and the command registry.

Each command lives in its own module and imports torch (or anything heavy) inside its function body,
so `ptools --help`, shell completion and the light commands start fast.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from typing import Annotated, Any

import click
import typer

from ptools import __version__
from ptools.cli._common import SHELL_VALUES, complete_from
from ptools.cli._group import SuggestOnceGroup
from ptools.errors import ExitCode, PtoolsError, printable

# Plain Click help and usage errors. With rich installed, Typer 0.20 escapes "[default: 1]" as
# "\[default: 1]" even in plain help, and imports rich for every --help; our tables use rich directly.
typer.core.HAS_RICH = False

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a check found problems (shape drift, keys missing, unsafe pickle, "
    "dataset defects, files differ); 2 usage or bad input (file missing, corrupt, unsupported); "
    "130 interrupted."
)

_state = {"debug": False, "json": False}
# Click >= 8.2 raises this UsageError to print a group's help when it is called without arguments.
_NO_ARGS_HELP: type[Exception] = getattr(click.exceptions, "NoArgsIsHelpError", ())  # type: ignore[assignment]


class PtoolsGroup(SuggestOnceGroup):
    """Turns PtoolsError and Ctrl-C into one stderr line and the documented exit code.

    With --json the same error is also a `ptools.error/1` document on stdout, so `| jq` sees it.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = _global_flags(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PtoolsError as e:
            if _state["debug"]:
                traceback.print_exc()
            _print_error(e.message, e.hint)
            _json_error(e.message, e.hint, e.exit_code)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _print_error("interrupted")
            _json_error("interrupted", None, ExitCode.INTERRUPTED)
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except BrokenPipeError:
            # `ptools ... | head`: the reader has all it wanted. Not an error, and nothing more can be said;
            # the exit code is still the report's verdict (1 when it found problems).
            _silence_stdout()
            raise typer.Exit(_verdict()) from None
        except _NO_ARGS_HELP:  # `ptools dataset` alone: Click shows the group's help, as it should
            raise
        except click.UsageError as e:
            # One line like every other rejection (Click's own is four: usage, "Try", blank, error).
            command = e.ctx.command_path.partition(" ")[2] if e.ctx else ""
            where = f"{command}: " if command else ""
            hint = f"see `{e.ctx.command_path} --help`" if e.ctx else None
            _print_error(where + e.format_message(), hint)
            _json_error(e.format_message(), None, e.exit_code)
            raise typer.Exit(e.exit_code) from None
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # a bug in ptools or a library: still one line unless --debug
            if _state["debug"]:
                raise
            hint = "rerun with --debug for a traceback"
            _print_error(f"internal error: {type(e).__name__}: {e}", hint=hint)
            _json_error(f"internal error: {type(e).__name__}: {e}", hint, ExitCode.USAGE)
            raise typer.Exit(ExitCode.USAGE) from None


def _global_flags(args: list[str]) -> list[str]:
    """`--debug` is accepted anywhere before `--` (the error hint says "rerun with --debug", and people add it
    at the end); it is moved to the root. `--json` is noted so that errors become JSON documents too."""
    end = args.index("--") if "--" in args else len(args)
    head, tail = args[:end], args[end:]
    _state["json"] = "--json" in head
    if "--debug" in head:
        head = ["--debug", *(a for a in head if a != "--debug")]
        _state["debug"] = True
    return head + tail


def _print_error(message: str, hint: str | None = None) -> None:
    line = "ptools: error: " + printable(message) + (f" (hint: {printable(hint)})" if hint else "")
    click.echo(line, err=True)


def _json_error(message: str, hint: str | None, exit_code: int) -> None:
    """With --json, the error as a document on stdout as well (scripts parse stdout, people read stderr)."""
    if not _state["json"]:
        return
    from ptools.cli._output import emit_json

    try:
        emit_json("error", {"file": error_file(message), "error": message, "hint": hint, "exit_code": int(exit_code)})
    except BrokenPipeError:
        _silence_stdout()


def error_file(message: str) -> str | None:
    """The file an error is about: errors name it first ("model.pt: no such file"), by convention."""
    head, sep, _ = message.partition(": ")
    if not sep or not head or head.startswith("-") or " " in head.strip("'\"") or head.startswith("internal error"):
        return None
    return head


def _verdict() -> int:
    from ptools.cli._output import verdict_exit_code

    return verdict_exit_code()


def _silence_stdout() -> None:
    from ptools.cli._output import silence_stdout

    silence_stdout()


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
    warnings.showwarning = _warning_line
    # Names from the file system may hold bytes that are not UTF-8 (lone surrogates in Python): print
    # them escaped (caf\udce9.pt) instead of failing half-way through a report.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _warning_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Library warnings (Pillow, h5py, torch) on one line, like our errors, not Python's two (file:line + source)."""
    click.echo(f"ptools: warning: {category.__name__}: " + printable(" ".join(str(message).split())), err=True)


def _register() -> None:
    # Imported here, not at the top, only to keep the registry in one readable place; these modules
    # import nothing heavy at module level.
    from ptools.cli import check_conv, convert, dataset, generate, inspect, port, train

    app.command("inspect", help=inspect.HELP)(inspect.inspect_command)
    app.command("convert", help=convert.HELP)(convert.convert_command)
    app.command("port", help=port.HELP)(port.port_command)
    app.command("check-conv", help=check_conv.HELP)(check_conv.check_conv_command)
    app.add_typer(dataset.app, name="dataset")
    app.command("train", help=train.HELP)(train.train_command)
    app.command("generate", help=generate.HELP)(generate.generate_command)
    app.command("completions")(_completions_command)


def _completions_command(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", autocompletion=complete_from(*SHELL_VALUES))],
) -> None:
    """Print the shell completion script (the files in completions/ are this output)."""
    from ptools.cli.completions import SHELLS, completion_script

    if shell not in SHELLS:
        raise PtoolsError(f"completions: unsupported shell {shell!r}", hint="use bash, zsh or fish")
    typer.echo(completion_script(shell), nl=False)


_register()


def main() -> None:
    """Console-script entry point."""
    from ptools.cli._output import quiet_stderr_when_closed

    quiet_stderr_when_closed()  # a reader that leaves stderr ends the progress, never the work
    try:
        app(prog_name="ptools")
    except BrokenPipeError:  # the pipe closed while Click itself was printing (help, usage errors)
        _silence_stdout()
        sys.exit(_verdict())
    except SystemExit:
        try:  # what is still buffered is flushed now, while a closed pipe can still be told apart
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(_verdict())
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
