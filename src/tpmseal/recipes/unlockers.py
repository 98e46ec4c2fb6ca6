"""Unlocking a LUKS2 volume from whichever TPM token it carries.

Each supported token type has an unsealer returning the keyslot passphrase
(``tpmseal``: :mod:`tpmseal.recipes.luks`; ``systemd-tpm2``:
:mod:`tpmseal.recipes.systemd_tpm2`; ``clevis``: :mod:`tpmseal.recipes.clevis`).
The passphrase is then checked against the token's keyslots by cryptsetup
itself (``--test-passphrase``) or used to open the volume, always on a pipe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tpmseal.client.tpm import Tpm
from tpmseal.errors import AuthFailedError, NotFoundError, TpmsealError
from tpmseal.recipes import clevis, cryptsetup, luks, systemd_tpm2
from tpmseal.recipes.trust import TrustRecord

if TYPE_CHECKING:  # signed policies load on use only
    from tpmseal.recipes.signed import SignedPolicy

log = logging.getLogger("tpmseal.luks")

#: (tpm, token, token id, trust, pin) -> keyslot passphrase
Unsealer = Callable[[Tpm, Mapping[str, Any], int, TrustRecord | None, bytes | None], bytes]


@dataclass(frozen=True)
class Kind:
    unseal: Unsealer
    describe: Callable[[Mapping[str, Any], int], dict[str, Any]]
    needs_pin: Callable[[Mapping[str, Any], int], bool]


KINDS: dict[str, Kind] = {
    luks.TOKEN_TYPE: Kind(luks.unseal_token, luks.describe,
                          lambda t, i: luks.blob_of(t, i).pin),
    systemd_tpm2.TOKEN_TYPE: Kind(systemd_tpm2.unseal_token, systemd_tpm2.describe,
                                  systemd_tpm2.needs_pin),
    clevis.TOKEN_TYPE: Kind(clevis.unseal_token, clevis.describe, clevis.needs_pin),
}

#: The unsealers that also take signed policies (``policies=``; systemd-tpm2's is
#: called directly by :func:`unseal_with`).
SIGNED: dict[str, Callable[..., bytes]] = {luks.TOKEN_TYPE: luks.unseal_token}


def unseal_with(tpm: Tpm, token: Mapping[str, Any], token_id: int, trust: TrustRecord | None,
                pin: bytes | None, policies: Sequence[SignedPolicy] = (),
                pcrlock: str | None = None) -> bytes:
    """The keyslot passphrase of *token*, offering *policies* to the types that take them
    and *pcrlock* (a pcrlock.json) to systemd-tpm2 tokens."""
    kind = str(token.get("type", ""))
    if kind == systemd_tpm2.TOKEN_TYPE:
        return systemd_tpm2.unseal_token(tpm, token, token_id, trust, pin, policies, pcrlock)
    if policies and kind in SIGNED:
        return SIGNED[kind](tpm, token, token_id, trust, pin, policies=policies)
    return KINDS[kind].unseal(tpm, token, token_id, trust, pin)


@dataclass(frozen=True)
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
                detail.update(KINDS[kind].describe(token, tid))
            except TpmsealError as e:
                detail["error"] = e.one_line()
        out.append(TokenInfo(tid, kind, cryptsetup.token_keyslots(token), detail))
    return out


@dataclass(frozen=True)
class Candidate:
    token_id: int
    kind: str
    token: Mapping[str, Any] = field(repr=False)
    keyslots: list[int]

    def needs_pin(self) -> bool:
        """Whether the token asks for a PIN (a malformed one says so when it is tried)."""
        try:
            return KINDS[self.kind].needs_pin(self.token, self.token_id)
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


@dataclass(frozen=True)
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
    systemd-pcrlock policy file for ``tpm2_pcrlock`` tokens. The first
    failure is reported if none works (later ones are logged).
    """
    first: TpmsealError | None = None
    for c in cands:
        try:
            secret = unseal_with(tpm, c.token, c.token_id, trust,
                                 pin if c.needs_pin() else None, policies, pcrlock)
            for slot in c.keyslots:
                try:
                    cryptsetup.test_key(device, secret, slot)
                except AuthFailedError:
                    continue
                return Unlocked(c.token_id, c.kind, slot, secret)
            raise AuthFailedError(f"the key unsealed from token {c.token_id} opens none of "
                                  "its keyslots", "the token does not belong to this header; "
                                  "remove it and enrol again")
        except TpmsealError as e:
            log.info("token %d (%s) did not unlock: %s", c.token_id, c.kind, e.one_line())
            first = first or e
    assert first is not None
    raise first
