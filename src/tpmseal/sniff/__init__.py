"""The TPM bus sniffer: framed proxy, decoder, leak scanner, captures, interposer hooks.

Threat model. Between the CPU and a discrete TPM runs a bus (LPC, SPI, I2C)
that anyone with a logic analyser or an interposer chip can read and drive.
tpmseal's promise is that a sealed secret never crosses it in plaintext
(salted sessions with AES-CFB parameter encryption, TPM 2.0 Part 1 §19.6,
§21) and that tampering with responses is detected (response HMACs, Part 1
§19.6.16). This package makes that bus observable and attackable in software:

Three sides, each reading on its own:

* :mod:`~tpmseal.sniff.capture` — live capture:
  :class:`~tpmseal.sniff.capture.proxy.Proxy`, a socket in front of swtpm that
  records every exchange, relays swtpm's control channel and calls interposer
  hooks (:mod:`~tpmseal.sniff.capture.hooks`) that may rewrite, forge, drop,
  delay or replay messages; the in-process tap;
* :mod:`~tpmseal.sniff.analysis` — sans-I/O analysis: framing, the recorded
  :class:`~tpmseal.sniff.analysis.record.Exchange`, session tracking, the human
  dump (:mod:`~tpmseal.sniff.analysis.render`) and the leak scanner
  (:mod:`~tpmseal.sniff.analysis.leaks`: is a secret anywhere on the bus, in
  any spelling?) and the reassembly of frames from SPI, I2C and LPC bus
  traffic (:mod:`~tpmseal.sniff.analysis.ptp`);
* :mod:`~tpmseal.sniff.formats` — capture files side by side: JSON lines,
  pcap/pcapng for Wireshark and back, logic-analyser captures (sigrok, Saleae,
  VCD, .sr), and ``tpmseal decode`` (:mod:`~tpmseal.sniff.formats.offline`).

It is a test oracle and an audit tool: its output contains key material.
"""

from tpmseal.sniff.analysis.framing import FrameReader, FramingError
from tpmseal.sniff.analysis.leaks import Leak, LeakMonitor, scan
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.analysis.render import render_exchange
from tpmseal.sniff.capture.hooks import (
    DROP,
    HANG,
    Close,
    HookContext,
    Respond,
    Verdict,
    build_command,
    error_response,
    flip,
    parse_command,
    parse_response,
    set_session_attributes,
    success_response,
)
from tpmseal.sniff.capture.proxy import HookError, Proxy

__all__ = [
    "DROP",
    "HANG",
    "Close",
    "Exchange",
    "FrameReader",
    "FramingError",
    "HookContext",
    "HookError",
    "Leak",
    "LeakMonitor",
    "Proxy",
    "Respond",
    "Verdict",
    "build_command",
    "error_response",
    "flip",
    "parse_command",
    "parse_response",
    "render_exchange",
    "scan",
    "set_session_attributes",
    "success_response",
]
