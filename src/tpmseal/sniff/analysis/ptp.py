"""Sans-I/O reassembly of TPM frames from PTP register accesses: the FIFO interface, and CRB.

A discrete TPM on SPI, LPC or I2C is driven through the FIFO interface of
the TCG PC Client Platform TPM Profile (PTP) specification (§6.3 FIFO
interface, §6.5.2 register space): the host writes a command byte by byte
into TPM_DATA_FIFO, writes tpmGo to TPM_STS, then reads the response out of
the same FIFO. Each bus turns its transactions into
:class:`~tpmseal.sniff.analysis.registers.Access` records (:mod:`.spi`,
:mod:`.i2c`, :mod:`.lpc`); :class:`PtpReassembler` follows them per
locality and yields whole frames. A locality that shows a CRB control write
or data-buffer access is followed as a CRB instead (:mod:`.crb`).

Drivers split bursts differently (Linux writes the last command byte alone
and reads a 10-byte response header first), so a frame is delimited by its
own header's size field (TPM 2.0 Part 1 §18.7), checked against the tpmGo
that ends a command, never by a driver's burst pattern. TPM_STS writes:
commandReady (0x40) aborts whatever is in flight, responseRetry (0x02)
restarts the response. Everything else (TPM_ACCESS, interrupts, DID_VID,
status polls) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tpmseal.sniff.analysis.crb import CrbLocality, is_crb
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.analysis.registers import LOCALITIES, MAX_FRAME, Access, frame_size

#: PTP §6.5.2: TPM_STS, and the two aliases of TPM_DATA_FIFO (the address does not increment)
TPM_STS = 0x18
FIFO_REGISTERS = frozenset(range(0x24, 0x28)) | frozenset(range(0x80, 0x84))
STS_COMMAND_READY = 0x40
STS_GO = 0x20
STS_RESPONSE_RETRY = 0x02


@dataclass
class _Locality:
    """What one locality has in flight."""

    command: bytearray = field(default_factory=bytearray)
    command_at: float = 0.0
    command_where: str = ""
    sent: bytes | None = None        # a command that received tpmGo
    sent_at: float = 0.0             # when its first byte was written
    response: bytearray = field(default_factory=bytearray)
    response_at: float = 0.0
    orphan: bool = False             # response bytes seen with no command before them


@dataclass
class PtpReassembler:
    """Feed :class:`Access` records with :meth:`feed`; collect :attr:`exchanges`, :attr:`warnings`.

    The exchange's ``client`` is the locality.
    """

    exchanges: list[Exchange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _loc: list[_Locality] = field(default_factory=lambda: [_Locality() for _ in range(LOCALITIES)])
    _crb: dict[int, CrbLocality] = field(default_factory=dict)

    def feed(self, a: Access) -> None:
        if not 0 <= a.locality < LOCALITIES or not a.data:
            return
        crb = self._crb.get(a.locality)
        if crb is None and is_crb(a):
            crb = self._crb[a.locality] = CrbLocality(a.locality, self._crb_exchange,
                                                      self.warnings.append)
            self._loc[a.locality] = _Locality()  # what looked like FIFO traffic was not
        if crb is not None:
            crb.feed(a)
            return
        st = self._loc[a.locality]
        if a.register in FIFO_REGISTERS:
            if a.write:
                self._command_bytes(st, a)
            else:
                self._response_bytes(st, a)
        elif a.register == TPM_STS and a.write:
            self._status_write(st, a)

    def _crb_exchange(self, locality: int, command: bytes, response: bytes | None,
                      started: float, finished: float) -> None:
        self.exchanges.append(Exchange.passive(len(self.exchanges), locality, command, response,
                                               started, finished))

    def close(self) -> None:
        """The capture ended: report what is still in flight."""
        for crb in self._crb.values():
            crb.close()
        for n, st in enumerate(self._loc):
            if st.sent is not None:
                self.warnings.append(f"locality {n}: the capture ends before the response "
                                     "to the last command")
                self._emit(n, st, None, st.response_at)
            elif st.command:
                self.warnings.append(f"locality {n}: the capture ends in the middle of a "
                                     f"command ({len(st.command)} bytes written, no tpmGo)")

    def _command_bytes(self, st: _Locality, a: Access) -> None:
        if st.sent is not None:
            # a new command without commandReady: the previous response was never read whole
            self.warnings.append(f"locality {a.locality}: a command starts {a.where} while "
                                 "the previous response is incomplete")
            self._emit(a.locality, st, None, a.at)
        if not st.command:
            st.command_at, st.command_where = a.at, a.where
        st.command += a.data
        if len(st.command) > MAX_FRAME:
            self.warnings.append(f"locality {a.locality}: more than {MAX_FRAME} command bytes "
                                 f"without tpmGo from {st.command_where}; dropped")
            st.command.clear()

    def _response_bytes(self, st: _Locality, a: Access) -> None:
        if st.sent is None:
            if not st.orphan:
                st.orphan = True
                self.warnings.append(f"locality {a.locality}: response bytes {a.where} follow "
                                     "no command (the capture began mid-exchange?); skipped")
            return
        if not st.response:
            st.response_at = a.at
        want = frame_size(bytes(st.response + a.data))
        st.response += a.data
        if want is None:
            self.warnings.append(f"locality {a.locality}: the response {a.where} does not "
                                 "start with a TPM header; dropped")
            self._emit(a.locality, st, None, a.at)
            return
        if want and len(st.response) >= want:
            if len(st.response) > want:
                del st.response[want:]  # read past the frame: the FIFO's filler, not data
            self._emit(a.locality, st, bytes(st.response), a.at)

    def _status_write(self, st: _Locality, a: Access) -> None:
        bits = a.data[0]
        if bits & STS_COMMAND_READY:
            if st.command:
                self.warnings.append(f"locality {a.locality}: commandReady {a.where} aborts a "
                                     f"command of {len(st.command)} bytes before tpmGo")
                st.command.clear()
            if st.sent is not None:
                self.warnings.append(f"locality {a.locality}: commandReady {a.where} aborts "
                                     "the response before it was read whole")
                self._emit(a.locality, st, None, a.at)
            st.orphan = False
        if bits & STS_RESPONSE_RETRY:
            if st.sent is not None:
                st.response.clear()
            else:
                st.orphan = True  # reading a whole response again (an I2C checksum retry)
        if bits & STS_GO:
            self._go(st, a)

    def _go(self, st: _Locality, a: Access) -> None:
        cmd = bytes(st.command)
        st.command.clear()
        if not cmd:
            return
        size = frame_size(cmd)
        if size is None:
            self.warnings.append(f"locality {a.locality}: {len(cmd)} bytes before tpmGo "
                                 f"{a.where} do not start with a TPM header (the capture "
                                 "began mid-command?); skipped")
            return
        if size != len(cmd):
            self.warnings.append(f"locality {a.locality}: the command ended by tpmGo "
                                 f"{a.where} has {len(cmd)} bytes, its header says {size}; "
                                 "skipped")
            return
        if st.sent is not None:
            self._emit(a.locality, st, None, a.at)
        st.sent, st.sent_at = cmd, st.command_at
        st.orphan = False
        st.response.clear()

    def _emit(self, locality: int, st: _Locality, response: bytes | None, at: float) -> None:
        assert st.sent is not None
        self.exchanges.append(Exchange.passive(len(self.exchanges), locality, st.sent, response,
                                               st.sent_at, at))
        st.sent = None
        st.response.clear()


def reassemble(accesses: list[Access]) -> PtpReassembler:
    """All of *accesses* through one :class:`PtpReassembler`, closed."""
    r = PtpReassembler()
    for a in accesses:
        r.feed(a)
    r.close()
    return r
