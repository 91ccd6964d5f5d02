"""The picture measures of benchmarks/train_quality.py on constructed images with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import train_quality as tq


def _checker(n: int = 1, size: int = 16, amp: float = 0.5) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    sign = ((yy + xx) % 2) * 2 - 1
    return (amp * sign).float().expand(n, 3, size, size).clone()


def test_a_checkerboard_scores_its_amplitude_and_a_smooth_fill_or_ramp_scores_zero():
    inner = (slice(None), slice(0, 15), slice(0, 15))  # the replicated last row/column has no lattice
    assert torch.allclose(tq.checkerboard(_checker(amp=0.5))[inner], torch.tensor(0.5))
    flat = torch.full((1, 3, 16, 16), 0.3)
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16) * 0.7 + torch.linspace(-0.5, 0.5, 16).view(
        1, 1, 16, 1
    )
    assert tq.checkerboard(flat).abs().max() < 1e-6
    assert tq.checkerboard(ramp).abs().max() < 1e-5
    # high-frequency energy: high on the lattice, ~0 on a flat fill, small on a smooth ramp
    assert tq.high_freq(_checker(amp=0.5))[0, 4:12, 4:12].mean() > 0.4
    assert tq.high_freq(flat).abs().max() < 1e-6
    assert tq.high_freq(ramp)[0, 2:14, 2:14].max() < 1e-5


def test_colour_speckle_scores_higher_than_a_smooth_colour_fill_on_every_speckle_measure():
    torch.manual_seed(0)
    smooth = torch.tensor([0.6, 0.2, -0.1]).view(1, 3, 1, 1).expand(1, 3, 16, 16).clone()
    speckle = smooth + 0.4 * torch.randn(1, 3, 16, 16)  # independent per channel: colour noise
    region = torch.ones(1, 16, 16, dtype=torch.bool)
    for measure in (tq.checkerboard, tq.high_freq):
        assert tq.region_mean(measure(speckle), region) > 5 * tq.region_mean(measure(smooth), region) + 0.05
    assert tq.region_mean(tq.rgb_spread(speckle), region) > tq.region_mean(tq.rgb_spread(smooth), region)


def test_rgb_spread_is_zero_for_grey_and_max_minus_min_for_colour():
    grey = torch.full((2, 3, 4, 4), 0.25)
    assert tq.rgb_spread(grey).abs().max() == 0
    colour = torch.tensor([0.5, -0.5, 0.1]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert torch.allclose(tq.rgb_spread(colour), torch.tensor(1.0))


def test_the_ring_is_the_two_pixels_outside_the_mask():
    mask = torch.zeros(1, 11, 11, dtype=torch.bool)
    mask[0, 5, 5] = True
    band = tq.ring(mask)
    assert int(band.sum()) == 24 and not (band & mask).any()  # 5 x 5 square minus its centre
    assert band[0, 3, 3] and band[0, 7, 7] and not band[0, 2, 5]


def test_ring_change_is_counted_and_a_change_inside_the_mask_is_not():
    size = 20
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, 8:12, 8:12] = True
    band = tq.ring(mask)
    x_n = torch.zeros(1, 3, size, size)
    x_d = x_n.clone()
    x_d[:, :, mask[0]] = 0.8
    exact = x_d.clone()
    halo = x_d.clone()
    halo[:, :, band[0]] = 0.5
    half = x_d.clone()
    rows = band[0].nonzero()
    top = rows[rows[:, 0] < 10]  # the upper half of the ring
    half[:, :, top[:, 0], top[:, 1]] = 0.5
    restored_exact = x_n.clone()
    m_exact = tq.picture_measures(x_n, x_d, mask, exact, restored_exact)
    assert m_exact["ring_deface"].item() == 0 and m_exact["ring_restore"].item() == 0
    assert m_exact["iou"].item() == 1 and m_exact["restore_iou"].item() == 1
    assert m_exact["l1_restored"].item() == 0 and m_exact["off_deface"].item() == 0
    assert tq.picture_measures(x_n, x_d, mask, halo, x_n)["ring_deface"].item() == 1
    frac = tq.picture_measures(x_n, x_d, mask, half, x_n)["ring_deface"].item()
    assert frac == pytest.approx(len(top) / int(band.sum()))
    # a restoration that paints the ring (and leaves the defect) is counted on its own side
    bad_restore = x_d.clone()
    bad_restore[:, :, band[0]] = -0.5
    m = tq.picture_measures(x_n, x_d, mask, exact, bad_restore)
    assert m["ring_restore"].item() == 1 and m["ring_deface"].item() == 0
    assert m["l1_restored"].item() > m["l1_defect"].item()


def test_far_field_damage_and_a_speckled_defect_show_in_the_measures():
    size = 24
    torch.manual_seed(1)
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, 6:18, 6:18] = True
    x_n = 0.2 * torch.randn(1, 3, size, size).mean(1, keepdim=True).expand(1, 3, size, size).clone()
    x_d = x_n.clone()
    x_d[:, :, mask[0]] -= 0.3  # a darkening: no colour
    speckled = x_d + torch.where(mask, 1.0, 0.0) * _checker(size=size, amp=0.3) * torch.tensor([1.0, -1.0, 0.5]).view(
        1, 3, 1, 1
    )
    damaged = x_d.clone()
    damaged[:, :, 0:3, :] += 0.2  # far from the mask
    clean = tq.picture_measures(x_n, x_d, mask, x_d, x_n)
    spk = tq.picture_measures(x_n, x_d, mask, speckled, x_n)
    dmg = tq.picture_measures(x_n, x_d, mask, damaged, x_n)
    assert clean["checker_gen"].item() == pytest.approx(clean["checker_real"].item())
    assert spk["checker_gen"].item() > 3 * spk["checker_real"].item()
    assert spk["spread_gen"].item() > 0.5 > spk["spread_real"].item() + 0.4
    assert clean["off_deface"].item() == 0 and dmg["off_deface"].item() > 0.02


def test_region_mean_is_nan_for_an_empty_region():
    values = torch.ones(2, 4, 4)
    region = torch.zeros(2, 4, 4, dtype=torch.bool)
    region[0, 0, 0] = True
    out = tq.region_mean(values, region)
    assert out[0].item() == 1 and math.isnan(out[1].item())


def test_restore_cover_is_the_map_averaged_over_the_mask_only():
    x = torch.zeros(1, 3, 8, 8)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:4, 2:6] = True  # 8 pixels
    restore_map = torch.zeros(1, 8, 8)
    restore_map[0, 2, 2:6] = 1.0  # half the defect opened
    restore_map[0, 6:, :] = 1.0  # and far from it, which does not count
    out = tq.picture_measures(x, x, mask, x, x, restore_map)
    assert out["cover_restore"].item() == pytest.approx(0.5)
    assert "cover_restore" not in tq.picture_measures(x, x, mask, x, x)
