"""CRC-32C (both implementations), the CRC mask, Snappy, and the OrderedCode slice keys."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptools.checkpoint.tf import crc32c, snappy
from ptools.checkpoint.tf.proto import slice_key


def crc_reference(data: bytes) -> int:
    """Bit-by-bit CRC-32C straight from the definition (reflected 0x82F63B78, init and xorout ~0)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_published_check_values() -> None:
    # RFC 3720 (iSCSI) B.4 test vectors and the catalogue "check" value.
    assert crc32c.value(b"123456789") == 0xE3069283
    assert crc32c.extend_fallback(0, b"\x00" * 32) == 0x8A9136AA
    assert crc32c.extend_fallback(0, b"\xff" * 32) == 0x62A8AB43
    assert crc32c.extend_fallback(0, bytes(range(32))) == 0x46DD794E


@pytest.mark.parametrize("size", [0, 1, 7, 4095, 32767, 32768, 32769, 65536 + 3, 300_001])
def test_numpy_lanes_match_the_definition(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    if size < 70_000:
        want = crc_reference(data)
    else:  # the bit-by-bit reference is slow: chain pieces small enough for the plain table loop
        want = 0
        for i in range(0, size, 30_000):
            want = crc32c.extend_fallback(want, data[i : i + 30_000])
    assert crc32c.extend_fallback(0, data) == want
    assert crc32c.value(data) == want  # google-crc32c when installed, else the same fallback


@settings(max_examples=40, deadline=None)
@given(a=st.binary(max_size=300), b=st.binary(max_size=300))
def test_extend_is_concatenation(a: bytes, b: bytes) -> None:
    assert crc32c.extend_fallback(crc32c.extend_fallback(0, a), b) == crc_reference(a + b)


def test_zero_shift_maps_compose() -> None:
    for n in (1, 3, 256, 1000):
        reg = 0x12345678
        slow = reg
        for _ in range(n):
            slow = crc32c._T0[slow & 0xFF] ^ (slow >> 8)
        assert crc32c.shift_zeros(reg, n) == slow


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_mask_round_trip(c: int) -> None:
    assert crc32c.unmask(crc32c.mask(c)) == c


def test_mask_is_rotate_then_add_delta() -> None:
    assert crc32c.mask(0) == 0xA282EAD8
    assert crc32c.mask(1) == (1 << 17) + 0xA282EAD8
    assert crc32c.mask(1 << 15) == 1 + 0xA282EAD8


@settings(max_examples=80, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=3000),
        st.lists(st.sampled_from([b"ab", b"abc", b"\x00" * 9, b"xyz!"]), max_size=400).map(b"".join),
    )
)
def test_snappy_round_trip(data: bytes) -> None:
    assert snappy.decompress(snappy.compress(data)) == data


def test_snappy_hand_built_stream_with_overlapping_copy() -> None:
    # Length 12, literal "ab", then a 1-byte-offset copy of 10 bytes from 2 back: it overlaps its own output.
    stream = bytes([12, (2 - 1) << 2]) + b"ab" + bytes([0b001 | ((10 - 4) << 2), 2])
    assert snappy.decompress(stream) == b"ab" * 6
    literal_61 = bytes([61, 60 << 2, 60]) + b"q" * 61  # literal length in one extra byte
    assert snappy.decompress(literal_61) == b"q" * 61
    copy4 = bytes([8, 0 << 2 | 0, ord("z")]) + bytes([3 | (6 << 2)]) + (1).to_bytes(4, "little")
    assert snappy.decompress(copy4) == b"z" * 8


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_snappy_garbage_raises_only_snappy_error(data: bytes) -> None:
    try:
        snappy.decompress(data)
    except snappy.SnappyError:
        pass


def test_slice_keys_match_tensorflow_examples() -> None:
    # TF_FORMATS.md 1.7: NumIncreasing(0)=00, string escape + 00 01, rank, signed starts/lengths.
    key = slice_key("a\x00b", [(0, -1), (64, 8192)])
    assert key == b"\x00" + b"a\x00\xffb\x00\x01" + b"\x01\x02" + b"\x80\x7f" + b"\xc0\x40" + b"\xe0\x20\x00"
    assert slice_key("x", [(930, 2)]) == b"\x00x\x00\x01\x01\x01\xc3\xa2\x82"
