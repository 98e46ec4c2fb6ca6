"""TPM LPC cycles to FIFO register accesses (TCG PC Client PTP, LPC interface).

A TPM on LPC answers TPM cycles (START = 0101b) of the I/O read/write
types with a 16-bit address locality << 12 | register, and, on some
chipsets, plain memory cycles at 0xFED4_0000 | locality << 12 | register.
Each cycle moves one byte; other cycles (legacy I/O, firmware, DMA, other
memory) are ignored.

A cycle whose SYNC ended in Error, or that the host aborted, moved nothing
and is not fed here (:mod:`tpmseal.sniff.formats.sigrok` drops it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tpmseal.sniff.analysis.ptp import PtpReassembler
from tpmseal.sniff.analysis.registers import LOCALITIES, Access

TPM_MEMORY_BASE = 0xFED4


@dataclass(frozen=True)
class LpcCycle:
    """One decoded cycle: ``tpm_start`` (START 0101b), ``kind`` (``io``/``memory``), the
    direction, the address and the byte."""

    tpm_start: bool
    kind: str
    write: bool
    address: int
    data: int
    at: float = 0.0
    where: str = ""


@dataclass
class LpcDecoder:
    """LPC cycles in, :class:`Access` records out into a :class:`PtpReassembler`."""

    ptp: PtpReassembler

    def feed(self, c: LpcCycle) -> None:
        if c.kind == "io" and c.tpm_start and c.address <= 0xFFFF:
            offset = c.address
        elif c.kind == "memory" and c.address >> 16 == TPM_MEMORY_BASE:
            offset = c.address & 0xFFFF
        else:
            return
        locality, register = offset >> 12, offset & 0xFFF
        if locality >= LOCALITIES:
            return
        self.ptp.feed(Access(locality, register, c.write, bytes([c.data]), c.at, c.where))

    def close(self) -> None:
        self.ptp.close()


def decode_lpc(cycles: Iterable[LpcCycle]) -> PtpReassembler:
    """Reassemble TPM frames from LPC *cycles*."""
    d = LpcDecoder(PtpReassembler())
    for c in cycles:
        d.feed(c)
    d.close()
    return d.ptp
