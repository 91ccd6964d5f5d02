"""Settings notes for weightless Keras layers: the torch/ptools.nn layer that reproduces each one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptools.convert.settings import layer_settings


def _one(cls: str, cfg: dict, keras3: bool = False) -> tuple[object, str]:
    notes = layer_settings("x", cls, cfg, keras3)
    assert len(notes) == 1, notes
    return notes[0].value, notes[0].message


def test_same_pooling_points_at_the_ptools_layers() -> None:
    _, msg = _one("MaxPooling2D", {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"})
    assert msg.startswith("ptools.nn.MaxPool2dSame((3, 3), (2, 2))")
    _, msg = _one("AveragePooling2D", {"pool_size": [2, 2], "padding": "same"})
    assert msg.startswith("ptools.nn.AvgPool2dSame((2, 2), (2, 2))") and "real cells" in msg
    assert layer_settings("x", "MaxPooling2D", {"pool_size": [2, 2], "padding": "valid"}, False) == []


def test_zero_padding_order_reproduces_keras() -> None:
    value, msg = _one("ZeroPadding2D", {"padding": [[1, 2], [3, 4]]})
    assert value == [[1, 2], [3, 4]] and msg.startswith("nn.ZeroPad2d((3, 4, 1, 2))")
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(1, 2, 3, 5)  # NCHW
    keras = np.pad(x, ((0, 0), (0, 0), (1, 2), (3, 4)))  # ((top, bottom), (left, right)) on H, W
    torch_out = torch.nn.ZeroPad2d((3, 4, 1, 2))(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(torch_out, keras)


@pytest.mark.parametrize(
    ("cls", "cfg", "keras3", "expect"),
    [
        ("UpSampling2D", {"size": [2, 2], "interpolation": "bilinear"}, False, "align_corners=False"),
        ("UpSampling2D", {"size": [2, 3]}, False, "nn.Upsample(scale_factor=(2, 3), mode='nearest')"),
        ("LeakyReLU", {"alpha": 0.3}, False, "nn.LeakyReLU(negative_slope=0.3)"),
        ("LeakyReLU", {"negative_slope": 0.2}, True, "nn.LeakyReLU(negative_slope=0.2)"),
        ("Activation", {"activation": "hard_sigmoid"}, False, "clip(0.2 * x + 0.5, 0, 1)"),
        ("Activation", {"activation": "hard_sigmoid"}, True, "nn.Hardsigmoid()"),
        ("Dense", {"activation": "swish"}, True, "after this layer: nn.SiLU()"),
        ("ReLU", {"max_value": 6.0}, False, "nn.ReLU6()"),
        ("Cropping2D", {"cropping": [[1, 0], [2, 3]]}, False, "x[:, :, 1:, 2:-3]"),
    ],
)
def test_layer_settings(cls: str, cfg: dict, keras3: bool, expect: str) -> None:
    _, msg = _one(cls, cfg, keras3)
    assert expect in msg


def test_linear_activation_needs_nothing() -> None:
    assert layer_settings("d", "Dense", {"activation": "linear", "units": 3}, False) == []
