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


def test_paper_preset_is_the_defaults_without_our_additions():
    paper = replace_fields(DefectGANConfig(), preset_fields("paper"), "paper")
    # The faithful reproduction: no mask or pair supervision, no weight averaging; all else the defaults.
    assert (paper.w_mask, paper.w_pair, paper.ema) == (0.0, 0.0, 0.0)
    assert replace_fields(paper, {"w_mask": 5.0, "w_pair": 10.0, "ema": 0.999}, "t") == DefectGANConfig()


def test_mask_and_pair_terms_are_on_by_default_and_in_small():
    small = replace_fields(DefectGANConfig(), preset_fields("small"), "small")
    for config in (DefectGANConfig(), small):
        assert config.w_mask > 0 and config.w_pair > 0
    assert DefectGANConfig().ema > 0 and small.ema == 0  # small: the averaged G measured worse (presets.py)


def test_paper_preset_keeps_the_papers_structure():
    paper = replace_fields(DefectGANConfig(), preset_fields("paper"), "paper")
    assert (paper.g_upsample, paper.w_cls_g, paper.d_spectral_norm, paper.w_cls_gp, paper.w_fg) == (
        "transposed",
        5.0,
        False,
        0.0,
        0.0,
    )
    assert (paper.lr_g, paper.lr_d) == (2e-4, 2e-4)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(PtoolsError, match="no such preset") as e:
        preset_fields("huge")
    assert "small" in e.value.hint


def test_cli_rejects_unknown_preset_before_any_work(runner, tmp_path):
    result = runner.invoke(app, ["train", "--preset", "huge", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "no such preset" in result.output
    assert not (tmp_path / "run").exists()
