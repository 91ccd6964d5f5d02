"""The distribution's name: install hints must name this project's package, not PyPI's unrelated `ptools`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import ptools
from ptools.errors import PtoolsError

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_distribution_name_is_not_the_taken_ptools_and_hints_use_it():
    project = _pyproject()["project"]
    assert project["name"] == ptools.DIST_NAME != "ptools"
    assert project["scripts"] == {"ptools": "ptools.cli:main"}  # the command stays `ptools`
    for extra in ("keras", "tensorboard", "tf"):
        assert extra in project["optional-dependencies"]
        assert f"'{ptools.DIST_NAME}[{extra}]'" in ptools.install_hint(extra)


def test_no_install_line_names_the_wrong_package():
    """`pip install 'ptools[keras]'` would install a 2013 process-info package from PyPI."""
    wrong = re.compile(r"""pip install\s+['"]?ptools(\[|['"\s]|$)""", re.M)
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("ptools/**/*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in files if wrong.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_missing_h5py_names_the_file_and_this_projects_extra(tmp_path, monkeypatch):
    from ptools.checkpoint.keras import h5 as keras_h5

    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` raises ImportError
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(PtoolsError) as e:
        keras_h5.KerasReader(path)
    assert str(path) in e.value.message and "h5py" in e.value.message
    assert f"{ptools.DIST_NAME}[keras]" in (e.value.hint or "")
