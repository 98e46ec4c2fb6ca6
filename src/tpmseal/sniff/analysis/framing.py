"""Sans-I/O framing of a TPM 2.0 byte stream (TPM 2.0 Part 1 §18.7-18.8).

Every TPM command and response starts with a 10-byte header: ``tag`` (UINT16),
``size`` (UINT32, the whole frame including the header) and a command or
response code (UINT32). A stream socket delivers those bytes in arbitrary
pieces — a command split over many reads, or two commands in one read — so the
sniffer never assumes one read is one message. In the style of h11, a
:class:`FrameReader` is fed bytes and hands back whole frames; it does no I/O
and knows nothing about sockets, so the proxy, the pcap reader and the raw
stream decoder all share it.

A frame is rejected as garbage, with :class:`FramingError` naming the stream
offset, when its tag is not a TPM 2.0 tag or its size is below the header size
or above the reader's bound (swtpm and hardware TPMs cap frames at a few KiB).
"""

from __future__ import annotations

from tpmseal.errors import DecodeError
from tpmseal.wire.constants import TPM_ST

HEADER_SIZE = 10

#: The largest frame accepted by default; real TPMs stay far below (TPM_PT_MAX_*_SIZE).
MAX_FRAME = 1 << 16

#: Tags a TPM 2.0 frame may start with (Part 2 §6.9); RSP_COMMAND answers malformed tags.
VALID_TAGS = frozenset({TPM_ST.NO_SESSIONS, TPM_ST.SESSIONS, TPM_ST.RSP_COMMAND})


class FramingError(DecodeError):
    """The byte stream is not a sequence of TPM 2.0 frames."""


class FrameReader:
    """Reassemble whole TPM frames from a byte stream.

    Feed bytes with :meth:`receive_data` and pull frames with :meth:`next_frame`
    (``None`` means more data is needed), or do both with :meth:`feed`. After the
    peer closes, :meth:`close` raises if a frame was left incomplete.
    """

    def __init__(self, max_frame: int = MAX_FRAME, what: str = "frame"):
        if max_frame < HEADER_SIZE:
            raise ValueError(f"max_frame must be at least {HEADER_SIZE}")
        self.max_frame = max_frame
        self.what = what
        self._buf = bytearray()
        self._consumed = 0  # stream offset of the first buffered byte
        self._broken: FramingError | None = None

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buf)

    @property
    def offset(self) -> int:
        """Stream offset of the next frame."""
        return self._consumed

    def receive_data(self, data: bytes) -> None:
        """Buffer *data*; it is parsed by :meth:`next_frame`."""
        if self._broken is not None:
            raise self._broken
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next complete frame, or ``None`` if more bytes are needed."""
        if self._broken is not None:
            raise self._broken
        if len(self._buf) < 2:
            return None
        tag = int.from_bytes(self._buf[:2], "big")
        if tag not in VALID_TAGS:
            self._fail(f"not a TPM 2.0 {self.what}: tag 0x{tag:04x} (expected 0x8001 or 0x8002; "
                       "an mssim-framed or TPM 1.2 client?)")
        if len(self._buf) < HEADER_SIZE:
            return None
        size = int.from_bytes(self._buf[2:6], "big")
        if size < HEADER_SIZE or size > self.max_frame:
            self._fail(f"{self.what} header claims {size} bytes, outside "
                       f"{HEADER_SIZE}..{self.max_frame}")
        if len(self._buf) < size:
            return None
        frame = bytes(self._buf[:size])
        del self._buf[:size]
        self._consumed += size
        return frame

    def feed(self, data: bytes) -> list[bytes]:
        """Buffer *data* and return every frame it completes."""
        self.receive_data(data)
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def close(self) -> None:
        """The stream ended: raise :class:`FramingError` if a frame is incomplete."""
        if self._buf and self._broken is None:
            want = (f" of {int.from_bytes(self._buf[2:6], 'big')}"
                    if len(self._buf) >= 6 else "")
            self._fail(f"stream ended inside a {self.what}: {len(self._buf)}{want} bytes received")

    def _fail(self, message: str) -> None:
        self._broken = FramingError(message, self._consumed)
        raise self._broken
