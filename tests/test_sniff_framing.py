"""The sans-I/O framer: whole TPM frames out of arbitrarily cut byte streams."""

from __future__ import annotations

import random

import pytest

from tpmseal.sniff.analysis.framing import FrameReader, FramingError

GET_RANDOM = bytes.fromhex("80010000000c0000017b0010")
STARTUP = bytes.fromhex("80010000000c000001440000")
RESPONSE = bytes.fromhex("80010000001c00000000") + bytes(range(18))


def test_one_frame_in_one_piece() -> None:
    assert FrameReader().feed(GET_RANDOM) == [GET_RANDOM]


def test_byte_by_byte() -> None:
    r = FrameReader()
    out = []
    for b in GET_RANDOM + RESPONSE:
        out += r.feed(bytes([b]))
    assert out == [GET_RANDOM, RESPONSE]
    assert r.pending == 0 and r.offset == len(GET_RANDOM) + len(RESPONSE)


def test_coalesced_frames_in_one_read() -> None:
    assert FrameReader().feed(GET_RANDOM + STARTUP + GET_RANDOM) == [GET_RANDOM, STARTUP,
                                                                     GET_RANDOM]


def test_random_cuts() -> None:
    stream = (GET_RANDOM + RESPONSE + STARTUP) * 20
    rng = random.Random(5)
    r = FrameReader()
    out: list[bytes] = []
    i = 0
    while i < len(stream):
        n = rng.randint(1, 40)
        out += r.feed(stream[i : i + n])
        i += n
    assert b"".join(out) == stream and len(out) == 60


def test_h11_style_next_frame() -> None:
    r = FrameReader()
    r.receive_data(GET_RANDOM[:5])
    assert r.next_frame() is None
    r.receive_data(GET_RANDOM[5:] + STARTUP[:3])
    assert r.next_frame() == GET_RANDOM
    assert r.next_frame() is None and r.pending == 3


def test_garbage_tag_is_a_clear_error() -> None:
    r = FrameReader()
    r.feed(GET_RANDOM)
    with pytest.raises(FramingError, match=r"tag 0x4745.*mssim") as e:
        r.feed(b"GET / HTTP/1.1\r\n")
    assert e.value.offset == len(GET_RANDOM)
    with pytest.raises(FramingError):  # stays broken
        r.feed(GET_RANDOM)


def test_size_bounds() -> None:
    with pytest.raises(FramingError, match="claims 4 bytes"):
        FrameReader().feed(bytes.fromhex("80010000000400000000"))
    with pytest.raises(FramingError, match=r"claims 5000 bytes, outside 10\.\.4096"):
        FrameReader(max_frame=4096).feed(bytes.fromhex("800100001388") + bytes(4))


def test_close_mid_frame() -> None:
    r = FrameReader(what="command")
    r.feed(GET_RANDOM[:7])
    with pytest.raises(FramingError, match="inside a command: 7 of 12 bytes"):
        r.close()
    FrameReader().close()  # nothing pending: fine
