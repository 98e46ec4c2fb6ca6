"""Unlocking ``systemd-tpm2`` LUKS2 tokens (systemd-cryptenroll, v250-v253 format).

What systemd 252 stores and does (src/shared/tpm2-util.c, and checked on swtpm):

* token fields ``tpm2-blob`` (base64 of TPM2B_PRIVATE ‖ TPM2B_PUBLIC of a sealed
  keyedHash object, attributes fixedTPM|fixedParent), ``tpm2-pcrs`` (indices),
  ``tpm2-pcr-bank``, ``tpm2-primary-alg`` (``ecc``, or ``rsa`` where the TPM
  lacks ECC; absent in tokens older than v250, which only knew ECC),
  ``tpm2-policy-hash`` (the object's authPolicy) and ``tpm2-pin``;
* the parent is a transient primary under the owner hierarchy from a fixed
  template (:mod:`tpmseal.recipes.owner_primary`);
* the policy is PolicyPCR over the listed PCRs of one bank, then PolicyAuthValue
  when ``tpm2-pin`` is set; the object's authValue is SHA-256 of the PIN;
* the keyslot passphrase is the base64 encoding of the unsealed bytes.

systemd unseals through a session salted with that freshly created primary,
read over the same bus: it defeats a passive sniffer but not an interposer,
which can answer CreatePrimary with its own key. tpmseal salts with the pinned
EK instead (:func:`~tpmseal.recipes.owner_primary.unseal_under_primary`).

Newer token fields change the rules — ``tpm2_srk`` (a persistent SRK, v254),
``tpm2_salt`` (a salted PIN, v254), ``tpm2_pcrlock`` (v255), ``tpm2-pubkey``
and ``tpm2-pubkey-pcrs`` (signed PCR policies with PolicyAuthorize, v252) —
and such tokens are refused with a message naming the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, DecodeError, UsageError
from tpmseal.recipes import pcrspec
from tpmseal.recipes.owner_primary import PRIMARY_ALGS, SealedUnderPrimary, unseal_under_primary
from tpmseal.recipes.trust import TrustRecord
from tpmseal.wire.marshal import Reader
from tpmseal.wire.structures import PcrSelection, PcrSelectionList, Public

TOKEN_HINT = "the systemd-tpm2 token is corrupted; re-enroll it with systemd-cryptenroll"  # noqa: S105
TOKEN_TYPE = "systemd-tpm2"  # noqa: S105 (a LUKS2 token type, not a password)

#: Fields of later systemd versions that change how the token unseals.
UNSUPPORTED = {
    "tpm2_srk": "a persistent SRK (systemd 254)",
    "tpm2_salt": "a salted PIN (systemd 254)",
    "tpm2_pcrlock": "a pcrlock policy (systemd 255)",
    "tpm2-pubkey": "a signed PCR policy (PolicyAuthorize)",
    "tpm2_pubkey": "a signed PCR policy (PolicyAuthorize)",
    "tpm2-pubkey-pcrs": "a signed PCR policy (PolicyAuthorize)",
    "tpm2_pubkey_pcrs": "a signed PCR policy (PolicyAuthorize)",
}

@dataclass(frozen=True)
class SystemdToken:
    """A parsed ``systemd-tpm2`` token (nothing in it is secret)."""

    public: Public
    private: bytes
    pcrs: PcrSelectionList
    primary_alg: str
    pin: bool

    @classmethod
    def parse(cls, token: Mapping[str, Any], token_id: int) -> SystemdToken:
        where = f"systemd-tpm2 token {token_id}"
        newer = sorted(k for k in token if k in UNSUPPORTED)
        if newer:
            raise UsageError(f"{where} uses {UNSUPPORTED[newer[0]]} (field {newer[0]!r}), "
                             "which tpmseal does not support yet",
                             "unlock it with systemd-cryptsetup, or enrol a tpmseal token "
                             "(`tpmseal luks enroll`)")
        try:
            raw = base64.b64decode(token["tpm2-blob"], validate=True)
            r = Reader(raw)
            private = r.tpm2b("TPM2B_PRIVATE")
            public = Public.from_sized(raw[r.offset:])
            bank = pcrspec.bank_alg(str(token.get("tpm2-pcr-bank", "sha256")))
            indices = token.get("tpm2-pcrs", [])
            if not isinstance(indices, list) or not all(
                    isinstance(i, int) and 0 <= i < 24 for i in indices):
                raise BadInputError(f"{where}: tpm2-pcrs is not a list of PCR indices",
                                    TOKEN_HINT)
            alg = str(token.get("tpm2-primary-alg", "ecc"))
            policy_hash = bytes.fromhex(str(token.get("tpm2-policy-hash", "")))
            pin = token.get("tpm2-pin", False)
        except BadInputError:
            raise
        except (KeyError, TypeError, ValueError, binascii.Error, UsageError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else type(e).__name__
            raise BadInputError(f"{where} is malformed ({what})",
                                "check it with `cryptsetup token export`") from None
        except DecodeError as e:
            raise BadInputError(f"{where}: tpm2-blob is malformed ({e.message})",
                                TOKEN_HINT) from None
        if alg not in PRIMARY_ALGS:
            raise UsageError(f"{where} has primary algorithm {alg!r}",
                             f"supported: {', '.join(PRIMARY_ALGS)}")
        if policy_hash and policy_hash != public.auth_policy:
            raise BadInputError(f"{where}: tpm2-policy-hash differs from the sealed object's "
                                "authPolicy", "the token was edited or corrupted")
        if not isinstance(pin, bool):
            raise BadInputError(f"{where}: tpm2-pin is not a boolean", TOKEN_HINT)
        if not indices:
            raise UsageError(f"{where} is bound to no PCR, which tpmseal does not unlock",
                             "unlock it with systemd-cryptsetup")
        pcrs = PcrSelectionList((PcrSelection(bank, tuple(sorted(set(indices)))),))
        return cls(public, private, pcrs, alg, pin)


def pin_auth(pin: bytes) -> bytes:
    """The authValue systemd 252 gives the sealed object: SHA-256 of the PIN."""
    return hashlib.sha256(pin).digest()


def unseal_secret(tpm: Tpm, tok: SystemdToken, trust: TrustRecord | None,
                  pin: bytes | None) -> bytes:
    """The token's sealed secret, unsealed through tpmseal's EK-salted encrypted session."""
    if tok.pin and pin is None:
        raise UsageError("this systemd-tpm2 token needs its PIN", "pass --pin-file FILE")
    return unseal_under_primary(tpm, SealedUnderPrimary(
        tok.public, tok.private, tok.pcrs, tok.primary_alg, "systemd-tpm2 token"),
        trust, pin_auth(pin) if tok.pin and pin is not None else None)


def unseal_token(tpm: Tpm, token: Mapping[str, Any], token_id: int,
                 trust: TrustRecord | None, pin: bytes | None) -> bytes:
    """The keyslot passphrase of a systemd-tpm2 token: base64 of the unsealed secret."""
    secret = unseal_secret(tpm, SystemdToken.parse(token, token_id), trust, pin)
    return base64.b64encode(secret)


def describe(token: Mapping[str, Any], token_id: int) -> dict[str, Any]:
    tok = SystemdToken.parse(token, token_id)
    return {"pcrs": pcrspec.format_pcrs(tok.pcrs),
            "pin": tok.pin, "primary": tok.primary_alg}


def needs_pin(token: Mapping[str, Any], token_id: int) -> bool:
    return SystemdToken.parse(token, token_id).pin
