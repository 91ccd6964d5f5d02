"""Sharded checkpoints as model hubs publish them: an `*.index.json` weight map over several files.

`model.safetensors.index.json` (or `pytorch_model.bin.index.json`) maps every tensor key to the shard
that holds it; the folder holding such an index is accepted too. The shards are opened with their own
readers (by content, like any file), so inspect, keys, stats, diff and against see one checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.checkpoint.base import CheckpointReader, TensorInfo, open_checkpoint
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np

# Index names, the safetensors one first: a folder holding both gets the format that cannot run code.
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
MAX_INDEX_BYTES = 64 << 20  # a weight map of a few hundred thousand keys; past this it is not an index


def _folder_index(path: Path) -> Path | None:
    for name in INDEX_NAMES:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.glob("*.index.json") if p.is_file() and not p.name.endswith(".weights.json"))
    return found[0] if len(found) == 1 else None


def sniff(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return _folder_index(path) is not None
    return (
        path.name.endswith(".index.json")
        and head.lstrip().startswith(b"{")
        and b'"weight_map"' in head
        and b".weights.h5" not in head  # Keras 3 shards: keras.h5 reads those
    )


class ShardedReader(CheckpointReader):
    """Every shard of the weight map, opened once and read through as one checkpoint."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        index = _folder_index(path) if path.is_dir() else path
        if index is None:
            raise PtoolsError(f"{path}: no *.index.json weight map in this folder")
        self.index = index
        self.index_meta, weight_map = _read_index(index)
        self._shards: dict[str, CheckpointReader] = {}
        self._owner: dict[str, str] = {}  # key -> shard file name
        self._infos: list[TensorInfo] = []
        try:
            for shard in dict.fromkeys(weight_map.values()):
                self._open_shard(index, shard)
            for key, shard in weight_map.items():
                if key not in self._owner:
                    raise PtoolsError(
                        f"{index}: the weight map puts {key!r} in {shard}, which does not hold it",
                        hint="the index and the shards come from different downloads or versions",
                    )
        except BaseException:
            self.close()
            raise
        inner = sorted({r.format for r in self._shards.values()})
        self.format = f"{'+'.join(inner)} (sharded)"

    def _open_shard(self, index: Path, shard: str) -> None:
        shard_path = index.parent / shard
        if Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise PtoolsError(f"{index}: shard name {shard!r} leaves the index's folder")
        if not shard_path.is_file():
            raise PtoolsError(f"{index}: shard {shard_path} is missing", hint="download every shard the index names")
        reader = open_checkpoint(shard_path)
        self._shards[shard] = reader
        for info in reader.tensors():
            if info.key in self._owner:
                raise PtoolsError(f"{shard_path}: key {info.key!r} is also in {self._owner[info.key]}")
            self._owner[info.key] = shard
            # Storage ids are per file: "0" in two shards is two storages, not a tied weight.
            storage = None if info.storage is None else f"{shard}:{info.storage}"
            self._infos.append(
                TensorInfo(info.key, info.dtype, info.shape, info.nbytes, storage, info.storage_offset, info.extra)
            )

    @property
    def shards(self) -> list[str]:
        return list(self._shards)

    @property
    def files(self) -> list[Path]:
        """The index and every shard: what the checkpoint weighs on disk."""
        return [self.index, *(self.index.parent / s for s in self._shards)]

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def metadata(self) -> dict[str, Any]:
        inner = {r.metadata().get("reader") for r in self._shards.values()} - {None}
        meta: dict[str, Any] = {
            "reader": f"{self.index.name} weight map over {len(self._shards)} shards"
            + (f" ({'; '.join(sorted(inner))})" if inner else ""),
            "index": str(self.index),
            "shards": len(self._shards),
        }
        if isinstance(self.index_meta.get("total_size"), int):
            meta["total_size"] = self.index_meta["total_size"]
        return meta

    def pickle_globals(self) -> list[dict[str, Any]]:
        """The shards' globals, one row per global with its uses added up and places named by shard."""
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for shard, reader in self._shards.items():
            for g in reader.pickle_globals():
                row = merged.get((g["module"], g["name"]))
                where = [f"{shard}: {w}" for w in g.get("where", [])]
                if row is None:
                    merged[(g["module"], g["name"])] = {**g, "where": where, "calls": list(g.get("calls", []))}
                else:
                    row["count"] = row.get("count", 0) + g.get("count", 0)
                    row["where"] += where
                    row["calls"] += g.get("calls", [])
        return list(merged.values())

    def findings(self) -> list[dict[str, Any]]:
        return [g for g in self.pickle_globals() if g["grade"] != "safe"]

    def _reader(self, key: str) -> CheckpointReader:
        shard = self._owner.get(key)
        if shard is None:
            raise PtoolsError(f"{self.index}: no tensor {key!r} in any shard")
        return self._shards[shard]

    def read(self, key: str) -> np.ndarray:
        return self._reader(key).read(key)

    def read_raw(self, key: str) -> tuple[np.ndarray, str]:
        return self._reader(key).read_raw(key)

    def close(self) -> None:
        for reader in self._shards.values():
            reader.close()


def _read_index(index: Path) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise PtoolsError(f"{index}: {index.stat().st_size} bytes is too large for a weight-map index")
        doc = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PtoolsError(f"{index}: not a readable weight-map index ({type(e).__name__})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise PtoolsError(f"{index}: no weight_map in this index")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise PtoolsError(f"{index}: the weight_map must map tensor names to shard file names")
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return meta, weight_map


def open_reader(path: Path) -> ShardedReader:
    return ShardedReader(path)
