"""The PTP Command Response Buffer interface: frames in a memory-mapped buffer (PTP §6.5.3).

A CRB TPM has no FIFO: the host writes the whole command into
TPM_CRB_DATA_BUFFER (0x80-0xFFF of its locality, addresses incrementing),
writes 1 to TPM_CRB_CTRL_START (0x4C), and reads the response out of the
same buffer once the TPM clears it. TPM_CRB_CTRL_REQ (0x40) asks for
cmdReady (bit 0: a new command) or goIdle (bit 1). The command and response
addresses (CTRL_CMD_LADDR/RSP_ADDR) are taken to be the data buffer, as
firmware and Linux set them. A frame is what its header's size covers,
written (command) or read (response) in whole since the last START.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tpmseal.sniff.analysis.registers import MAX_FRAME, Access, frame_size

CRB_CTRL_REQ = 0x40
CRB_CTRL_START = 0x4C
CRB_BUFFER = 0x80
CRB_END = 0x1000
REQ_CMD_READY = 0x01
REQ_GO_IDLE = 0x02

Emit = Callable[[int, bytes, bytes | None, float, float], None]


def is_crb(a: Access) -> bool:
    """An access only a CRB TPM has: a control write, or a write into the buffer past the
    FIFO's aliases (a FIFO TPM has TPM_XDATA_FIFO at 0x80-0x83, DID_VID/RID at 0xF00,
    vendor registers from 0xF90, and reads there say nothing)."""
    return a.write and (a.register in (CRB_CTRL_REQ, CRB_CTRL_START)
                        or 0x84 <= a.register < 0xF00)


def _covered(mask: bytearray, n: int) -> bool:
    return n <= len(mask) and all(mask[:n])


@dataclass
class CrbLocality:
    """One locality's data buffer as the bus showed it."""

    locality: int
    emit: Emit
    warn: Callable[[str], None]
    command: bytearray = field(default_factory=lambda: bytearray(CRB_END - CRB_BUFFER))
    written: bytearray = field(default_factory=lambda: bytearray(CRB_END - CRB_BUFFER))
    response: bytearray = field(default_factory=lambda: bytearray(CRB_END - CRB_BUFFER))
    read: bytearray = field(default_factory=lambda: bytearray(CRB_END - CRB_BUFFER))
    sent: bytes | None = None
    started: float = 0.0
    first_at: float | None = None

    def feed(self, a: Access) -> None:
        if CRB_BUFFER <= a.register < CRB_END:
            self._buffer(a)
        elif a.write and a.register == CRB_CTRL_START and a.data[0] & 1:
            self._start(a)
        elif a.write and a.register == CRB_CTRL_REQ and a.data[0] & (REQ_CMD_READY | REQ_GO_IDLE):
            if self.sent is not None:
                self.warn(f"locality {self.locality}: the CRB goes idle {a.where} before the "
                          "response was read whole")
                self._finish(None, a.at)
            self._clear()

    def _clear(self) -> None:
        self.written[:] = bytes(len(self.written))
        self.first_at = None

    def _buffer(self, a: Access) -> None:
        off = a.register - CRB_BUFFER
        end = min(off + len(a.data), len(self.command))
        data = a.data[: end - off]
        if a.write:
            if self.sent is not None:
                self.warn(f"locality {self.locality}: a CRB command is written {a.where} "
                          "before the previous response was read whole")
                self._finish(None, a.at)
            if self.first_at is None:
                self.first_at = a.at
            self.command[off:end] = data
            self.written[off:end] = b"\x01" * len(data)
            return
        if self.sent is None:
            return  # the host reading its own command back, or a response of a lost command
        self.response[off:end] = data
        self.read[off:end] = b"\x01" * len(data)
        if not _covered(self.read, 6):
            return
        size = frame_size(bytes(self.response[:6]))
        if size is None:
            self.warn(f"locality {self.locality}: the CRB response {a.where} does not start "
                      "with a TPM header; dropped")
            self._finish(None, a.at)
        elif size and _covered(self.read, size):
            self._finish(bytes(self.response[:size]), a.at)

    def _start(self, a: Access) -> None:
        size = frame_size(bytes(self.command[:6])) if _covered(self.written, 6) else None
        if size is None or size > MAX_FRAME or not _covered(self.written, size):
            self.warn(f"locality {self.locality}: CRB start {a.where} for a command not "
                      "written whole in the capture (it began mid-command?); skipped")
            self._clear()
            return
        if self.sent is not None:
            self._finish(None, a.at)
        self.sent = bytes(self.command[:size])
        self.started = self.first_at if self.first_at is not None else a.at
        self.read[:] = bytes(len(self.read))
        self._clear()

    def _finish(self, response: bytes | None, at: float) -> None:
        if self.sent is not None:
            self.emit(self.locality, self.sent, response, self.started, at)
        self.sent = None
        self.read[:] = bytes(len(self.read))

    def close(self) -> None:
        if self.sent is not None:
            self.warn(f"locality {self.locality}: the capture ends before the CRB response "
                      "to the last command")
            self._finish(None, self.started)
