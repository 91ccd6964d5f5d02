"""Reading checkpoints without running them: every format behind one `CheckpointReader` interface.

Where each part lives:
- here, at the top: the reader interface and format detection (`base`), the format registry (`loaders`), and
  what `inspect` shows: `summary`, `diff`, `stats`, `against`, the security report (`scan`); shared helpers
  `dtypes` and `_text`; the flat formats `safetensors_reader` and `sharded` (hub `*.index.json` weight maps).
- `pickle/`: the static opcode scan every pickle gets first (`static_scan`), the restricted unpickler that
  grades globals and builds inert stand-ins (`restricted`), and the tensor structure it yields (`structure`).
- `torch/`: zip checkpoints and TorchScript archives (`zip`), the zip parser that lists every member
  (`zip_members`), legacy, tar and bare-pickle files (`legacy`), and the only readers that import torch
  (`objects`: data of legacy files after a clean scan, and the `--unsafe` load).
- `tf/`: TensorBundle checkpoints (`bundle`), their SSTable index (`table`), protobuf messages (`proto`),
  `snappy`, `crc32c`, the object-graph variable selection (`vars`) and a bundle writer (`writer`).
- `keras/`: Keras `.h5`, `.weights.h5`, sharded weights and `.keras` archives through h5py (`h5`).
"""

from ptools.checkpoint.base import CheckpointReader, TensorInfo, open_checkpoint, register_format

__all__ = ["CheckpointReader", "TensorInfo", "open_checkpoint", "register_format"]
