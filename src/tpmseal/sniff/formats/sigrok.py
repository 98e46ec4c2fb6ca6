"""Read sigrok-cli's protocol decoder output: annotation lines and its JSON trace.

``sigrok-cli -P spi:... -A spi=mosi-transfer:miso-transfer`` prints one hex
line per chip-select period and channel, MISO first, unlabelled
(``spi-1: 00 00 00 01``); ``--protocol-decoder-samplenum`` prefixes the
sample range. ``--protocol-decoder-jsontrace`` writes the same annotations
as a Chrome trace, labelled (``"tid": "MOSI transfer"``) and timed in
microseconds. ``-B spi`` (binary, both classes) interleaves a MISO and a
MOSI byte per word and loses the transaction boundaries, which
:func:`~tpmseal.sniff.analysis.spi.split_stream` recovers from the headers.
For LPC and I2C the annotation forms carry the lpc and i2c decoders'
annotations (:class:`Annotation`): :func:`lpc_cycles` and :func:`i2c_events`
read them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tpmseal.errors import BadInputError
from tpmseal.sniff.analysis.i2c import I2cEvent
from tpmseal.sniff.analysis.lpc import LpcCycle
from tpmseal.sniff.analysis.spi import SPI_BASE, SpiTransaction

_LINE = re.compile(r"^(?:(\d+)-(\d+) +)?([A-Za-z0-9_]+-\d+): +(.*)$")
_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2}(?: +|$))+$")
JSONTRACE_START = b'{"traceEvents"'


@dataclass(frozen=True)
class Annotation:
    """One decoder annotation: its text, the decoder instance, its row (``tid``), its time."""

    decoder: str
    text: str
    row: str = ""
    at: float = 0.0
    where: str = ""


def looks_like_annotations(text: str) -> bool:
    """The first non-empty line is a sigrok-cli annotation line."""
    for line in text.splitlines():
        if line.strip():
            return _LINE.match(line) is not None
    return False


def read_annotations(text: str) -> Iterator[Annotation]:
    """Annotation lines; lines of other shapes (sigrok's own messages) are skipped."""
    for n, line in enumerate(text.splitlines(), 1):
        m = _LINE.match(line)
        if m is None:
            continue
        # a sample number is no time without the sample rate: lines carry no timestamps
        yield Annotation(m.group(3), m.group(4).rstrip(), "", 0.0, f"at line {n}")


def read_jsontrace(text: str) -> Iterator[Annotation]:
    """The "B" (begin) events of a ``--protocol-decoder-jsontrace`` file."""
    try:
        doc: Any = json.loads(text)
    except (ValueError, RecursionError):
        raise BadInputError("the sigrok JSON trace is not valid JSON",
                            "write it with sigrok-cli --protocol-decoder-jsontrace") from None
    events = doc.get("traceEvents") if isinstance(doc, dict) else None
    if not isinstance(events, list):
        raise BadInputError("the sigrok JSON trace has no traceEvents list",
                            "write it with sigrok-cli --protocol-decoder-jsontrace")
    for n, ev in enumerate(events):
        if not isinstance(ev, dict) or ev.get("ph") != "B":
            continue
        name, pid, tid, ts = ev.get("name"), ev.get("pid"), ev.get("tid"), ev.get("ts", 0)
        if not (isinstance(name, str) and isinstance(pid, str) and isinstance(tid, str)
                and isinstance(ts, (int, float))):
            raise BadInputError(f"sigrok JSON trace event {n} lacks a name, pid, tid or ts",
                                "write it with sigrok-cli --protocol-decoder-jsontrace")
        yield Annotation(pid, name, tid, float(ts) / 1e6, f"at trace event {n}")


def spi_binary(data: bytes) -> tuple[bytes, bytes]:
    """``sigrok-cli -B spi`` (both classes): a MISO then a MOSI byte per word -> (mosi, miso)."""
    if len(data) % 2:
        raise BadInputError("sigrok's binary SPI output has an odd length: it is not the "
                            "MISO/MOSI pairs of -B spi (both classes, 8-bit words)",
                            "write it with sigrok-cli -P spi:... -B spi")
    return data[1::2], data[0::2]


def _hex(a: Annotation) -> bytes:
    if not _HEX.match(a.text):
        raise BadInputError(f"sigrok SPI annotation {a.where} is not hex bytes: {a.text[:40]!r}",
                            "print transfers with -A spi=mosi-transfer:miso-transfer")
    return bytes.fromhex(a.text)


def _is_header(data: bytes) -> bool:
    return len(data) >= 4 and data[1] == SPI_BASE


def spi_transactions(annotations: Iterator[Annotation]) -> Iterator[SpiTransaction]:
    """Pair MISO and MOSI transfers into transactions.

    Labelled annotations (JSON trace) pair by label; unlabelled lines come
    MISO first, unless only the first line of a pair holds a TPM header.
    """
    pending: Annotation | None = None
    pending_row = ""
    for a in annotations:
        if not a.decoder.startswith("spi"):
            continue
        row = a.row.upper()
        if row and "TRANSFER" not in row:
            continue
        if pending is None:
            pending, pending_row = a, row
            continue
        first, second = _hex(pending), _hex(a)
        if "MOSI" in pending_row or (not pending_row and _is_header(first)
                                     and not _is_header(second)):
            mosi, miso = first, second
        else:
            miso, mosi = first, second
        if len(mosi) != len(miso):
            raise BadInputError(f"sigrok SPI transfers {pending.where} and {a.where} differ "
                                "in length; MOSI and MISO do not pair",
                                "print both with -A spi=mosi-transfer:miso-transfer")
        yield SpiTransaction(mosi, miso, pending.at, pending.where)
        pending = None
    if pending is not None:
        raise BadInputError(f"the sigrok SPI transfer {pending.where} has no partner",
                            "print both with -A spi=mosi-transfer:miso-transfer")


_I2C = re.compile(r"^(Address read|Address write|Data read|Data write): ([0-9A-Fa-f]{2})$")
_I2C_PLAIN = {"Start": "start", "Start repeat": "start", "Stop": "stop", "ACK": "ack",
              "NACK": "nack"}


def i2c_events(annotations: Iterator[Annotation]) -> Iterator[I2cEvent]:
    """The i2c decoder's address/data row as events; bits and warnings are skipped."""
    for a in annotations:
        if not a.decoder.startswith("i2c"):
            continue
        kind = _I2C_PLAIN.get(a.text)
        if kind is not None:
            yield I2cEvent(kind, at=a.at, where=a.where)
            continue
        m = _I2C.match(a.text)
        if m is None:
            continue
        what, value = m.group(1), int(m.group(2), 16)
        yield I2cEvent("address" if what.startswith("Address") else "data", value,
                       what.endswith("read"), a.at, a.where)


_LPC_DATA = re.compile(r"^DATA: 0x([0-9a-fA-F]{2})$")
_LPC_ADDR = re.compile(r"^Address: 0x([0-9a-fA-F]{4}|[0-9a-fA-F]{8})$")
_LPC_SKIP = re.compile(r"^(?:[01]{4}|TAR, cycle .*|.*\(expected 1111\)|.*reserved value.*|"
                       r"Invalid cycle type.*|LAD\[3:0\] changed.*|LFRAME asserted.*|"
                       r"DMA cycle.*)$")
_LPC_TYPES = {"I/O read": ("io", False), "I/O write": ("io", True),
              "Memory read": ("memory", False), "Memory write": ("memory", True)}


@dataclass
class _LpcParts:
    start: str
    at: float
    where: str
    kind: tuple[str, bool] | None = None
    address: int | None = None
    sync: str = ""
    data: int | None = None

    def cycle(self) -> LpcCycle | None:
        if self.kind is None or self.address is None or self.data is None \
                or self.sync != "Ready":
            return None  # incomplete, aborted, or ended in SYNC Error: nothing moved
        kind, write = self.kind
        return LpcCycle(self.start == "Reserved", kind, write, self.address, self.data,
                        self.at, self.where)


def lpc_cycles(annotations: Iterator[Annotation]) -> Iterator[LpcCycle]:
    """Cycles from the lpc decoder's annotations (its LAD-bits, TAR and warning rows skipped).

    This is the decoder with server and peripheral data rows (libsigrokdecode
    after Debian's 0.5.3): the START field's name ("Reserved" for a TPM
    cycle's 0101b), ``Cycle type: I/O write``, ``Address: 0x0024``, ``SYNC:
    Long wait`` ... ``SYNC: Ready``, ``DATA: 0x80``; ``ABORT`` ends a cycle.
    """
    parts: _LpcParts | None = None
    for a in annotations:
        if not a.decoder.startswith("lpc") or a.row.lower().startswith(("warning", "lad")):
            continue
        text = a.text
        if _LPC_SKIP.match(text):
            continue
        if text == "ABORT":
            parts = None
        elif text.startswith("Cycle type: "):
            if parts is not None:
                parts.kind = _LPC_TYPES.get(text[len("Cycle type: "):])
        elif text.startswith("SYNC: "):
            if parts is not None:
                parts.sync = text[len("SYNC: "):]
        elif (m := _LPC_ADDR.match(text)) is not None:
            if parts is not None:
                parts.address = int(m.group(1), 16)
        elif (m := _LPC_DATA.match(text)) is not None:
            if parts is not None:
                parts.data = int(m.group(1), 16)
        elif parts is not None and parts.kind is None:
            parts.start = text  # LFRAME# held low: the last START counts
        else:  # anything else is a START field: a new cycle
            if parts is not None and (c := parts.cycle()) is not None:
                yield c
            parts = _LpcParts(text, a.at, a.where)
    if parts is not None and (c := parts.cycle()) is not None:
        yield c
