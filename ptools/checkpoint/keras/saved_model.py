"""The Keras model config of a tf_keras SavedModel folder, read from its keras_metadata.pb without TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ptools.errors import PtoolsError

MAX_METADATA_BYTES = 256 << 20  # a big model's metadata is a few MB; anything near this is not one


def untuple(obj: Any) -> Any:
    """tf_keras' metadata writes tuples as {"class_name": "__tuple__", "items": [...]}: plain lists."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("__tuple__", "TensorShape") and "items" in obj:
            return [untuple(v) for v in obj["items"]]
        return {k: untuple(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [untuple(v) for v in obj]
    return obj


def keras_metadata(folder: Path) -> tuple[dict[str, Any], str | None] | None:
    """(model config, keras_version) of the root object of `folder/keras_metadata.pb`; None without one.

    The file is a SavedMetadata proto: repeated SavedObject nodes (field 1), each with node_path (3) and the
    JSON metadata (5) Keras wrote for it; the root node's holds the model config."""
    from ptools.checkpoint.tf.proto import ProtoError, iter_fields

    meta_file = folder / "keras_metadata.pb"
    if not meta_file.is_file():
        return None
    size = meta_file.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise PtoolsError(f"{meta_file}: {size} bytes, too large for Keras metadata")
    root: dict[str, Any] | None = None
    try:
        for fnum, _, value in iter_fields(meta_file.read_bytes()):
            if fnum == 1 and isinstance(value, bytes):
                fields = {f: v for f, _, v in iter_fields(value)}
                if fields.get(3) == b"root" and isinstance(fields.get(5), bytes):
                    root = json.loads(fields[5])
    except (ProtoError, ValueError, IndexError, RecursionError) as e:
        raise PtoolsError(f"{meta_file}: corrupt Keras metadata ({e})") from None
    if not isinstance(root, dict):
        return None
    cfg = root.get("model_config") or {"class_name": root.get("class_name"), "config": root.get("config")}
    version = root.get("keras_version")
    return untuple(cfg), version if isinstance(version, str) else None
