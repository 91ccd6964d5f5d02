"""Hand-written protobuf wire format for the few TensorFlow messages a checkpoint holds (no protobuf runtime).

Covers BundleHeaderProto, BundleEntryProto (with TensorShapeProto and TensorSliceProto), the
TrackableObjectGraph, and the OrderedCode keys TensorFlow uses for the slices of partitioned variables.
Decoders raise `ProtoError` (a ValueError) on malformed input; callers turn it into a PtoolsError that
names the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field


class ProtoError(ValueError):
    """Malformed protobuf bytes."""


# --- wire format ----------------------------------------------------------------------------------


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; returns (value, next position)."""
    result = shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtoError("varint longer than 10 bytes")


def put_varint(n: int) -> bytes:
    """Encode a non-negative integer (negative int64 values are written as their 64-bit two's complement)."""
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def iter_fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Every (field number, wire type, value) of one message; values are ints or bytes."""
    out: list[tuple[int, int, int | bytes]] = []
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = read_varint(buf, pos)
        fnum, wt = key >> 3, key & 7
        if fnum == 0:
            raise ProtoError("field number 0")
        if wt == 0:
            val, pos = read_varint(buf, pos)
            out.append((fnum, wt, val))
        elif wt == 1:
            if pos + 8 > n:
                raise ProtoError("truncated fixed64")
            out.append((fnum, wt, struct.unpack_from("<Q", buf, pos)[0]))
            pos += 8
        elif wt == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > n:
                raise ProtoError("length-delimited field runs past the end")
            out.append((fnum, wt, bytes(buf[pos : pos + length])))
            pos += length
        elif wt == 5:
            if pos + 4 > n:
                raise ProtoError("truncated fixed32")
            out.append((fnum, wt, struct.unpack_from("<I", buf, pos)[0]))
            pos += 4
        else:
            raise ProtoError(f"unsupported wire type {wt}")
    return out


def _expect(wt: int, want: int, what: str) -> None:
    if wt != want:
        raise ProtoError(f"{what}: wire type {wt}, expected {want}")


def _int(v: int | bytes, wt: int, what: str) -> int:
    _expect(wt, 0, what)
    assert isinstance(v, int)
    return _signed64(v)


def _bytes(v: int | bytes, wt: int, what: str) -> bytes:
    _expect(wt, 2, what)
    assert isinstance(v, bytes)
    return v


def _tag(fnum: int, wt: int) -> bytes:
    return put_varint((fnum << 3) | wt)


def _len_field(fnum: int, payload: bytes) -> bytes:
    return _tag(fnum, 2) + put_varint(len(payload)) + payload


# --- tensor_bundle.proto ------------------------------------------------------------------------


@dataclass
class BundleHeader:
    num_shards: int = 0
    endianness: int = 0  # 0 little, 1 big
    producer: int = 0
    min_consumer: int = 0
    bad_consumers: list[int] = field(default_factory=list)


Extent = tuple[int, int]  # (start, length); length -1 means the whole dimension


@dataclass
class BundleEntry:
    dtype: int = 0
    shape: tuple[int, ...] = ()
    unknown_rank: bool = False
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0  # masked, as stored
    has_crc: bool = False
    slices: list[list[Extent]] = field(default_factory=list)


def parse_header(buf: bytes) -> BundleHeader:
    h = BundleHeader()
    for fnum, wt, v in iter_fields(buf):
        if fnum == 1:
            h.num_shards = _int(v, wt, "num_shards")
        elif fnum == 2:
            h.endianness = _int(v, wt, "endianness")
        elif fnum == 3:
            for f2, w2, v2 in iter_fields(_bytes(v, wt, "version")):
                if f2 == 1:
                    h.producer = _int(v2, w2, "producer")
                elif f2 == 2:
                    h.min_consumer = _int(v2, w2, "min_consumer")
                elif f2 == 3:
                    if w2 == 2:  # packed
                        b, p = _bytes(v2, w2, "bad_consumers"), 0
                        while p < len(b):
                            x, p = read_varint(b, p)
                            h.bad_consumers.append(_signed64(x))
                    else:
                        h.bad_consumers.append(_int(v2, w2, "bad_consumers"))
    return h


def encode_header(num_shards: int, producer: int = 1, min_consumer: int = 0) -> bytes:
    version = b""
    if producer:
        version += _tag(1, 0) + put_varint(producer)
    if min_consumer:
        version += _tag(2, 0) + put_varint(min_consumer)
    out = b""
    if num_shards:
        out += _tag(1, 0) + put_varint(num_shards)
    return out + _len_field(3, version)


def _parse_shape(buf: bytes) -> tuple[tuple[int, ...], bool]:
    dims: list[int] = []
    unknown = False
    for fnum, wt, v in iter_fields(buf):
        if fnum == 2:
            size = 0
            for f2, w2, v2 in iter_fields(_bytes(v, wt, "dim")):
                if f2 == 1:
                    size = _int(v2, w2, "dim.size")
            dims.append(size)
        elif fnum == 3:
            unknown = bool(_int(v, wt, "unknown_rank"))
    return tuple(dims), unknown


def _parse_slice(buf: bytes) -> list[Extent]:
    extents: list[Extent] = []
    for fnum, wt, v in iter_fields(buf):
        if fnum == 1:
            start, length = 0, -1
            for f2, w2, v2 in iter_fields(_bytes(v, wt, "extent")):
                if f2 == 1:
                    start = _int(v2, w2, "extent.start")
                elif f2 == 2:
                    length = _int(v2, w2, "extent.length")
            extents.append((start, length))
    return extents


def parse_entry(buf: bytes) -> BundleEntry:
    e = BundleEntry()
    for fnum, wt, v in iter_fields(buf):
        if fnum == 1:
            e.dtype = _int(v, wt, "dtype")
        elif fnum == 2:
            e.shape, e.unknown_rank = _parse_shape(_bytes(v, wt, "shape"))
        elif fnum == 3:
            e.shard_id = _int(v, wt, "shard_id")
        elif fnum == 4:
            e.offset = _int(v, wt, "offset")
        elif fnum == 5:
            e.size = _int(v, wt, "size")
        elif fnum == 6:
            _expect(wt, 5, "crc32c")
            assert isinstance(v, int)
            e.crc32c, e.has_crc = v, True
        elif fnum == 7:
            e.slices.append(_parse_slice(_bytes(v, wt, "slices")))
    return e


def encode_shape(shape: tuple[int, ...]) -> bytes:
    return b"".join(_len_field(2, (_tag(1, 0) + put_varint(d)) if d else b"") for d in shape)


def encode_slice(extents: list[Extent]) -> bytes:
    out = b""
    for start, length in extents:
        body = b""
        if start:
            body += _tag(1, 0) + put_varint(start)
        if length >= 0:
            body += _tag(2, 0) + put_varint(length)
        out += _len_field(1, body)
    return out


def encode_entry(e: BundleEntry) -> bytes:
    out = b""
    if e.dtype:
        out += _tag(1, 0) + put_varint(e.dtype)
    out += _len_field(2, encode_shape(e.shape))  # TF always writes the shape, even for scalars
    if e.shard_id:
        out += _tag(3, 0) + put_varint(e.shard_id)
    if e.offset:
        out += _tag(4, 0) + put_varint(e.offset)
    if e.size:
        out += _tag(5, 0) + put_varint(e.size)
    if e.has_crc:
        out += _tag(6, 5) + struct.pack("<I", e.crc32c)
    for s in e.slices:
        out += _len_field(7, encode_slice(s))
    return out


# --- trackable_object_graph.proto ---------------------------------------------------------------


@dataclass
class SerializedTensor:
    name: str = ""
    full_name: str = ""
    checkpoint_key: str = ""


@dataclass
class SlotReference:
    original_variable_node_id: int = 0
    slot_name: str = ""
    slot_variable_node_id: int = 0


@dataclass
class TrackableNode:
    children: list[tuple[int, str]] = field(default_factory=list)  # (node_id, local_name)
    attributes: list[SerializedTensor] = field(default_factory=list)
    slot_variables: list[SlotReference] = field(default_factory=list)


def _str(v: int | bytes, wt: int, what: str) -> str:
    return _bytes(v, wt, what).decode("utf-8", errors="replace")


def parse_object_graph(buf: bytes) -> list[TrackableNode]:
    nodes: list[TrackableNode] = []
    for fnum, wt, v in iter_fields(buf):
        if fnum != 1:
            continue
        node = TrackableNode()
        for f2, w2, v2 in iter_fields(_bytes(v, wt, "node")):
            if f2 == 1:
                nid, local = 0, ""
                for f3, w3, v3 in iter_fields(_bytes(v2, w2, "child")):
                    if f3 == 1:
                        nid = _int(v3, w3, "child.node_id")
                    elif f3 == 2:
                        local = _str(v3, w3, "child.local_name")
                node.children.append((nid, local))
            elif f2 == 2:
                st = SerializedTensor()
                for f3, w3, v3 in iter_fields(_bytes(v2, w2, "attribute")):
                    if f3 == 1:
                        st.name = _str(v3, w3, "attribute.name")
                    elif f3 == 2:
                        st.full_name = _str(v3, w3, "attribute.full_name")
                    elif f3 == 3:
                        st.checkpoint_key = _str(v3, w3, "attribute.checkpoint_key")
                node.attributes.append(st)
            elif f2 == 3:
                ref = SlotReference()
                for f3, w3, v3 in iter_fields(_bytes(v2, w2, "slot_variable")):
                    if f3 == 1:
                        ref.original_variable_node_id = _int(v3, w3, "slot.original_variable_node_id")
                    elif f3 == 2:
                        ref.slot_name = _str(v3, w3, "slot.slot_name")
                    elif f3 == 3:
                        ref.slot_variable_node_id = _int(v3, w3, "slot.slot_variable_node_id")
                node.slot_variables.append(ref)
        nodes.append(node)
    return nodes


def encode_object_graph(nodes: list[TrackableNode]) -> bytes:
    out = b""
    for node in nodes:
        body = b""
        for nid, local in node.children:
            ref = (_tag(1, 0) + put_varint(nid) if nid else b"") + _len_field(2, local.encode())
            body += _len_field(1, ref)
        for st in node.attributes:
            body += _len_field(
                2,
                _len_field(1, st.name.encode())
                + _len_field(2, st.full_name.encode())
                + _len_field(3, st.checkpoint_key.encode()),
            )
        for sv in node.slot_variables:
            body += _len_field(
                3,
                _tag(1, 0)
                + put_varint(sv.original_variable_node_id)
                + _len_field(2, sv.slot_name.encode())
                + _tag(3, 0)
                + put_varint(sv.slot_variable_node_id),
            )
        out += _len_field(1, body)
    return out


# --- OrderedCode slice keys (saved_tensor_slice_util.cc EncodeTensorNameSlice) --------------------

_LENGTH_TO_HEADER = [(0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0), (0xFE, 0),
                     (0xFF, 0), (0xFF, 0x80), (0xFF, 0xC0)]  # fmt: skip


def _num_increasing(v: int) -> bytes:
    n = (v.bit_length() + 7) // 8
    return bytes([n]) + (v.to_bytes(n, "big") if n else b"")


def _signed_num_increasing(v: int) -> bytes:
    x = ~v if v < 0 else v
    if x < 64:
        return bytes([(0x80 ^ v) & 0xFF])
    length = x.bit_length() // 7 + 1
    raw = bytearray((v & ((1 << (8 * length)) - 1)).to_bytes(length, "big"))
    h0, h1 = _LENGTH_TO_HEADER[length]
    raw[0] ^= h0
    raw[1] ^= h1
    return bytes(raw)


def slice_key(name: str, extents: list[Extent]) -> bytes:
    """The index key TensorFlow stores one slice of variable `name` under."""
    out = _num_increasing(0) + _escape_name(name.encode("utf-8", "surrogateescape")) + _num_increasing(len(extents))
    for start, length in extents:
        out += _signed_num_increasing(start) + _signed_num_increasing(length)
    return out


def _escape_name(b: bytes) -> bytes:
    # Escape byte by byte: 0x00 -> 00 ff, 0xff -> ff 00, then the 00 01 terminator.
    out = bytearray()
    for c in b:
        if c == 0:
            out += b"\x00\xff"
        elif c == 0xFF:
            out += b"\xff\x00"
        else:
            out.append(c)
    return bytes(out) + b"\x00\x01"
