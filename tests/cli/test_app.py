"""The app's conventions: help, version, error lines and exit codes, lazy imports, completions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptools import __version__
from ptools.cli import app
from ptools.cli.completions import SHELLS, completion_script
from tests.conftest import run_ptools

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command_and_exit_codes(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("inspect", "convert", "check-conv", "dataset", "train", "generate"):
        assert name in result.output
    assert "130 interrupted" in result.output


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"ptools {__version__}"


def test_ptools_error_is_one_line_exit_2_without_traceback():
    proc = run_ptools("completions", "tcsh")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ptools: error: ")
    assert "Traceback" not in proc.stderr


def test_unknown_command_is_usage_error(runner):
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    "args", [["--help"], ["check-conv", "--input", "224", "--kernel", "3", "--stride", "2"], ["check-conv", "-s", "2"]]
)
def test_light_paths_do_not_import_torch(args):
    proc = run_ptools(*args, check_modules=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout[-500:]


def test_completion_request_does_not_import_torch():
    import os
    import subprocess
    import sys

    env = dict(os.environ, _PTOOLS_COMPLETE="complete_bash", COMP_WORDS="ptools che", COMP_CWORD="1")
    code = (
        "import sys\n"
        "from ptools.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "check-conv" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_completion_files_are_current(shell):
    committed = (ROOT / "completions" / SHELLS[shell]).read_text()
    assert committed == completion_script(shell), (
        f"completions/{SHELLS[shell]} is stale: run `ptools completions {shell} > completions/{SHELLS[shell]}`"
    )


def test_completions_rejects_unknown_shell(runner):
    result = runner.invoke(app, ["completions", "tcsh"])
    assert result.exit_code == 2


def test_help_shows_defaults_without_markup_escapes(runner):
    result = runner.invoke(app, ["check-conv", "--help"])
    assert result.exit_code == 0
    assert "[default: " in result.output
    assert "\\[" not in result.output


def test_help_shows_argument_descriptions(runner):
    result = runner.invoke(app, ["completions", "--help"])
    assert result.exit_code == 0
    assert "bash, zsh or fish." in result.output


def _commands(group=None, path=()):
    """(command path, click command) for every leaf command of the app."""
    import click
    from typer.main import get_command

    group = group or get_command(app)
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def test_every_json_help_names_its_own_schema():
    """No "(schema ptools.<command>/1)" placeholder: each --json help names the tag its document carries
    (`ptools.<command path joined by dots>/1`, as emit_json writes it)."""
    seen = 0
    for path, cmd in _commands():
        for param in cmd.params:
            if "--json" in getattr(param, "opts", []):
                seen += 1
                assert f"(schema ptools.{'.'.join(path)}/1)" in param.help, (path, param.help)
    assert seen >= 9


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ptools train --preset ", ["paper", "small"]),
        ("ptools train --amp ", ["auto", "bf16", "fp16", "off"]),
        ("ptools train --amp f", ["fp16"]),
        ("ptools dataset check data --layout ", ["auto", "seed", "folders", "csv"]),
        ("ptools dataset preview data --layout s", ["seed"]),
        ("ptools train --device c", ["cpu", "cuda", *(f"cuda:{i}" for i in range(8))]),
        ("ptools generate ckpt --device m", ["mps"]),
        ("ptools completions ", ["bash", "zsh", "fish"]),
        ("ptools train --log t", ["tensorboard"]),
    ],
)
def test_option_values_complete(line, expected):
    """TAB after --preset, --amp, --layout, --device, `completions`: their values, without importing torch."""
    import os
    import subprocess
    import sys

    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    env = dict(os.environ, _PTOOLS_COMPLETE="complete_bash", COMP_WORDS=line, COMP_CWORD=str(cword))
    code = (
        "import sys\n"
        "from ptools.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    *values, heavy = proc.stdout.strip().splitlines()
    assert values == expected, proc.stderr
    assert heavy == "HEAVY="
