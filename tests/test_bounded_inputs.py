"""One regression test per class of hostile input found by fuzzing (issue 11, section 4).

Each crafted file is run through the CLI in a forked child under the promise's memory limit and a
timeout (tests/fuzzing.py `run_files`): it must end with exit 0/1, or exit 2 and one stderr line naming
the file - never a crash, a hang, a memory hit or "internal error".
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from ptools.checkpoint.stats import tensor_stats
from ptools.checkpoint.tf.proto import BundleEntry, TrackableNode, slice_key
from ptools.checkpoint.tf.writer import TFBundleWriter
from ptools.errors import printable
from tests import fuzzing

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _one(files: dict[str, bytes], target: str, *args: str, timeout: float = 30) -> fuzzing.Outcome:
    (outcome,) = fuzzing.run_files(files, target, [[*args, "{target}"]], timeout=timeout)
    assert outcome.verdict == "ok", outcome
    return outcome


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- statistics over views ------------------------------------------------------------------------------


class _Raw:
    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr

    def read_raw(self, key: str) -> tuple[np.ndarray, str]:
        return self.arr, str(self.arr.dtype)


def test_stats_of_a_zero_stride_view_equal_those_of_its_copy_without_walking_it():
    small = np.broadcast_to(np.array([1.0, np.nan, 3.0, 7.0], dtype=np.float32), (5, 4))
    assert tensor_stats(_Raw(small), "x") == tensor_stats(_Raw(np.ascontiguousarray(small)), "x")
    huge = np.broadcast_to(np.float32(2.5), (1 << 17, 1 << 17))  # 2**34 elements on one stored float
    assert tensor_stats(_Raw(huge), "x") == {"min": 2.5, "max": 2.5, "mean": 2.5, "std": 0.0, "nan": 0, "inf": 0}
    overlapping = np.lib.stride_tricks.as_strided(np.arange(8, dtype=np.float32), (1 << 17, 1 << 17), (4, 4))
    assert "overlap" in tensor_stats(_Raw(overlapping), "x")["skipped"]


def test_inspect_stats_of_an_expanded_tensor_with_2_34_elements(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(1).expand(1 << 17, 1 << 17)}, tmp_path / "e.pt")
    out = _one(_files(tmp_path), "e.pt", "inspect", "--stats")
    assert out.rc == 0


# --- TensorFlow bundles ---------------------------------------------------------------------------------


def test_tf_slice_declaring_gigabytes_is_refused_before_allocating(tmp_path, monkeypatch):
    with TFBundleWriter(tmp_path / "m") as w:
        w.add("small", np.ones(3, dtype=np.float32))
        w.declare_sliced("big", (1 << 16, 1 << 15), [[(0, -1), (0, -1)]], "float32")  # 8 GiB
        # The slice's entry claims all 8 GiB at offset 0 of a 12-byte shard.
        w._entries[slice_key("big", [(0, -1), (0, -1)])] = BundleEntry(dtype=1, shape=(1 << 16, 1 << 15), size=1 << 33)
    out = _one(_files(tmp_path), "m", "inspect", "--stats")
    assert out.rc == 0  # the tensor's statistics are skipped with the reason, the others shown
    (out,) = fuzzing.run_files(_files(tmp_path), "m.index", [["convert", "{target}", "{out}/o.safetensors"]])
    assert out.verdict == "ok" and out.rc == 2 and "truncated" in out.stderr, out

    from ptools.checkpoint.tf.bundle import TFBundleReader
    from ptools.errors import PtoolsError

    def no_big_zeros(shape, *a, **k):
        assert np.prod(shape) < 1 << 20, f"allocated {shape} before checking the file"
        return np.empty(0)

    monkeypatch.setattr(np, "zeros", no_big_zeros)
    with TFBundleReader(tmp_path / "m") as r, pytest.raises(PtoolsError, match="truncated"):
        r.read("big")


def test_tf_object_graph_chain_is_not_quadratic(tmp_path):
    n = 60_000  # a chain root -> 1 -> 2 -> ...: full paths would hold 60000**2 / 2 characters
    nodes = [TrackableNode(children=[(i + 1, "layer")]) for i in range(n)] + [TrackableNode()]
    nodes[-1].attributes = []
    with TFBundleWriter(tmp_path / "c") as w:
        w.add("v/.ATTRIBUTES/VARIABLE_VALUE", np.ones(2, dtype=np.float32))
        w.add_object_graph(nodes)
    out = _one(_files(tmp_path), "c", "inspect", timeout=15)
    assert out.rc == 0


def test_tf_empty_object_graph_is_one_line(tmp_path):
    with TFBundleWriter(tmp_path / "g") as w:
        w.add("v", np.ones(2, dtype=np.float32))
        w.add_object_graph([])
    assert _one(_files(tmp_path), "g", "inspect").rc == 2


def test_non_utf8_tf_key_is_refused_for_safetensors_not_written_broken(tmp_path):
    with TFBundleWriter(tmp_path / "k") as w:
        w.add(b"dense/\xff\xfekernel", np.ones((2, 2), dtype=np.float32))
    files = _files(tmp_path)
    (out,) = fuzzing.run_files(files, "k", [["convert", "{target}", "{out}/o.safetensors"]])
    assert out.verdict == "ok" and out.rc == 2, out
    assert "not valid UTF-8" in out.stderr and "\\xff" in out.stderr


# --- Keras ------------------------------------------------------------------------------------------------


def test_keras_dataset_declared_huge_but_never_written(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "huge.weights.h5", "w") as f:
        g = f.create_group("layers/dense/vars")
        # 16 GiB of fill; 65537 (prime) inputs, so no Flatten-order question stops convert before it reads
        g.create_dataset("0", shape=((1 << 16) + 1, 1 << 16), dtype="float32", chunks=(64, 64))
        g.create_dataset("1", data=np.zeros(4, dtype=np.float32))
    files = _files(tmp_path)
    assert _one(files, "huge.weights.h5", "inspect", "--stats").rc == 0  # the huge one is skipped, with why
    (out,) = fuzzing.run_files(files, "huge.weights.h5", [["convert", "{target}", "{out}/o.safetensors"]])
    assert out.verdict == "ok" and out.rc == 2 and "never written" in out.stderr, out


def _with_config(config: bytes, compress: bool = False) -> bytes:
    src = zipfile.ZipFile(FIXTURES / "keras" / "k3_model.keras")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            data = config if item.filename == "config.json" else src.read(item)
            dst.writestr(item.filename, data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    return buf.getvalue()


@pytest.mark.parametrize(
    "config, compress, says",
    [
        (b" " * (40 << 20) + b"{}", True, "larger than"),  # a deflate bomb: 40 MB of config from ~40 KB
        (b"[" * 200_000 + b"]" * 200_000, False, "not valid JSON"),  # nesting deeper than any parser allows
        (b"[1, 2]", False, "not a Keras model config"),
    ],
)
def test_keras_config_bombs_and_odd_configs(config, compress, says):
    out = _one({"m.keras": _with_config(config, compress)}, "m.keras", "inspect")
    assert out.rc == 2 and says in out.stderr


def test_damaged_hdf5_metadata_is_one_line_not_an_internal_error():
    data = (FIXTURES / "keras" / "legacy_model.h5").read_bytes()
    assert b"SNOD" in data
    out = _one({"m.h5": data.replace(b"SNOD", b"SNOX")}, "m.h5", "inspect")
    assert out.rc == 2 and "corrupt" in out.stderr


# --- datasets ---------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bomb_png() -> bytes:
    return fuzzing.bomb_png()  # 20000 x 20000 grey zeros: 400 MB once inflated, ~400 KB on disk


def _small_png(mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (8, 8), 255 if mode == "L" else (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _folders(defect: bytes) -> dict[str, bytes]:
    return {"ds/normal/n.png": _small_png(), "ds/crack/d.png": defect}


@pytest.mark.parametrize(
    "defect",
    [
        _bomb_png(),
        _small_png()[:16] + struct.pack(">II", 0x7FFFFFFF, 0x7FFFFFFF) + _small_png()[24:],  # declared dims (bad CRC)
        _small_png()[:33] + struct.pack(">I", 0x7FFFFFF0) + b"tEXt" + _small_png()[33:],  # chunk length
    ],
    ids=["decompression-bomb", "huge-dimensions", "chunk-length"],
)
def test_image_bombs_are_dataset_problems_within_memory(defect, tmp_path):
    out = _one(_folders(defect), "ds", "dataset", "check")
    assert out.rc == 1 and out.stderr == ""
    (folder := tmp_path / "ds" / "crack").mkdir(parents=True)
    (folder / "d.png").write_bytes(defect)
    from ptools.data.check import check_dataset

    (tmp_path / "ds" / "normal").mkdir()
    (tmp_path / "ds" / "normal" / "n.png").write_bytes(_small_png())
    report = check_dataset(tmp_path / "ds")
    (problem,) = [p for p in report.problems if p.path.endswith("d.png")]
    assert problem.severity == "error" and "\n" not in problem.detail


def test_bomb_refused_by_the_loader_with_one_line(tmp_path):
    from ptools.data.imageio import load_rgb
    from ptools.errors import PtoolsError

    (tmp_path / "b.png").write_bytes(_bomb_png())
    with pytest.raises(PtoolsError, match=r"b\.png: cannot read image \(.*400000000 pixels"):
        load_rgb(tmp_path / "b.png", 64)


@pytest.mark.parametrize(
    "manifest, code, says",
    [
        (b"path,labels\nimg/x.png," + b"a" * 200_000 + b"\n", 2, "field larger than field limit"),
        (b"path,labels\nimg/n.png,normal,extra,fields\n", 1, ""),
    ],
    ids=["field-limit", "extra-fields"],
)
def test_csv_manifest_errors(manifest, code, says):
    out = _one({"mf/manifest.csv": manifest, "mf/img/n.png": _small_png()}, "mf", "dataset", "check")
    assert out.rc == code and says in out.stderr


def test_fifos_are_refused_by_type_never_opened(tmp_path):
    os.mkfifo(tmp_path / "model.pt")
    os.mkfifo(tmp_path / "set")
    for target, args in (("model.pt", ["inspect"]), ("set", ["dataset", "check"])):
        (out,) = fuzzing._run(
            [fuzzing.FuzzInput(0, fuzzing.Seed("fifo", {}, target, [[*args, "{target}"]]), "none", {}, target, target)],
            0,
            jobs=1,
            timeout=15,
        )
        assert out.verdict == "ok" and out.rc == 2 and "FIFO" in out.stderr, out
    # A FIFO posing as an image inside a dataset is skipped by type, not opened.
    files = {"ds/normal/n.png": _small_png(), "ds/crack/d.png": _small_png()}
    inp = fuzzing.FuzzInput(
        0, fuzzing.Seed("fifo", files, "ds", [["dataset", "check", "{target}"]]), "none", files, "ds"
    )
    inp.special = "ds/crack/e.png"
    (out,) = fuzzing._run([inp], 0, jobs=1, timeout=15)
    assert out.verdict == "ok" and out.rc in (0, 1), out


@pytest.mark.parametrize("name", ["a\nb.pt", "\x1b[31mred.pt", "caf\udce9.pt", "[bold red]x[link=y].pt"])
def test_control_characters_in_file_names_stay_on_one_escaped_line(name):
    out = _one({name: b"\x80\x02garbage"}, name, "inspect")
    assert out.rc == 2
    assert printable(name) in out.stderr and "\x1b" not in out.stderr


def test_usage_errors_and_warnings_are_one_line(runner):
    from ptools.cli import app

    result = runner.invoke(app, ["inspect"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Missing argument 'FILE'" in result.stderr
    assert "ptools inspect --help" in result.stderr


def test_dataset_check_off_a_terminal_prints_nothing_on_stderr(tmp_path):
    files = {"ds/normal/n.png": _small_png(), "ds/crack/d.png": _small_png(), "ds/crack/masks/d.png": _small_png("L")}
    out = _one(files, "ds", "dataset", "check")
    assert out.stderr == ""


def test_warnings_print_on_one_line(capsys):
    from ptools.cli import _warning_line

    _warning_line(UserWarning("two\nlines"), UserWarning, "file.py", 3)
    err = capsys.readouterr().err
    assert err == "ptools: warning: UserWarning: two lines\n"


def test_json_of_rejections_names_the_escaped_file(runner, tmp_path):
    from ptools.cli import app

    bad = tmp_path / "x\ny.pt"
    bad.write_bytes(b"junk")
    result = runner.invoke(app, ["inspect", "--json", str(bad)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert json.loads(result.stdout)["schema"] == "ptools.error/1"
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_hdf5_library_loop_is_cut_by_the_probe(tmp_path):
    """One flipped bit (found by fuzzing) sends HDF5 into an endless loop while h5py holds the GIL."""
    from ptools.checkpoint.keras.h5 import probe_hdf5
    from ptools.errors import PtoolsError

    data = bytearray((FIXTURES / "keras" / "legacy_model.h5").read_bytes())
    data[14385] ^= 1
    (tmp_path / "loop.h5").write_bytes(data)
    with pytest.raises(PtoolsError, match=r"loop\.h5: its HDF5 structure could not be read in 2 s"):
        probe_hdf5(tmp_path / "loop.h5", timeout=2)
    probe_hdf5(FIXTURES / "keras" / "legacy_model.h5", timeout=10)  # a sound file passes


@pytest.mark.parametrize("value", [7, None, [1, 2], "x"])
def test_keras_config_of_the_wrong_shape_is_one_line_in_convert(value):
    config = json.loads(zipfile.ZipFile(FIXTURES / "keras" / "k3_model.keras").read("config.json"))
    for layer in config["config"]["layers"]:
        layer["inbound_nodes"] = value
        layer["config"]["epsilon"] = [value]
    files = {"m.keras": _with_config(json.dumps(config).encode())}
    (out,) = fuzzing.run_files(files, "m.keras", [["convert", "{target}", "{out}/o.safetensors"]])
    assert out.verdict == "ok" and out.rc == 2 and "structure Keras writes" in out.stderr, out


def test_empty_tensor_with_an_impossible_dimension_is_one_line(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 62, 0], "data_offsets": [0, 0]}}).encode()
    files = {"z.safetensors": struct.pack("<Q", len(header)) + header}
    out = _one(files, "z.safetensors", "inspect", "--stats")
    assert out.rc == 2 and "bad shape" in out.stderr
    with TFBundleWriter(tmp_path / "t") as w:
        w.add("v", np.ones(2, dtype=np.float32))
        w._entries[b"w"] = BundleEntry(dtype=1, shape=(0, 1 << 62))
    out = _one(_files(tmp_path), "t", "inspect", "--stats")
    assert out.rc == 2 and "impossible shape" in out.stderr


def test_port_refuses_fifos_and_damaged_configs_on_one_line(tmp_path):
    os.mkfifo(tmp_path / "m.h5")
    inp = fuzzing.FuzzInput(0, fuzzing.Seed("fifo", {}, "m.h5", [["port", "{target}", "{out}/p"]]), "none", {}, "m.h5")
    inp.special = "m.h5"
    (out,) = fuzzing._run([inp], 0, jobs=1, timeout=15)
    assert out.verdict == "ok" and out.rc == 2 and "FIFO" in out.stderr, out
    config = json.loads(zipfile.ZipFile(FIXTURES / "keras" / "k3_model.keras").read("config.json"))
    for layer in config["config"]["layers"]:
        layer["inbound_nodes"] = 7
    files = {"m.keras": _with_config(json.dumps(config).encode())}
    (out,) = fuzzing.run_files(files, "m.keras", [["port", "{target}", "{out}/p"]], timeout=60)
    assert out.verdict == "ok" and out.rc == 2 and "structure Keras writes" in out.stderr, out


def test_view_too_large_for_numpy_is_refused_not_an_internal_error(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(1).expand(1 << 17, 1 << 17)}, tmp_path / "e.pt")
    size_17, size_30 = b"J" + struct.pack("<i", 1 << 17), b"J" + struct.pack("<i", 0x7FFFFFFF)

    def grow(name: str, content: bytes) -> bytes:  # (2**31 - 1)**2 float32 views: 2**64 bytes
        return content.replace(size_17, size_30) if name.endswith("data.pkl") else content

    data = fuzzing._rewrite_zip((tmp_path / "e.pt").read_bytes(), grow)
    assert data != (tmp_path / "e.pt").read_bytes()
    out = _one({"e.pt": data}, "e.pt", "inspect", "--stats")
    assert out.rc == 0  # the tensor's statistics are skipped with the reason
