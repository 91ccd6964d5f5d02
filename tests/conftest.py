"""Shared fixtures: the CLI runner, and a helper to run ptools in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run_ptools(*args: str, check_modules: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m ptools ARGS` in a new process; with check_modules, the last stdout line is the
    sorted list of heavy modules (torch, torchvision) imported by the end of the run."""
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['ptools', *{list(args)!r}]\n"
        "try:\n"
        "    runpy.run_module('ptools', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "else:\n"
        "    code = 0\n"
    )
    if check_modules:
        code += (
            "heavy = sorted(m for m in ('torch', 'torchvision') if m in sys.modules)\n"
            "print('HEAVY=' + ','.join(heavy))\n"
        )
    code += "sys.exit(code)\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder that takes no new file. chmod 0555 stops a normal user; root writes through permission bits,
    so as root the read-only sysfs (/sys) stands in. Skipped only where neither refuses a write."""
    import os
    import tempfile
    from pathlib import Path

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    candidates = [folder, Path("/sys")]
    try:
        for candidate in candidates:
            try:
                fd, name = tempfile.mkstemp(dir=candidate)
            except OSError:
                yield candidate
                return
            os.close(fd)
            os.unlink(name)
        pytest.skip("no folder here refuses writes (root without a read-only /sys)")
    finally:
        folder.chmod(0o755)
