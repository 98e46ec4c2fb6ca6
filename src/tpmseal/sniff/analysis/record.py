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
from dataclasses import dataclass, field

from tpmseal.errors import DecodeError
from tpmseal.wire.decode import (
    Deciphered,
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
class Deciphering:
    """What an observer following the sessions learns of one exchange's encrypted parameters.

    ``command`` / ``response`` describe the encrypted first parameter of each
    direction (``None``: not encrypted, or encrypted under a key the observer
    lacks); ``*_offset`` is where that parameter's data bytes start in the
    frame, so :meth:`plain_command` can lay the plaintext over the ciphertext.
    """

    command: Deciphered | None = None
    response: Deciphered | None = None
    command_offset: int = 0
    response_offset: int = 0

    @staticmethod
    def _overlay(frame: bytes, d: Deciphered | None, offset: int) -> bytes | None:
        if d is None or d.plaintext is None:
            return None
        end = offset + len(d.plaintext)
        if end > len(frame):
            return None
        return frame[:offset] + d.plaintext + frame[end:]

    def plain_command(self, frame: bytes) -> bytes | None:
        """*frame* with its encrypted parameter decrypted, if it was."""
        return self._overlay(frame, self.command, self.command_offset)

    def plain_response(self, frame: bytes) -> bytes | None:
        return self._overlay(frame, self.response, self.response_offset)

    @property
    def region_command(self) -> tuple[int, int] | None:
        """The byte range ``[start, end)`` of the decrypted command parameter."""
        p = self.command.plaintext if self.command else None
        return None if p is None else (self.command_offset, self.command_offset + len(p))

    @property
    def region_response(self) -> tuple[int, int] | None:
        p = self.response.plaintext if self.response else None
        return None if p is None else (self.response_offset, self.response_offset + len(p))


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
    #: what an observer following the sessions could decrypt (:mod:`.sessions`)
    deciphering: Deciphering | None = field(default=None, compare=False)

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
        """The command decoded by the registry; ``None`` if its header is broken.

        A parameter the session tracker decrypted carries its plaintext."""
        d = self.deciphering
        return safe_decode_command(self.command, d.command if d else None)

    def decoded_response(self) -> DecodedResponse | None:
        """The response decoded in the light of its command; ``None`` if absent or broken."""
        if self.response is None:
            return None
        d = self.deciphering
        return safe_decode_response(self.response, self.decoded_command(),
                                    d.response if d else None)


def safe_decode_command(data: bytes, deciphered: Deciphered | None = None
                        ) -> DecodedCommand | None:
    """:func:`decode_command` that returns ``None`` for a frame with a broken header."""
    try:
        return decode_command(data, deciphered)
    except _DECODE_FAILURES:
        return None


def safe_decode_response(data: bytes, command: DecodedCommand | None,
                         deciphered: Deciphered | None = None) -> DecodedResponse | None:
    """:func:`decode_response` that returns ``None`` for a frame with a broken header."""
    try:
        return decode_response(data, command, deciphered)
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
