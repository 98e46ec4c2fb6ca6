"""Unlocking a LUKS2 volume from whichever TPM token it carries.

Each supported token type has a module (``tpmseal``: :mod:`tpmseal.recipes.luks`;
``systemd-tpm2``: :mod:`tpmseal.recipes.systemd_tpm2`; ``clevis``:
:mod:`tpmseal.recipes.clevis`) with the same three functions: ``unseal_token``
returning the keyslot passphrase, ``describe`` and ``needs_pin``. A module is
imported only for a header holding a token of its type: the boot-time unlock of a
tpmseal token loads neither clevis' JOSE nor systemd's PIN hashing. The
passphrase is then checked against the token's keyslots by cryptsetup itself
(``--test-passphrase``) or used to open the volume, always on a pipe.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tpmseal.client.tpm import Tpm
from tpmseal.errors import AuthFailedError, IntegrityError, NotFoundError, TpmsealError
from tpmseal.log import get_logger
from tpmseal.recipes import cryptsetup
from tpmseal.recipes.trust import TrustRecord
from tpmseal.records import field, record

if TYPE_CHECKING:  # signed policies load on use only
    from types import ModuleType

    from tpmseal.recipes.signed import SignedPolicy

log = get_logger("tpmseal.luks")

#: The token types tpmseal unlocks and the module of each, whose ``TOKEN_TYPE`` it is.
KINDS: dict[str, str] = {
    "tpmseal": "tpmseal.recipes.luks",
    "systemd-tpm2": "tpmseal.recipes.systemd_tpm2",
    "clevis": "tpmseal.recipes.clevis",
}


def kind_module(kind: str) -> ModuleType:
    """The module of token type *kind* (a key of :data:`KINDS`), imported on first use."""
    name = KINDS[kind]
    __import__(name)  # not importlib: the package costs start-up time (cli/main.py)
    return sys.modules[name]


def unseal_with(tpm: Tpm, token: Mapping[str, Any], token_id: int, trust: TrustRecord | None,
                pin: bytes | None, policies: Sequence[SignedPolicy] = (),
                pcrlock: str | None = None) -> bytes:
    """The keyslot passphrase of *token*, offering *policies* to the types that take them
    (tpmseal tokens sealed to a signer, systemd-tpm2's tpm2_pubkey) and *pcrlock* (a
    pcrlock.json) to systemd-tpm2 tokens."""
    kind = str(token.get("type", ""))
    module = kind_module(kind)
    secret: bytes
    if kind == "systemd-tpm2":
        secret = module.unseal_token(tpm, token, token_id, trust, pin, policies, pcrlock)
    elif policies and kind == "tpmseal":
        secret = module.unseal_token(tpm, token, token_id, trust, pin, policies=policies)
    else:
        secret = module.unseal_token(tpm, token, token_id, trust, pin)
    return secret


@record
class TokenInfo:
    token_id: int
    kind: str
    keyslots: list[int]
    detail: dict[str, Any]


def list_tokens(device: str) -> list[TokenInfo]:
    """Every token of *device* with what tpmseal knows about it (nothing secret)."""
    out = []
    for tid, token in sorted(cryptsetup.header(device).tokens.items()):
        kind = str(token.get("type", "?"))
        detail: dict[str, Any] = {"supported": kind in KINDS}
        if kind in KINDS:
            try:
                detail.update(kind_module(kind).describe(token, tid))
            except TpmsealError as e:
                detail["error"] = e.one_line()
        out.append(TokenInfo(tid, kind, cryptsetup.token_keyslots(token), detail))
    return out


@record
class Candidate:
    token_id: int
    kind: str
    token: Mapping[str, Any] = field(repr=False)
    keyslots: list[int]

    def needs_pin(self) -> bool:
        """Whether the token asks for a PIN (a malformed one says so when it is tried)."""
        try:
            return bool(kind_module(self.kind).needs_pin(self.token, self.token_id))
        except TpmsealError:
            return False


def candidates(device: str, token_id: int | None = None,
               kinds: tuple[str, ...] | None = None) -> list[Candidate]:
    """The supported tokens of *device* (or the one asked for) that have a keyslot."""
    hdr = cryptsetup.header(device)
    found = []
    for tid, token in sorted(hdr.tokens.items()):
        kind = str(token.get("type", ""))
        if token_id is not None and tid != token_id:
            continue
        if kind not in KINDS or (kinds is not None and kind not in kinds):
            if token_id is not None:
                raise NotFoundError(f"token {tid} of {device} has type {kind!r}, which "
                                    "tpmseal cannot unlock",
                                    f"supported: {', '.join(sorted(KINDS))}")
            continue
        slots = [s for s in cryptsetup.token_keyslots(token) if s in hdr.keyslots]
        if slots:
            found.append(Candidate(tid, kind, token, slots))
    if not found:
        what = f"token {token_id}" if token_id is not None else "TPM token tpmseal can use"
        raise NotFoundError(f"{device} has no {what} with a keyslot",
                            "enrol one with `tpmseal luks enroll`, or see `tpmseal luks list`")
    return found


@record
class Unlocked:
    token_id: int
    kind: str
    keyslot: int
    passphrase: bytes = field(repr=False)


def unlock_key(tpm: Tpm, device: str, cands: list[Candidate], trust: TrustRecord | None,
               pin: bytes | None, policies: Sequence[SignedPolicy] = (),
               pcrlock: str | None = None) -> Unlocked:
    """The first candidate whose unsealed passphrase cryptsetup accepts for its keyslot.

    *policies*: signed policies, offered to tokens sealed to a signer (tpmseal tokens
    enrolled --authorized-by, systemd-tpm2 tokens with tpm2_pubkey); *pcrlock*: the
    systemd-pcrlock policy file for ``tpm2_pcrlock`` tokens. If none works, the first
    failure a security check gave (:class:`IntegrityError`: possible bus tampering) is
    raised, else the first failure (the others are logged); if one works, each such
    check failure of another is still said (a warning): an interposer found while
    unlocking through the next token is not to go unreported.
    """
    first: TpmsealError | None = None
    tampered: list[tuple[Candidate, IntegrityError]] = []
    for c in cands:
        try:
            secret = unseal_with(tpm, c.token, c.token_id, trust,
                                 pin if c.needs_pin() else None, policies, pcrlock)
            for slot in c.keyslots:
                try:
                    cryptsetup.test_key(device, secret, slot)
                except AuthFailedError:
                    continue
                for t, e in tampered:
                    log.warning("token %d (%s) failed a security check, token %d unlocked "
                                "instead: %s", t.token_id, t.kind, c.token_id, e.one_line())
                return Unlocked(c.token_id, c.kind, slot, secret)
            raise AuthFailedError(f"the key unsealed from token {c.token_id} opens none of "
                                  "its keyslots", "the token does not belong to this header; "
                                  "remove it and enrol again")
        except TpmsealError as e:
            log.info("token %d (%s) did not unlock: %s", c.token_id, c.kind, e.one_line())
            first = first or e
            if isinstance(e, IntegrityError):
                tampered.append((c, e))
    assert first is not None
    raise tampered[0][1] if tampered else first
