"""Fuzz targets, real seeds and structure-aware mutators (no tests here).

Used by tests/test_fuzz.py (hypothesis, a few seconds in the normal suite) and
tests/fuzz_run.py (``make fuzz``: 10^6+ inputs, counting untyped exceptions,
hangs and peak memory).

* :func:`collect_seeds` runs real flows (provision, probe, seal, unseal, reseal,
  pcrs, NV define/write/read) on a simulator through a capturing transport and
  keeps every exchange, the blob and the trust file, and writes the exchanges
  as JSON lines, pcap, pcapng and a raw frame stream.
* :data:`TARGETS` (built by :func:`targets`) is every parser of untrusted bytes:
  the response parser of each registry command as the client runs it, the
  sniffer's command/response decoders and its capture readers, the blob and
  trust-file loaders, and the CLI's parsers (PCR specs, URIs, secret specs).
* :func:`mutate` changes bytes the way a broken or hostile peer would, keeping
  the TPM frame header's size consistent most of the time so the mutation
  reaches past the header; :func:`mutate_json` edits the JSON document tree.

A target passes an input if it returns or raises a :class:`TpmsealError`;
anything else is an untyped exception (a bug).
"""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tpmseal.client.tpm as client_tpm
from ptp_encoder import SpiHost, encode, saleae_csv, sigrok_lines
from tpmseal.cli.main import main
from tpmseal.client.tpm import Tpm
from tpmseal.recipes import pcrspec, trust
from tpmseal.recipes.blob import SealedBlob
from tpmseal.sniff.analysis import leaks
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.analysis.render import render_exchange
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.sniff.formats import jsonl, offline
from tpmseal.sniff.formats.pcap import PcapWriter
from tpmseal.transport.base import Transport, open_transport, parse_uri
from tpmseal.wire import commands as cmds
from tpmseal.wire.commands import REGISTRY
from tpmseal.wire.constants import TPM_ALG, TPM_RH
from tpmseal.wire.decode import decode_command, decode_response
from tpmseal.wire.frames import split_response
from tpmseal.wire.marshal import Reader
from tpmseal.wire.structures import NvPublic, Public

Target = Callable[[bytes], object]


@dataclass
class Seeds:
    exchanges: list[tuple[bytes, bytes]] = field(default_factory=list)
    blob: bytes = b""
    trust: bytes = b""
    captures: dict[str, bytes] = field(default_factory=dict)


# ----------------------------------------------------------------------- seeds


def _quiet_cli(argv: list[str], stdin: bytes = b"") -> int:
    import sys

    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    sys.stdout = io.TextIOWrapper(io.BytesIO())
    sys.stderr = io.TextIOWrapper(io.BytesIO())
    try:
        return main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


def collect_seeds(uri: str, trust_file: Path, work: Path) -> Seeds:
    """Run real flows on the TPM at *uri* (provisioned for tcg in *trust_file*)."""
    caps: list[CapturingTransport] = []

    def wrapped(u: str | None = None, timeout: float = 120.0) -> Transport:
        cap = CapturingTransport(open_transport(u, timeout))
        caps.append(cap)
        return cap

    setattr(client_tpm, "open_transport", wrapped)  # noqa: B010 - what Tpm.open calls
    try:
        base = ["--tpm", uri, "--trust-file", str(trust_file)]
        key = work / "key.bin"
        key.write_bytes(bytes(range(32)))
        blob = work / "blob.json"
        steps = [["probe"], ["seal", "--input", str(key), "--output", str(blob),
                              "--allow-unmeasured", "--force"],
                 ["unseal", "--input", str(blob), "--output", str(work / "out.bin")],
                 ["reseal", "--input", str(blob), "--allow-unmeasured"],
                 ["pcrs", "show"]]
        failed = [argv[0] for argv in steps if _quiet_cli([*base, *argv]) != 0]
        if failed:
            raise RuntimeError(f"seed flows failed: {failed}")
        with Tpm(wrapped(uri)) as t:
            index = 0x01500F00
            t.run(cmds.NV_DefineSpace(TPM_RH.OWNER, b"", NvPublic(
                index, TPM_ALG.SHA256, 0x00060006, b"", 16)))
            t.nv_write(index, b"0123456789abcdef")
            t.nv_read(index, 16)
            t.run(cmds.NV_UndefineSpace(TPM_RH.OWNER, index))
            t.get_random(16)
    finally:
        setattr(client_tpm, "open_transport", open_transport)  # noqa: B010
    seeds = Seeds([(e.command, e.response or b"") for c in caps for e in c.exchanges])
    seeds.blob = blob.read_bytes() if blob.exists() else b""
    seeds.trust = trust_file.read_bytes()
    exchanges = [e for c in caps for e in c.exchanges]
    seeds.captures = write_captures(exchanges[:24])  # small seeds mutate faster
    return seeds


def write_captures(exchanges: list[Exchange]) -> dict[str, bytes]:
    out = io.StringIO()
    w = jsonl.JsonlWriter(out)
    w.write_all(exchanges)
    pcap = io.BytesIO()
    pw = PcapWriter(pcap)
    for e in exchanges:
        pw(e)
    pw.close()
    raw = b"".join(e.command + (e.response or b"") for e in exchanges)
    # logic-analyser forms of the first few exchanges (bus captures are ~10x the frames)
    spi = encode([(e.command, e.response or b"") for e in exchanges[:4]],
                 SpiHost(wait_rate=0.3), localities=(0, 2), odd_every=3)
    return {"jsonl": out.getvalue().encode(), "pcap": pcap.getvalue(),
            "pcapng": pcap_to_pcapng(pcap.getvalue()), "raw": raw,
            "sigrok": sigrok_lines(spi).encode(), "saleae-csv": saleae_csv(spi).encode(),
            "sigrok-bin": bytes(b for t in spi for pair in zip(t.miso, t.mosi, strict=True)
                                for b in pair)}


def pcap_to_pcapng(pcap: bytes) -> bytes:
    """The same packets as pcapng: section header, one interface, enhanced packet blocks."""
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    linktype = struct.unpack("<I", pcap[20:24])[0]
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", linktype, 0, 65535))
    off = 24
    while off + 16 <= len(pcap):
        sec, usec, incl, orig = struct.unpack("<IIII", pcap[off:off + 16])
        ts = sec * 1_000_000 + usec
        out += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, incl, orig)
                     + pcap[off + 16:off + 16 + incl])
        off += 16 + incl
    return out


# ---------------------------------------------------------------------- targets


def _response_target(cls: type[cmds.Command[Any]]) -> Target:
    n_handles = len(cls.RESPONSE.layout().handles)

    def parse(data: bytes) -> object:
        frame = split_response(data, n_handles, 0)
        return cls.RESPONSE.from_wire(frame.handles, Reader(frame.params,
                                                            base=frame.params_offset))
    return parse


def _sniff_response_target(command: bytes) -> Target:
    decoded = decode_command(command)
    return lambda data: decode_response(data, decoded)


def _decode(fmt: str | None) -> Target:
    """What `tpmseal decode` does with a capture: load, render and re-dump each exchange."""
    def decode(data: bytes) -> object:
        cap = offline.load(data, fmt)
        for ex in cap.exchanges[:3]:  # rendering is slow; the readers are the target
            render_exchange(ex, secrets=[b"\x01" * 16], color=False)
            jsonl.dumps(ex)
        return cap
    return decode


def _text(fn: Callable[[str], object]) -> Target:
    return lambda data: fn(data.decode("utf-8", "surrogateescape"))


def _trust_target() -> Target:
    path = Path(tempfile.mkdtemp(prefix="tpmseal-fuzz-")) / "trust.json"

    def load(data: bytes) -> object:
        path.write_bytes(data)
        return trust.select(trust.load_all(path), "tcg", path, address="unix:/fuzz.sock")
    return load


def _format_2(seed: bytes) -> bytes:
    """The records of a format-1 trust file written as format 2."""
    profiles = json.loads(seed)["profiles"]
    return json.dumps({"format": trust.FORMAT, "tpms": {
        rec["ek"]["name"]: {"profiles": {name: rec}} for name, rec in profiles.items()}}).encode()


def targets(seeds: Seeds) -> dict[str, tuple[Target, list[bytes]]]:
    """Every parser of untrusted input, with the seeds it starts from."""
    by_cc: dict[int, list[tuple[bytes, bytes]]] = {}
    for c, r in seeds.exchanges:
        by_cc.setdefault(int.from_bytes(c[6:10], "big"), []).append((c, r))
    any_responses = [r for _, r in seeds.exchanges][:64]
    out: dict[str, tuple[Target, list[bytes]]] = {}
    for cc, cls in sorted(REGISTRY.items()):
        pairs = by_cc.get(cc, [])
        responses = [r for _, r in pairs if r[6:10] == bytes(4)][:16] or any_responses
        out[f"response:{cls.__name__}"] = (_response_target(cls), responses)
        if pairs:
            out[f"sniff-response:{cls.__name__}"] = (_sniff_response_target(pairs[0][0]),
                                                     [r for _, r in pairs][:16])
    out["sniff-command"] = (decode_command, [c for c, _ in seeds.exchanges][:128])
    for fmt in ("jsonl", "pcap", "raw"):
        out[f"capture:{fmt}"] = (_decode(fmt), [seeds.captures[fmt]])
    out["capture:pcapng"] = (_decode("pcap"), [seeds.captures["pcapng"]])
    for fmt in ("sigrok", "saleae-csv", "sigrok-bin"):
        out[f"capture:{fmt}"] = (_decode(fmt), [seeds.captures[fmt]])
    out["capture:detect"] = (_decode(None), list(seeds.captures.values()))
    out["blob"] = (SealedBlob.from_json, [seeds.blob])
    out["trust"] = (_trust_target(), [seeds.trust, _format_2(seeds.trust)])
    out["public"] = (Public.from_sized, [_public_seed(seeds.blob)])
    out["pcrspec"] = (_text(pcrspec.parse_pcrs),
                      [b"sha256:0,1,2,3,4,6,7", b"sha256:0,7+sha384:0", b"sha1:23"])
    out["uri"] = (_text(parse_uri), [b"tcp:127.0.0.1:2321", b"unix:/run/tpm.sock",
                                     b"device:/dev/tpmrm0", b"tcp:[::1]:2321"])
    out["secret-spec"] = (_text(leaks.load_secret), [b"0x" + b"ab" * 16, b"00:11:22:33:44:55:66"])
    return out


def _public_seed(blob: bytes) -> bytes:
    return base64.b64decode(json.loads(blob)["public"]) if blob else b"\0\0"


# --------------------------------------------------------------------- mutators

_INTERESTING16 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF)
_INTERESTING32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x40000000, 10, 0x1000)


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """1-4 random byte-level edits; TPM frames mostly keep a consistent size field."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        n = len(buf)
        at = rng.randrange(n) if n else 0
        if op == 0 and n:
            buf[at] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2 and n >= 2:
            at = min(at, n - 2)
            value = rng.choice((*_INTERESTING16, n, n - at)) & 0xFFFF
            buf[at:at + 2] = value.to_bytes(2, "big")
        elif op == 3 and n >= 4:
            at = min(at, n - 4)
            buf[at:at + 4] = (rng.choice(_INTERESTING32) & 0xFFFFFFFF).to_bytes(4, "big")
        elif op == 4 and n:
            del buf[at:at + rng.randint(1, 16)]
        elif op == 5:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 6 and n:
            del buf[rng.randrange(n):]
        elif op == 7 and n:
            end = min(n, at + rng.randint(1, 64))
            buf[at:at] = buf[at:end] * rng.randint(1, 4)
        elif op == 8 and pool:
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:at] + bytearray(other[cut:])
        else:
            buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    out = bytes(buf)
    if len(data) >= 10 and data[:2] in (b"\x80\x01", b"\x80\x02") and rng.random() < 0.7 \
            and len(out) >= 6:
        out = out[:2] + len(out).to_bytes(4, "big") + out[6:]  # keep the header's size
    return out


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, -1, 2**31, 2**32, 2**64, rng.randrange(-1000, 1000)))
    if kind == 3:
        return rng.choice((0.5, -0.0, 1e308, 1e-308))
    if kind == 4:
        return rng.choice(("", "0x81000001", "0x" + "f" * 20, "zz", "sha256", "aes-128-cfb"))
    if kind == 5:
        return base64.b64encode(bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
                                ).decode()
    if kind == 6:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(40))).hex()
    if kind == 7:
        return "".join(rng.choice("ab\u00e9\u2603\\\"0") for _ in range(rng.randrange(10)))
    if kind in (8, 9):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(("format", "public", "handle", "name", "pcrs", "x")):
            _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def mutate_json(rng: random.Random, text: bytes) -> bytes:
    """Edit the document tree: replace, delete or nest a node; sometimes raw text edits."""
    try:
        doc = json.loads(text)
    except ValueError:
        return mutate(rng, text, [])
    for _ in range(rng.randint(1, 3)):
        parents: list[Any] = []
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict | list):
                parents.append(node)
                stack.extend(node.values() if isinstance(node, dict) else node)
        if not parents:
            doc = _random_json(rng)
            continue
        node = rng.choice(parents)
        keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            continue
        key = rng.choice(keys)
        op = rng.randrange(4)
        if op == 0:
            node[key] = _random_json(rng)
        elif op == 1:
            del node[key]
        elif op == 2:
            node[key] = [[[node[key]]]] if rng.random() < 0.5 else {"x": node[key]}
        elif isinstance(node[key], str) and node[key]:
            s = node[key]
            cut = rng.randrange(len(s))
            node[key] = s[:cut] + rng.choice(("", "=", "!", "A", s[cut:] * 2))
    out = json.dumps(doc, indent=rng.choice((None, 2))).encode()
    if rng.random() < 0.15:
        out = rng.choice((b"[" * 3000 + out + b"]" * 3000, out.replace(b"1", b"1e400", 1),
                          out.replace(b"0", b"NaN", 1), out + b"\xff"))
    return out


def _blocks(data: bytes) -> list[tuple[int, bytes]]:
    out, off = [], 0
    while off + 12 <= len(data):
        btype, n = struct.unpack("<II", data[off:off + 8])
        if n < 12 or off + n > len(data):
            break
        out.append((btype, data[off + 8:off + n - 4]))
        off += n
    return out


def _block(btype: int, body: bytes, pad: bool = True) -> bytes:
    if pad:
        body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def mutate_pcapng(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """Edit whole blocks and keep their lengths consistent: short, empty, odd-sized,
    duplicated or dropped blocks, interfaces with odd options, far-future timestamps."""
    blocks = _blocks(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        i = rng.randrange(len(blocks)) if blocks else 0
        if op == 0 and blocks:
            del blocks[i]
        elif op == 1 and blocks:
            blocks.insert(i, blocks[i])
        elif op == 2 and blocks:
            blocks[i] = (blocks[i][0], mutate(rng, blocks[i][1], []))
        elif op == 3:
            btype = rng.choice((1, 3, 5, 6, 0x0A0D0D0A, rng.randrange(1 << 32)))
            body = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 2, 3, 7, 20, 28))))
            blocks.insert(i, (btype, body))
        elif op == 4:
            opts = struct.pack("<HHB", 9, 1, rng.choice((0, 6, 9, 0x80, 0xBF, 0xFF, 127)))
            blocks.insert(i, (1, struct.pack("<HHI", rng.choice((1, 101, 0, 0xFFFF)), 0, 0)
                              + opts + b"\0" * 3 + struct.pack("<HH", 0, 0)))
        elif blocks:
            t, body = blocks[i]
            if t == 6 and len(body) >= 12:
                hi, lo = rng.choice(((0xFFFFFFFF, 0xFFFFFFFF), (0x7FFFFFFF, 0), (0, 0)))
                blocks[i] = (t, body[:4] + struct.pack("<II", hi, lo) + body[12:])
    pad = rng.random() < 0.8
    return b"".join(_block(t, b, pad) for t, b in blocks)


def mutate_for(name: str, rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """The mutator that fits target *name*'s input."""
    if name in ("capture:pcapng", "capture:detect") and data[:4] == b"\x0a\x0d\x0d\x0a" \
            and rng.random() < 0.6:
        return mutate_pcapng(rng, data, pool)
    if name in ("blob", "trust") or (name == "capture:jsonl" and rng.random() < 0.5):
        if name == "capture:jsonl":
            lines = data.splitlines()
            if lines:
                i = rng.randrange(len(lines))
                lines[i] = mutate_json(rng, lines[i])
            return b"\n".join(lines)
        return mutate_json(rng, data) if rng.random() < 0.8 else mutate(rng, data, pool)
    return mutate(rng, data, pool)
