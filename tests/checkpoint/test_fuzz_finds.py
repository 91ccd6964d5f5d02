"""Inputs fuzzing found that ended in "internal error", a silently wrong file or a hang: each is now one line
naming the file (or an honest reading), and stays so."""

from __future__ import annotations

import io
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ptools.checkpoint import open_checkpoint
from ptools.checkpoint import summary as sm
from ptools.checkpoint.base import TensorInfo
from ptools.cli import app
from ptools.errors import PtoolsError

HUGE = 10**5000  # str() of it passes Python's 4300-digit limit


def _one_line_exit_2(args: list[str], path) -> str:  # noqa: ANN001
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "internal error" not in lines[0], lines
    return lines[0]


@pytest.mark.parametrize("field", ["shape", "data_offsets"])
def test_safetensors_header_with_an_integer_of_thousands_of_digits(tmp_path, field):
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    text = json.dumps({"a": entry}).replace(
        json.dumps(entry[field]), "[" + "7" * 5000 + "]" if field == "shape" else "[0, " + "4" * 5000 + "]"
    )
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + bytes(4))
    line = _one_line_exit_2(["inspect", str(path)], path)
    assert "thousands of digits" in line


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle"])
def test_a_pickled_integer_of_thousands_of_digits_is_shown_not_crashed_on(tmp_path, kind):
    path = tmp_path / "big.pt"
    obj = {"model": {"w": torch.ones(2)}, "epoch": HUGE, "ids": {HUGE: 1}}
    if kind == "pickle":
        path.write_bytes(pickle.dumps(obj | {"model": {"w": [1.0, 1.0]}}, protocol=2))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=kind == "zip")
    for mode in ([], ["--json"], ["--keys"]):
        result = CliRunner().invoke(app, ["inspect", str(path), *mode])
        assert result.exit_code == 0, result.output
    doc = json.loads(CliRunner().invoke(app, ["inspect", str(path), "--json"]).stdout)
    shown = {row["key"]: row["summary"] for row in doc["top_level"]}
    assert shown["epoch"] == f"'<integer of {HUGE.bit_length()} bits>'"


def test_checkpoint_state_file_with_a_bad_escape(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt\\x"\n')
    line = _one_line_exit_2(["inspect", str(tmp_path / "checkpoint")], tmp_path / "checkpoint")
    assert "not a valid text-proto string" in line
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model\\000.ckpt"\n')
    assert "NUL" in _one_line_exit_2(["inspect", str(tmp_path)], tmp_path)


def test_checkpoint_state_file_escapes_are_read_as_tf_writes_them(tmp_path):
    from ptools.checkpoint.tf.bundle import resolve_prefix

    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "sub\\144ir/m\\x2eckpt\\t"\n')
    (tmp_path / "subdir").mkdir()
    (tmp_path / "subdir" / "m.ckpt\t.index").write_bytes(b"")
    assert resolve_prefix(tmp_path) == tmp_path / "subdir/m.ckpt\t"


def test_bfloat16_mark_on_a_float32_dataset_is_refused_not_written(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "bf.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("dense").create_group("dense")
        g.create_dataset("kernel:0", data=np.arange(6, dtype=np.float32).reshape(2, 3)).attrs["dtype"] = "bfloat16"
        g.create_dataset("bias:0", data=np.zeros(3, np.float32))
        f.attrs["layer_names"] = [b"dense"]
        f["dense"].attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
    for out in ("w.safetensors", "w.pt"):  # the .pt path used to write 12 garbage bfloat16 values silently
        line = _one_line_exit_2(["convert", str(path), str(tmp_path / out)], path)
        assert "marked bfloat16 but stores float32" in line
        assert not (tmp_path / out).exists()
    with open_checkpoint(path) as reader:
        assert {t.key: t.dtype for t in reader.tensors()} == {"dense/kernel": "float32", "dense/bias": "float32"}
        with pytest.raises(PtoolsError):
            reader.read("dense/kernel")


def test_module_tree_of_thousands_of_very_deep_keys_builds_only_the_levels_shown(monkeypatch):
    # A TF index of 3,000 names of 300 levels each made inspect build (and total) 900,000 tree nodes.
    calls = [0]
    real = sm._aggregate

    def counting(node, buffers):  # noqa: ANN001, ANN202
        calls[0] += 1
        return real(node, buffers)

    monkeypatch.setattr(sm, "_aggregate", counting)
    infos = [
        TensorInfo("/".join(f"s{(i * 7 + j) % 11}x{i}" for j in range(300)), "float32", (1,), 4) for i in range(3000)
    ]
    tree = sm.module_tree(infos, depth=2)
    assert tree["tensors"] == 3000
    assert calls[0] <= 1 + 3000 * 3
    assert all(child.get("collapsed") for node in tree["children"] for child in node.get("children", []))


def test_module_tree_keeps_its_shape_for_ordinary_keys():
    infos = [TensorInfo(k, "float32", (2,), 8) for k in ("a.b.w", "a.b.bias", "a.c.w", "d")]
    tree = sm.module_tree(infos, depth=1)
    a, d = tree["children"]
    assert (a["name"], a["tensors"], a["collapsed"]) == ("a", 3, True)
    assert (d["name"], d["shape"]) == ("d", [2])
    deep = sm.module_tree(infos, depth=5)
    b = deep["children"][0]["children"][0]
    assert [c["path"] for c in b["children"]] == ["a.b.w", "a.b.bias"] and b["children"][0]["shape"] == [2]


def test_json_of_a_huge_int_key_and_set(tmp_path):
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps({"s": {HUGE, 1}, (HUGE,): "x", "w": [1.0]}, protocol=2))
    result = CliRunner().invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    json.loads(io.StringIO(result.stdout).read())
