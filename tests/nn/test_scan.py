"""The model scan: verdicts checked against the values of TF-exact layers, loading specs, failures."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from ptools.errors import PtoolsError
from ptools.nn import AvgPool2dSame, Conv2dSame, ConvTranspose2dSame, MaxPool2dSame
from ptools.nn.scan import load_model, scan_model
from tests.nn import models


def probes(size: tuple[int, int]) -> list[torch.Tensor]:
    """Random data plus rising and falling ramps, so a shifted window changes some output."""
    torch.manual_seed(0)
    ramp = torch.arange(size[0] * size[1], dtype=torch.float64).view(1, 1, *size)
    return [torch.randn(1, 1, *size, dtype=torch.float64), ramp, -ramp]


def same_values(layer: nn.Module, reference: nn.Module, size: tuple[int, int]) -> bool:
    for x in probes(size):
        try:
            got = layer(x)
        except RuntimeError:
            return False
        want = reference(x)
        if got.shape != want.shape or not torch.allclose(got, want):
            return False
    return True


def verdict(layer: nn.Module, size: tuple[int, int]) -> bool:
    result = scan_model(nn.Sequential(layer), (1, *size))
    if result.error:
        return False
    assert len(result.layers) == 1
    return result.layers[0].ok


SIZES = [(6, 6), (7, 5)]


def test_conv_verdicts_agree_with_values():
    for size, k, s, p in itertools.product(SIZES, (1, 2, 3, 4), (1, 2, 3), (0, 1, 2)):
        layer = nn.Conv2d(1, 1, k, s, p).double()
        reference = Conv2dSame(1, 1, k, s).double()
        reference.load_state_dict(layer.state_dict())
        assert verdict(layer, size) == same_values(layer, reference, size), (size, k, s, p)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_verdicts_agree_with_values(kind):
    for size, k, s, p, ceil_mode, include in itertools.product(
        SIZES, (2, 3), (1, 2, 3), (0, 1), (False, True), (True, False)
    ):
        if 2 * p > k or (kind == "max" and not include):
            continue
        if kind == "max":
            layer, reference = nn.MaxPool2d(k, s, p, ceil_mode=ceil_mode), MaxPool2dSame(k, s)
        else:
            layer = nn.AvgPool2d(k, s, p, ceil_mode=ceil_mode, count_include_pad=include)
            reference = AvgPool2dSame(k, s)
        assert verdict(layer, size) == same_values(layer, reference, size), (size, k, s, p, ceil_mode, include)


def test_transpose_verdicts_agree_with_values():
    for size, k, s, p in itertools.product(SIZES, (1, 2, 3, 4), (1, 2, 3), (0, 1)):
        for op in range(s):
            layer = nn.ConvTranspose2d(1, 1, k, s, p, op).double()
            reference = ConvTranspose2dSame(1, 1, k, s).double()
            reference.load_state_dict(layer.state_dict())
            assert verdict(layer, size) == same_values(layer, reference, size), (size, k, s, p, op)


def test_tf_same_model_is_clean():
    result = scan_model(models.tf_same_model(), (3, 15, 16))
    assert result.ok and result.error is None
    assert len(result.layers) == 7
    assert all(layer.pytorch_output == layer.tf_output for layer in result.layers)


def test_drifting_model_problems():
    result = scan_model(models.drifting_model(), (3, 16, 16))
    assert [layer.ok for layer in result.layers] == [False, False, False]
    shifted, size, transposed = (layer.problem for layer in result.layers)
    assert "shifted" in shifted and "size 9x9" in size and "shifted" in transposed
    assert result.layers[0].tf_padding == ((0, 1), (0, 1))


def test_failed_forward_keeps_layers_seen():
    result = scan_model(models.Broken(), (3, 15, 16))
    assert result.error and "forward pass failed" in result.error
    assert not result.layers[0].ok and not result.ok


def test_expect_valid():
    assert scan_model(nn.Sequential(nn.Conv2d(3, 3, 3, 2)), (3, 9, 9), "valid").ok
    result = scan_model(nn.Sequential(Conv2dSame(3, 3, 3, 2)), (3, 9, 9), "valid")
    assert not result.ok and "expected VALID" in result.layers[0].problem
    assert scan_model(nn.Sequential(Conv2dSame(3, 3, 3, 2, padding="valid")), (3, 9, 9), "valid").ok


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_padding_mode_and_string_padding():
    reflect = nn.Conv2d(1, 1, 3, 1, 1, padding_mode="reflect")
    assert "reflect" in scan_model(nn.Sequential(reflect), (1, 8, 8)).layers[0].problem
    assert scan_model(nn.Sequential(nn.Conv2d(1, 1, 4, padding="same")), (1, 8, 8)).ok


def test_custom_forward_is_checked_by_size_only():
    class Padded(nn.Conv2d):
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (0, 1, 0, 1)))

    layer = scan_model(nn.Sequential(Padded(1, 1, 3, 2)), (1, 8, 8)).layers[0]
    assert layer.ok and layer.pytorch_padding is None


def test_shared_layer_gets_one_row_per_call():
    conv = nn.Conv2d(1, 1, 3, 1, 1)
    result = scan_model(nn.Sequential(conv, nn.ReLU(), conv), (1, 5, 5))
    assert [layer.name for layer in result.layers] == ["0", "0#2"]


def test_load_model_specs(tmp_path):
    assert isinstance(load_model("tests.nn.models:tf_same_model"), nn.Module)
    assert isinstance(load_model("tests.nn.models:Broken"), nn.Module)
    path = tmp_path / "net.py"
    path.write_text("from torch import nn\nnet = nn.Sequential(nn.Conv2d(1, 1, 3))\n")
    assert isinstance(load_model(f"{path}:net"), nn.Sequential)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.nn.models", "expected package.module:Factory"),
        ("no_such_module_xyz:f", "cannot import"),
        ("tests.nn.models:missing", "no attribute"),
        ("tests.nn.models:not_a_module", "not a torch nn.Module"),
        ("missing_file.py:f", "does not exist"),
    ],
)
def test_load_model_errors(spec, message):
    with pytest.raises(PtoolsError, match=message):
        load_model(spec)


def test_zero_pad_then_conv_verdicts_agree_with_values():
    """A pad layer and the conv after it are one conv: the scan's verdict must agree with the values."""
    for size, k, s, (t, b), (le, r), p in itertools.product(
        SIZES, (2, 3, 4), (1, 2), ((0, 0), (0, 1), (1, 0), (1, 1)), ((0, 1), (1, 1)), (0, 1)
    ):
        conv = nn.Conv2d(1, 1, k, s, p).double()
        layer = nn.Sequential(nn.ZeroPad2d((le, r, t, b)), conv)
        reference = Conv2dSame(1, 1, k, s).double()
        reference.load_state_dict(conv.state_dict())
        result = scan_model(layer, (1, *size))
        assert len(result.layers) == 1 and result.layers[0].type == "ZeroPad2d+Conv2d"
        verdict_ok = result.layers[0].ok and not result.error
        assert verdict_ok == same_values(layer, reference, size), (size, k, s, (t, b, le, r), p)


@pytest.mark.parametrize("size", [64, 63, 224, 299])
def test_the_recipe_check_conv_recommends_passes_the_scan(size):
    """`check-conv -i N -k 3 -s 2` recommends nn.ZeroPad2d(pads) + nn.Conv2d(padding=0) where padding= can't."""
    from ptools import padding as tfpad

    (top, bottom), (left, right) = tfpad.conv2d_window(size, 3, 2).padding
    model = nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), nn.Conv2d(3, 4, 3, 2, padding=0))
    result = scan_model(model, (3, size, size))
    assert result.ok, result.layers
    (layer,) = result.layers
    assert layer.input == (size, size) and layer.pytorch_padding == layer.tf_padding
    assert layer.name == "0 + 1" and layer.pad_layer == "0"


def test_pad_layers_that_do_not_pad_with_zeros_are_flagged():
    for pad, word in (
        (nn.ReflectionPad2d((0, 1, 0, 1)), "reflect"),
        (nn.ReplicationPad2d((0, 1, 0, 1)), "replicate"),
        (nn.ConstantPad2d((0, 1, 0, 1), 1.0), "pads with 1"),
    ):
        result = scan_model(nn.Sequential(pad, nn.Conv2d(1, 1, 3, 2)), (1, 8, 8))
        (layer,) = result.layers
        assert not layer.ok and word in layer.problem
    # ConstantPad2d(0) is a zero pad.
    assert scan_model(nn.Sequential(nn.ConstantPad2d((0, 1, 0, 1), 0.0), nn.Conv2d(1, 1, 3, 2)), (1, 8, 8)).ok


def test_pad_is_not_folded_into_a_conv_that_does_not_take_its_output():
    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pad = nn.ZeroPad2d((0, 1, 0, 1))
            self.conv = nn.Conv2d(1, 1, 3, 2)  # takes x, not the padded tensor

        def forward(self, x):
            self.pad(x)
            return self.conv(x)

    (layer,) = scan_model(Skip(), (1, 8, 8)).layers
    assert layer.pad_layer is None and layer.input == (8, 8) and not layer.ok
    # A pool after a zero pad is not a TF SAME pool (zeros enter the max/average): judged on its own.
    (pool,) = scan_model(nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(3, 2)), (1, 8, 8)).layers
    assert pool.pad_layer is None and pool.input == (10, 10)
