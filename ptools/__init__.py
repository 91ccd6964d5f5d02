"""ptools: port TensorFlow models to PyTorch and train GANs on defect data."""

__version__ = "0.1.0"

# The distribution's name: "ptools" on PyPI is an unrelated 2013 package, so install hints must name
# this one. The command and the import package stay `ptools`.
DIST_NAME = "ptools-port"


def install_hint(extra: str) -> str:
    """How to get an optional extra of this project, installed from PyPI or from a checkout."""
    return f"pip install '{DIST_NAME}[{extra}]' (from a checkout: pip install -e '.[{extra}]')"
