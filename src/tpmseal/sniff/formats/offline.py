"""Offline decoding: turn a saved capture back into exchanges.

Three formats of TPM frames, detected from their first bytes (or forced):

``jsonl``  our JSON lines (``tpmseal sniff --json``); the raw hex is re-decoded
``pcap``   libpcap or pcapng with TPM traffic on TCP port 2321 (``--pcap``, tcpdump)
``raw``    TPM frames back to back — command, response, command, response... —
           as a tee of a TPM character device or socket would record them
           (TPM 2.0 Part 1 §18: each frame's header carries its size); a
           capture that starts mid-stream is resynchronised

and the logic-analyser captures of a TPM bus (SPI, LPC, I2C) of
:mod:`~tpmseal.sniff.formats.buses`.

Exchanges are then run through a :class:`~tpmseal.sniff.analysis.sessions.SessionTracker`,
so parameters "encrypted" under a key derivable from the bus are decrypted.
"""

from __future__ import annotations

from tpmseal.errors import BadInputError, UsageError
from tpmseal.sniff.analysis.framing import FrameReader, FramingError
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.analysis.sessions import decipher_all
from tpmseal.sniff.formats.buses import BUS_FORMATS, detect_bus_format, load_bus
from tpmseal.sniff.formats.jsonl import read_jsonl
from tpmseal.sniff.formats.pcap import TPM_PORT
from tpmseal.sniff.formats.pcapread import PCAP_MAGICS, PCAPNG_MAGIC, Capture, read_capture
from tpmseal.wire.constants import TPM_CC, TPM_ST
from tpmseal.wire.handles import shape

FORMATS = ("jsonl", "pcap", "raw", *BUS_FORMATS)


def detect_format(data: bytes) -> str:
    """One of :data:`FORMATS`; :class:`BadInputError` when none fits."""
    if data[:4] in PCAP_MAGICS or data[:4] == PCAPNG_MAGIC:
        return "pcap"
    bus_format = detect_bus_format(data)
    if bus_format is not None:
        return bus_format
    if data.lstrip()[:1] == b"{":
        return "jsonl"
    if len(data) >= 2 and int.from_bytes(data[:2], "big") in (TPM_ST.NO_SESSIONS,
                                                               TPM_ST.SESSIONS):
        return "raw"
    if not data:
        raise BadInputError("the capture is empty",
                            hint="pass a capture with at least one exchange")
    raise BadInputError("cannot tell the capture's format: not JSON lines, pcap, pcapng, "
                        "raw TPM frames or a logic-analyser capture", "force one with --format")


#: The only Part 3 commands with neither handles nor parameters: a bare 10-byte header.
_HEADER_ONLY = frozenset({TPM_CC.GetTestResult, TPM_CC.ReadClock})


def _could_be_command(frame: bytes) -> bool:
    """A command's code is a Part 3 command code, and its handles fit in the frame."""
    tag = int.from_bytes(frame[:2], "big")
    code = int.from_bytes(frame[6:10], "big")
    s = shape(code)
    if s is None or tag not in (TPM_ST.NO_SESSIONS, TPM_ST.SESSIONS):
        return False
    if len(frame) == 10:
        return code in _HEADER_ONLY
    return len(frame) >= 10 + 4 * s.handles + (4 if tag == TPM_ST.SESSIONS else 0)


def _could_be_response(frame: bytes) -> bool:
    """A response's code is TPM_RC_SUCCESS, or an error code in a bare 10-byte header."""
    code = int.from_bytes(frame[6:10], "big")
    return code == 0 or len(frame) == 10


def read_raw(data: bytes) -> Capture:
    """Frames back to back, normally alternating command and response.

    A capture that began mid-stream (a tee or a logic analyser started while a
    command was in flight) opens with a response; a lost frame breaks the
    alternation. So each frame is classified, not assumed: a frame whose code
    is not a command code (Part 2 §6.5.2) is a response — TPM_RC_SUCCESS is 0,
    and an error response is a bare 10-byte header, which only two commands
    (GetTestResult, ReadClock) share. Where both readings still fit (error
    codes 0x120-0x155 are also command codes), alternation decides. A
    response with no command before it is skipped, with one warning.
    """
    framer = FrameReader(what="frame")
    try:
        frames = framer.feed(data)
        framer.close()
    except FramingError as e:
        raise BadInputError(f"raw stream: {e.message}",
                            hint="capture again, or force another --format") from None
    warnings: list[str] = []
    exchanges: list[Exchange] = []
    skipped: list[int] = []
    unanswered: list[int] = []
    command: bytes | None = None
    command_at = offset = 0
    for frame in frames:
        at, offset = offset, offset + len(frame)
        if command is None:
            if not _could_be_command(frame) and _could_be_response(frame):
                skipped.append(at)
                continue
            command, command_at = frame, at
            continue
        if not _could_be_response(frame) and _could_be_command(frame):
            unanswered.append(command_at)
            exchanges.append(Exchange.passive(len(exchanges), 0, command, None, 0.0, 0.0))
            command, command_at = frame, at
            continue
        exchanges.append(Exchange.passive(len(exchanges), 0, command, frame, 0.0, 0.0))
        command = None
    if skipped:
        first = ("the stream starts with a response" if skipped[0] == 0
                 else f"a response at byte offset {skipped[0]} follows no command")
        warnings.append(f"{first} (the capture began mid-stream?); {len(skipped)} "
                        f"unpaired response(s) skipped")
    if unanswered:
        warnings.append(f"{len(unanswered)} command(s) have no response, the first at byte "
                        f"offset {unanswered[0]}")
    if command is not None:
        warnings.append("the stream ends with a command that has no response")
        exchanges.append(Exchange.passive(len(exchanges), 0, command, None, 0.0, 0.0))
    return Capture(exchanges, warnings)


def load(data: bytes, fmt: str | None = None, port: int = TPM_PORT, bus: str | None = None,
         channels: str | None = None) -> Capture:
    """Decode capture bytes in format *fmt* (detected when ``None``).

    *bus* and *channels* apply to logic-analyser captures (:func:`load_bus`).
    """
    fmt = fmt or detect_format(data)
    if bus is not None and fmt not in BUS_FORMATS:
        raise UsageError(f"--bus applies to logic-analyser captures, not {fmt}",
                         "drop --bus, or force the capture's format with --format")
    if fmt in BUS_FORMATS:
        cap = load_bus(data, fmt, bus, channels)
    elif fmt == "pcap":
        cap = read_capture(data, port)
    elif fmt == "jsonl":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInputError("JSON lines capture is not UTF-8",
                                hint="pass a capture written by `tpmseal sniff --json`") from None
        cap = Capture(read_jsonl(text))
    elif fmt == "raw":
        cap = read_raw(data)
    else:
        raise UsageError(f"unknown capture format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    # follow the sessions, as the live sniffer does: what their "encryption" hides
    return Capture(decipher_all(cap.exchanges), cap.warnings)
