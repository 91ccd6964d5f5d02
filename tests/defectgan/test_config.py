"""The training config: defaults, TOML and flag overrides, validation, resume field diffs."""

from __future__ import annotations

import pytest

from ptools.defectgan.config import DefectGANConfig, diff_fields, load_toml, replace_fields, to_toml
from ptools.errors import PtoolsError


def test_defaults_are_the_papers():
    c = DefectGANConfig()
    # 500k iterations at 5 D updates per G update = 100k steps (a step is one G update)
    assert (c.image_size, c.batch_size, c.d_steps, c.steps * c.d_steps) == (128, 4, 5, 500_000)
    assert (c.lr_g, c.lr_d, c.lr_end, c.beta1, c.beta2) == (2e-4, 2e-4, 1e-6, 0.5, 0.999)
    assert (c.w_cls_d, c.w_cls_g, c.w_cycle, c.w_map_cycle, c.w_sparsity, c.w_gp) == (2, 5, 5, 5, 1, 10)
    assert c.spectral_norm and c.noise
    assert (c.d_layers, c.d_width, c.d_max_width) == (6, 64, 2048)


def test_toml_then_flags_override(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('batch-size = 8\nlr_schedule = "cosine"\n[defectgan]\nw_gp = 5\n')
    c = replace_fields(DefectGANConfig(), load_toml(path), str(path))
    assert (c.batch_size, c.lr_schedule, c.w_gp) == (8, "cosine", 5.0)
    c = replace_fields(c, {"batch_size": 2}, "flags")
    assert c.batch_size == 2 and c.w_gp == 5.0


def test_toml_roundtrip(tmp_path):
    c = DefectGANConfig(labels=["crack", 'we"ird'], lr_end=1e-6, compile=True)
    path = tmp_path / "c.toml"
    path.write_text(to_toml(c))
    assert DefectGANConfig.from_dict(load_toml(path)) == c


@pytest.mark.parametrize(
    ("overrides", "word"),
    [({"nope": 1}, "nope"), ({"batch_size": "4"}, "batch_size"), ({"spectral_norm": 1}, "spectral_norm")],
)
def test_unknown_keys_and_wrong_types_are_errors(overrides, word):
    with pytest.raises(PtoolsError, match=word):
        replace_fields(DefectGANConfig(), overrides, "test")


@pytest.mark.parametrize(
    ("overrides", "word"),
    [
        ({"image_size": 100}, "2\\*\\*d_layers"),
        ({"amp": "fp8"}, "amp"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"batch_size": 0}, "batch_size"),
        ({"w_mask": -1.0}, "w_mask"),
        ({"ema": 1.0}, "ema"),
        ({"threads": -2}, "threads"),
    ],
)
def test_validate_names_the_field(overrides, word):
    with pytest.raises(PtoolsError, match=word):
        DefectGANConfig(**overrides).validate()


def test_bad_toml_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("batch_size = = 3")
    with pytest.raises(PtoolsError, match="not a valid TOML"):
        load_toml(path)


def test_diff_ignores_runtime_fields_only():
    saved = DefectGANConfig(labels=["a"]).to_dict()
    assert diff_fields(saved, DefectGANConfig(labels=["a"], steps=7, workers=0, keep=9)) == []
    diffs = diff_fields(saved, DefectGANConfig(labels=["a"], batch_size=8, g_width=32))
    assert [d.split(":")[0] for d in diffs] == ["batch_size", "g_width"]


def test_a_checkpoint_from_before_a_new_field_resumes_with_its_default():
    saved = DefectGANConfig(labels=["a"]).to_dict()
    for newer in ("g_upsample", "d_spectral_norm", "w_cls_gp", "w_fg"):
        saved.pop(newer)
    assert diff_fields(saved, DefectGANConfig(labels=["a"])) == []
    assert diff_fields(saved, DefectGANConfig(labels=["a"], g_upsample="nearest")) == [
        "g_upsample: checkpoint 'transposed' != now 'nearest'"
    ]
    assert DefectGANConfig.from_dict(saved).g_upsample == "transposed"


def test_threads_minus_one_takes_the_cores_idle_at_the_start(monkeypatch):
    import os

    from ptools.defectgan import config as cfg

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for idle, expected in ((2.0, 2), (1.6, 2), (1.4, 1), (0.3, 1), (0.0, 1), (7.5, 2)):
        monkeypatch.setattr(cfg, "_idle_cores", lambda idle=idle: idle)
        assert cfg.cpu_threads(-1) == expected, idle
    assert cfg.cpu_threads(3) == 3  # an explicit count is kept, whatever the load
    assert DefectGANConfig(labels=["a"], threads=-1).validate().threads == -1
    with pytest.raises(Exception, match="threads must be -1"):
        DefectGANConfig(labels=["a"], threads=-2).validate()


def test_idle_cores_are_measured_between_zero_and_the_core_count():
    import os

    from ptools.defectgan.config import _idle_cores

    idle = _idle_cores(0.05)
    assert 0.0 <= idle <= (os.cpu_count() or 1) + 1e-9
