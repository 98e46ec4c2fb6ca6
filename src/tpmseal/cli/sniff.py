"""``tpmseal sniff`` (a recording proxy on the TPM bus) and ``tpmseal decode`` (offline).

The sniffer prints key material by design: it shows what a bus observer sees.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from tpmseal.errors import LeakFoundError
from tpmseal.files import read_input
from tpmseal.sniff.analysis.leaks import Leak, LeakMonitor, load_secret, scan
from tpmseal.sniff.analysis.render import TextWriter, color_enabled, render_exchange
from tpmseal.sniff.capture.proxy import Observer, Proxy
from tpmseal.sniff.formats.buses import BUSES
from tpmseal.sniff.formats.jsonl import JsonlWriter, dumps
from tpmseal.sniff.formats.offline import FORMATS, load
from tpmseal.sniff.formats.pcap import TPM_PORT, PcapWriter

_CAPTURE_LIMIT = 1 << 30


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sniff", help="proxy a TPM socket and dump every command and response",
        description="Listen on a socket, forward to a TPM simulator (data and control "
                    "channel, so tpm2-tools' swtpm TCTI works through it) and print every "
                    "exchange decoded. Runs until SIGINT or SIGTERM. Shows key material: "
                    "that is what a bus observer sees.")
    p.add_argument("--listen", required=True, metavar="URI",
                   help="where clients connect: unix:PATH (control at PATH.ctrl) or "
                        "tcp:HOST:PORT (control at PORT+1), or as a TCTI: swtpm:path=PATH, "
                        "swtpm:host=H,port=N")
    p.add_argument("--upstream", required=True, metavar="URI",
                   help="the TPM: unix:PATH, tcp:HOST:PORT, sim:STATE_DIR, device:PATH, "
                        "or a TCTI (swtpm:..., mssim:...)")
    p.add_argument("--json", metavar="FILE", help="also write JSON lines, one per exchange")
    p.add_argument("--pcap", metavar="FILE",
                   help="also write a pcap that Wireshark decodes (TCP port 2321)")
    _add_secret(p)
    p.add_argument("--quiet", action="store_true", help="do not print the dump")
    _add_color(p)
    p.set_defaults(handler=run_sniff)

    d = sub.add_parser(
        "decode", help="decode a saved capture (JSON lines, pcap, raw frames, bus captures)",
        description="Decode a capture written by `tpmseal sniff --json/--pcap`, a tcpdump "
                    "or dumpcap capture of TPM traffic on TCP port 2321, a raw stream of "
                    "TPM frames (command, response, ...), or a logic-analyser capture of a "
                    "TPM's SPI, I2C or LPC bus (sigrok-cli decoder output, Saleae Logic 2 SPI "
                    "CSV, VCD or .sr decoded by sigrok-cli). The format is detected.")
    d.add_argument("file", help="the capture file, or - for stdin")
    d.add_argument("--format", choices=FORMATS, metavar="FORMAT",
                   help=f"the capture format: {', '.join(FORMATS)} (default: detect; "
                        "sigrok-bin is never detected)")
    d.add_argument("--json", action="store_true", help="print JSON lines instead of the dump")
    d.add_argument("--pcap", metavar="FILE",
                   help="also write the exchanges as a pcap that Wireshark decodes (TCP port "
                        f"{TPM_PORT}; one connection per client, per locality for a bus "
                        "capture)")
    d.add_argument("--bus", choices=BUSES,
                   help="the TPM bus of a logic-analyser capture (default: detect)")
    d.add_argument("--channels", metavar="ROLE=NAME,...",
                   help="channel names of a VCD/.sr capture, e.g. clk=D0,cs=D1,mosi=D2,miso=D3 "
                        "(default: the usual names, SCK/CS#/MOSI/MISO...)")
    d.add_argument("--port", type=int, default=TPM_PORT,
                   help=f"TCP port of the TPM in a pcap (default {TPM_PORT})")
    _add_secret(d)
    _add_color(d)
    d.set_defaults(handler=run_decode)


def _add_secret(p: argparse.ArgumentParser) -> None:
    p.add_argument("--secret", action="append", default=[], metavar="HEX|@FILE",
                   help="report (and exit 10 at the end) if these bytes cross the bus raw, "
                        "as hex or as base64, or inside a parameter encrypted under a key "
                        "derivable from the bus; HEX may start with 0x; @FILE reads the "
                        "file's bytes (one trailing newline ignored, as for a PIN file); "
                        "repeatable")


def _add_color(p: argparse.ArgumentParser) -> None:
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="highlight secrets in colour (auto: on a terminal, unless $NO_COLOR)")


def _color(args: argparse.Namespace) -> bool:
    return color_enabled(args.color, sys.stdout)


def _leak_error(leaks: list[Leak]) -> LeakFoundError:
    """The closing error; each leak was already printed on its own LEAK line."""
    return LeakFoundError(f"a secret crossed the bus {len(leaks)} time(s)",
                          "see the LEAK line(s) above")


def _say(text: str) -> None:
    sys.stderr.write(f"tpmseal: {text}\n")
    sys.stderr.flush()


def run_sniff(args: argparse.Namespace) -> int:
    secrets = [load_secret(s) for s in args.secret]
    seen: list[int] = [0]
    observers: list[Observer] = [lambda ex: seen.__setitem__(0, seen[0] + 1)]
    closers: list[Callable[[], None]] = []
    if not args.quiet:
        observers.append(TextWriter(sys.stdout, secrets=secrets, color=_color(args)))
    monitor = LeakMonitor(secrets, on_leak=lambda leak: _say(f"LEAK: {leak.describe()}"))
    if secrets:
        observers.append(monitor)
    try:
        if args.json:
            jw = JsonlWriter(args.json)
            observers.append(jw)
            closers.append(jw.close)
        if args.pcap:
            pw = PcapWriter(args.pcap)
            observers.append(pw)
            closers.append(pw.close)
        # warnings are printed as they happen, once
        proxy = Proxy(args.listen, args.upstream, observers=observers, keep=0,
                      on_error=lambda message: _say(f"warning: {message}"))
        _serve(proxy, _sim_to_start(args.upstream))
    finally:
        for close in closers:
            close()
    leaks = (f"{len(monitor.leaks)} leak(s) of the secret found" if secrets
             else "no --secret to look for")
    _say(f"stopped: {seen[0]} exchange(s), {leaks}")
    if monitor.leaks:
        raise _leak_error(monitor.leaks)
    return 0


def _sim_to_start(upstream: str) -> str | None:
    """The state directory of a ``sim:DIR`` upstream that is not running yet."""
    from tpmseal.transport.base import parse_uri
    from tpmseal.transport.simulator import Simulator

    parsed = parse_uri(upstream)
    if parsed.scheme == "sim" and Simulator(parsed.path).pid() is None:
        return parsed.path
    return None


def _serve(proxy: Proxy, sim_started: str | None = None) -> None:
    """Run *proxy* until SIGINT or SIGTERM, then stop it cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    saved = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proxy.start()
        if sim_started is not None:
            _say(f"started swtpm for sim:{sim_started}; it keeps running: stop it with "
                 f"`tpmseal sim stop --state {sim_started}`")
        ctrl = f" (control {proxy.ctrl_uri})" if proxy.ctrl_uri else ""
        _say(f"sniffing on {proxy.uri}{ctrl}, upstream {proxy.upstream}; "
             f"tpm2-tools: TPM2TOOLS_TCTI={proxy.tools_tcti}; stop with Ctrl-C")
        while not stop.wait(0.5):
            pass
    finally:
        proxy.stop()
        for s, handler in saved.items():
            signal.signal(s, handler)


def _is_sealed_blob(data: bytes) -> bool:
    """A tpmseal blob file (``seal --output``), which people hand to decode too."""
    from tpmseal.recipes.blob import FORMAT, FORMAT_2

    head = data[:4096]
    if data.lstrip()[:1] != b"{" or not (FORMAT.encode() in head or FORMAT_2.encode() in head):
        return False
    try:
        doc = json.loads(data)  # a JSON lines capture fails at its second line
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("format") in (FORMAT, FORMAT_2)


def _describe_blob(args: argparse.Namespace, data: bytes) -> int:
    from tpmseal.recipes.blob import SealedBlob
    from tpmseal.recipes.pcrspec import format_pcrs

    blob = SealedBlob.from_json(data, args.file)
    info = {"kind": "sealed-blob", "file": args.file, "pcrs": format_pcrs(blob.pcrs),
            "sealed_with": blob.sealed_with, "pin": blob.pin,
            "parent": f"{blob.parent_handle:#010x}", "object_name": blob.name.hex(),
            "created": blob.created}
    if args.json:
        sys.stdout.write(json.dumps(info) + "\n")
        return 0
    print(f"{args.file} is a tpmseal sealed blob, not a capture: sealed to {info['pcrs']} "
          f"with {blob.sealed_with}{' and a PIN' if blob.pin else ''} under parent "
          f"{info['parent']} on {blob.created}; `tpmseal unseal --input {args.file}` "
          "unseals it")
    return 0


def run_decode(args: argparse.Namespace) -> int:
    secrets = [load_secret(s) for s in args.secret]
    data = read_input(args.file, "capture", _CAPTURE_LIMIT)
    if args.format is None and _is_sealed_blob(data):
        return _describe_blob(args, data)
    capture = load(data, args.format, args.port, args.bus, args.channels)
    for w in capture.warnings:
        _say(f"warning: {w}")
    color = _color(args)
    if args.pcap:
        pcap = PcapWriter(args.pcap)
        try:
            for ex in capture.exchanges:
                pcap(ex)
        finally:
            pcap.close()
    for ex in capture.exchanges:
        if args.json:
            sys.stdout.write(dumps(ex) + "\n")
        else:
            sys.stdout.write(render_exchange(ex, secrets=secrets, color=color) + "\n")
    sys.stdout.flush()
    leaks = scan(capture.exchanges, secrets) if secrets else []
    for leak in leaks:
        _say(f"LEAK: {leak.describe()}")
    if leaks:
        raise _leak_error(leaks)
    return 0
