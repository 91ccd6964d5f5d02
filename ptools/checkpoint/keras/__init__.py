"""Keras weight files without TensorFlow: `.h5`, `.weights.h5`, sharded `.weights.json` and `.keras` archives (`h5`)."""
