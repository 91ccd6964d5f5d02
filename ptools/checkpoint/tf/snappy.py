"""Raw (unframed) Snappy block format: a decoder for compressed SSTable blocks and a small encoder for tests.

Follows google/snappy's format_description.txt: a varint with the uncompressed length, then elements
whose tag's low two bits say literal (00), copy with 1-byte offset (01), 2-byte offset (10) or 4-byte
offset (11). Copies may overlap their own output (offset < length repeats a pattern).
"""

from __future__ import annotations

from ptools.checkpoint.tf.proto import ProtoError, put_varint, read_varint


class SnappyError(ValueError):
    """The compressed bytes are malformed."""


def decompress(buf: bytes) -> bytes:
    """Decode one raw Snappy block; raises SnappyError on any inconsistency."""
    try:
        total, pos = read_varint(buf, 0)
    except ProtoError as e:
        raise SnappyError(f"bad length varint: {e}") from None
    if total >= 1 << 32:  # Snappy's length is a 32-bit varint
        raise SnappyError("length varint too long")
    out = bytearray()
    n = len(buf)
    while pos < n:
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal; lengths above 60 are stored in 1-4 extra bytes
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                if pos + extra > n:
                    raise SnappyError("truncated literal length")
                length = int.from_bytes(buf[pos : pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > n:
                raise SnappyError("literal runs past the end of the input")
            out += buf[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            if pos >= n:
                raise SnappyError("truncated copy")
            length = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | buf[pos]
            pos += 1
        else:
            width = 2 if kind == 2 else 4
            if pos + width > n:
                raise SnappyError("truncated copy")
            length = (tag >> 2) + 1
            offset = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise SnappyError(f"copy offset {offset} outside the {len(out)} bytes decoded so far")
        start = len(out) - offset
        if offset >= length:
            out += out[start : start + length]
        else:  # overlapping copy: repeat the last `offset` bytes
            chunk = bytes(out[start:])
            reps, rest = divmod(length, offset)
            out += chunk * reps + chunk[:rest]
        if len(out) > total:
            raise SnappyError("output longer than the declared length")
    if len(out) != total:
        raise SnappyError(f"decoded {len(out)} bytes, header says {total}")
    return bytes(out)


def _literal(data: bytes) -> bytes:
    n = len(data) - 1
    if n < 60:
        return bytes([n << 2]) + data
    width = (n.bit_length() + 7) // 8
    return bytes([(59 + width) << 2]) + n.to_bytes(width, "little") + data


def _copy(offset: int, length: int) -> bytes:
    out = bytearray()
    while length > 0:
        step = min(length, 64)
        if 4 <= step <= 11 and offset < 2048:
            out += bytes([1 | ((step - 4) << 2) | ((offset >> 8) << 5), offset & 0xFF])
        elif offset < 65536:
            out += bytes([2 | ((step - 1) << 2)]) + offset.to_bytes(2, "little")
        else:
            out += bytes([3 | ((step - 1) << 2)]) + offset.to_bytes(4, "little")
        length -= step
    return bytes(out)


def compress(data: bytes) -> bytes:
    """Greedy hash-of-4-bytes encoder: valid Snappy, not tuned for ratio or speed (tests and the writer)."""
    out = bytearray(put_varint(len(data)))
    table: dict[bytes, int] = {}
    lit_start = pos = 0
    n = len(data)
    while pos + 4 <= n:
        key = data[pos : pos + 4]
        cand = table.get(key)
        table[key] = pos
        if cand is None:
            pos += 1
            continue
        length = 4
        while pos + length < n and data[cand + length] == data[pos + length]:
            length += 1
        if lit_start < pos:
            out += _literal(data[lit_start:pos])
        offset = pos - cand
        # The last piece of a split copy must stay >= 4 bytes for the 1-byte-offset form; _copy handles it
        # by falling back to the 2-byte form, which accepts any length 1..64.
        out += _copy(offset, length)
        pos += length
        lit_start = pos
    if lit_start < n:
        out += _literal(data[lit_start:])
    return bytes(out)
