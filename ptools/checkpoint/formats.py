"""Registers every checkpoint reader with `ptools.checkpoint.base`, most specific sniffers first.

Each format module exposes `sniff(path, head) -> bool` and `open(path) -> CheckpointReader`; add a
line here when a format lands.
"""

from __future__ import annotations

from ptools.checkpoint.base import register_format

# Formats register here, e.g.:
#   from ptools.checkpoint import safetensors_reader
#   register_format("safetensors", safetensors_reader.sniff, safetensors_reader.open_reader)
_ = register_format

from ptools.checkpoint import tf_bundle  # noqa: E402  (numpy only; data shards are opened lazily)

register_format("tf-bundle", tf_bundle.sniff, tf_bundle.open_reader)
