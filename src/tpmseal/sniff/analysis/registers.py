"""What every TPM bus carries: register accesses, and frames delimited by their headers.

A discrete TPM's register space (TCG PC Client PTP §6.5.2) is
0xFED4_0000 | locality << 12 | register, whatever the bus; the bus decoders
(:mod:`.spi`, :mod:`.i2c`, :mod:`.lpc`) turn their transactions into
:class:`Access` records, and :mod:`.ptp` follows the FIFO and CRB
interfaces over them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpmseal.wire.constants import TPM_ST

LOCALITIES = 5
HEADER = 10
_TAGS = (TPM_ST.NO_SESSIONS, TPM_ST.SESSIONS)
#: the largest frame worth waiting for (Part 2 MAX_COMMAND_SIZE is far smaller on real chips)
MAX_FRAME = 1 << 16


@dataclass(frozen=True)
class Access:
    """One register access on the bus: *data* written to or read from *register*.

    ``at`` is the capture time in seconds (0 when the capture has none),
    ``where`` says where in the capture it was, for warnings. A multi-byte
    access to the FIFO stays at its register; to the CRB buffer it moves on.
    """

    locality: int
    register: int
    write: bool
    data: bytes
    at: float = 0.0
    where: str = ""


def frame_size(buf: bytes) -> int | None:
    """The size in a frame header (Part 1 §18.7), 0 while *buf* is too short to hold it,
    ``None`` if *buf* cannot start a frame."""
    if len(buf) < 2:
        return 0 if not buf or buf[0] == 0x80 else None  # both tags start 0x80
    if int.from_bytes(buf[:2], "big") not in _TAGS:
        return None
    if len(buf) < 6:
        return 0
    size = int.from_bytes(buf[2:6], "big")
    return size if HEADER <= size <= MAX_FRAME else None
