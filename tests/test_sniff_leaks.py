"""The leak scanner: every spelling of a secret, in both directions, with offsets."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tpmseal.client.tpm import Tpm
from tpmseal.errors import UsageError
from tpmseal.sniff.analysis.leaks import Leak, LeakMonitor, find, load_secret, scan, spellings
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_CC
from tpmseal.wire.structures import DigestValues

SECRET = bytes.fromhex("00112233445566778899aabbccddeeff0123456789abcdef")


@pytest.mark.parametrize(("encoding", "text"), [
    ("raw", SECRET),
    ("hex", SECRET.hex().encode()),
    ("HEX", SECRET.hex().upper().encode()),
    ("base64", base64.b64encode(SECRET)),
    ("base64", base64.b64encode(b"x" + SECRET + b"y")),  # unaligned inside longer base64
    ("base64", base64.b64encode(b"xy" + SECRET)),
])
def test_each_spelling_is_found(encoding: str, text: bytes) -> None:
    data = b"\x80\x01junk" + text + b"more"
    hits = [m for m in find(data, [SECRET]) if m.encoding == encoding]
    assert hits and hits[0].offset >= 6


def test_url_safe_base64() -> None:
    secret = b"\xfb\xef\xbe" * 4  # "++++" in standard base64, "----" in the URL-safe one
    data = b"token=" + base64.urlsafe_b64encode(secret)
    assert {m.encoding for m in find(data, [secret])} == {"base64url"}


def test_negative() -> None:
    noise = os.urandom(4096)
    assert find(noise + SECRET[:-1] + noise, [SECRET]) == []
    assert find(SECRET[::-1], [SECRET]) == []


def test_spellings_are_deduplicated() -> None:
    digits_only = bytes.fromhex("0123456789012345")
    encs = [e for e, _ in spellings(digits_only)]
    assert encs.count("hex") == 1 and "HEX" not in encs


def test_scan_reports_direction_and_offset() -> None:
    cmd = bytes.fromhex("80010000000c0000017b0010")
    resp = bytes.fromhex("800100000026000000000018") + SECRET + SECRET.hex().encode()[:2]
    tampered = resp[:-2] + b"zz"  # an interposer changed the tail
    ex = Exchange(4, 1, cmd + SECRET.hex().upper().encode(), tampered, 0.0, 0.0, None, cmd,
                  resp)
    leaks = scan([ex], [SECRET])
    assert [(lk.direction, lk.encoding, lk.offset) for lk in leaks] == [
        ("command", "HEX", 12),
        ("response", "raw", 12),
        ("response as the TPM sent it", "raw", 12),
    ]
    assert leaks[0].describe() == ("secret 1 (HEX, 48 bytes) in the command of #4 GetRandom at "
                                   "offset 0xc")


def test_short_secrets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="3 bytes would match random traffic"):
        scan([], [b"abc"])
    with pytest.raises(UsageError, match="hex digits or @FILE"):
        load_secret("xyz")
    f = tmp_path / "key"
    f.write_bytes(SECRET)
    assert load_secret(f"@{f}") == SECRET == load_secret(SECRET.hex())
    assert load_secret("de:ad:be:ef") == bytes.fromhex("deadbeef")


def test_secret_files_and_hex_spellings(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_bytes(b"hunter22\n")  # as `echo hunter22 > pin` writes it, and a PIN file reads
    assert load_secret(f"@{pin}") == b"hunter22"
    pin.write_bytes(b"hunter22\n\n")
    assert load_secret(f"@{pin}") == b"hunter22\n"  # one newline only, like the PIN reader
    assert load_secret("0xDEADBEEF") == load_secret("0Xdeadbeef") == bytes.fromhex("deadbeef")
    assert load_secret(" 0xde:ad:be:ef ") == bytes.fromhex("deadbeef")
    with pytest.raises(UsageError, match="0 bytes would match random traffic"):
        load_secret("0x")


def test_live_traffic_positive_and_negative(sniffed: Proxy) -> None:
    seen: list[Leak] = []
    monitor = LeakMonitor([SECRET[:32].ljust(32, b"\x42")], on_leak=seen.append)
    sniffed.observers.append(monitor)
    digest = SECRET[:32].ljust(32, b"\x42")
    with Tpm.open(sniffed.uri) as t:
        random = t.get_random(32)
        t.run(cmds.PCR_Extend(16, DigestValues(((TPM_ALG.SHA256, digest),))))
    leaks = scan(sniffed.exchanges, [digest])
    assert [(lk.command, lk.direction) for lk in leaks] == [("PCR_Extend", "command")]
    assert monitor.leaks == leaks == seen
    extend = next(e for e in sniffed.exchanges if e.code == TPM_CC.PCR_Extend)
    assert extend.command[leaks[0].offset : leaks[0].offset + 32] == digest
    # the TPM's random bytes are on the bus too: found in the GetRandom response
    [hit] = scan(sniffed.exchanges, [random])
    assert (hit.command, hit.direction, hit.offset) == ("GetRandom", "response", 12)
    assert scan(sniffed.exchanges, [os.urandom(32)]) == []
