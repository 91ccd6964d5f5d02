"""A Hugging Face Trainer checkpoint folder (checkpoint-500/) read as one checkpoint: the model and its
training state side by side.

The Trainer writes the model (`model.safetensors`, `pytorch_model.bin`, an adapter, or shards with their
index) next to `optimizer.pt`, `scheduler.pt`, `scaler.pt`, `rng_state.pth` (one per process in multi-GPU
runs) and `trainer_state.json`. Each file is opened with its own reader (by content, like any file) and
placed under its name: {"model": ..., "optimizer": ..., "rng_state": ...}, so `inspect` selects the model
and lists the rest as training state. `training_args.bin` is a pickled TrainingArguments object, not
state: it is named, never read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptools.checkpoint.base import CheckpointReader, TensorInfo, open_checkpoint
from ptools.errors import PtoolsError

if TYPE_CHECKING:
    import numpy as np

# The model, most preferred first: an index (all shards) before a single file, safetensors before pickle.
MODEL_FILES = (
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "model.safetensors",
    "pytorch_model.bin",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
STATE_FILES = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt")
STATE_GLOBS = ("rng_state*.pth",)
TRAINER_STATE = "trainer_state.json"
NOT_READ = ("training_args.bin",)
MAX_JSON_BYTES = 16 << 20


def _model_file(path: Path) -> Path | None:
    return next((path / n for n in MODEL_FILES if (path / n).is_file()), None)


def _state_files(path: Path) -> list[Path]:
    found = [path / n for n in STATE_FILES if (path / n).is_file()]
    for pattern in STATE_GLOBS:
        found += sorted(p for p in path.glob(pattern) if p.is_file())
    return found


def sniff(path: Path, head: bytes) -> bool:
    """A folder with a model file and at least one file of training state beside it."""
    if not path.is_dir() or _model_file(path) is None:
        return False
    return bool(_state_files(path)) or (path / TRAINER_STATE).is_file()


class TrainerFolderReader(CheckpointReader):
    format = "trainer-folder"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        model = _model_file(path)
        if model is None:
            raise PtoolsError(f"{path}: no model file ({', '.join(MODEL_FILES)}) in this folder")
        self._readers: dict[str, CheckpointReader] = {}
        self._files: dict[str, Path] = {}
        self._owner: dict[str, str] = {}
        self._infos: list[TensorInfo] = []
        self._structure: dict[str, Any] = {}
        try:
            self._add("model", model)
            for file in _state_files(path):
                self._add(file.name.split(".", 1)[0], file)
        except BaseException:
            self.close()
            raise
        trainer_state = _trainer_state(path / TRAINER_STATE)
        if trainer_state:
            self._structure["trainer_state"] = trainer_state
        inner = sorted({r.format for r in self._readers.values()})
        self.format = f"trainer folder ({'+'.join(inner)})"

    def _add(self, name: str, file: Path) -> None:
        reader = open_checkpoint(file)
        self._readers[name] = reader
        self._files[name] = file
        prefix = f"{name}."
        renamed: dict[str, TensorInfo] = {}
        for info in reader.tensors():
            key = prefix + info.key
            storage = None if info.storage is None else f"{file.name}:{info.storage}"
            new = TensorInfo(key, info.dtype, info.shape, info.nbytes, storage, info.storage_offset, info.extra)
            self._owner[key] = name
            self._infos.append(new)
            renamed[info.key] = new
        self._structure[name] = _rekey(reader.structure(), renamed)

    @property
    def files(self) -> list[Path]:
        """Every file read: what the checkpoint weighs on disk."""
        return list(self._files.values())

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def structure(self) -> Any:
        return self._structure

    def metadata(self) -> dict[str, Any]:
        parts = ", ".join(f"{name}: {file.name} ({self._readers[name].format})" for name, file in self._files.items())
        meta: dict[str, Any] = {"reader": f"a trainer's checkpoint folder: {parts}"}
        skipped = [n for n in NOT_READ if (self.path / n).is_file()]
        if skipped:
            meta["not_read"] = ", ".join(skipped) + " (a pickled settings object, not checkpoint state)"
        return meta

    def pickle_globals(self) -> list[dict[str, Any]]:
        out = []
        for name, reader in self._readers.items():
            for g in reader.pickle_globals():
                out.append({**g, "where": [f"{self._files[name].name}: {w}" for w in g.get("where", [])]})
        return out

    def findings(self) -> list[dict[str, Any]]:
        return [g for g in self.pickle_globals() if g["grade"] != "safe"]

    def _split(self, key: str) -> tuple[CheckpointReader, str]:
        name = self._owner.get(key)
        if name is None:
            raise PtoolsError(f"{self.path}: no tensor {key!r} in this folder")
        return self._readers[name], key[len(name) + 1 :]

    def read(self, key: str) -> np.ndarray:
        reader, inner = self._split(key)
        return reader.read(inner)

    def read_raw(self, key: str) -> tuple[np.ndarray, str]:
        reader, inner = self._split(key)
        return reader.read_raw(inner)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()


def _rekey(node: Any, renamed: dict[str, TensorInfo]) -> Any:
    """The member's structure with each tensor leaf replaced by its prefixed info."""
    if isinstance(node, TensorInfo):
        return renamed.get(node.key, node)
    if isinstance(node, dict):
        return {k: _rekey(v, renamed) for k, v in node.items()}
    if isinstance(node, list):
        return [_rekey(v, renamed) for v in node]
    if isinstance(node, tuple):
        return tuple(_rekey(v, renamed) for v in node)
    return node


def _trainer_state(path: Path) -> dict[str, Any]:
    """The plain facts of trainer_state.json (step, epoch, best metric); its log history is left out."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
            return {}
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if v is None or isinstance(v, (bool, int, float, str))}


def open_reader(path: Path) -> TrainerFolderReader:
    return TrainerFolderReader(path)
