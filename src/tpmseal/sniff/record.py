"""What the sniffer records: one :class:`Exchange` per TPM command.

An exchange is seen from two sides. ``command``/``response`` are the bytes on
the client's side of the proxy (what the CPU sent and what it got back);
``tpm_command``/``tpm_response`` are the bytes on the TPM's side. Without an
interposer hook both sides are identical; a hook that rewrites, forges, drops
or replays a message makes them differ, and ``note`` says what it did.
Timestamps are wall-clock seconds (``time.time()``); ``tpm_seconds`` is how
long the TPM took to answer, measured around the upstream round trip.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tpmseal.errors import DecodeError
from tpmseal.wire.frames import (
    DecodedCommand,
    DecodedResponse,
    command_name,
    decode_command,
    decode_response,
)
from tpmseal.wire.rc import decode_rc

#: What decoding hostile bytes may raise besides DecodeError (a structure's own checks).
_DECODE_FAILURES = (DecodeError, ValueError, IndexError, KeyError, struct.error)


def _u32_at(data: bytes | None, offset: int) -> int | None:
    if data is None or len(data) < offset + 4:
        return None
    return int.from_bytes(data[offset : offset + 4], "big")


@dataclass(frozen=True)
class Exchange:
    """One command and its response as they crossed the proxy."""

    index: int
    client: int
    command: bytes
    response: bytes | None
    started: float
    finished: float
    tpm_seconds: float | None = None
    tpm_command: bytes | None = None
    tpm_response: bytes | None = None
    note: str = ""

    @classmethod
    def passive(cls, index: int, client: int, command: bytes, response: bytes | None,
                started: float, finished: float, tpm_seconds: float | None = None,
                note: str = "") -> Exchange:
        """An exchange seen without interposition (both sides identical)."""
        return cls(index, client, command, response, started, finished, tpm_seconds,
                   command, response, note)

    @property
    def code(self) -> int:
        """The command code (0 if the command is shorter than a header)."""
        return _u32_at(self.command, 6) or 0

    @property
    def name(self) -> str:
        return command_name(self.code)

    @property
    def rc(self) -> int | None:
        """The response code the client received, or ``None`` without a response."""
        return _u32_at(self.response, 6)

    @property
    def rc_text(self) -> str:
        """E.g. ``0x99d TPM_RC_POLICY_FAIL (session 1)``; ``no response`` if none."""
        rc = self.rc
        return "no response" if rc is None else decode_rc(rc).describe()

    @property
    def interposed(self) -> bool:
        """True when a hook made the two sides of the proxy differ."""
        return self.tpm_command != self.command or self.tpm_response != self.response

    def decoded_command(self) -> DecodedCommand | None:
        """The command decoded by the registry; ``None`` if its header is broken."""
        return safe_decode_command(self.command)

    def decoded_response(self) -> DecodedResponse | None:
        """The response decoded in the light of its command; ``None`` if absent or broken."""
        if self.response is None:
            return None
        return safe_decode_response(self.response, self.decoded_command())


def safe_decode_command(data: bytes) -> DecodedCommand | None:
    """:func:`decode_command` that returns ``None`` for a frame with a broken header."""
    try:
        return decode_command(data)
    except _DECODE_FAILURES:
        return None


def safe_decode_response(data: bytes, command: DecodedCommand | None) -> DecodedResponse | None:
    """:func:`decode_response` that returns ``None`` for a frame with a broken header."""
    try:
        return decode_response(data, command)
    except _DECODE_FAILURES:
        return None


def header_problem(data: bytes) -> str | None:
    """Why *data* is not a well-formed frame, or ``None`` if its header is consistent."""
    if len(data) < 10:
        return f"only {len(data)} bytes, shorter than the 10-byte header"
    size = int.from_bytes(data[2:6], "big")
    if size != len(data):
        return f"header says {size} bytes, frame has {len(data)}"
    return None
