"""TF/Keras checkpoints -> PyTorch state_dicts: layout transposes, name mapping, writing, verification."""
