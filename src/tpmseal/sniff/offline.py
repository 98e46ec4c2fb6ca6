"""Offline decoding: turn a saved capture back into exchanges.

Three formats, detected from their first bytes (or forced):

``jsonl``  our JSON lines (``tpmseal sniff --json``); the raw hex is re-decoded
``pcap``   libpcap or pcapng with TPM traffic on TCP port 2321 (``--pcap``, tcpdump)
``raw``    TPM frames back to back — command, response, command, response... —
           as a tee of a TPM character device or socket would record them
           (TPM 2.0 Part 1 §18: each frame's header carries its size)

Exchanges are then run through a :class:`~tpmseal.sniff.sessions.SessionTracker`,
so parameters "encrypted" under a key derivable from the bus are decrypted.
"""

from __future__ import annotations

from tpmseal.errors import BadInputError, UsageError
from tpmseal.sniff.framing import FrameReader, FramingError
from tpmseal.sniff.jsonl import read_jsonl
from tpmseal.sniff.pcap import TPM_PORT
from tpmseal.sniff.pcapread import PCAP_MAGICS, PCAPNG_MAGIC, Capture, read_capture
from tpmseal.sniff.record import Exchange
from tpmseal.sniff.sessions import decipher_all
from tpmseal.wire.constants import TPM_ST

FORMATS = ("jsonl", "pcap", "raw")


def detect_format(data: bytes) -> str:
    """``jsonl``, ``pcap`` or ``raw``; :class:`BadInputError` when none fits."""
    if data[:4] in PCAP_MAGICS or data[:4] == PCAPNG_MAGIC:
        return "pcap"
    if data.lstrip()[:1] == b"{":
        return "jsonl"
    if len(data) >= 2 and int.from_bytes(data[:2], "big") in (TPM_ST.NO_SESSIONS,
                                                               TPM_ST.SESSIONS):
        return "raw"
    if not data:
        raise BadInputError("the capture is empty")
    raise BadInputError("cannot tell the capture's format: not JSON lines, pcap, pcapng or "
                        "raw TPM frames", "force one with --format")


def read_raw(data: bytes) -> Capture:
    """Frames back to back, alternating command and response."""
    framer = FrameReader(what="frame")
    try:
        frames = framer.feed(data)
        framer.close()
    except FramingError as e:
        raise BadInputError(f"raw stream: {e.message}") from None
    warnings = []
    if len(frames) % 2:
        warnings.append("the stream ends with a command that has no response")
    exchanges = []
    for i in range(0, len(frames), 2):
        resp = frames[i + 1] if i + 1 < len(frames) else None
        exchanges.append(Exchange.passive(i // 2, 0, frames[i], resp, 0.0, 0.0))
    return Capture(exchanges, warnings)


def load(data: bytes, fmt: str | None = None, port: int = TPM_PORT) -> Capture:
    """Decode capture bytes in format *fmt* (detected when ``None``)."""
    fmt = fmt or detect_format(data)
    if fmt == "pcap":
        cap = read_capture(data, port)
    elif fmt == "jsonl":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInputError("JSON lines capture is not UTF-8") from None
        cap = Capture(read_jsonl(text))
    elif fmt == "raw":
        cap = read_raw(data)
    else:
        raise UsageError(f"unknown capture format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    # follow the sessions, as the live sniffer does: what their "encryption" hides
    return Capture(decipher_all(cap.exchanges), cap.warnings)
