"""Reading checkpoints without running them: every format behind one `CheckpointReader` interface.

Where each part lives:
- here, at the top: the reader interface and format detection (`base`); `loaders`, the one place that
  decides which bytes a loader reads: the format registry, torch's own zip rules (`TorchArchive`) and every
  other reading of a file's bytes (`other_views`: pickle from offset 0, a zip after a prefix, a tar, an HDF5
  file after a user block); what `inspect` shows: `summary`, `diff`, `stats`, `against`, the security report
  (`scan`); shared helpers `dtypes` and `_text`; the flat formats `safetensors_reader`, `npy` (.npy/.npz)
  and `sharded` (hub `*.index.json` weight maps).
- `pickle/`: the static opcode scan every pickle gets first (`static_scan`), the restricted unpickler that
  grades globals and builds inert stand-ins (`restricted`), and the tensor structure it yields (`structure`).
- `torch/`: zip checkpoints and TorchScript archives (`zip`, their code graded by `script_code`), the zip
  parser that lists every member (`zip_members`), legacy, tar and bare-pickle files (`legacy`),
  torch.package archives (`package`), and the only readers that import torch (`objects`: data of legacy
  files after a clean scan, and the `--unsafe` load).
- `tf/`: TensorBundle checkpoints (`bundle`), their SSTable index (`table`), protobuf messages (`proto`),
  `snappy`, `crc32c`, the object-graph variable selection (`vars`) and a bundle writer (`writer`).
- `keras/`: Keras `.h5`, `.weights.h5`, sharded weights and `.keras` archives through h5py (`h5`), the
  classes a config may name (`allowed`), pickled HDF5 attributes as PyTables reads them (`hdf5_pickles`).
"""

from ptools.checkpoint.base import CheckpointReader, TensorInfo, open_checkpoint, register_format

__all__ = ["CheckpointReader", "TensorInfo", "open_checkpoint", "register_format"]
