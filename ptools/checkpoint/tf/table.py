"""The LevelDB-style SSTable TensorFlow uses for `PREFIX.index`: a checked reader and a writer.

Layout: data blocks, an (empty) metaindex block and an index block, each followed by a 5-byte trailer
(compression type + masked CRC-32C of block+type), then a 48-byte footer with the two block handles and
the magic number. Every block's CRC is checked on read. Errors raise `TableError` with a message that
says which block and what is wrong; the bundle reader adds the file name.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ptools.checkpoint.tf import crc32c, snappy
from ptools.checkpoint.tf.proto import ProtoError, put_varint, read_varint

MAGIC = 0xDB4775248B80FB57
MAGIC_BYTES = struct.pack("<Q", MAGIC)
FOOTER_SIZE = 48
TRAILER_SIZE = 5
NO_COMPRESSION, SNAPPY = 0, 1
DEFAULT_BLOCK_SIZE = 262144  # table_options.h
DEFAULT_RESTART_INTERVAL = 16


class TableError(ValueError):
    """Structure or checksum problem in an SSTable."""


def _handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return offset, size, pos


def read_block(data: bytes, offset: int, size: int, what: str) -> bytes:
    """The checked, decompressed contents of the block at (offset, size)."""
    end = offset + size + TRAILER_SIZE
    if offset < 0 or size < 0 or end > len(data) - FOOTER_SIZE:
        raise TableError(f"{what} (offset {offset}, size {size}) lies outside the file ({len(data)} bytes)")
    contents = data[offset : offset + size]
    ctype = data[offset + size]
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    actual = crc32c.extend(crc32c.value(contents), bytes([ctype]))
    if crc32c.unmask(stored) != actual:
        raise TableError(
            f"CRC32C mismatch in {what} at offset {offset}: stored {crc32c.unmask(stored):#010x}, "
            f"computed {actual:#010x}"
        )
    if ctype == NO_COMPRESSION:
        return contents
    if ctype == SNAPPY:
        try:
            return snappy.decompress(contents)
        except snappy.SnappyError as e:
            raise TableError(f"bad snappy data in {what} at offset {offset}: {e}") from None
    raise TableError(f"unknown compression type {ctype} in {what} at offset {offset}")


def iter_block(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    """Decode a block's prefix-compressed entries, checking the restart array against them."""
    if len(block) < 4:
        raise TableError(f"{what} is too short ({len(block)} bytes)")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 * (num_restarts + 1)
    if num_restarts == 0 or limit < 0:
        raise TableError(f"{what} has a bad restart count ({num_restarts})")
    restarts = set(struct.unpack_from(f"<{num_restarts}I", block, limit))
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    seen_restarts = 0
    try:
        while pos < limit:
            at_restart = pos in restarts
            seen_restarts += at_restart
            shared, pos = read_varint(block, pos)
            non_shared, pos = read_varint(block, pos)
            vlen, pos = read_varint(block, pos)
            if shared > len(key) or pos + non_shared + vlen > limit:
                raise TableError(f"{what} has a corrupt entry at byte {pos}")
            if at_restart and shared:
                raise TableError(f"{what} has a restart point at byte {pos} with a shared key prefix")
            new_key = key[:shared] + block[pos : pos + non_shared]
            pos += non_shared
            if entries and new_key <= key:
                raise TableError(f"{what} keys are out of order at {new_key[:60]!r}")
            key = new_key
            entries.append((key, block[pos : pos + vlen]))
            pos += vlen
    except ProtoError as e:
        raise TableError(f"{what} has a corrupt entry: {e}") from None
    if entries and seen_restarts != len(restarts) or 0 not in restarts:
        raise TableError(f"{what} has restart offsets that do not point at entries")
    return entries


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable held in memory, walking footer -> index block -> data blocks."""
    if len(data) < FOOTER_SIZE:
        raise TableError(f"file is too short for a table footer ({len(data)} bytes, need {FOOTER_SIZE})")
    footer = data[-FOOTER_SIZE:]
    if footer[-8:] != MAGIC_BYTES:
        raise TableError("bad magic number in the table footer (not a TensorFlow index, or truncated)")
    try:
        meta_off, meta_size, pos = _handle(footer, 0)
        index_off, index_size, pos = _handle(footer, pos)
    except ProtoError as e:
        raise TableError(f"corrupt table footer: {e}") from None
    if pos > 40:
        raise TableError("corrupt table footer: block handles overrun the padding")
    read_block(data, meta_off, meta_size, "metaindex block")  # checked, contents unused (TF writes none)
    index = iter_block(read_block(data, index_off, index_size, "index block"), "index block")
    entries: list[tuple[bytes, bytes]] = []
    prev_sep: bytes | None = None
    for i, (sep, handle) in enumerate(index):
        try:
            off, size, hpos = _handle(handle, 0)
        except ProtoError as e:
            raise TableError(f"index entry {i} has a corrupt block handle: {e}") from None
        if hpos != len(handle):
            raise TableError(f"index entry {i} has trailing bytes after its block handle")
        what = f"data block {i}"
        block_entries = iter_block(read_block(data, off, size, what), what)
        if not block_entries:
            raise TableError(f"{what} is empty")
        # The separator bounds the block: > every key in it, <= ... and keys continue ascending across blocks.
        if block_entries[-1][0] > sep or (prev_sep is not None and block_entries[0][0] <= prev_sep):
            raise TableError(f"{what} keys disagree with the index block")
        if entries and block_entries[0][0] <= entries[-1][0]:
            raise TableError(f"{what} keys are out of order with the previous block")
        entries.extend(block_entries)
        prev_sep = sep
    return entries


# --- writer ---------------------------------------------------------------------------------------


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key k with start <= k < limit (LevelDB's BytewiseComparator::FindShortestSeparator)."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n:
        b = start[i]
        if b < 0xFF and b + 1 < limit[i]:
            return start[:i] + bytes([b + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """A short key >= key (FindShortSuccessor): bump the first byte that is not 0xff."""
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes([b + 1])
    return key


def _build_block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out = bytearray()
    restarts: list[int] = []
    prev = b""
    for i, (key, val) in enumerate(entries):
        if i % restart_interval == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = 0
            m = min(len(prev), len(key))
            while shared < m and prev[shared] == key[shared]:
                shared += 1
        out += put_varint(shared) + put_varint(len(key) - shared) + put_varint(len(val))
        out += key[shared:] + val
        prev = key
    if not restarts:
        restarts.append(0)
    out += struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def _raw_block(contents: bytes, compression: int) -> bytes:
    if compression == SNAPPY:
        packed = snappy.compress(contents)
        # LevelDB keeps the block uncompressed unless snappy saves at least 12.5%.
        if len(packed) < len(contents) - len(contents) // 8:
            contents = packed
        else:
            compression = NO_COMPRESSION
    crc = crc32c.extend(crc32c.value(contents), bytes([compression]))
    return contents + bytes([compression]) + struct.pack("<I", crc32c.mask(crc))


def build_table(
    entries: Iterable[tuple[bytes, bytes]],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    restart_interval: int = DEFAULT_RESTART_INTERVAL,
    compression: int = NO_COMPRESSION,
) -> bytes:
    """Serialise sorted, unique (key, value) pairs as an SSTable, the way TF's TableBuilder lays it out."""
    out = bytearray()
    index: list[tuple[bytes, bytes]] = []
    pending: list[tuple[bytes, bytes]] = []
    pending_size = 0  # BlockBuilder::CurrentSizeEstimate without the restart array
    pending_restarts = 0
    pending_handle: tuple[int, int] | None = None
    last_key: bytes | None = None

    def flush() -> None:
        nonlocal pending, pending_size, pending_restarts, pending_handle
        contents = _build_block(pending, restart_interval)
        raw = _raw_block(contents, compression)
        pending_handle = (len(out), len(raw) - TRAILER_SIZE)
        out.extend(raw)
        pending, pending_size, pending_restarts = [], 0, 0

    for key, val in entries:
        if last_key is not None and key <= last_key:
            raise ValueError(f"table keys must be strictly increasing: {key!r} after {last_key!r}")
        if pending_handle is not None:  # the previous block's index key can be chosen now that we see `key`
            assert last_key is not None
            index.append(
                (_shortest_separator(last_key, key), put_varint(pending_handle[0]) + put_varint(pending_handle[1]))
            )
            pending_handle = None
        # Size the block exactly as TF does, so blocks split where TF splits them (same index bytes).
        shared = 0
        if len(pending) % restart_interval == 0:
            pending_restarts += 1
        else:
            prev = pending[-1][0]
            m = min(len(prev), len(key))
            while shared < m and prev[shared] == key[shared]:
                shared += 1
        pending.append((key, val))
        pending_size += len(put_varint(shared) + put_varint(len(key) - shared) + put_varint(len(val)))
        pending_size += len(key) - shared + len(val)
        last_key = key
        if pending_size + 4 * pending_restarts + 4 >= block_size:
            flush()
    if pending:
        flush()
    if pending_handle is not None:
        assert last_key is not None
        index.append((_short_successor(last_key), put_varint(pending_handle[0]) + put_varint(pending_handle[1])))
    meta_off = len(out)
    meta = _raw_block(_build_block([], 1), NO_COMPRESSION)
    out += meta
    index_off = len(out)
    index_raw = _raw_block(_build_block(index, 1), compression)
    out += index_raw
    footer = put_varint(meta_off) + put_varint(len(meta) - TRAILER_SIZE)
    footer += put_varint(index_off) + put_varint(len(index_raw) - TRAILER_SIZE)
    out += footer + bytes(40 - len(footer)) + MAGIC_BYTES
    return bytes(out)
