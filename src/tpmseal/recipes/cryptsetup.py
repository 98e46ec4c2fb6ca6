"""Driving the real ``cryptsetup`` (2.6) on a LUKS2 device, with keys only on pipes.

Every key or passphrase reaches cryptsetup through a pipe — its stdin
(``--key-file=-``) or an inherited pipe named ``/dev/fd/N`` — never through
argv (visible in /proc to every user) and never through a file. Nothing read
from cryptsetup is secret: its metadata dump holds keyslot salts and tokens,
not keys.

Exit codes of cryptsetup (cryptsetup(8), "RETURN CODES"): 1 wrong parameters,
2 no permission (bad passphrase), 3 out of memory, 4 wrong device specified,
5 device already exists or device is busy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tpmseal.errors import (
    AuthFailedError,
    BadInputError,
    MissingToolError,
    UsageError,
)

#: LUKS2 has 32 keyslots and 32 tokens (LUKS2 on-disk format, §3.1).
LUKS2_SLOTS = 32

#: A keyslot holding a random 256-bit key needs no slow KDF: guessing the key is
#: hopeless anyway, so the minimum PBKDF2 cost keeps unlocking fast (systemd-cryptenroll
#: does the same for its TPM2 keyslots).
FAST_KDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")

EXIT_BAD_PASSPHRASE = 2


class CryptsetupError(UsageError):
    """cryptsetup refused (bad device, busy, wrong parameters); the message carries its
    last line of stderr (never a key). Exit code 2, like any refused operation."""

    def __init__(self, message: str, hint: str | None = None, returncode: int = 1):
        super().__init__(message, hint)
        self.returncode = returncode


def binary() -> str:
    path = shutil.which("cryptsetup") or next(
        (p for p in ("/usr/sbin/cryptsetup", "/sbin/cryptsetup") if os.access(p, os.X_OK)), None)
    if path is None:
        raise MissingToolError("cryptsetup is not installed",
                               "install it (Debian/Ubuntu: apt-get install cryptsetup-bin)")
    return path


@contextlib.contextmanager
def _pipes(extra: Sequence[bytes]) -> Iterator[list[int]]:
    """Read ends of pipes pre-filled with each of *extra* (each fits the pipe buffer)."""
    fds: list[int] = []
    try:
        for data in extra:
            r, w = os.pipe()
            fds.append(r)
            try:
                os.write(w, data)  # small (a key or passphrase): fits the 64 KiB buffer
            finally:
                os.close(w)
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def run(args: Sequence[str], *, stdin: bytes | None = None, pipes: Sequence[bytes] = (),
        what: str = "cryptsetup") -> str:
    """Run ``cryptsetup ARGS``; ``{0}``, ``{1}``... in *args* name pipes holding *pipes*.

    Returns stdout. A failure raises :class:`CryptsetupError` (an
    :class:`AuthFailedError` for a rejected passphrase).
    """
    with _pipes(pipes) as fds:
        argv = [binary()] + [a.format(*(f"/dev/fd/{fd}" for fd in fds)) for a in args]
        try:
            p = subprocess.run(argv, input=stdin if stdin is not None else b"",
                               capture_output=True, pass_fds=fds, timeout=600, check=False,
                               env={**os.environ, "LC_ALL": "C"})
        except subprocess.TimeoutExpired:
            raise CryptsetupError(f"{what} did not finish within 10 minutes",
                                  hint="check that the device is not busy, then retry") from None
    if p.returncode == 0:
        return p.stdout.decode(errors="replace")
    lines = [ln for ln in p.stderr.decode(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else f"exit code {p.returncode}"
    if p.returncode == EXIT_BAD_PASSPHRASE:
        if not lines:  # --batch-mode says nothing
            last = "no key available with this passphrase"
        raise AuthFailedError(f"{what}: {last}", "check the passphrase or key file")
    raise CryptsetupError(f"{what} failed: {last}", None, p.returncode)


# ------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class Header:
    """The parts of a LUKS2 header's JSON metadata tpmseal uses."""

    keyslots: frozenset[int]
    tokens: Mapping[int, dict[str, Any]]

    def free_slot(self) -> int:
        return _first_free(self.keyslots, "keyslot")

    def free_token(self) -> int:
        return _first_free(frozenset(self.tokens), "token")

    def tokens_of_type(self, kind: str) -> dict[int, dict[str, Any]]:
        return {i: t for i, t in sorted(self.tokens.items()) if t.get("type") == kind}


def _first_free(used: frozenset[int], what: str) -> int:
    for i in range(LUKS2_SLOTS):
        if i not in used:
            return i
    raise UsageError(f"the LUKS2 header has no free {what}", f"remove an unused {what} first")


def token_keyslots(token: Mapping[str, Any]) -> list[int]:
    """The keyslots a token is assigned to (strings in LUKS2 JSON)."""
    slots = token.get("keyslots", [])
    if not isinstance(slots, list) or not all(isinstance(s, str) and s.isdigit() for s in slots):
        raise BadInputError("a LUKS2 token has a malformed keyslots list",
                            "the LUKS2 token is corrupted; restore the header from a backup")
    return [int(s) for s in slots]


def header(device: str) -> Header:
    """The LUKS2 metadata of *device* (``luksDump --dump-json-metadata``)."""
    try:
        run(["isLuks", "--type", "luks2", device], what=f"checking {device}")
    except CryptsetupError:
        raise UsageError(f"{device} is not a LUKS2 device",
                         "give a LUKS2 device or image (cryptsetup luksFormat --type luks2)") \
            from None
    text = run(["luksDump", "--dump-json-metadata", device], what=f"reading {device}'s header")
    try:
        doc = json.loads(text)
        slots = frozenset(int(k) for k in doc["keyslots"])
        tokens = {int(k): v for k, v in doc["tokens"].items() if isinstance(v, dict)}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInputError(f"cannot parse the LUKS2 metadata of {device} ({type(e).__name__})",
                            "check the device with `cryptsetup luksDump`") from None
    return Header(slots, tokens)


# ------------------------------------------------------------------------- operations


def add_key(device: str, new_key: bytes, slot: int, *, key_file: str | None = None,
            passphrase: bytes | None = None) -> None:
    """``luksAddKey``: *new_key* into *slot*, authorised by *key_file* or *passphrase*."""
    if (key_file is None) == (passphrase is None):
        raise UsageError("adding a keyslot needs exactly one existing passphrase or key file",
                         "pass --unlock-key-file FILE, or answer the passphrase prompt")
    auth = ["--key-file", key_file] if key_file is not None else ["--key-file=-"]
    run(["luksAddKey", "--batch-mode", *FAST_KDF, *auth, "--new-keyfile", "{0}",
         "--new-key-slot", str(slot), device], stdin=passphrase, pipes=[new_key],
        what=f"adding a keyslot to {device}")


def import_token(device: str, token_id: int, token: Mapping[str, Any], slot: int) -> None:
    """``token import`` of *token* (JSON, not secret) as *token_id*, assigned to *slot*."""
    run(["token", "import", "--json-file=-", "--token-id", str(token_id), "--key-slot",
         str(slot), device], stdin=json.dumps(token, separators=(",", ":")).encode(),
        what=f"storing token {token_id} in {device}")


def remove_token(device: str, token_id: int) -> None:
    run(["token", "remove", "--token-id", str(token_id), device],
        what=f"removing token {token_id} from {device}")


def kill_slot(device: str, slot: int) -> None:
    """``luksKillSlot`` in batch mode (the caller checked that another keyslot remains)."""
    run(["luksKillSlot", "--batch-mode", device, str(slot)],
        what=f"removing keyslot {slot} from {device}")


def test_key(device: str, key: bytes, slot: int | None = None) -> None:
    """``open --test-passphrase``: does *key* open (*slot* of) *device*? Raises if not."""
    where = ["--key-slot", str(slot)] if slot is not None else []
    run(["open", "--test-passphrase", "--disable-external-tokens", "--key-file=-", *where,
         device], stdin=key, what=f"testing the key on {device}")


def open_volume(device: str, name: str, key: bytes, slot: int | None = None,
                options: Sequence[str] = ()) -> None:
    """``open DEVICE NAME`` with *key* on stdin: maps /dev/mapper/NAME."""
    where = ["--key-slot", str(slot)] if slot is not None else []
    run(["open", "--disable-external-tokens", "--key-file=-", *where, *options, device, name],
        stdin=key, what=f"opening {device} as {name}")
