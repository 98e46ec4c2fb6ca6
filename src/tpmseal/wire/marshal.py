"""Marshaling primitives: big-endian integers and size-prefixed buffers.

TPM 2.0 Part 1 §18 (canonical form) and Part 2 §10.4 (TPM2B): integers are
big-endian, a TPM2B is a UINT16 byte count followed by that many bytes. The
:class:`Reader` tracks its offset so every decode error names the byte where it
went wrong, and :meth:`Reader.done` enforces exact consumption.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

from tpmseal.errors import DecodeError

T = TypeVar("T")


class Reader:
    """A cursor over a byte string; reads fail with :class:`DecodeError`."""

    __slots__ = ("_base", "_data", "_end", "offset")

    def __init__(self, data: bytes, offset: int = 0, end: int | None = None, base: int = 0):
        self._data = data
        self.offset = offset
        self._end = len(data) if end is None else end
        self._base = base

    @property
    def position(self) -> int:
        """The absolute offset of the next byte (``base`` + offset): for error messages."""
        return self._base + self.offset

    @property
    def remaining(self) -> int:
        """How many bytes are left before the end of this reader's window."""
        return self._end - self.offset

    def _take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise DecodeError(
                f"{what}: need {n} bytes, {self.remaining} left", self._base + self.offset
            )
        out = self._data[self.offset : self.offset + n]
        self.offset += n
        return out

    def u8(self, what: str = "UINT8") -> int:
        return self._take(1, what)[0]

    def u16(self, what: str = "UINT16") -> int:
        return int(struct.unpack(">H", self._take(2, what))[0])

    def u32(self, what: str = "UINT32") -> int:
        return int(struct.unpack(">I", self._take(4, what))[0])

    def u64(self, what: str = "UINT64") -> int:
        return int(struct.unpack(">Q", self._take(8, what))[0])

    def raw(self, n: int, what: str = "bytes") -> bytes:
        return self._take(n, what)

    def tpm2b(self, what: str = "TPM2B") -> bytes:
        """A UINT16 size followed by that many bytes (Part 2 §10.4)."""
        size = self.u16(f"{what}.size")
        return self._take(size, f"{what}.buffer")

    def sized(self, parse: Callable[[Reader], T], what: str) -> T:
        """Parse a size-prefixed structure, which must fill its size exactly."""
        size = self.u16(f"{what}.size")
        start = self.offset
        if size > self.remaining:
            raise DecodeError(
                f"{what}: size {size} exceeds the {self.remaining} bytes left",
                self._base + start,
            )
        inner = Reader(self._data, start, start + size, self._base)
        value = parse(inner)
        inner.done(what)
        self.offset = start + size
        return value

    def done(self, what: str = "structure") -> None:
        """Require that every byte of the window has been consumed."""
        if self.remaining:
            raise DecodeError(
                f"{what}: {self.remaining} unexpected trailing bytes", self._base + self.offset
            )


def u8(v: int) -> bytes:
    return struct.pack(">B", v)


def u16(v: int) -> bytes:
    return struct.pack(">H", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def tpm2b(data: bytes) -> bytes:
    """Size-prefix *data* as a TPM2B (Part 2 §10.4)."""
    if len(data) > 0xFFFF:
        raise ValueError(f"TPM2B too large: {len(data)} bytes")
    return u16(len(data)) + data


def parse_exact(data: bytes, parse: Callable[[Reader], T], what: str) -> T:
    """Parse *data* with *parse* and require that it consumes every byte."""
    r = Reader(data)
    value = parse(r)
    r.done(what)
    return value
