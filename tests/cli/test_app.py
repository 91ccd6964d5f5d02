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
