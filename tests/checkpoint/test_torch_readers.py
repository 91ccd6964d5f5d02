"""torch zip, legacy and TorchScript files read back as torch wrote them: keys, shapes, dtypes, values."""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest
import torch

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint.torch.objects import tensor_to_numpy
from ptools.errors import PtoolsError
from tests.checkpoint.torch_files import TiedNet, save_nested, tiny_state_dict


def _assert_same_values(reader, expected: dict[str, torch.Tensor]) -> None:
    for key, t in expected.items():
        got = reader.read(key)
        assert got.shape == tuple(t.shape), key
        np.testing.assert_array_equal(got, tensor_to_numpy(t), err_msg=key)


def test_plain_state_dict_keys_shapes_dtypes_and_values(tmp_path):
    sd = tiny_state_dict()
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    with open_checkpoint(path) as reader:
        assert reader.format == "torch-zip"
        infos = {t.key: t for t in reader.tensors()}
        assert list(infos) == list(sd)
        for k, t in sd.items():
            assert infos[k].shape == tuple(t.shape)
            assert infos[k].dtype == str(t.dtype).removeprefix("torch.")
            assert infos[k].nbytes == t.numel() * t.element_size()
        assert reader.metadata()["byteorder"] == "little"
        _assert_same_values(reader, sd)


def test_half_bfloat16_views_and_offsets(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "bf16": torch.randn(5, 3).to(torch.bfloat16),
        "fp16": torch.randn(7).half(),
        "transposed": base.t(),  # non-contiguous: stride (1, 6)
        "row_slice": base[2],  # storage offset 12
        "base": base,
        "int": torch.arange(5),
        "flag": torch.tensor([True, False]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "dtypes.pt"
    torch.save(tensors, path)
    with open_checkpoint(path) as reader:
        infos = {t.key: t for t in reader.tensors()}
        assert infos["bf16"].dtype == "bfloat16" and infos["fp16"].dtype == "float16"
        assert infos["row_slice"].storage_offset == 12
        assert infos["transposed"].extra["contiguous"] is False
        assert infos["row_slice"].storage == infos["base"].storage == infos["transposed"].storage
        _assert_same_values(reader, tensors)


def test_nested_checkpoint_structure(tmp_path):
    path = tmp_path / "ckpt.pt"
    ckpt = save_nested(path)
    with open_checkpoint(path) as reader:
        s = reader.structure()
        assert s["epoch"] == 7
        assert set(s) == {"model", "optimizer", "epoch"}
        assert set(s["optimizer"]["state"]["0"]) == {"step", "exp_avg", "exp_avg_sq"}
        assert s["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
        keys = {t.key for t in reader.tensors()}
        assert "model.head.weight" in keys and "optimizer.state.0.exp_avg" in keys
        np.testing.assert_array_equal(
            reader.read("optimizer.state.0.exp_avg"), ckpt["optimizer"]["state"][0]["exp_avg"].numpy()
        )


def test_tied_weights_share_one_storage(tmp_path):
    path = tmp_path / "tied.pt"
    torch.save(TiedNet().state_dict(), path)
    with open_checkpoint(path) as reader:
        infos = {t.key: t for t in reader.tensors()}
    assert infos["embed.weight"].storage == infos["out.weight"].storage


def test_legacy_format_uses_restricted_scan_then_torch_for_data(tmp_path):
    sd = {"a": torch.randn(3, 2), "b": torch.randn(4).to(torch.bfloat16), "n": {"c": torch.arange(3)}}
    path = tmp_path / "legacy.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    with open_checkpoint(path) as reader:
        assert reader.format == "torch-legacy"
        assert "torch.load(weights_only=True)" in reader.metadata()["reader"]
        assert [t.key for t in reader.tensors()] == ["a", "b", "n.c"]
        assert reader.findings() == []
        _assert_same_values(reader, {"a": sd["a"], "b": sd["b"], "n.c": sd["n"]["c"]})


def test_torchscript_archive_is_read_without_torch_jit(tmp_path, monkeypatch):
    model = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()))
    path = tmp_path / "scripted.pt"
    model.save(str(path))

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load runs the archive's code")

    monkeypatch.setattr(torch.jit, "load", refuse)
    with open_checkpoint(path) as reader:
        assert reader.format == "torchscript"
        assert "never run" in reader.metadata()["reader"]
        assert reader.metadata()["code_files"].startswith("4 (code/__torch__/torch/nn/functional.py, ")
        assert reader.findings() == []
        assert sorted(t.key for t in reader.tensors()) == ["0.bias", "0.weight"]
        _assert_same_values(reader, model.state_dict())


def test_zip_path_does_not_need_torch_module(tmp_path, monkeypatch):
    # Reading a zip checkpoint must not touch torch: hide it and read values anyway.
    path = tmp_path / "sd.pt"
    sd = tiny_state_dict()
    torch.save(sd, path)
    monkeypatch.setitem(sys.modules, "torch", None)
    with open_checkpoint(path) as reader:
        got = reader.read("head.weight")
    monkeypatch.undo()
    np.testing.assert_array_equal(got, sd["head.weight"].numpy())


def test_truncated_zip_and_missing_storage_are_one_line_errors(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(tiny_state_dict(), path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PtoolsError, match="truncated or corrupted zip"):
        open_checkpoint(cut)
    # Rebuild the archive without one storage member.
    holed = tmp_path / "holed.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(holed, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("/data/1"):
                dst.writestr(item, src.read(item.filename))
    with pytest.raises(PtoolsError, match="storage 1 is missing"):
        open_checkpoint(holed)


def _rewrite_zip(src_path, dst_path, change) -> None:
    """Copy an archive member by member, letting `change(name, data)` replace contents (CRCs recomputed)."""
    with zipfile.ZipFile(src_path) as src, zipfile.ZipFile(dst_path, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, change(item.filename, src.read(item.filename)))


def test_big_endian_archive(tmp_path):
    sd = {"w": torch.randn(3, 5), "h": torch.randn(4).half(), "i": torch.arange(6)}
    path, big = tmp_path / "little.pt", tmp_path / "big.pt"
    torch.save(sd, path)
    sizes = {"0": 4, "1": 2, "2": 8}

    def to_big(name: str, data: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        key = name.rsplit("/", 1)[-1]
        if "/data/" in name and key in sizes:
            return np.frombuffer(data, dtype=f"<u{sizes[key]}").byteswap().tobytes()
        return data

    _rewrite_zip(path, big, to_big)
    with open_checkpoint(big) as reader:
        assert reader.metadata()["byteorder"] == "big"
        _assert_same_values(reader, sd)


def test_torchscript_with_a_payload_is_never_handed_to_torch(tmp_path):
    import pickle

    from tests.checkpoint.torch_files import Payload

    target = tmp_path / "pwned"
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(good))
    payload = pickle.dumps(Payload("os.system", target), protocol=2)
    _rewrite_zip(good, bad, lambda name, data: payload if name.endswith("constants.pkl") else data)
    with open_checkpoint(bad) as reader:
        assert reader.format == "torchscript"
        assert "never run" in reader.metadata()["reader"]
        assert [(f["module"], f["name"]) for f in reader.findings()] == [("posix", "system")]
        assert sorted(t.key for t in reader.tensors()) == ["bias", "weight"]  # from the restricted scan
    assert not target.exists()
