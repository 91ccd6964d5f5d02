"""ptools: port TensorFlow models to PyTorch and train GANs on defect data."""

__version__ = "0.1.0"
