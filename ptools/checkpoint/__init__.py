"""Reading checkpoints without running them: every format behind one `CheckpointReader` interface."""

from ptools.checkpoint.base import CheckpointReader, TensorInfo, open_checkpoint, register_format

__all__ = ["CheckpointReader", "TensorInfo", "open_checkpoint", "register_format"]
