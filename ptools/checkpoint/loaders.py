"""Which reader opens a file, decided by its bytes: every format's sniffer, most specific first.

Each format module exposes `sniff(path, head) -> bool` and `open(path) -> CheckpointReader`; add a
line here when a format lands.
"""

from __future__ import annotations

from ptools.checkpoint import npy, safetensors_reader, sharded
from ptools.checkpoint.base import register_format
from ptools.checkpoint.keras import h5 as keras_h5  # h5py is imported only when a file is opened
from ptools.checkpoint.torch import legacy as torch_legacy  # no torch at import
from ptools.checkpoint.torch import package as torch_package
from ptools.checkpoint.torch import zip as torch_zip

register_format("sharded", sharded.sniff, sharded.open_reader)  # an *.index.json weight map, or its folder

register_format("safetensors", safetensors_reader.sniff, safetensors_reader.open_reader)
# Before the pickle sniffers: the .npy magic starts with 0x93, which is also a pickle opcode.
register_format("npy", npy.sniff_npy, npy.open_npy)
# Before torch-zip: a package may hold a data.pkl resource, but its own source is what runs on load.
register_format("torch-package", torch_package.sniff, torch_package.open_reader)
register_format("torch-zip", torch_zip.sniff, torch_zip.open_reader)  # TorchScript archives too
# A zip of .npy arrays (torch and Keras archives are theirs); before the pickle sniffers ("PK" parses as opcodes).
register_format("npz", npy.sniff_npz, npy.open_npz)
register_format("keras-zip", keras_h5.sniff_keras_zip, keras_h5.open_reader)
register_format("torch-legacy", torch_legacy.sniff_legacy, torch_legacy.TorchLegacyReader)
register_format("torch-tar", torch_legacy.sniff_tar, torch_legacy.TorchTarReader)
register_format("pickle", torch_legacy.sniff_pickle, torch_legacy.PickleReader)

register_format("keras-h5", keras_h5.sniff_h5, keras_h5.open_reader)
register_format("keras-shards", keras_h5.sniff_keras_shards, keras_h5.open_reader)


def _tf_bundle():  # noqa: ANN202
    # Imported on first use: it pulls in numpy (~0.2 s), which `inspect` of torch/safetensors files never needs.
    from ptools.checkpoint.tf import bundle

    return bundle


register_format("tf-bundle", lambda p, h: _tf_bundle().sniff(p, h), lambda p: _tf_bundle().open_reader(p))


# Last: any other zip gets a specific error (truncated, or a zip holding no checkpoint) instead of "unrecognised".
register_format("zip", torch_zip.sniff_any_zip, torch_zip.open_reader)
