"""Seeded generators of files that two loaders read differently: for each class, a benign twin torch loads and a
malicious file whose payload sits where one of the loaders (torch.load first of all) would unpickle it.

Every builder takes a `random.Random` and the bytes that must be read where the ambiguity hides them (`hidden`):
for a benign twin, a data.pkl (or a whole legacy torch file) naming other keys than the decoy; for a malicious
case, a pickle whose `__reduce__` would run a command. Zips are written field by field here (`RawEntry`), so
every header can disagree with every other one.
"""

from __future__ import annotations

import io
import pickle
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.checkpoint.torch_files import Payload

# ------------------------------------------------------------------------------------------ raw zip writer


@dataclass
class RawEntry:
    """One member: its central-directory fields, and a local header that may say something else."""

    name: bytes
    data: bytes
    method: int = 0
    local_name: bytes | None = None
    crc: int | None = None
    external_attr: int = 0
    size: int | None = None  # declared uncompressed size (default: len(data))
    raw: bytes | None = None  # the stored bytes (default: data, deflated when method 8)
    time: int = 0x21  # DOS time: miniz reads method and time as one 32-bit field

    def stored(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.method == 8:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            return c.compress(self.data) + c.flush()
        return self.data


def write_zip(
    entries: list[RawEntry],
    *,
    central: list[list[int]] | None = None,
    use: tuple[int, int | None] = (0, None),
    prefix: bytes = b"",
    trailer: bytes = b"",
    align: int = 64,
) -> bytes:
    """Local headers, one or more central directories (`central`: lists of entry indices), then the zip64
    record and locator when `use[1]` names a directory, and the 32-bit end record for directory `use[0]`.
    Offsets are absolute (bytes in `prefix` are not accounted for, as torch's reader expects)."""
    out = bytearray(prefix)
    offsets = []
    for e in entries:
        offsets.append(len(out))
        local_name = e.name if e.local_name is None else e.local_name
        start = len(out) + 30 + len(local_name) + 4
        pad = (-start) % align if align else 0
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad if align else b""
        raw = e.stored()
        size = len(e.data) if e.size is None else e.size
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        out += struct.pack(
            "<4sHHHHHIIIHH",
            b"PK\x03\x04",
            20,
            0,
            e.method,
            e.time,
            0x21,
            crc,
            len(raw),
            size,
            len(local_name),
            len(extra),
        )
        out += local_name + extra + raw
    directories = []
    for order in central if central is not None else [list(range(len(entries)))]:
        start = len(out)
        for i in order:
            e = entries[i]
            raw = e.stored()
            size = len(e.data) if e.size is None else e.size
            crc = zlib.crc32(e.data) if e.crc is None else e.crc
            out += struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0,
                e.method,
                e.time,
                0x21,
                crc,
                len(raw),
                size,
                len(e.name),
                0,
                0,
                0,
                0,
                e.external_attr,
                offsets[i],
            )
            out += e.name
        directories.append((start, len(out) - start, len(order)))
    d32, d64 = use
    if d64 is not None:
        start, size, n = directories[d64]
        record = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, size, start)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, record, 1)
    start, size, n = directories[d32]
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, size, start, 0)
    return bytes(out + trailer)


# --------------------------------------------------------------------------------------- the checkpoints


def state(rng: random.Random) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    return {"w": torch.randn(3, 4, generator=g), "b": torch.arange(rng.randint(2, 6), dtype=torch.float32)}


def torch_members(sd: dict[str, torch.Tensor]) -> list[tuple[str, bytes]]:
    """torch.save's members (folder "archive/"), in its order."""
    buf = io.BytesIO()
    torch.save(sd, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        return [(i.filename, zf.read(i.filename)) for i in zf.infolist()]


def renamed_data_pkl(sd: dict[str, torch.Tensor], suffix: str = "_twin") -> bytes:
    """data.pkl of the same tensors under other keys: same storages (keys 0, 1, ...), another structure."""
    members = dict(torch_members({k + suffix: v for k, v in sd.items()}))
    return members["archive/data.pkl"]


def payload_pickle(target: Path) -> bytes:
    return pickle.dumps(Payload("os.system", target), protocol=2)


def _case_variant(rng: random.Random, name: str) -> str:
    while True:
        out = "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c for c in name)
        if out != name:
            return out


def _entries(members: list[tuple[str, bytes]], hidden: RawEntry | None = None) -> list[RawEntry]:
    out = []
    for name, data in members:
        if name.endswith("/data.pkl") and hidden is not None:
            out.append(hidden)
        else:
            out.append(RawEntry(name.encode(), data))
    return out


# ------------------------------------------------------------------------------------ zip ambiguity classes
# Each builder returns an archive where torch.load unpickles `hidden` as data.pkl; Python's zipfile either
# refuses the archive or the member, or reads the decoy (the honest data.pkl) instead.


def zip_crc(rng: random.Random, members: list[tuple[str, bytes]], hidden: bytes) -> bytes:
    """data.pkl with a wrong CRC (stored or deflated): torch never checks it, zipfile refuses to read it."""
    method = rng.choice([0, 8])
    bad = (zlib.crc32(hidden) ^ rng.randrange(1, 1 << 32)) & 0xFFFFFFFF
    return write_zip(_entries(members, RawEntry(b"archive/data.pkl", hidden, method=method, crc=bad)))


def zip_case(rng: random.Random, members: list[tuple[str, bytes]], hidden: bytes) -> bytes:
    """data.pkl under another case (DATA.PKL, Data.Pkl): torch looks names up case-insensitively."""
    name = "archive/" + _case_variant(rng, "data.pkl")
    return write_zip(_entries(members, RawEntry(name.encode(), hidden, method=rng.choice([0, 8]))))


def zip_duplicate(rng: random.Random, members: list[tuple[str, bytes]], hidden: bytes) -> bytes:
    """Two to four data.pkl entries (the same name or case variants) spread through the directory; torch's
    heap sort and binary search pick one, zipfile the last of the exact name. `hidden` goes in a random one,
    the others hold the decoy: which one torch reads is for torch to say (the tests ask it)."""
    decoy = dict(members)["archive/data.pkl"]
    entries = _entries(members)
    for _ in range(rng.randint(1, 3)):
        name = "archive/data.pkl" if rng.random() < 0.5 else "archive/" + _case_variant(rng, "data.pkl")
        entries.insert(rng.randint(1, len(entries)), RawEntry(name.encode(), decoy))  # entry 0 names the folder
    copies = [i for i, e in enumerate(entries) if e.name.lower() == b"archive/data.pkl"]
    pick = rng.choice(copies)
    entries[pick] = RawEntry(entries[pick].name, hidden, method=rng.choice([0, 8]))
    return write_zip(entries)


def zip_local_name(rng: random.Random, members: list[tuple[str, bytes]], hidden: bytes) -> bytes:
    """data.pkl whose local header names another file: torch reads the central name only, zipfile refuses."""
    local = rng.choice([b"archive/data.txt", b"archive/README", b"archive/data/0", b"x" * rng.randint(1, 40)])
    return write_zip(_entries(members, RawEntry(b"archive/data.pkl", hidden, local_name=local)))


def zip_eocd_window(rng: random.Random, members: list[tuple[str, bytes]], hidden: bytes) -> bytes:
    """The end record where only torch finds it: more than 64 KiB of trailing bytes (zipfile searches the last
    64 KiB + 22) but within the blocks miniz reaches, or a stray end signature in the last 21 bytes (zipfile
    takes it and fails, miniz skips it)."""
    archive = write_zip(_entries(members, RawEntry(b"archive/data.pkl", hidden)))
    # miniz steps back 4093 bytes at a time from the last 4 KiB block; which tails it still reaches depends
    # on the archive's size.
    tails = [t for t in range(0xFFFF + 1, 0xFFFF + 4096) if _torch_finds(len(archive), t)]
    if tails and rng.random() < 0.5:
        tail = rng.choice(tails)
        return archive + bytes(rng.randrange(1, 256) if rng.random() < 0.1 else 0 for _ in range(tail))
    return archive + b"PK\x05\x06" + bytes(rng.randint(0, 17))


def _torch_finds(zip_size: int, tail: int) -> bool:
    size = zip_size + tail
    eocd = zip_size - 22
    cur = max(size - 4096, 0)
    while True:
        if cur < 0:
            return False
        if cur <= eocd < cur + 4096:
            return True
        if cur == 0 or size - cur >= 0xFFFF + 22:
            return False
        cur -= 4093


def zip_zip64(rng: random.Random, members: list[tuple[str, bytes]], hidden: bytes) -> bytes:
    """Two central directories: the 32-bit end record points at one (the decoy data.pkl), a zip64 record at
    the other (the hidden one). torch follows zip64."""
    entries = _entries(members) + [RawEntry(b"archive/data.pkl", hidden)]
    decoy_at = next(i for i, (n, _) in enumerate(members) if n.endswith("/data.pkl"))
    with_decoy = list(range(len(members)))
    with_hidden = [len(members) if i == decoy_at else i for i in with_decoy]
    if rng.random() < 0.5:  # either directory first in the file; the zip64 record always names the hidden one
        return write_zip(entries, central=[with_decoy, with_hidden], use=(0, 1))
    return write_zip(entries, central=[with_hidden, with_decoy], use=(1, 0))


def zip_deflate_overlong(rng: random.Random, members: list[tuple[str, bytes]], hidden: bytes) -> bytes:
    """A deflated data.pkl whose stream goes on past its declared size: torch (and zipfile) stop at the declared
    size; the CRC covers those bytes only, so zipfile agrees, but a reader that inflates it all sees more."""
    junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000)))
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = c.compress(hidden + junk) + c.flush()
    entry = RawEntry(b"archive/data.pkl", hidden, method=8, raw=raw, size=len(hidden), crc=zlib.crc32(hidden))
    return write_zip(_entries(members, entry))


ZIP_CLASSES: dict[str, Callable[[random.Random, list[tuple[str, bytes]], bytes], bytes]] = {
    "crc": zip_crc,
    "case": zip_case,
    "duplicate": zip_duplicate,
    "local-name": zip_local_name,
    "eocd-window": zip_eocd_window,
    "zip64": zip_zip64,
    "deflate-overlong": zip_deflate_overlong,
}


def zip_uninitialised(rng: random.Random, members: list[tuple[str, bytes]], hidden: bytes) -> bytes:
    """data.pkl carrying the DOS directory attribute: torch never reads it and unpickles an uninitialised
    buffer of its declared size (often memory a freed record of the same size held: the hidden bytes sit in
    `.data/serialization_id`, read and freed just before)."""
    entries = []
    for name, data in members:
        if name.endswith("/data.pkl"):
            entries.append(RawEntry(name.encode(), bytes(len(hidden)), external_attr=0x10))
        elif name.endswith(".data/serialization_id"):
            entries.append(RawEntry(name.encode(), hidden))
        else:
            entries.append(RawEntry(name.encode(), data))
    return write_zip(entries)


# --------------------------------------------------------------------------------------------- polyglots


def legacy_bytes(sd: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def zip_bytes(sd: dict[str, torch.Tensor], data_pkl: bytes | None = None) -> bytes:
    members = torch_members(sd)
    return write_zip(_entries(members, None if data_pkl is None else RawEntry(b"archive/data.pkl", data_pkl)))


def pickle_then_zip(rng: random.Random, first: bytes, archive: bytes) -> bytes:
    """A pickle (or a whole legacy torch file) followed by a zip: torch.load and pickle.load read the pickle,
    zipfile (numpy.load of a zip-named file, Keras, custom loaders) finds the zip by its end record."""
    gap = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    return first + gap + archive


def safetensors_pickle(rng: random.Random, pickled: bytes) -> bytes:
    """A valid safetensors file that is also a pickle from byte 0.

    The 8-byte header length starts with SHORT_BINSTRING ('U', n): the pickle skips the rest of the length
    field and part of the JSON, then hops through a metadata string ('U' + a length character + that many
    bytes, again and again) to the data section, where a U8 tensor holds `pickled`. safetensors sees a header
    and one tensor; pickle.load and torch.load (of any name but *.safetensors) run `pickled`."""
    import json

    skip = rng.randint(0x90, 0xFF)  # bytes 2..skip+1 are skipped: the pickle resumes at JSON offset skip - 6
    header_len = 0x55 | (skip << 8) | (rng.randint(0, 3) << 16)
    tensor = {"dtype": "U8", "shape": [len(pickled)], "data_offsets": [0, len(pickled)]}
    text = json.dumps({"t": tensor}, separators=(",", ":"))[:-1] + ',"__metadata__":{"k":"'
    resume = skip - 6
    if resume < len(text):
        raise AssertionError("metadata starts too late")
    text += "a" * (resume - len(text))

    def allowed(n: int) -> bool:
        return 0x20 <= n <= 0x7E and chr(n) not in '"\\'

    while True:
        left = header_len - (len(text) + 2)  # what the next hop must skip to land on the data section
        if allowed(left) and left >= 3:
            text += "U" + chr(left) + "a" * (left - 3) + '"}}'
            break
        hop = 0x7E if left - (0x7E + 2) >= 0x40 else left - 2 - 0x40
        while not allowed(hop):
            hop -= 1
        text += "U" + chr(hop) + "a" * hop
    assert len(text) == header_len
    json.loads(text)
    return struct.pack("<Q", header_len) + text.encode() + pickled


def hdf5_with_user_block(rng: random.Random, user_block: bytes, work: Path, *, lambda_layer: bool = False) -> bytes:
    """A Keras .h5 weights file (a model config too when `lambda_layer`: one Lambda layer, whose bytecode Keras
    would run) after a user block holding `user_block` (a pickle, a torch file): h5py opens the HDF5 part,
    pickle.load and torch.load read the user block. User blocks of 512 B to 32 KiB."""
    import json

    import h5py
    import numpy as np

    size = 512
    while size < len(user_block):
        size *= 2
    size *= rng.choice([1, 2, 16, 64])
    path = work / f"ub-{rng.randrange(1 << 30)}.h5"
    with h5py.File(path, "w", userblock_size=size) as f:
        g = f.create_group("dense").create_group("dense")
        g.create_dataset("kernel:0", data=np.arange(6, dtype=np.float32).reshape(2, 3))
        f.attrs["layer_names"] = [b"dense"]
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        f["dense"].attrs["weight_names"] = [b"dense/kernel:0"]
        if lambda_layer:
            layers = [
                {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 2]}},
                {"class_name": "Dense", "config": {"name": "dense", "units": 3}},
                {"class_name": "Lambda", "config": {"name": "lam", "function": ["4wEAAAAAAAAA", None, None]}},
            ]
            config = {"class_name": "Sequential", "config": {"name": "m", "layers": layers}}
            f.attrs["model_config"] = json.dumps(config).encode()
    blob = bytearray(path.read_bytes())
    path.unlink()
    blob[: len(user_block)] = user_block
    return bytes(blob)


def long_string_pickle(rng: random.Random, then: bytes) -> bytes:
    """A stream whose first opcode pushes a string longer than any sniff window (text or binary, with or without
    a PROTO first), popped, then `then` (a pickle of its own, PROTO included: valid mid-stream)."""
    text = bytes(rng.choice(b"abcdefghij ") for _ in range(rng.randint(5000, 20000)))
    style = rng.choice(["V", "X", "S", "proto-X"])
    if style == "V":
        head = b"V" + text + b"\n"
    elif style == "S":
        head = b"S'" + text + b"'\n"
    else:
        head = b"X" + struct.pack("<I", len(text)) + text
        if style == "proto-X":
            head = b"\x80\x04" + head  # protocol 4 without a FRAME
    return head + b"0" + then


def stacked_pickles(rng: random.Random, last: bytes, count: int = 70) -> bytes:
    """`count` harmless pickles one after another, then `last` (what pickle.load in a loop reaches at the end)."""
    return b"".join(pickle.dumps(rng.randrange(1000), protocol=rng.choice([0, 2, 4])) for _ in range(count)) + last
