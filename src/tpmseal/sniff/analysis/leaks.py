"""Leak scanner: does a secret appear anywhere on the bus?

The property tpmseal exists for is that the sealed secret never crosses the
CPU-TPM bus in plaintext (TPM 2.0 Part 1 §21: parameter encryption covers the
first TPM2B parameter of a command or response). This module checks it the
way a bus observer would: it looks for each secret in every captured message,
not only as raw bytes but also spelled as lowercase or uppercase hex and as
base64 (standard and URL-safe, at any alignment inside a longer base64 text),
since a careless client may carry a key as text. It reports every hit with its
exchange, direction and byte offset.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tpmseal.errors import UsageError
from tpmseal.files import read_input
from tpmseal.sniff.analysis.record import Exchange

#: Secrets shorter than this would match random bytes by chance.
MIN_SECRET = 4
_MIN_B64_CORE = 6


@dataclass(frozen=True)
class Match:
    """One occurrence of a secret in a byte string."""

    secret: int
    encoding: str
    offset: int
    length: int


@dataclass(frozen=True)
class Leak:
    """A secret seen on the bus: which exchange, which side, where and how spelled."""

    exchange: int
    command: str
    direction: str
    secret: int
    encoding: str
    offset: int
    length: int

    def describe(self) -> str:
        return (f"secret {self.secret + 1} ({self.encoding}, {self.length} bytes) in the "
                f"{self.direction} of #{self.exchange} {self.command} at offset 0x{self.offset:x}")


def _b64_cores(secret: bytes, encode: Callable[[bytes], bytes]) -> list[bytes]:
    """The base64 characters fully determined by *secret* at each of the 3 alignments."""
    cores = []
    n = len(secret)
    for shift in range(3):
        text = encode(b"\0" * shift + secret)
        first = -(-8 * shift // 6)
        last = (8 * (shift + n)) // 6
        core = text[first:last]
        if len(core) >= _MIN_B64_CORE:
            cores.append(core)
    return cores


def spellings(secret: bytes) -> list[tuple[str, bytes]]:
    """(encoding, bytes) pairs a secret may appear as, most literal first, deduplicated."""
    candidates = [("raw", secret), ("hex", secret.hex().encode()),
                  ("HEX", secret.hex().upper().encode())]
    candidates += [("base64", c) for c in _b64_cores(secret, base64.b64encode)]
    candidates += [("base64url", c) for c in _b64_cores(secret, base64.urlsafe_b64encode)]
    seen: set[bytes] = set()
    out = []
    for enc, data in candidates:
        if data not in seen:
            seen.add(data)
            out.append((enc, data))
    return out


def find(data: bytes, secrets: Sequence[bytes]) -> list[Match]:
    """Every occurrence of every secret's spellings in *data* (overlaps included)."""
    matches = []
    for i, secret in enumerate(secrets):
        for enc, needle in spellings(secret):
            at = data.find(needle)
            while at != -1:
                matches.append(Match(i, enc, at, len(needle)))
                at = data.find(needle, at + 1)
    return sorted(matches, key=lambda m: (m.offset, m.secret))


def _sides(ex: Exchange) -> list[tuple[str, bytes]]:
    sides = [("command", ex.command)]
    if ex.response is not None:
        sides.append(("response", ex.response))
    if ex.tpm_command is not None and ex.tpm_command != ex.command:
        sides.append(("command as the TPM received it", ex.tpm_command))
    if ex.tpm_response is not None and ex.tpm_response != ex.response:
        sides.append(("response as the TPM sent it", ex.tpm_response))
    return sides


#: How a leak found only in a parameter decrypted by the session tracker is described.
DECRYPTED = "decrypted with a key derivable from the bus"


def find_deciphered(raw: bytes, plain: bytes | None, region: tuple[int, int] | None,
                    secrets: Sequence[bytes]) -> list[Match]:
    """Occurrences of *secrets* that appear once the decrypted parameter (bytes
    *region* of *plain*, which is *raw* with that parameter decrypted) is read in
    place of its ciphertext — those not already visible in *raw*."""
    if plain is None or region is None:
        return []
    start, end = region
    seen = {(m.secret, m.encoding, m.offset) for m in find(raw, secrets)}
    return [m for m in find(plain, secrets)
            if m.offset < end and m.offset + m.length > start
            and (m.secret, m.encoding, m.offset) not in seen]


def scan_exchange(ex: Exchange, secrets: Sequence[bytes]) -> list[Leak]:
    """The leaks in one exchange, in both directions, decrypted parameters included."""
    leaks = [Leak(ex.index, ex.name, side, m.secret, m.encoding, m.offset, m.length)
             for side, data in _sides(ex) for m in find(data, secrets)]
    d = ex.deciphering
    if d is not None:
        for side, raw, plain, region in (
                ("command", ex.command, d.plain_command(ex.command), d.region_command),
                ("response", ex.response, d.plain_response(ex.response or b""),
                 d.region_response)):
            if raw is None:
                continue
            leaks += [Leak(ex.index, ex.name, f"{side} ({DECRYPTED})", m.secret, m.encoding,
                           m.offset, m.length)
                      for m in find_deciphered(raw, plain, region, secrets)]
    return leaks


def scan(exchanges: Iterable[Exchange], secrets: Sequence[bytes]) -> list[Leak]:
    """Every leak of any of *secrets* in *exchanges*."""
    check_secrets(secrets)
    return [leak for ex in exchanges for leak in scan_exchange(ex, secrets)]


def check_secrets(secrets: Sequence[bytes]) -> None:
    for s in secrets:
        if len(s) < MIN_SECRET:
            raise UsageError(f"a secret of {len(s)} bytes would match random traffic",
                             f"give secrets of at least {MIN_SECRET} bytes")


#: a secret to look for is a key or a PIN; a larger file is not one (and /dev/zero never ends)
MAX_SECRET_FILE = 64 * 1024


def load_secret(spec: str) -> bytes:
    """A secret from the command line: hex digits (``0x`` prefix and ``:`` separators
    allowed), or ``@FILE`` for a file's bytes less one trailing newline — as the CLI
    reads a PIN file (so ``--secret @pinfile`` finds that PIN). Searching is by
    substring, so a binary secret that really ends in a newline is still found."""
    if spec.startswith("@"):
        data = read_input(spec[1:], "secret", MAX_SECRET_FILE)
        data = data[:-1] if data.endswith(b"\n") else data
    else:
        text = spec.strip()
        text = text[2:] if text[:2] in ("0x", "0X") else text
        try:
            data = bytes.fromhex(text.replace(":", ""))
        except ValueError:
            raise UsageError("a --secret must be hex digits or @FILE",
                             "e.g. --secret 0x00112233... or --secret @key.bin") from None
    check_secrets([data])
    return data


class LeakMonitor:
    """A proxy observer that scans each exchange as it completes."""

    def __init__(self, secrets: Sequence[bytes],
                 on_leak: Callable[[Leak], None] | None = None):
        check_secrets(secrets)
        self.secrets = list(secrets)
        self.on_leak = on_leak
        #: how the proxy names this observer in a warning
        self.label = "the leak scanner"
        self.leaks: list[Leak] = []
        self._lock = threading.Lock()

    def __call__(self, ex: Exchange) -> None:
        found = scan_exchange(ex, self.secrets)
        with self._lock:
            self.leaks += found
        if self.on_leak is not None:
            for leak in found:
                self.on_leak(leak)
