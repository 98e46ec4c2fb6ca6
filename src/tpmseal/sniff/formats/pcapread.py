"""Read TPM exchanges back from packet captures.

Accepts what ``tpmseal sniff --pcap`` writes and what ``tcpdump``/``dumpcap``
record on a loopback or Ethernet interface while a client talks to a TPM
simulator over TCP: libpcap files (either byte order, micro- or nanosecond
timestamps) and pcapng files; link types Ethernet (with 802.1Q tags), raw IP,
BSD loopback and Linux cooked (SLL, SLL2); IPv4 and IPv6; TCP.

Each TCP connection to the TPM port (2321 unless told otherwise) is
reassembled per direction by sequence number (duplicates and retransmissions
dropped), framed with :class:`~tpmseal.sniff.analysis.framing.FrameReader`, and its
commands paired with its responses in order. A frame is stamped with the time
of the packet that completed it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from tpmseal.errors import BadInputError
from tpmseal.sniff.analysis.framing import FrameReader, FramingError
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.formats.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, TPM_PORT

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_LINKTYPE_NULL, _LINKTYPE_LOOP = 0, 108
_LINKTYPE_SLL, _LINKTYPE_SLL2 = 113, 276
_LINKTYPE_IPV4, _LINKTYPE_IPV6 = 228, 229


@dataclass(frozen=True)
class Packet:
    time: float
    linktype: int
    data: bytes


@dataclass(frozen=True)
class Capture:
    """Exchanges recovered from a capture, and what could not be made sense of."""

    exchanges: list[Exchange]
    warnings: list[str] = field(default_factory=list)


def _pcap_packets(data: bytes) -> Iterator[Packet]:
    order, unit = PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        raise BadInputError("pcap file shorter than its 24-byte header",
                            hint="the capture is truncated; capture again")
    linktype = struct.unpack(order + "I", data[20:24])[0] & 0x0FFFFFFF
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(order + "IIII", data[off : off + 16])
        off += 16
        if off + incl > len(data):
            raise BadInputError(f"pcap record at byte {off - 16} is truncated",
                                hint="the capture is truncated; capture again")
        yield Packet(sec + frac * unit, linktype, data[off : off + incl])
        off += incl


def _pcapng_packets(data: bytes) -> Iterator[Packet]:
    order = "<"
    interfaces: list[tuple[int, float]] = []
    off = 0
    while off + 12 <= len(data):
        btype = struct.unpack(order + "I", data[off : off + 4])[0]
        if btype == 0x0A0D0D0A:
            bom = data[off + 8 : off + 12]
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            interfaces = []
        blen = struct.unpack(order + "I", data[off + 4 : off + 8])[0]
        if blen < 12 or off + blen > len(data):
            raise BadInputError(f"pcapng block at byte {off} is truncated",
                                hint="the capture is truncated or corrupted; capture again")
        body = data[off + 8 : off + blen - 4]
        if btype == 1 and len(body) < 8:
            raise BadInputError(f"pcapng interface block at byte {off} is too short",
                                "the capture is truncated or corrupted; capture again")
        if btype == 1:
            interfaces.append((struct.unpack(order + "H", body[:2])[0], _tsresol(body, order)))
        elif btype == 6 and len(body) >= 20:
            iface, hi, lo, incl, _ = struct.unpack(order + "IIIII", body[:20])
            link, unit = interfaces[iface] if iface < len(interfaces) else (LINKTYPE_RAW, 1e-6)
            yield Packet(((hi << 32) | lo) * unit, link, body[20 : 20 + incl])
        elif btype == 3 and interfaces:
            yield Packet(0.0, interfaces[0][0], body[4:])
        off += blen


def _tsresol(idb: bytes, order: str) -> float:
    """if_tsresol (option 9) of an Interface Description Block; default microseconds."""
    off = 8
    while off + 4 <= len(idb):
        code, length = struct.unpack(order + "HH", idb[off : off + 4])
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = idb[off + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
        off += 4 + (length + 3) // 4 * 4
    return 1e-6


def _ip_payload(p: Packet) -> bytes | None:
    """The IP packet inside a link-layer frame, or None for other protocols."""
    d, lt = p.data, p.linktype
    if lt == LINKTYPE_ETHERNET:
        off, ethertype = 14, int.from_bytes(d[12:14], "big")
        while ethertype in (0x8100, 0x88A8) and len(d) >= off + 4:
            ethertype, off = int.from_bytes(d[off + 2 : off + 4], "big"), off + 4
        return d[off:] if ethertype in (0x0800, 0x86DD) else None
    if lt in (LINKTYPE_RAW, 12, 14, _LINKTYPE_IPV4, _LINKTYPE_IPV6):
        return d
    if lt in (_LINKTYPE_NULL, _LINKTYPE_LOOP):
        return d[4:]
    if lt == _LINKTYPE_SLL:
        return d[16:] if int.from_bytes(d[14:16], "big") in (0x0800, 0x86DD) else None
    if lt == _LINKTYPE_SLL2:
        return d[20:] if int.from_bytes(d[0:2], "big") in (0x0800, 0x86DD) else None
    return None


@dataclass(frozen=True)
class Segment:
    src: tuple[bytes, int]
    dst: tuple[bytes, int]
    seq: int
    flags: int
    payload: bytes


def tcp_segment(ip: bytes) -> Segment | None:
    """The TCP segment in an IPv4 or IPv6 packet (no IPv6 extension headers)."""
    if len(ip) < 20:
        return None
    version = ip[0] >> 4
    if version == 4:
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big") or len(ip)
        if ip[9] != 6:
            return None
        src, dst, tcp = ip[12:16], ip[16:20], ip[ihl:total]
    elif version == 6 and len(ip) >= 40:
        if ip[6] != 6:
            return None
        plen = int.from_bytes(ip[4:6], "big")
        src, dst, tcp = ip[8:24], ip[24:40], ip[40 : 40 + plen]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    doff = (tcp[12] >> 4) * 4
    return Segment((src, sport), (dst, dport), seq, tcp[13], tcp[doff:])


class _Stream:
    """One direction of one TCP connection: in-order bytes, framed."""

    def __init__(self, what: str):
        self.next_seq: int | None = None
        self.framer = FrameReader(what=what)
        self.frames: list[tuple[float, bytes]] = []
        self.error: str | None = None

    def add(self, t: float, seg: Segment) -> None:
        if seg.flags & 0x02:  # SYN
            self.next_seq = (seg.seq + 1) & 0xFFFFFFFF
            return
        data = seg.payload
        if not data or self.error:
            return
        if self.next_seq is None:
            self.next_seq = seg.seq
        ahead = (seg.seq - self.next_seq) & 0xFFFFFFFF
        if ahead >= 0x80000000:  # starts before what we have: retransmission
            overlap = (self.next_seq - seg.seq) & 0xFFFFFFFF
            data = data[overlap:]
            if not data:
                return
        elif ahead:
            self.error = f"{ahead} bytes missing from the capture"
            return
        self.next_seq = (self.next_seq + len(data)) & 0xFFFFFFFF
        try:
            self.frames += [(t, f) for f in self.framer.feed(data)]
        except FramingError as e:
            self.error = e.message


def read_capture(data: bytes, port: int = TPM_PORT) -> Capture:
    """Exchanges in a pcap or pcapng capture of TPM traffic on TCP *port*."""
    if data[:4] in PCAP_MAGICS:
        packets = _pcap_packets(data)
    elif data[:4] == PCAPNG_MAGIC:
        packets = _pcapng_packets(data)
    else:
        raise BadInputError("not a pcap or pcapng file",
                            hint="pass a pcap/pcapng file, or force another format with --format")
    conns: dict[tuple[tuple[bytes, int], tuple[bytes, int]], tuple[_Stream, _Stream]] = {}
    for p in packets:
        ip = _ip_payload(p)
        seg = tcp_segment(ip) if ip is not None else None
        if seg is None:
            continue
        if seg.dst[1] == port:
            key, to_server = (seg.src, seg.dst), True
        elif seg.src[1] == port:
            key, to_server = (seg.dst, seg.src), False
        else:
            continue
        if key not in conns:
            conns[key] = (_Stream("command"), _Stream("response"))
        conns[key][0 if to_server else 1].add(p.time, seg)
    return _pair(conns, port)


def _pair(conns: dict[tuple[tuple[bytes, int], tuple[bytes, int]], tuple[_Stream, _Stream]],
          port: int) -> Capture:
    found: list[tuple[float, int, bytes, bytes | None, float]] = []
    warnings = []
    for client, (key, (cmds, resps)) in enumerate(conns.items(), 1):
        for s in (cmds, resps):
            if s.error:
                warnings.append(f"connection from port {key[0][1]}: {s.error}")
        if len(resps.frames) > len(cmds.frames):
            warnings.append(f"connection from port {key[0][1]}: "
                            f"{len(resps.frames) - len(cmds.frames)} response(s) without a "
                            "command")
        for i, (t, cmd) in enumerate(cmds.frames):
            rt, resp = resps.frames[i] if i < len(resps.frames) else (t, None)
            found.append((t, client, cmd, resp, rt))
    if not found and not warnings:
        warnings.append(f"no TPM traffic on TCP port {port} in this capture")
    found.sort(key=lambda f: f[0])
    exchanges = [Exchange.passive(i, client, cmd, resp, t, rt)
                 for i, (t, client, cmd, resp, rt) in enumerate(found)]
    return Capture(exchanges, warnings)
