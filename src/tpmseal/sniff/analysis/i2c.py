"""TPM I2C messages to FIFO register accesses (TCG PC Client PTP, I2C interface).

The TCG I2C interface keeps the FIFO interface's TPM_STS (0x18) and
TPM_DATA_FIFO (0x24) but addresses registers with one byte: a write message
is ``register, data...``; a read is a write of the register alone, then a
read message (after a stop or a repeated start) returning its bytes. The
locality is not in the address: a write of TPM_LOC_SEL (0x00) selects it.
TPM_DATA_CSUM, TPM_ACCESS, DID_VID and the rest are ignored. A message the
TPM NACKs at its address did not happen (the TPM was busy; drivers retry).

The TPM's bus address (0x2E by default) is the one that receives the most
writes to TPM_STS or TPM_DATA_FIFO; other devices' messages are ignored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from tpmseal.sniff.analysis.ptp import FIFO_REGISTERS, TPM_STS, PtpReassembler
from tpmseal.sniff.analysis.registers import LOCALITIES, Access

TPM_LOC_SEL = 0x00
DEFAULT_ADDRESS = 0x2E
#: what the reassembler needs; the rest of the I2C map (0x40 TPM_DATA_CSUM_ENABLE, ...) is
#: not the PTP map and must not reach it
_FIFO_SIDE = frozenset({TPM_STS, 0x24})


@dataclass(frozen=True)
class I2cEvent:
    """One decoded bus event: ``start``, ``stop``, ``address`` (with ``read``), ``data``, ``ack``
    or ``nack``; *value* is the 7-bit address or the data byte."""

    kind: str
    value: int = 0
    read: bool = False
    at: float = 0.0
    where: str = ""


@dataclass
class I2cMessage:
    """The bytes of one addressed message, between a (repeated) start and the next."""

    address: int
    read: bool
    data: bytearray = field(default_factory=bytearray)
    acked: bool = True
    at: float = 0.0
    where: str = ""


def messages(events: Iterable[I2cEvent]) -> list[I2cMessage]:
    """Group events into messages; NACKed writes keep only the bytes the TPM accepted."""
    out: list[I2cMessage] = []
    msg: I2cMessage | None = None
    last = ""          # what the next ACK/NACK answers: "address" or "data"
    write_stopped = False
    for ev in events:
        if ev.kind in ("start", "stop"):
            msg, last = None, ""
        elif ev.kind == "address":
            msg = I2cMessage(ev.value, ev.read, at=ev.at, where=ev.where)
            out.append(msg)
            last, write_stopped = "address", False
        elif ev.kind == "data" and msg is not None:
            if not write_stopped:
                msg.data.append(ev.value)
            last = "data"
        elif ev.kind == "nack" and msg is not None:
            if last == "address":
                msg.acked = False
            elif last == "data" and not msg.read and not write_stopped:
                del msg.data[-1:]  # the TPM refused this byte and the ones after it
                write_stopped = True
    return [m for m in out if m.acked]


def tpm_address(msgs: list[I2cMessage]) -> int:
    """The address written to with TPM_STS or TPM_DATA_FIFO most often (0x2E if none)."""
    votes = Counter(m.address for m in msgs
                    if not m.read and m.data and (m.data[0] == TPM_STS
                                                  or m.data[0] in FIFO_REGISTERS))
    return votes.most_common(1)[0][0] if votes else DEFAULT_ADDRESS


@dataclass
class I2cDecoder:
    """I2C messages in, :class:`Access` records out into a :class:`PtpReassembler`."""

    ptp: PtpReassembler
    address: int = DEFAULT_ADDRESS
    locality: int = 0
    register: int | None = None
    foreign: int = 0

    def feed(self, m: I2cMessage) -> None:
        if m.address != self.address:
            self.foreign += 1
            return
        if not m.read:
            if not m.data:
                return
            self.register = m.data[0]
            body = bytes(m.data[1:])
            if self.register == TPM_LOC_SEL and body:
                if body[0] < LOCALITIES:
                    self.locality = body[0]
                return
            if body and self.register in _FIFO_SIDE:
                self.ptp.feed(Access(self.locality, self.register, True, body, m.at, m.where))
            return
        if self.register in _FIFO_SIDE and m.data:
            self.ptp.feed(Access(self.locality, self.register, False, bytes(m.data), m.at,
                                  m.where))

    def close(self) -> None:
        if self.foreign:
            self.ptp.warnings.append(f"{self.foreign} I2C message(s) to addresses other than "
                                      f"the TPM's 0x{self.address:02x} were ignored")
        self.ptp.close()


def decode_i2c(events: Iterable[I2cEvent]) -> PtpReassembler:
    """Reassemble TPM frames from I2C bus *events*."""
    msgs = messages(events)
    d = I2cDecoder(PtpReassembler(), tpm_address(msgs))
    for m in msgs:
        d.feed(m)
    d.close()
    return d.ptp
