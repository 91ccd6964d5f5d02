"""Seeded mutation fuzzing of every ptools reader, each command in a forked child under a memory limit and a timeout.

Seeds are small valid inputs built here (torch zip/legacy/pickle/TorchScript, safetensors, TF bundles,
Keras .h5/.keras/.weights.h5, image datasets with folders and CSV manifests). Each fuzz input takes one seed,
mutates one of its files (bit flips, truncation, splices, inflated length fields, structure-aware edits such
as huge declared sizes) and runs the commands a user would run on it. A child is judged by the promise of
issue 11: no signal, no hang, no memory above max(4*S, 512 MiB) over its baseline, exit code in {0, 1, 2},
and a rejection (exit 2) is exactly one stderr line that names the file, never "internal error".

The runner forks from one warm process (imports done once), so a few hundred inputs take seconds:

    python -m tests.fuzzing --n 300 --seed 1          # what CI runs (tests/test_fuzz_readers.py)
    python benchmarks/fuzz.py --n 5000 --seed 77      # a long run: figures per reader and per class
    python benchmarks/fuzz.py --seed 77 --only 1234 --keep /tmp/f   # replay one input, keep its files
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEFAULT_SEED = 20261127
DEFAULT_TIMEOUT = 15.0  # the promise: no command runs longer than 15 s on a fuzzed input (CPU seconds, see _child)
WALL_FACTOR = 6  # wall-clock cap, as a multiple of the timeout: a shared machine stretches time, a stall burns none


@dataclass
class Seed:
    """A valid input: its files (relative path -> bytes), the argument passed to ptools, the commands."""

    kind: str  # the reader it exercises
    files: dict[str, bytes]
    target: str  # relative path given on the command line ({target} in commands)
    commands: list[list[str]]
    mutable: list[str] = field(default_factory=list)  # files mutations may touch (default: all)
    structured: Callable[[dict[str, bytes], random.Random], dict[str, bytes]] | None = None


@dataclass
class Outcome:
    """How one command on one input ended."""

    input_id: int
    kind: str
    mutation: str
    argv: list[str]
    rc: int | None
    signal: int | None
    seconds: float  # wall time (a busy machine stretches it)
    cpu_seconds: float  # the child's own user + system time
    peak_mib: float
    stderr: str
    verdict: str  # "ok" or the failure class


# ------------------------------------------------------------------------------------------------ seeds


def _torch_seeds(work: Path) -> list[Seed]:
    import pickle

    import torch

    torch.manual_seed(0)
    sd = {
        "enc.0.weight": torch.randn(4, 3),
        "enc.0.bias": torch.randn(4).to(torch.bfloat16),
        "enc.1.weight": torch.randn(2, 4).t(),  # a non-contiguous view
        "steps": torch.arange(5),
    }
    out: list[Seed] = []
    inspect = [
        ["inspect", "{target}"],
        ["inspect", "--stats", "{target}"],
        ["inspect", "--scan", "{target}"],
        ["inspect", "{target}", "--diff", "{target}"],  # reads every tensor twice, compares values
    ]
    torch.save({"model": sd, "epoch": 3}, work / "z.pt")
    out.append(Seed("torch-zip", {"z.pt": (work / "z.pt").read_bytes()}, "z.pt", inspect, structured=_zip_pickle_ints))
    # Zero strides: 2**34 elements backed by one float (torch.save keeps the view as it is).
    torch.save({"w": torch.zeros(1).expand(1 << 17, 1 << 17)}, work / "e.pt")
    out.append(Seed("torch-zip", {"e.pt": (work / "e.pt").read_bytes()}, "e.pt", inspect, structured=_zip_pickle_ints))
    torch.save(sd, work / "l.pt", _use_new_zipfile_serialization=False)
    out.append(Seed("torch-legacy", {"l.pt": (work / "l.pt").read_bytes()}, "l.pt", inspect))
    plain = {"lr": 0.1, "names": ["a", "b"], "shape": (3, 4), "nested": {"k": [1, 2.5, None, True]}}
    out.append(Seed("pickle", {"p.pkl": pickle.dumps(plain, protocol=2)}, "p.pkl", inspect))
    out.append(Seed("pickle", {"t.pkl": pickle.dumps(sd, protocol=4)}, "t.pkl", inspect))
    script = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()))
    script.save(str(work / "ts.pt"))
    out.append(Seed("torchscript", {"ts.pt": (work / "ts.pt").read_bytes()}, "ts.pt", inspect))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(work / "s.safetensors"), metadata={"epoch": "3"})
    out.append(
        Seed(
            "safetensors",
            {"s.safetensors": (work / "s.safetensors").read_bytes()},
            "s.safetensors",
            [inspect[0], inspect[1], inspect[3]],
            structured=_safetensors_header,
        )
    )
    # Files two loaders read differently (tests/checkpoint/twins.py): torch zips with every ambiguity of
    # torch's reader vs zipfile, and polyglots (safetensors/zip/HDF5 around a pickle).
    out.append(
        Seed("torch-zip-ambiguous", {"a.pt": (work / "z.pt").read_bytes()}, "a.pt", inspect, structured=_zip_ambiguity)
    )
    legacy = (work / "l.pt").read_bytes()
    out.append(Seed("polyglot", {"p.bin": legacy}, "p.bin", inspect[:3], structured=_polyglot))
    return out


def _tf_seeds() -> list[Seed]:
    out = []
    for name in ("tf2_keras3", "tf2_sliced", "tf1_saver"):
        files = {
            p.name: p.read_bytes() for p in sorted((FIXTURES / "tf").glob(f"{name}.*")) if "expected" not in p.name
        }
        files.pop(f"{name}.checkpoint", None)
        commands = [
            ["inspect", "{target}"],
            ["inspect", "--stats", "{target}"],
            ["inspect", "{target}", "--diff", "{target}"],
            ["convert", "{target}", "{out}/out.safetensors"],
        ]
        out.append(Seed("tf-bundle", files, name, commands, structured=_tf_index_entries))
    return out


def _keras_seeds(work: Path) -> list[Seed]:
    import h5py
    import numpy as np

    out = []
    commands = [
        ["inspect", "{target}"],
        ["inspect", "--stats", "{target}"],
        ["inspect", "{target}", "--diff", "{target}"],
        ["convert", "{target}", "{out}/o.pt"],
    ]
    for name in ("legacy_model.h5", "k3.weights.h5", "k3_model.keras"):
        data = (FIXTURES / "keras" / name).read_bytes()
        structured = _keras_zip_members if name.endswith(".keras") else None
        out.append(Seed("keras", {name: data}, name, commands, structured=structured))
    # A dataset declared huge (16 GiB, chunked) that was never written: reading it must not allocate 16 GiB.
    path = work / "huge.weights.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("layers/dense/vars")
        g.attrs["name"] = "dense"
        g.create_dataset("0", shape=(1 << 16, 1 << 16), dtype="float32", chunks=(64, 64))
        g.create_dataset("1", data=np.zeros(4, dtype=np.float32))
    out.append(Seed("keras", {path.name: path.read_bytes()}, path.name, commands))
    return out


def _png(width: int, height: int, rng: random.Random, mode: str = "RGB") -> bytes:
    from PIL import Image

    img = Image.new(mode, (width, height))
    img.putdata(
        [tuple(rng.randrange(256) for _ in mode) if len(mode) > 1 else rng.randrange(2) for _ in range(width * height)]
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(width: int, height: int, rng: random.Random) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (width, height))
    img.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(width * height)])
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _dataset_seeds() -> list[Seed]:
    rng = random.Random(0)
    check = [["dataset", "check", "{target}"]]
    seed_layout = {}
    for label in ("crack", "spot"):
        for stem in ("a", "b"):
            seed_layout[f"ds/{label}/normal/{stem}.png"] = _png(16, 16, rng)
            seed_layout[f"ds/{label}/defect/{stem}.jpg"] = _jpeg(16, 16, rng)
            seed_layout[f"ds/{label}/defect_segmentation/{stem}.png"] = _png(16, 16, rng, mode="L")
    folders = {
        "fd/normal/n1.png": _png(12, 12, rng),
        "fd/normal/n2.jpg": _jpeg(12, 12, rng),
        "fd/scratch/s1.png": _png(12, 12, rng),
        "fd/scratch/masks/s1.png": _png(12, 12, rng, mode="L"),
    }
    manifest = {
        "mf/manifest.csv": b"path,labels,mask\nimg/n.png,normal,\nimg/d.png,crack;spot,img/m.png\nimg/e.jpg,crack,\n",
        "mf/img/n.png": _png(10, 10, rng),
        "mf/img/d.png": _png(10, 10, rng),
        "mf/img/m.png": _png(10, 10, rng, mode="L"),
        "mf/img/e.jpg": _jpeg(10, 10, rng),
    }
    return [
        Seed("dataset-images", seed_layout, "ds", check, structured=_image_headers),
        Seed("dataset-images", folders, "fd", check, structured=_image_headers),
        Seed("dataset-csv", manifest, "mf", check, mutable=["mf/manifest.csv"], structured=_csv_edits),
        Seed("dataset-csv", manifest, "mf/manifest.csv", check, structured=_image_headers),
    ]


def _container_seeds(work: Path) -> list[Seed]:
    """numpy .npy/.npz (numeric, Fortran, big-endian, structured, object arrays, Keras npz weights),
    a torch.package archive and an HDF5 file with PyTables pickles: the readers of issue 18."""
    import pickle

    import h5py
    import numpy as np

    from tests.checkpoint.container_cases import keras_npz_case, npy_bytes, torch_package_case

    inspect = [
        ["inspect", "{target}"],
        ["inspect", "--stats", "{target}"],
        ["inspect", "--scan", "{target}"],
        ["inspect", "{target}", "--diff", "{target}"],
    ]
    rng = np.random.default_rng(0)
    out = [
        Seed(
            "npy",
            {"a.npy": npy_bytes(rng.normal(size=(3, 4)).astype("<f4"), 3)},
            "a.npy",
            inspect,
            structured=_npy_header,
        ),
        Seed(
            "npy",
            {"f.npy": npy_bytes(np.asfortranarray(np.arange(12, dtype=">i4").reshape(3, 4)), 3)},
            "f.npy",
            inspect,
            structured=_npy_header,
        ),
    ]
    objects = np.empty(3, dtype=object)
    objects[:] = [{"lr": 0.1}, [1, 2], "x"]
    out.append(Seed("npy", {"o.npy": npy_bytes(objects, 4, (2, 0))}, "o.npy", inspect, structured=_npy_header))
    rec = np.zeros(3, dtype=[("x", "<f4"), ("y", "<i2", (2,))])
    buf = io.BytesIO()
    np.savez(buf, w=rng.normal(size=(2, 3)), rec=rec, obj=objects)
    out.append(Seed("npz", {"s.npz": buf.getvalue()}, "s.npz", inspect, structured=_npz_members))
    buf = io.BytesIO()
    np.savez_compressed(buf, w=rng.normal(size=(4, 4)).astype("<f2"), b=np.arange(5))
    out.append(Seed("npz", {"c.npz": buf.getvalue()}, "c.npz", inspect, structured=_npz_members))
    case = keras_npz_case(random.Random(0), work, False, work / "MARKER")
    out.append(
        Seed(
            "npz", {"model.weights.npz": case.path.read_bytes()}, "model.weights.npz", inspect, structured=_npz_members
        )
    )
    case = torch_package_case(random.Random(1), work, False, work / "MARKER")
    out.append(Seed("torch-package", {"pkg.pt": case.path.read_bytes()}, "pkg.pt", inspect[:3]))
    path = work / "pt.h5"
    with h5py.File(path, "w") as f:
        f.attrs["cfg"] = np.bytes_(pickle.dumps({"lr": 0.1, "n": [1, 2]}, 0))
        g = f.create_group("layers/dense/vars")
        g.attrs["name"] = "dense"
        g.create_dataset("0", data=np.ones((2, 2), dtype="float32"))
        ds = f.create_dataset("objs", (2,), dtype=h5py.vlen_dtype(np.uint8))
        ds[0] = np.frombuffer(pickle.dumps({"a": 1}, 2), dtype=np.uint8)
        ds[1] = np.frombuffer(pickle.dumps([1, 2], 0), dtype=np.uint8)
        ds.attrs["PSEUDOATOM"] = np.bytes_(b"object")
    out.append(Seed("hdf5-pickles", {"pt.h5": path.read_bytes()}, "pt.h5", inspect))
    return out


def build_seeds(work: Path) -> list[Seed]:
    work.mkdir(parents=True, exist_ok=True)
    return [*_torch_seeds(work), *_tf_seeds(), *_keras_seeds(work), *_dataset_seeds(), *_container_seeds(work)]


# ------------------------------------------------------------------------------------- generic mutations

_HUGE = [0x7FFFFFFF, 0xFFFFFFFF, 1 << 31, 1 << 34, 1 << 40, (1 << 63) - 1, (1 << 64) - 1, 0x10000, 0xFFFF]


def _flip(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def _set_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if b:
            b[rng.randrange(len(b))] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x01, 0x0A])
    return bytes(b)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)] if data else data


def _splice(data: bytes, rng: random.Random) -> bytes:
    if len(data) < 2:
        return data + data
    a = rng.randrange(len(data))
    chunk = data[a : a + rng.randint(1, 256)]
    at = rng.randrange(len(data))
    if rng.random() < 0.5:
        return data[:at] + chunk + data[at:]  # insert
    return data[:at] + chunk + data[at + len(chunk) :]  # overwrite


def _delete(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    a = rng.randrange(len(data))
    return data[:a] + data[a + rng.randint(1, 64) :]


def _inflate(data: bytes, rng: random.Random) -> bytes:
    """Replace a small little-endian length-like integer (u16/u32/u64) or a varint with a huge value."""
    b = bytearray(data)
    if len(b) < 8:
        return bytes(b)
    for _ in range(rng.randint(1, 2)):
        width = rng.choice([2, 4, 4, 8])
        candidates = [
            i
            for i in range(0, len(b) - width, max(1, len(b) // 4096))
            if 0 < int.from_bytes(b[i : i + width], "little") < 1 << 16
        ]
        if not candidates:
            continue
        i = rng.choice(candidates)
        value = rng.choice(_HUGE) & ((1 << (8 * width)) - 1)
        b[i : i + width] = value.to_bytes(width, "little")
    if rng.random() < 0.3:  # a varint: 10 continuation bytes at a random spot
        i = rng.randrange(len(b))
        b[i : i + 5] = b"\xff\xff\xff\xff\x0f"
    return bytes(b)


GENERIC: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "flip": _flip,
    "set_bytes": _set_bytes,
    "truncate": _truncate,
    "splice": _splice,
    "delete": _delete,
    "inflate": _inflate,
}


# ----------------------------------------------------------------------------- structure-aware mutations


def _rewrite_zip(data: bytes, edit: Callable[[str, bytes], bytes], compress: set[str] | None = None) -> bytes:
    """The same archive with member contents edited and CRCs recomputed (so damage reaches the parser)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            content = edit(item.filename, src.read(item.filename))
            info = zipfile.ZipInfo(item.filename, date_time=item.date_time)
            info.compress_type = zipfile.ZIP_DEFLATED if compress and item.filename in compress else item.compress_type
            dst.writestr(info, content)
    return buf.getvalue()


def _pickle_ints(blob: bytes, rng: random.Random) -> bytes:
    """Inflate the integer arguments of BININT1/BININT2/BININT opcodes (shapes, strides, offsets, sizes)."""
    b = bytearray(blob)
    spots = [i for i in range(len(b) - 2) if b[i] in (0x4B, 0x4D, 0x4A)]  # K, M, J
    for i in rng.sample(spots, min(len(spots), rng.randint(1, 3))):
        op = b[i]
        width = {0x4B: 1, 0x4D: 2, 0x4A: 4}[op]
        value = rng.choice([0, 0xFF, 0xFFFF, 0x7FFFFFFF, rng.randrange(1 << (8 * width))])
        if op == 0x4A:
            b[i + 1 : i + 5] = struct.pack("<i", value - (1 << 32) if value >= 1 << 31 else value)
        else:
            b[i + 1 : i + 1 + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return bytes(b)


def _zip_pickle_ints(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    ((name, data),) = files.items()
    return {name: _rewrite_zip(data, lambda n, c: _pickle_ints(c, rng) if n.endswith("data.pkl") else c)}


def _zip_ambiguity(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    """The archive rebuilt with one of the ambiguities between torch's zip reader and zipfile (case, duplicate
    and local names, CRCs, end-record window and decoys, two central directories, overlong deflate, directory
    attributes) around an honest, renamed or hostile data.pkl; then, half the time, byte damage on top."""
    import pickle

    from tests.checkpoint import twins

    ((name, data),) = files.items()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(i.filename.replace(i.filename.split("/")[0], "archive", 1), zf.read(i)) for i in zf.infolist()]
    data_pkl = dict(members)["archive/data.pkl"]
    hidden = rng.choice(
        [
            data_pkl,
            data_pkl.replace(b"model", b"MODEL"),
            pickle.dumps({"epoch": 1}, protocol=2),
            b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.",
            data_pkl[: rng.randrange(len(data_pkl))],
        ]
    )
    kinds = sorted(twins.ZIP_CLASSES) + ["uninitialised"]
    kind = rng.choice(kinds)
    if kind == "uninitialised":
        out = twins.zip_uninitialised(rng, members, hidden)
    else:
        out = twins.ZIP_CLASSES[kind](rng, members, hidden)
    if rng.random() < 0.5:
        out = GENERIC[rng.choice(sorted(GENERIC))](out, rng)
    return {name: out}


def _polyglot(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    """The legacy torch file (or a pickle) inside another format: a safetensors header that is also a pickle,
    a zip after it, an HDF5 file after it as a user block, a first string longer than the sniff window, more
    pickles than the stream cap; then, half the time, byte damage on top."""
    import pickle
    import tempfile

    from tests.checkpoint import twins

    ((name, data),) = files.items()
    inner = rng.choice([data, pickle.dumps({"lr": 0.1}, protocol=rng.choice([0, 2, 4]))])
    how = rng.choice(["safetensors", "then-zip", "user-block", "long-string", "stacked"])
    if how == "safetensors":
        out = twins.safetensors_pickle(rng, inner)
    elif how == "then-zip":
        out = twins.pickle_then_zip(rng, inner, twins.write_zip([twins.RawEntry(b"archive/data.pkl", inner)]))
    elif how == "user-block":
        with tempfile.TemporaryDirectory(prefix="fuzz-h5-") as tmp:
            out = twins.hdf5_with_user_block(rng, inner, Path(tmp), lambda_layer=rng.random() < 0.5)
    elif how == "long-string":
        out = twins.long_string_pickle(rng, inner)
    else:
        out = twins.stacked_pickles(rng, inner, count=rng.choice([63, 64, 65, 200]))
    if rng.random() < 0.5:
        out = GENERIC[rng.choice(sorted(GENERIC))](out, rng)
    return {name: out}


def _safetensors_header(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    ((name, data),) = files.items()
    n = struct.unpack_from("<Q", data)[0]
    header = json.loads(data[8 : 8 + n])
    key = rng.choice([k for k in header if k != "__metadata__"])
    entry = header[key]
    edit = rng.choice(["shape", "offsets", "dtype", "key", "metadata"])
    if edit == "shape":
        entry["shape"] = [rng.choice([0, 1, 1 << 17, 1 << 31, 1 << 62]) for _ in range(rng.randint(0, 4))]
    elif edit == "offsets":
        entry["data_offsets"] = [rng.choice([0, 8, 1 << 40]), rng.choice([0, 16, 1 << 40, (1 << 64) - 1])]
    elif edit == "dtype":
        entry["dtype"] = rng.choice(["F32", "BF16", "F8_E4M3", "C64", "X9", 7])
    elif edit == "key":
        header[rng.choice(["a\nb", "[link=file:///etc]x[/link]", "\x1b[31mred", "\udcff", ""])] = header.pop(key)
    else:
        header["__metadata__"] = rng.choice([["list"], {"k": {"nested": 1}}, "str"])
    raw = json.dumps(header).encode("utf-8", "surrogatepass")
    return {name: struct.pack("<Q", len(raw)) + raw + data[8 + n :]}


def _npy_header_edit(data: bytes, rng: random.Random) -> bytes:
    """One .npy with its header dict edited (huge shapes, odd dtypes, bad flags) and its length field kept honest."""
    if not data.startswith(b"\x93NUMPY") or len(data) < 12:
        return data
    v1 = data[6] == 1
    fmt, start = ("<H", 10) if v1 else ("<I", 12)
    n = struct.unpack_from(fmt, data, 8)[0]
    header = data[start : start + n].decode("latin-1")
    edit = rng.choice(["shape", "descr", "fortran", "keys", "length", "nest"])
    if edit == "length":
        return data[:8] + struct.pack(fmt, rng.choice([0, 0xFFFF, n + 7])) + data[start:]
    if edit == "shape":
        shapes = [f"({1 << 40},)", "(-1,)", f"({2**62}, 4)", f"(0, {1 << 40})", "()", "(" + "3, " * 64 + ")"]
        header = re.sub(r"'shape': \([^)]*\)", "'shape': " + rng.choice(shapes), header)
    elif edit == "descr":
        descrs = ["'<f4'", "'|O'", "'<V2'", f"[('a', '<f4', ({1 << 30},))]", "'>M8[s]'", "'x9'", "[]", "'<U3'"]
        header = re.sub(r"'descr': [^,]*,", "'descr': " + rng.choice(descrs) + ",", header)
    elif edit == "fortran":
        header = re.sub(
            r"'fortran_order': \w+", "'fortran_order': " + rng.choice(["True", "0", "None", "'yes'"]), header
        )
    elif edit == "keys":
        header = header.replace("'shape'", rng.choice(["'shape2'", "'descr'", "'shape': (1,), 'x'"]))
    else:
        header = header.replace("'shape': (", "'shape': (" + "(" * 300, 1) + ")" * 300
    raw = header.encode("latin-1")
    return data[:8] + struct.pack(fmt, len(raw) & (0xFFFF if v1 else 0xFFFFFFFF)) + raw + data[start + n :]


def _npy_header(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    ((name, data),) = files.items()
    return {name: _npy_header_edit(data, rng)}


def _npz_members(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    """An .npz with one member's header edited, a member duplicated, or members deflated (CRCs recomputed)."""
    ((name, data),) = files.items()
    edit = rng.choice(["header", "header", "duplicate", "deflate"])
    if edit == "deflate":
        members = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
        return {name: _rewrite_zip(data, lambda n, c: c, compress=members)}
    if edit == "duplicate":
        src = zipfile.ZipFile(io.BytesIO(data))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as dst:
            for item in src.infolist():
                dst.writestr(item.filename, src.read(item.filename))
            victim = rng.choice(src.namelist())
            dst.writestr(victim, _npy_header_edit(src.read(victim), rng))  # zipfile warns, numpy reads the last
        return {name: buf.getvalue()}
    target = rng.choice(zipfile.ZipFile(io.BytesIO(data)).namelist())
    return {name: _rewrite_zip(data, lambda n, c: _npy_header_edit(c, rng) if n == target else c)}


def _tf_index_entries(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    """Edit one entry of the index (huge shape, size, offset, slice extents; odd keys) and rebuild the table."""
    from ptools.checkpoint.tf.proto import encode_entry, parse_entry
    from ptools.checkpoint.tf.table import build_table, read_table

    index_name = next(n for n in files if n.endswith(".index"))
    pairs = read_table(files[index_name])
    i = rng.randrange(1, len(pairs))
    key, value = pairs[i]
    e = parse_entry(value)
    edit = rng.choice(["shape", "size", "offset", "slices", "dtype", "key", "shard"])
    if edit == "shape":
        e.shape = tuple(rng.choice([0, 1, 3, 1 << 17, 1 << 31, (1 << 63) - 1]) for _ in range(rng.randint(0, 4)))
    elif edit == "size":
        e.size = rng.choice([0, 1 << 33, (1 << 63) - 1])
    elif edit == "offset":
        e.offset = rng.choice([1 << 33, (1 << 63) - 1, -1])
    elif edit == "slices":
        e.slices = [[(0, rng.choice([-1, 1 << 33])) for _ in e.shape]] if e.shape else [[]]
        e.shape = tuple(rng.choice([d, 1 << 33]) for d in e.shape)
    elif edit == "dtype":
        e.dtype = rng.choice([0, 7, 20, 99, 14])
    elif edit == "shard":
        e.shard_id = rng.choice([1, 5, (1 << 63) - 1])
    else:
        key = key[:1] + rng.choice([b"\xff\xfe", b"a\nb", b"[link=x]y", b"\x1b[2J"]) + key[1:]
    pairs[i] = (key, encode_entry(e))
    pairs = sorted(dict(pairs).items())
    return {**files, index_name: build_table(pairs)}


def _keras_zip_members(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    ((name, data),) = files.items()
    edit = rng.choice(
        ["config_bomb", "config_deep", "deflate_weights", "config_values", "config_types", "config_types"]
    )
    if edit == "config_types":  # any value of the config replaced by a value of another type
        return {name: _rewrite_zip(data, lambda n, c: _json_types(c, rng) if n == "config.json" else c)}
    if edit == "config_bomb":  # 2 MB of layers
        layer = {"class_name": "Dense", "config": {"name": "d", "units": 1}}
        config = json.dumps({"class_name": "Sequential", "config": {"layers": [layer] * 20000}}).encode()
        return {name: _rewrite_zip(data, lambda n, c: config if n == "config.json" else c)}
    if edit == "config_deep":
        deep = b"[" * 200000 + b"]" * 200000
        return {name: _rewrite_zip(data, lambda n, c: deep if n == "config.json" else c)}
    if edit == "deflate_weights":
        return {name: _rewrite_zip(data, lambda n, c: c, compress={"model.weights.h5"})}

    def values(n: str, c: bytes) -> bytes:
        if n != "config.json":
            return c
        text = c.decode()
        return (
            re.sub(r'"units": \d+', f'"units": {rng.choice([-1, 1 << 40, 0])}', text)
            .replace('"layers"', rng.choice(['"layers"', '"layerz"']))
            .encode()
        )

    return {name: _rewrite_zip(data, values)}


_ODD_VALUES: list = [None, -1, 0, 1 << 40, 2.5, "", "x" * 300, [], {}, [None], {"a": None}, True, [1 << 40, -3]]


def _json_types(raw: bytes, rng: random.Random) -> bytes:
    doc = json.loads(raw)
    spots: list[tuple[dict | list, str | int]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                spots.append((node, k))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                spots.append((node, i))
                walk(v)

    walk(doc)
    for container, key in rng.sample(spots, min(len(spots), rng.randint(1, 6))):
        container[key] = rng.choice(_ODD_VALUES)  # type: ignore[index]
    return json.dumps(doc).encode()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _image_headers(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    """Huge declared dimensions with valid checksums, a huge chunk length, or a real decompression bomb."""
    images = [n for n in files if n.endswith((".png", ".jpg"))]
    name = rng.choice(images)
    data = files[name]
    edit = rng.choice(["dims", "chunk_length", "bomb", "text_bomb"])
    if name.endswith(".jpg"):
        i = data.find(b"\xff\xc0")
        if i < 0:
            return files
        b = bytearray(data)
        b[i + 5 : i + 9] = struct.pack(">HH", rng.choice([0xFFFF, 30000]), rng.choice([0xFFFF, 30000]))
        return {**files, name: bytes(b)}
    if not data.startswith(b"\x89PNG"):
        return files
    ihdr = bytearray(data[16:29])
    if edit == "dims":
        ihdr[0:8] = struct.pack(">II", rng.choice([1 << 20, 0x7FFFFFFF, 30000]), rng.choice([1 << 20, 30000]))
        return {**files, name: data[:8] + _png_chunk(b"IHDR", bytes(ihdr)) + data[33:]}
    if edit == "chunk_length":
        return {**files, name: data[:33] + struct.pack(">I", 0x7FFFFFF0) + b"tEXt" + b"k\0v" * 4 + data[33:]}
    if edit == "text_bomb":
        body = b"Comment\0\0" + zlib.compress(b"A" * (64 * MIB), 9)
        return {**files, name: data[:33] + _png_chunk(b"zTXt", body) + data[33:]}
    return {**files, name: bomb_png()}


@functools.lru_cache(maxsize=1)
def bomb_png(side: int = 20000) -> bytes:
    """side x side grey zeros: 400 MB once inflated, ~400 KB on disk (built once: it takes a second)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(b"\0" * (side + 1)) for _ in range(side)) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _csv_edits(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    name = next(n for n in files if n.endswith(".csv"))
    data = files[name]
    edit = rng.choice(["nul", "field", "quote", "paths", "bom", "latin1"])
    if edit == "nul":
        data = data.replace(b"crack", b"cr\0ack", 1)
    elif edit == "field":
        data += b"img/x.png," + b"a" * 200_000 + b",\n"
    elif edit == "quote":
        data += b'"img/n.png,normal\n'
    elif edit == "paths":
        data += rng.choice(
            [b"/dev/zero,crack,\n", b"img,crack,\n", b"../../etc/passwd,crack,\n", b"img/n.png/x,crack,\n"]
        )
    elif edit == "bom":
        data = b"\xef\xbb\xbf" + data
    else:
        data = data.replace(b"crack", b"cr\xe9ck")
    return {**files, name: data}


# ----------------------------------------------------------------------------------------------- inputs


@dataclass
class FuzzInput:
    id: int
    seed: Seed
    mutation: str
    files: dict[str, bytes]
    target: str  # may differ from the seed's (odd names, FIFOs)
    special: str | None = None  # a relative path made a FIFO


_ODD_NAMES = ["a\nb", "tab\there", "[link=file:///etc/passwd]x[/link]", "\x1b[31mred", "caf\udce9"]


def make_input(seed_list: list[Seed], run_seed: int, i: int) -> FuzzInput:
    rng = random.Random(f"{run_seed}:{i}")
    seed = seed_list[i % len(seed_list)]
    files = dict(seed.files)
    target = seed.target
    roll = rng.random()
    if roll < 0.03:  # a FIFO where a file should be: opening it for reading would block forever
        if seed.target in files or rng.random() < 0.5:
            return FuzzInput(i, seed, "fifo", {}, seed.target, special=seed.target)
        member = rng.choice(sorted(files))
        files.pop(member)
        return FuzzInput(i, seed, "fifo", files, target, special=member)
    if roll < 0.08 and "/" not in seed.target and seed.target in files:  # a file name with control characters
        odd = rng.choice(_ODD_NAMES) + Path(seed.target).suffix
        files[odd] = files.pop(seed.target)
        return FuzzInput(i, seed, "odd_name", files, odd)
    if seed.structured is not None and roll < 0.4:
        try:
            return FuzzInput(i, seed, "structured", seed.structured(files, rng), target)
        except Exception:  # a structured edit that does not apply to this seed: fall back to bytes
            pass
    names = seed.mutable or sorted(files)
    name = rng.choice(names)
    mutation = rng.choice(sorted(GENERIC))
    data = files[name]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        data = GENERIC[mutation](data, rng)
    files[name] = data
    return FuzzInput(i, seed, mutation, files, target)


def materialise(inp: FuzzInput, folder: Path) -> Path:
    for rel, data in inp.files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    if inp.special:
        fifo = folder / inp.special
        fifo.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(fifo)
    return folder / inp.target


# --------------------------------------------------------------------------------------------- running


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _child_baseline_mib() -> float:
    """Peak RSS of a forked child that does nothing: what every child starts with (the parent's pages)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    _, _, usage = os.wait4(pid, 0)
    return usage.ru_maxrss / 1024


def budget_bytes(input_bytes: int) -> int:
    """The promise: max(4 * S, 512 MiB) above the baseline."""
    return max(4 * input_bytes, 512 * MIB)


def _child(argv: list[str], err_path: Path, budget: int, cpu_seconds: float) -> None:
    """Runs in the forked child: redirect output, cap the address space and the CPU time, run the CLI, exit with
    its code. CPU time, not wall time, is what an endless loop burns: on a loaded machine a sound command can take
    several times its CPU time in wall time, and must not be called a hang."""
    code = 3
    try:
        os.setpgid(0, 0)
        devnull = os.open(os.devnull, os.O_WRONLY)
        err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(devnull, 1)
        os.dup2(err, 2)
        # New text streams on fds 1 and 2: the inherited objects may be a test runner's capture buffers.
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        limit = _vm_bytes() + budget
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        cpu = max(1, math.ceil(cpu_seconds))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL: judged a hang
        sys.argv = ["ptools", *argv]
        try:
            # What `ptools.cli.main` runs, minus rebuilding the Click tree from the signatures (34 ms a child).
            _command().main(args=argv, prog_name="ptools")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except MemoryError:
        code = 97
    except BaseException:  # noqa: BLE001 - anything escaping the CLI is a finding, report it
        import traceback

        traceback.print_exc()
        code = 98
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)


_COMMAND: list = []


def _command():  # noqa: ANN202 - a click.Command
    if not _COMMAND:
        import typer

        from ptools.cli import app

        _COMMAND.append(typer.main.get_command(app))
    return _COMMAND[0]


def _escape_name(name: str) -> str:
    from ptools.errors import printable

    return printable(name)


def judge(
    rc: int | None, sig: int | None, timed_out: bool, stderr: str, names: list[str], peak_over: float, budget_mib: float
) -> str:
    if timed_out:
        return "hang"
    if "MemoryError" in stderr or "Unable to allocate" in stderr or rc == 97 or peak_over > budget_mib:
        return "memory"
    if sig is not None:
        return "crash"
    if "internal error" in stderr or "Traceback" in stderr or rc == 98:
        return "internal_error"
    if rc not in (0, 1, 2):
        return "bad_exit"
    if rc == 2:
        lines = stderr.splitlines()
        if len(lines) != 1:
            return "not_one_line"
        if not any(n in lines[0] for n in names):
            return "no_file_name"
    return "ok"


def run_inputs(
    seed_list: list[Seed],
    run_seed: int,
    ids: list[int],
    *,
    jobs: int = 2,
    timeout: float = DEFAULT_TIMEOUT,
    keep: Path | None = None,
    per_input: int = 0,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run every command of every input id, `jobs` children at a time; returns one Outcome per command."""
    inputs = (make_input(seed_list, run_seed, i) for i in ids)
    return _run(inputs, run_seed, jobs=jobs, timeout=timeout, keep=keep, per_input=per_input, on_outcome=on_outcome)


def run_files(
    files: dict[str, bytes], target: str, commands: list[list[str]], timeout: float = DEFAULT_TIMEOUT
) -> list[Outcome]:
    """Run `commands` on these exact files (no mutation), judged like fuzz inputs: for regression tests."""
    seed = Seed("given", files, target, commands)
    return _run([FuzzInput(0, seed, "none", dict(files), target)], 0, jobs=1, timeout=timeout)


def _run(
    inputs: Iterable[FuzzInput],
    run_seed: int,
    *,
    jobs: int,
    timeout: float,
    keep: Path | None = None,
    per_input: int = 0,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Materialise inputs one at a time (a long run never holds them all), fork a child per command."""
    base = Path(tempfile.mkdtemp(prefix="ptools-fuzz-"))
    baseline_rss = _child_baseline_mib()
    pending: dict[Path, int] = {}  # input folder -> commands not finished yet (removed at 0 unless kept)

    def commands() -> Iterator[tuple[FuzzInput, list[str], Path, int]]:
        for inp in inputs:
            folder = (keep or base) / f"in{inp.id}"
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            target = materialise(inp, folder)
            size = sum(len(d) for d in inp.files.values())
            cmds = inp.seed.commands
            if per_input and len(cmds) > per_input:
                picked = random.Random(f"{run_seed}:{inp.id}:commands").sample(range(len(cmds)), per_input)
                cmds = [cmds[k] for k in sorted(picked)]
            pending[folder] = len(cmds)
            for k, cmd in enumerate(cmds):
                out = folder / f"_out{k}"  # each command its own: commands of one input run side by side
                out.mkdir()
                yield inp, [a.replace("{target}", str(target)).replace("{out}", str(out)) for a in cmd], folder, size

    def finished(o: Outcome, folder: Path) -> None:
        outcomes.append(o)
        if on_outcome:
            on_outcome(o)
        pending[folder] -= 1
        if not pending[folder] and keep is None:
            del pending[folder]
            shutil.rmtree(folder, ignore_errors=True)

    queue = commands()
    outcomes: list[Outcome] = []
    running: dict[int, tuple[FuzzInput, list[str], Path, float, Path, int]] = {}
    n = 0
    more = True
    try:
        while more or running:
            while more and len(running) < jobs:
                nxt = next(queue, None)
                if nxt is None:
                    more = False
                    break
                inp, argv, folder, size = nxt
                n += 1
                err_path = folder / f"stderr{n}.txt"
                pid = os.fork()
                if pid == 0:
                    _child(argv, err_path, budget_bytes(size), timeout)
                running[pid] = (inp, argv, folder, time.monotonic(), err_path, size)
            if not running:
                continue
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                now = time.monotonic()
                for cpid, entry in list(running.items()):
                    if now - entry[3] > timeout * WALL_FACTOR:
                        _kill(cpid)
                        _, status, usage = os.wait4(cpid, 0)
                        running.pop(cpid)
                        finished(_outcome(entry, status, usage, baseline_rss, timed_out=True), entry[2])
                time.sleep(0.002)
                continue
            if pid in running:
                entry = running.pop(pid)
                finished(_outcome(entry, status, usage, baseline_rss, timed_out=False), entry[2])
    finally:
        for cpid in running:
            _kill(cpid)
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return outcomes


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _outcome(entry: tuple, status: int, usage: resource.struct_rusage, baseline_rss: float, timed_out: bool) -> Outcome:
    inp, argv, folder, start, err_path, size = entry
    seconds = time.monotonic() - start
    rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if sig in (signal.SIGXCPU, signal.SIGKILL):  # the CPU limit of _child (SIGKILL: its hard limit)
        timed_out, sig = True, None
    try:
        stderr = err_path.read_text(errors="replace")
    except OSError:
        stderr = ""
    peak_over = usage.ru_maxrss / 1024 - baseline_rss
    target_name = Path(inp.target).name
    names = [target_name, _escape_name(target_name), str(folder)]  # the input, or a file of it or made from it
    verdict = judge(rc, sig, timed_out, stderr, names, peak_over, budget_bytes(size) / MIB)
    if verdict == "ok" and rc == 0:
        outs = {Path(a).parent for a in argv if Path(a).parent.name.startswith("_out")}
        verdict = next((v for v in map(_check_outputs, sorted(outs)) if v != "ok"), "ok")
    return Outcome(
        inp.id,
        inp.seed.kind,
        inp.mutation,
        argv,
        rc,
        sig,
        round(seconds, 3),
        round(usage.ru_utime + usage.ru_stime, 3),
        round(peak_over, 1),
        stderr[-2000:],
        verdict,
    )


def _check_outputs(out: Path) -> str:
    """A command that exits 0 must leave files their own libraries read back (no broken output)."""
    for f in sorted(out.iterdir()):
        try:
            if f.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(f), "np") as st:
                    for k in st.keys():
                        st.get_tensor(k)
            elif f.suffix == ".pt":
                import torch

                torch.load(f, weights_only=True)
        except Exception:  # noqa: BLE001 - any failure to read back is the finding
            return "broken_output"
    return "ok"


def prewarm() -> None:
    """Import what the commands import lazily, once, so every forked child starts warm."""
    os.environ.setdefault("COLUMNS", "120")
    import h5py  # noqa: F401
    import numpy  # noqa: F401
    import rich.progress  # noqa: F401
    import rich.table  # noqa: F401
    from PIL import Image

    Image.init()
    import ptools.checkpoint.loaders  # noqa: F401
    import ptools.checkpoint.scan  # noqa: F401
    import ptools.checkpoint.stats  # noqa: F401
    import ptools.checkpoint.summary  # noqa: F401
    import ptools.checkpoint.tf.bundle  # noqa: F401
    import ptools.cli  # noqa: F401
    import ptools.cli.inspect  # noqa: F401
    import ptools.convert.api  # noqa: F401
    import ptools.data.check  # noqa: F401

    _command()


def summarise(outcomes: list[Outcome], n_inputs: int, seconds: float) -> dict:
    verdicts = Counter(o.verdict for o in outcomes)
    per_kind: dict[str, dict[str, int]] = {}
    for o in outcomes:
        k = per_kind.setdefault(o.kind, {"commands": 0, "failures": 0})
        k["commands"] += 1
        k["failures"] += o.verdict != "ok"
    return {
        "inputs": n_inputs,
        "commands": len(outcomes),
        "crashes": verdicts["crash"],
        "hangs": verdicts["hang"],
        "memory_hits": verdicts["memory"],
        "internal_errors": verdicts["internal_error"],
        "bad_exits": verdicts["bad_exit"],
        "not_one_line": verdicts["not_one_line"],
        "no_file_name": verdicts["no_file_name"],
        "broken_outputs": verdicts["broken_output"],
        "exit_codes": dict(sorted(Counter(str(o.rc) for o in outcomes).items())),
        "max_seconds": max((o.seconds for o in outcomes), default=0.0),
        "max_cpu_seconds": max((o.cpu_seconds for o in outcomes), default=0.0),
        "max_peak_mib": max((o.peak_mib for o in outcomes), default=0.0),
        "per_reader": per_kind,
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("PTOOLS_FUZZ_N", 300)), help="inputs to run")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("PTOOLS_FUZZ_SEED", DEFAULT_SEED)))
    parser.add_argument("--jobs", type=int, default=2, help="children at a time")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per command")
    parser.add_argument(
        "--commands-per-input", type=int, default=0, help="run this many of each input's commands, drawn (0: all)"
    )
    parser.add_argument("--only", type=int, nargs="*", help="replay these input ids")
    parser.add_argument("--kinds", help="comma-separated readers to fuzz (default: all)")
    parser.add_argument("--keep", type=Path, help="keep every input's files under this folder")
    parser.add_argument("--json", action="store_true", help="print the summary and failures as JSON")
    parser.add_argument("--progress", type=int, default=0, help="print running figures every N commands")
    parser.add_argument("--show", type=int, default=20, help="failures to print")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="ptools-fuzz-seeds-"))
    try:
        seed_list = build_seeds(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.kinds:
        wanted = set(args.kinds.split(","))
        seed_list = [s for s in seed_list if s.kind in wanted]
    prewarm()
    seeds_seconds = time.monotonic() - start
    ids = args.only if args.only else list(range(args.n))
    failures: list[Outcome] = []

    seen: Counter[str] = Counter()
    inputs_seen: set[int] = set()

    def note(o: Outcome) -> None:
        if o.verdict != "ok":
            failures.append(o)
        seen[o.verdict] += 1
        inputs_seen.add(o.input_id)
        if args.progress and sum(seen.values()) % args.progress == 0:  # running figures for long runs
            elapsed = round(time.monotonic() - start)
            print(
                f"progress: {len(inputs_seen)} inputs, {sum(seen.values())} commands, {elapsed} s, {dict(seen)}",
                file=sys.stderr,
                flush=True,
            )

    outcomes = run_inputs(
        seed_list,
        args.seed,
        ids,
        jobs=args.jobs,
        timeout=args.timeout,
        keep=args.keep,
        per_input=args.commands_per_input,
        on_outcome=note,
    )
    summary = {"seed": args.seed, **summarise(outcomes, len(ids), time.monotonic() - start)}
    summary["seeds_seconds"] = round(seeds_seconds, 1)
    failures.sort(key=lambda o: (o.input_id, o.argv))
    if args.json:
        summary["failures"] = [o.__dict__ for o in failures]
        print(json.dumps(summary, indent=1, default=str))
    else:
        for key in (
            "seed",
            "inputs",
            "commands",
            "crashes",
            "hangs",
            "memory_hits",
            "internal_errors",
            "bad_exits",
            "not_one_line",
            "no_file_name",
            "broken_outputs",
            "max_seconds",
            "max_cpu_seconds",
            "max_peak_mib",
            "seeds_seconds",
            "seconds",
        ):
            print(f"{key:16} {summary[key]}")
        print(f"{'exit_codes':16} {summary['exit_codes']}")
        for kind, k in summary["per_reader"].items():
            print(f"  {kind:16} {k['commands']:6} commands, {k['failures']} failures")
        for o in failures[: args.show]:
            tail = o.stderr.strip().splitlines()[-1:] or [""]
            where = f"input {o.input_id} ({o.kind}/{o.mutation})"
            outcome = f"rc={o.rc} sig={o.signal} {o.seconds}s {o.peak_mib}MiB"
            print(f"[{o.verdict}] {where} {outcome}: ptools {' '.join(o.argv)}: {tail[0][:300]!r}")
    failed = sum(1 for o in outcomes if o.verdict != "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
