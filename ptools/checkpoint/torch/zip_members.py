"""Every member of a zip archive, read from its central directory AND its local headers, with bounded inflation.

Zip readers disagree: Python's zipfile takes the last central-directory entry of a name, other readers
the first, streaming readers walk the local headers and never see the directory. A scan that trusts one
reader can miss a pickle another one loads, so the scan lists them all: every central entry (duplicate
names included) and every local header reachable by walking from the start of the file.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any

_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_MAX_MEMBERS = 1 << 20
_HH = struct.Struct("<HH").unpack_from


class FileBytes:
    """A file read with pread, sliced like bytes: headers are read without mapping the file (mapped pages of
    thousands of local headers and storage heads would count in the process's RSS)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: slice) -> bytes:
        start, stop, _ = key.indices(self.size)
        return os.pread(self.fd, max(0, stop - start), start) if stop > start else b""

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        end = self.size if end is None else min(end, self.size)
        step = 1 << 20
        pos = start
        while pos < end:
            chunk = self[pos : min(end, pos + step + len(sub) - 1)]
            i = chunk.find(sub)
            if i >= 0:
                return pos + i
            pos += step
        return -1


@dataclass
class Member:
    """One stored file: where its bytes are and how they are packed."""

    name: str
    method: int  # 0 stored, 8 deflate
    comp_size: int
    size: int  # declared uncompressed size
    header_offset: int
    data_offset: int | None  # None when the local header is missing or damaged
    origin: str  # "central" or "local"


class ZipError(Exception):
    pass


def _zip64_extra(extra: bytes, size: int, comp: int, offset: int) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, n = struct.unpack_from("<HH", extra, i)
        body = extra[i + 4 : i + 4 + n]
        if tag == 1:
            j = 0
            vals = []
            for present in (size == 0xFFFFFFFF, comp == 0xFFFFFFFF, offset == 0xFFFFFFFF):
                if present and j + 8 <= len(body):
                    vals.append(struct.unpack_from("<Q", body, j)[0])
                    j += 8
                else:
                    vals.append(None)
            size = vals[0] if vals[0] is not None else size
            comp = vals[1] if vals[1] is not None else comp
            offset = vals[2] if vals[2] is not None else offset
            break
        i += 4 + n
    return size, comp, offset


def _local_data_offset(buf: Any, header_offset: int) -> tuple[int, int, int, int, int, str] | None:
    """(data offset, method, comp size, size, flags, name) from a local header, or None if there is none."""
    header = bytes(buf[header_offset : header_offset + 30]) if header_offset >= 0 else b""
    if len(header) < 30 or header[:4] != _LOCAL:
        return None
    _, _, flags, method, _, _, _, comp, size, n, e = struct.unpack("<4sHHHHHIIIHH", header)
    name = bytes(buf[header_offset + 30 : header_offset + 30 + n]).decode("utf-8", "replace")
    extra = bytes(buf[header_offset + 30 + n : header_offset + 30 + n + e])
    size, comp, _ = _zip64_extra(extra, size, comp, 0)
    return header_offset + 30 + n + e, method, comp, size, flags, name


def _central(buf: Any) -> list[Member]:
    end = len(buf)
    tail_start = max(0, end - (65535 + 22))
    pos = bytes(buf[tail_start:end]).rfind(_EOCD)
    if pos < 0:
        return []
    eocd = tail_start + pos
    if eocd + 22 > end:
        return []
    _, _, _, _, count, cd_size, cd_offset, _ = struct.unpack("<4sHHHHIIH", bytes(buf[eocd : eocd + 22]))
    loc = eocd - 20
    zip64 = loc >= 0 and buf[loc : loc + 4] == _EOCD64_LOCATOR
    if zip64:
        rec = struct.unpack("<Q", bytes(buf[loc + 8 : loc + 16]))[0]
        if 0 <= rec and rec + 56 <= end and buf[rec : rec + 4] == _EOCD64:
            count, cd_size, cd_offset = struct.unpack("<QQQ", bytes(buf[rec + 32 : rec + 56]))
    # Data prepended to the archive shifts every offset; zipfile corrects for it the same way.
    cd_end = eocd if not zip64 else max(0, loc - 56)
    shift = max(0, cd_end - cd_size - cd_offset) if cd_offset + cd_size <= cd_end else 0
    cd = bytes(buf[cd_offset + shift : min(end, cd_offset + shift + cd_size)])
    members: list[Member] = []
    pos = 0
    while pos + 46 <= len(cd) and cd[pos : pos + 4] == _CENTRAL and len(members) < _MAX_MEMBERS:
        fields = struct.unpack_from("<4sHHHHHHIIIHHHHHII", cd, pos)
        method, comp, size = fields[4], fields[8], fields[9]
        n, e, c, offset = fields[10], fields[11], fields[12], fields[16]
        name = cd[pos + 46 : pos + 46 + n].decode("utf-8", "replace")
        if 0xFFFFFFFF in (size, comp, offset):
            size, comp, offset = _zip64_extra(cd[pos + 46 + n : pos + 46 + n + e], size, comp, offset)
        offset += shift
        # Where the data starts: after the local header, whose name and extra lengths are its own.
        data = None
        header = bytes(buf[offset : offset + 30]) if offset >= 0 else b""
        if len(header) == 30 and header[:4] == _LOCAL:
            ln, le = _HH(header, 26)
            data = offset + 30 + ln + le
        members.append(Member(name, method, comp, size, offset, data, "central"))
        pos += 46 + n + e + c
    return members


def _walk_local(buf: Any, known: dict[int, Member]) -> list[Member]:
    """Local headers one after another from the start of the file (what a streaming reader sees)."""
    found: list[Member] = []
    pos = 0
    end = len(buf)
    while len(found) < _MAX_MEMBERS:
        local = _local_data_offset(buf, pos)
        if local is None:
            break
        data, method, comp, size, flags, name = local
        if pos in known:
            comp = known[pos].comp_size
        elif flags & 8 and comp == 0:
            nxt = _next_signature(buf, data)
            comp = (nxt if nxt is not None else end) - data
        if pos not in known:
            found.append(Member(name, method, comp, size, pos, data, "local"))
        pos = data + comp
        if flags & 8:  # a data descriptor follows: optional signature, crc, sizes
            if buf[pos : pos + 4] == b"PK\x07\x08":
                pos += 4
            pos += 12 if buf[pos + 12 : pos + 16] in (_LOCAL, _CENTRAL) else 20
        if pos <= 0 or pos >= end:
            break
    return found


def _next_signature(buf: Any, start: int) -> int | None:
    a = buf.find(_LOCAL, start)
    b = buf.find(_CENTRAL, start)
    cands = [x for x in (a, b) if x >= 0]
    return min(cands) if cands else None


def list_members(buf: Any) -> list[Member]:
    """Every member the central directory lists and every one a walk of local headers reaches."""
    central = _central(buf)
    known = {m.header_offset: m for m in central}
    return central + _walk_local(buf, known)


def read_member(buf: Any, m: Member, limit: int) -> bytes:
    """The member's bytes as a loader gets them: never more than min(declared size, limit); a deflate stream
    is inflated only that far (zip bombs stop there; torch and zipfile both stop at the declared size)."""
    if m.data_offset is None:
        raise ZipError(f"{m.name}: local header missing or damaged")
    if m.size > limit:
        raise ZipError(f"{m.name} declares {m.size} bytes, more than this file could hold ({limit})")
    raw_end = m.data_offset + m.comp_size
    if raw_end > len(buf):
        raise ZipError(f"{m.name} runs past the end of the file (truncated)")
    if m.method == 0:
        raw = buf[m.data_offset : raw_end]
        return bytes(raw[: m.size]) if len(raw) >= m.size else bytes(raw)
    if m.method != 8:
        raise ZipError(f"{m.name}: compression method {m.method} is not supported")
    data, _ = inflate_prefix(buf, m.data_offset, m.comp_size, m.size)
    return data


def inflate_prefix(buf: Any, start: int, comp_size: int, size: int) -> tuple[bytes, bool]:
    """Up to `size` bytes of the raw deflate stream at `start`, as far as it decodes, and whether it ended there.

    A damaged stream yields what decoded before the damage (torch keeps that and leaves the rest of its
    buffer uninitialised); a stream longer than `size` is cut at `size` (torch and zipfile stop there too).
    """
    d = zlib.decompressobj(-15)
    out = bytearray()
    pos, end = start, start + comp_size
    step = 1 << 16
    while pos < end and len(out) < size:
        chunk = bytes(buf[pos : min(end, pos + step)])
        if not chunk:
            break
        try:
            out += d.decompress(chunk, size - len(out))
            while d.unconsumed_tail and len(out) < size:
                out += d.decompress(d.unconsumed_tail, size - len(out))
        except zlib.error:
            return _inflate_until_damage(buf, start, pos + len(chunk), size), False
        if d.eof:
            return bytes(out), True
        pos += len(chunk)
    return bytes(out), d.eof


def _inflate_until_damage(buf: Any, start: int, stop: int, size: int) -> bytes:
    """What a damaged stream decodes to before zlib gives up (fed in small steps so the last good bytes count)."""
    d = zlib.decompressobj(-15)
    out = bytearray()
    pos = start
    while pos < stop and len(out) < size:
        step = 1 if stop - pos < 4096 else 1024
        try:
            out += d.decompress(bytes(buf[pos : min(stop, pos + step)]), size - len(out))
        except zlib.error:
            break
        if d.eof:
            break
        pos += step
    return bytes(out[:size])


def member_head(buf: Any, m: Member, n: int = 64) -> bytes:
    """The first `n` bytes of a member, inflating only that much."""
    if m.data_offset is None or m.data_offset >= len(buf):
        return b""
    # Only the bytes needed: touching more of a mapped storage would read it from disk.
    span = n if m.method == 0 else min(m.comp_size, 16 << 10)
    raw = buf[m.data_offset : min(len(buf), m.data_offset + span, m.data_offset + m.comp_size)]
    if m.method == 0:
        return bytes(raw)
    if m.method == 8:
        try:
            return zlib.decompressobj(-15).decompress(raw, n)
        except zlib.error:
            return b""
    return b""
