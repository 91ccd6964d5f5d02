"""Torch layers with TensorFlow's SAME/VALID padding, and weight helpers (init, spectral norm)."""

from ptools.nn.conv2d_same import Conv2dSame, ConvTranspose2dSame
from ptools.nn.keras_rnn import KerasRNN
from ptools.nn.pool2d_same import AvgPool2dSame, MaxPool2dSame
from ptools.nn.weights import add_spectral_norm, has_spectral_norm, init_weights

__all__ = [
    "AvgPool2dSame",
    "Conv2dSame",
    "ConvTranspose2dSame",
    "KerasRNN",
    "MaxPool2dSame",
    "add_spectral_norm",
    "has_spectral_norm",
    "init_weights",
]
