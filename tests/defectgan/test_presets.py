"""`--preset`: named overrides that make valid configs, and a clear error for unknown names."""

from __future__ import annotations

import pytest

from ptools.cli import app
from ptools.defectgan.config import DefectGANConfig, replace_fields
from ptools.defectgan.presets import PRESETS, preset_fields
from ptools.errors import PtoolsError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_config(name):
    config = replace_fields(DefectGANConfig(), preset_fields(name), name).validate()
    for key, value in PRESETS[name].items():
        assert getattr(config, key) == value


def test_paper_preset_is_the_defaults():
    assert replace_fields(DefectGANConfig(), preset_fields("paper"), "paper") == DefectGANConfig()


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(PtoolsError, match="no such preset") as e:
        preset_fields("huge")
    assert "small" in e.value.hint


def test_cli_rejects_unknown_preset_before_any_work(runner, tmp_path):
    result = runner.invoke(app, ["train", "--preset", "huge", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "no such preset" in result.output
    assert not (tmp_path / "run").exists()
