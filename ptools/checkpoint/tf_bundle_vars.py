"""Roles of TensorFlow checkpoint keys: model weights, optimizer slots, counters and EMA shadows."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ptools.checkpoint.tf_bundle import TFBundleReader, VariableInfo


def classify(reader: TFBundleReader) -> list[VariableInfo]:
    from ptools.checkpoint.tf_bundle import VariableInfo

    return [
        VariableInfo(key=k, name=k, role="weight", shape=tuple(reader.entry(k).shape), dtype=reader.dtype_of(k), path=k)
        for k in reader.keys()
    ]


def select(variables: list[VariableInfo], include_optimizer: bool, ema: bool) -> list[VariableInfo]:
    return [v for v in variables if include_optimizer or v.role == "weight"]
