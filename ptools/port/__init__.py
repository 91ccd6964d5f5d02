"""Keras model files -> readable PyTorch modules and their weights (`ptools port`)."""
