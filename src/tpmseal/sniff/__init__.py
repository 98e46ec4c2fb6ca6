"""The TPM bus sniffer: framed proxy, decoder, leak scanner, captures, interposer hooks.

Threat model. Between the CPU and a discrete TPM runs a bus (LPC, SPI, I2C)
that anyone with a logic analyser or an interposer chip can read and drive.
tpmseal's promise is that a sealed secret never crosses it in plaintext
(salted sessions with AES-CFB parameter encryption, TPM 2.0 Part 1 §19.6,
§21) and that tampering with responses is detected (response HMACs, Part 1
§19.6.16). This package makes that bus observable and attackable in software:

* :class:`~tpmseal.sniff.proxy.Proxy` — a socket in front of swtpm that frames
  (:mod:`~tpmseal.sniff.framing`) and records every exchange
  (:class:`~tpmseal.sniff.record.Exchange`), relays swtpm's control channel, and
  calls interposer hooks (:mod:`~tpmseal.sniff.hooks`) that may rewrite, forge,
  drop, delay or replay messages;
* :mod:`~tpmseal.sniff.render` — the human dump (hexdump plus fields decoded by
  the command registry), :mod:`~tpmseal.sniff.jsonl` — JSON lines,
  :mod:`~tpmseal.sniff.pcap` / :mod:`~tpmseal.sniff.pcapread` — captures for
  Wireshark and back, :mod:`~tpmseal.sniff.offline` — ``tpmseal decode``;
* :mod:`~tpmseal.sniff.leaks` — is a secret anywhere on the bus, in any spelling?

It is a test oracle and an audit tool: its output contains key material.
"""

from tpmseal.sniff.framing import FrameReader, FramingError
from tpmseal.sniff.hooks import (
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
from tpmseal.sniff.leaks import Leak, LeakMonitor, scan
from tpmseal.sniff.proxy import HookError, Proxy
from tpmseal.sniff.record import Exchange
from tpmseal.sniff.render import render_exchange

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
