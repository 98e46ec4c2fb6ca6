"""Write captures that Wireshark and tshark decode with their TPM 2.0 dissector.

Wireshark's ``tpm`` dissector (4.0) is registered on TCP ports 2321-2322 — the
ports of Microsoft's and IBM's TPM simulators — and decodes one TCP segment as
one TPM message, choosing "request" when the source port is above the
destination port. So each exchange becomes a synthetic TCP/IPv4 conversation
between 127.0.0.1:<ephemeral port> and 127.0.0.1:2321: a handshake when a
client first appears, then the command as one segment and the response as
another, with consistent sequence numbers and real checksums, so
"Follow TCP Stream" works too. Frames use LINKTYPE_RAW (bare IPv4) by default;
LINKTYPE_ETHERNET is available for tools that want it.

The file is the libpcap format (magic 0xa1b2c3d4, microsecond timestamps),
written as exchanges complete and flushed after each, so a capture is usable
while the sniffer still runs. It shows the client's side of the proxy.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.formats.output import open_private

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
TPM_PORT = 2321
_SNAPLEN = 65535
_MAX_SEGMENT = 65000  # IPv4 total length is 16 bits
_LOCALHOST = bytes([127, 0, 0, 1])
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10  # TCP flags (RFC 9293)


def checksum16(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_ipv4(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
             payload: bytes, ident: int = 0) -> bytes:
    """An IPv4 packet carrying one TCP segment, checksums filled in."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                      flags, 65535, 0, 0)
    pseudo = struct.pack("!4s4sBBH", src, dst, 0, 6, len(tcp) + len(payload))
    tcp = tcp[:16] + struct.pack("!H", checksum16(pseudo + tcp + payload)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), ident & 0xFFFF,
                     0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum16(ip)) + ip[12:]
    return ip + tcp + payload


@dataclass
class _Flow:
    port: int
    client_seq: int
    server_seq: int


class PcapWriter:
    """A proxy observer writing each exchange as TCP segments on port *port*."""

    def __init__(self, target: str | Path | IO[bytes], *, port: int = TPM_PORT,
                 linktype: int = LINKTYPE_RAW):
        if linktype not in (LINKTYPE_RAW, LINKTYPE_ETHERNET):
            raise ValueError(f"unsupported linktype {linktype}")
        if isinstance(target, str | Path):
            self._stream: IO[bytes] = open_private(target, binary=True)
            self._owned = True
        else:
            self._stream, self._owned = target, False
        self.port = port
        self.linktype = linktype
        #: how the proxy names this observer in a warning
        where = target if isinstance(target, str | Path) else "a stream"
        self.label = f"the pcap output ({where})"
        self._flows: dict[int, _Flow] = {}
        self._ident = 0
        self._lock = threading.Lock()
        self._stream.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, _SNAPLEN, linktype))
        self._stream.flush()

    def _client_port(self, client: int) -> int:
        # ephemeral and above the server port: the dissector's request/response rule
        return 49152 + client % 16384

    def _packet(self, t: float, ip: bytes) -> None:
        frame = ip
        if self.linktype == LINKTYPE_ETHERNET:
            frame = bytes(6) + bytes(6) + b"\x08\x00" + ip
        sec = int(t)
        usec = min(round((t - sec) * 1_000_000), 999_999)
        self._stream.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)

    def _segment(self, t: float, flow: _Flow, to_server: bool, flags: int,
                 payload: bytes = b"") -> None:
        self._ident += 1
        if to_server:
            ip = tcp_ipv4(_LOCALHOST, _LOCALHOST, flow.port, self.port, flow.client_seq,
                          flow.server_seq, flags, payload, self._ident)
            flow.client_seq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        else:
            ip = tcp_ipv4(_LOCALHOST, _LOCALHOST, self.port, flow.port, flow.server_seq,
                          flow.client_seq, flags, payload, self._ident)
            flow.server_seq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        self._packet(t, ip)

    def _flow(self, client: int, t: float) -> _Flow:
        flow = self._flows.get(client)
        if flow is None:
            flow = _Flow(self._client_port(client), 1000 * client, 5000 * client)
            self._flows[client] = flow
            self._segment(t, flow, True, SYN)
            self._segment(t, flow, False, SYN | ACK)
            self._segment(t, flow, True, ACK)
        return flow

    def _data(self, t: float, flow: _Flow, to_server: bool, data: bytes) -> None:
        for off in range(0, len(data), _MAX_SEGMENT):
            self._segment(t, flow, to_server, PSH | ACK, data[off : off + _MAX_SEGMENT])

    def __call__(self, ex: Exchange) -> None:
        with self._lock:
            flow = self._flow(ex.client, ex.started)
            self._data(ex.started, flow, True, ex.command)
            if ex.response:
                self._data(ex.finished, flow, False, ex.response)
            self._stream.flush()

    def close(self) -> None:
        """Close the file (or flush a stream the caller owns)."""
        with self._lock:
            if self._owned:
                self._stream.close()
            else:
                self._stream.flush()
