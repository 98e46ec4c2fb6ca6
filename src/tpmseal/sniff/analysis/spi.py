"""TPM SPI transactions to FIFO register accesses (TCG PC Client PTP §6.4.6, SPI protocol).

One chip-select period is one transaction (a clock pause between header and
data, as Linux makes, is not a boundary). The host sends a 4-byte header on
MOSI: byte 0 bit 7 = read, bits 5:0 = size - 1 (1-64 bytes; bit 6 is
reserved, masking with 0x1F would halve the size), then the 24-bit address
0xD4_0000 | locality << 12 | register. If bit 0 of the MISO byte under the
4th header byte is 0, the TPM inserts wait states: the host clocks single
bytes until one has bit 0 = 1; those bytes are flow control, not data (only
bit 0 counts). Then *size* data bytes follow, on MOSI for a write and on MISO
for a read (MOSI then carries dummy bytes, 0x00 or 0xFF, which are ignored).
:func:`split_stream` recovers the transactions of a stream that lost its
chip-select boundaries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tpmseal.sniff.analysis.ptp import PtpReassembler
from tpmseal.sniff.analysis.registers import LOCALITIES, Access

SPI_BASE = 0xD4


@dataclass(frozen=True)
class SpiTransaction:
    """The bytes on MOSI and MISO during one chip-select period."""

    mosi: bytes
    miso: bytes
    at: float = 0.0
    where: str = ""


@dataclass
class SpiDecoder:
    """SPI transactions in, :class:`Access` records out into a :class:`PtpReassembler`."""

    ptp: PtpReassembler
    foreign: int = 0     # transactions outside the TPM's address window
    truncated: int = 0   # transactions cut short (chip select raised early)
    _first_truncated: str = ""

    def feed(self, t: SpiTransaction) -> None:
        n = min(len(t.mosi), len(t.miso))
        if n < 4:
            self._cut(t)
            return
        head = t.mosi[:4]
        read = bool(head[0] & 0x80)
        size = (head[0] & 0x3F) + 1
        address = int.from_bytes(head[1:4], "big")
        locality, register = (address >> 12) & 0xF, address & 0xFFF
        if address >> 16 != SPI_BASE or locality >= LOCALITIES:
            self.foreign += 1
            return
        pos = 4
        if not t.miso[3] & 1:
            while pos < n and not t.miso[pos] & 1:
                pos += 1
            pos += 1  # the byte with bit 0 set ends the wait; it carries no data
        if pos + size > n:
            self._cut(t)
            return
        data = (t.miso if read else t.mosi)[pos : pos + size]
        self.ptp.feed(Access(locality, register, not read, bytes(data), t.at, t.where))

    def _cut(self, t: SpiTransaction) -> None:
        if not self.truncated:
            self._first_truncated = t.where
        self.truncated += 1

    def close(self) -> None:
        if self.truncated:
            self.ptp.warnings.append(f"{self.truncated} SPI transaction(s) shorter than their "
                                      f"header's size were ignored (aborted?), the first "
                                      f"{self._first_truncated}")
        if self.foreign:
            self.ptp.warnings.append(f"{self.foreign} SPI transaction(s) outside the TPM's "
                                      "address window 0xD4xxxx (another device?) were ignored")
        self.ptp.close()


def split_stream(mosi: bytes, miso: bytes, warnings: list[str]) -> Iterator[SpiTransaction]:
    """Transactions from MOSI/MISO byte streams without chip-select boundaries.

    sigrok-cli's binary SPI output (``-B spi``) loses the boundaries, so each
    transaction is measured from its own header: 4 bytes, the wait states,
    then *size* bytes. A byte that cannot start a TPM header (address not
    0xD4xxxx, locality above 4, reserved bit 6 set) is skipped; a transaction
    cut short on the bus desynchronises the stream until the next header.
    """
    n = min(len(mosi), len(miso))
    pos = skipped = 0
    first_skip = -1
    while pos + 4 <= n:
        h0, h1, h2 = mosi[pos], mosi[pos + 1], mosi[pos + 2]
        if h1 != SPI_BASE or h2 >> 4 >= LOCALITIES or h0 & 0x40:
            first_skip = pos if first_skip < 0 else first_skip
            skipped += 1
            pos += 1
            continue
        data = pos + 4
        if not miso[pos + 3] & 1:
            while data < n and not miso[data] & 1:
                data += 1
            data += 1
        end = data + (h0 & 0x3F) + 1
        if end > n:
            break
        yield SpiTransaction(mosi[pos:end], miso[pos:end], where=f"at byte {2 * pos}")
        pos = end
    if skipped:
        warnings.append(f"{skipped} byte(s) of the SPI stream start no TPM transaction and "
                        f"were skipped, the first at byte {2 * first_skip}")
    if pos < n:
        warnings.append(f"the SPI stream ends inside a transaction ({n - pos} byte(s) left)")


def decode_spi(transactions: Iterable[SpiTransaction]) -> PtpReassembler:
    """Reassemble TPM frames from SPI *transactions*; the result holds exchanges and warnings."""
    d = SpiDecoder(PtpReassembler())
    for t in transactions:
        d.feed(t)
    d.close()
    return d.ptp
