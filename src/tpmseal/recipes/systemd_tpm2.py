"""Unlocking ``systemd-tpm2`` LUKS2 tokens (systemd-cryptenroll, v250-v256 formats).

What systemd stores and does (src/shared/tpm2-util.c, src/cryptsetup/, and
checked on swtpm with systemd 252):

* token fields ``tpm2-blob`` (base64 of TPM2B_PRIVATE ‖ TPM2B_PUBLIC of a sealed
  keyedHash object, attributes fixedTPM|fixedParent), ``tpm2-pcrs`` (indices),
  ``tpm2-pcr-bank``, ``tpm2-primary-alg`` (``ecc``, or ``rsa`` where the TPM
  lacks ECC; absent in tokens older than v250, which only knew ECC),
  ``tpm2-policy-hash`` (the object's authPolicy) and ``tpm2-pin``;
* the parent is a transient primary under the owner hierarchy from a fixed
  template (:mod:`tpmseal.recipes.owner_primary`) — or, with ``tpm2_srk``
  (v254), the persistent SRK: the field is base64 of tpm2-tss'
  ``Esys_TR_Serialize`` of it (handle, Name, resource type 1, TPM2B_PUBLIC);
* the policy is PolicyAuthorize when ``tpm2_pubkey`` is set (base64 of the PEM
  public key; the signed PolicyPCR covers ``tpm2_pubkey_pcrs``, with
  systemd-measure's signature JSON), then PolicyPCR over ``tpm2-pcrs`` when
  any, then PolicyAuthValue when ``tpm2-pin`` is set;
* the object's authValue is SHA-256 of the PIN — with ``tpm2_salt`` (v254) of
  the base64 of PBKDF2-HMAC-SHA256(PIN, salt, 10000 iterations, 32 bytes);
* the keyslot passphrase is the base64 encoding of the unsealed bytes.

systemd unseals through a session salted with that freshly created primary,
read over the same bus: it defeats a passive sniffer but not an interposer,
which can answer CreatePrimary with its own key (and with ``tpm2_srk``, with
the SRK public that enrolment read by ReadPublic, unauthenticated). tpmseal
salts with the pinned EK instead
(:func:`~tpmseal.recipes.owner_primary.unseal_under_primary`).

``tpm2_pcrlock`` (v255: PolicyAuthorizeNV over an NV index systemd-pcrlock
maintains, with ``tpm2_pcrlock_nv`` naming it) is unlocked with the policy in
``pcrlock.json`` (:mod:`tpmseal.recipes.systemd_pcrlock`). Blobs sealed offline
(v255 ``--tpm2-device-key``: a TPM2B_ENCRYPTED_SECRET seed after the public area,
for TPM2_Import), sharded blobs and pcrlock combined with ``tpm2_pubkey`` (which
systemd refuses too) are refused with a message naming what they use.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tpmseal.client.tpm import Tpm
from tpmseal.digests import digest
from tpmseal.errors import BadInputError, DecodeError, UsageError
from tpmseal.recipes import pcrspec
from tpmseal.recipes.owner_primary import (
    PRIMARY_ALGS,
    PersistentParent,
    SealedUnderPrimary,
    unseal_under_primary,
)
from tpmseal.recipes.trust import TrustRecord
from tpmseal.records import record
from tpmseal.session.policy import Authorizer, PolicyStep, compute_policy
from tpmseal.wire.constants import TPM_ALG, TPM_HT, handle_type
from tpmseal.wire.marshal import Reader
from tpmseal.wire.structures import PcrSelection, PcrSelectionList, Public

if TYPE_CHECKING:  # signed policies load on use only
    from tpmseal.recipes.signed import SignedPolicy

TOKEN_HINT = "the systemd-tpm2 token is corrupted; re-enroll it with systemd-cryptenroll"  # noqa: S105
TOKEN_TYPE = "systemd-tpm2"  # noqa: S105 (a LUKS2 token type, not a password)

#: Where systemd looks for the signed-policy file when none is named, in order
#: (tpm2_load_pcr_signature: its configuration directories; the booted UKI's signature
#: lands in /run/systemd).
SIGNATURE_PATHS = tuple(f"{d}/tpm2-pcr-signature.json" for d in (
    "/etc/systemd", "/run/systemd", "/usr/local/lib/systemd", "/usr/lib/systemd"))
PBKDF2_ITERATIONS = 10000  # tpm2_util_pbkdf2_hmac_sha256 (systemd's own test vectors agree)
ESYS_KEY_RESOURCE = 1  # IESYSC_KEY_RSRC in a serialized ESYS_TR


def _b64(token: Mapping[str, Any], key: str) -> bytes:
    value = token[key]
    if isinstance(value, list):
        raise UsageError(f"{key} holds several sealed shards (a newer systemd), which tpmseal "
                         "does not support", "unlock it with systemd-cryptsetup")
    return base64.b64decode(value, validate=True)


def _pcr_list(token: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    indices = token.get(key, [])
    if not isinstance(indices, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 24 for i in indices):
        raise BadInputError(f"{where}: {key} is not a list of PCR indices", TOKEN_HINT)
    return tuple(sorted(set(indices)))


def parse_srk(raw: bytes, where: str) -> PersistentParent:
    """The persistent parent in ``tpm2_srk``: tpm2-tss' serialized ESYS_TR (handle,
    TPM2B_NAME, resource type, TPM2B_PUBLIC), with its Name checked against the public
    area (nothing from the TPM is involved: the token is all there is)."""
    try:
        r = Reader(raw)
        handle = r.u32("handle")
        name = r.tpm2b("name")
        kind = r.u32("resource type")
        public = Public.from_sized(raw[r.offset:])
    except DecodeError as e:
        raise BadInputError(f"{where}: tpm2_srk is malformed ({e.message})", TOKEN_HINT) from None
    if kind != ESYS_KEY_RESOURCE or handle_type(handle) != TPM_HT.PERSISTENT:
        raise BadInputError(f"{where}: tpm2_srk is not a persistent key ({handle:#x})",
                            TOKEN_HINT)
    if name != public.name():
        raise BadInputError(f"{where}: tpm2_srk's Name is not that of its public area",
                            "the token was edited or corrupted")
    return PersistentParent(handle, public)


def _parse_pubkey(raw: bytes, where: str) -> Authorizer:
    """``tpm2_pubkey``: the PEM public key systemd-cryptenroll was given."""
    from cryptography.exceptions import UnsupportedAlgorithm

    from tpmseal.recipes import signer

    _, ser, ec, _, rsa, _ = signer.crypto_modules()
    try:
        key = ser.load_pem_public_key(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise BadInputError(f"{where}: tpm2_pubkey is not a PEM public key", TOKEN_HINT) from None
    if not ((isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048) or (
            isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1))):
        raise UsageError(f"{where}: tpm2_pubkey is neither an RSA-2048 nor a NIST P-256 "
                         "key, the signers tpmseal supports", "unlock it with systemd-cryptsetup")
    return signer.authorizer_for(key)


@record
class SystemdToken:
    """A parsed ``systemd-tpm2`` token (nothing in it is secret)."""

    public: Public
    private: bytes
    pcrs: PcrSelectionList  # tpm2-pcrs (PolicyPCR); may be empty with a signer
    primary_alg: str
    pin: bool
    srk: PersistentParent | None = None
    salt: bytes | None = None
    authorizer: Authorizer | None = None  # tpm2_pubkey
    signed_pcrs: PcrSelectionList | None = None  # tpm2_pubkey_pcrs
    pcrlock: bool = False  # tpm2_pcrlock: PolicyAuthorizeNV first
    pcrlock_nv: bytes | None = None  # tpm2_pcrlock_nv: the index's serialized ESYS_TR

    def sealed(self, lead: tuple[PolicyStep, ...] = ()) -> SealedUnderPrimary:
        return SealedUnderPrimary(self.public, self.private, self.pcrs, self.primary_alg,
                                  "systemd-tpm2 token", self.srk, self.authorizer,
                                  self.signed_pcrs, lead)

    @classmethod
    def parse(cls, token: Mapping[str, Any], token_id: int) -> SystemdToken:
        where = f"systemd-tpm2 token {token_id}"
        try:
            raw = _b64(token, "tpm2-blob")
            r = Reader(raw)
            private = r.tpm2b("TPM2B_PRIVATE")
            start = r.offset
            r.tpm2b("TPM2B_PUBLIC")
            if r.remaining:
                raise UsageError(f"{where} was sealed offline (a seed follows the public area: "
                                 "systemd-cryptenroll --tpm2-device-key, needing TPM2_Import), "
                                 "which tpmseal does not support",
                                 "unlock it with systemd-cryptsetup")
            public = Public.from_sized(raw[start:])
            bank = pcrspec.bank_alg(str(token.get("tpm2-pcr-bank", "sha256")))
            indices = _pcr_list(token, "tpm2-pcrs", where)
            signed = _pcr_list(token, "tpm2_pubkey_pcrs", where)
            alg = str(token.get("tpm2-primary-alg", "ecc"))
            hashes = token.get("tpm2-policy-hash", "")
            policy_hash = bytes.fromhex(hashes if isinstance(hashes, str) else "")
            pin = token.get("tpm2-pin", False)
            srk = parse_srk(_b64(token, "tpm2_srk"), where) if token.get("tpm2_srk") else None
            salt = _b64(token, "tpm2_salt") if token.get("tpm2_salt") else None
            pubkey = _b64(token, "tpm2_pubkey") if token.get("tpm2_pubkey") else None
            pcrlock = token.get("tpm2_pcrlock", False)
            lock_nv = (_b64(token, "tpm2_pcrlock_nv") if token.get("tpm2_pcrlock_nv")
                       else None)
        except (BadInputError, UsageError):
            raise
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
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
        if not isinstance(pin, bool) or not isinstance(pcrlock, bool):
            raise BadInputError(f"{where}: tpm2-pin or tpm2_pcrlock is not a boolean",
                                TOKEN_HINT)
        if pcrlock and pubkey is not None:
            raise UsageError(f"{where} combines a pcrlock policy with a signed one, which "
                             "systemd does not unlock either", "enrol it again")
        authorizer = signed_pcrs = None
        if pubkey is not None:
            authorizer = _parse_pubkey(pubkey, where)
            if not signed:
                raise UsageError(f"{where} has a signed policy over no PCR",
                                 "unlock it with systemd-cryptsetup")
            if bank != TPM_ALG.SHA256:
                raise UsageError(f"{where} signs PCRs of the {pcrspec.bank_name(bank)} bank; "
                                 "systemd-measure's policies tpmseal reads are sha256",
                                 "unlock it with systemd-cryptsetup")
            signed_pcrs = PcrSelectionList((PcrSelection(bank, signed),))
        elif signed:
            raise BadInputError(f"{where}: tpm2_pubkey_pcrs without tpm2_pubkey", TOKEN_HINT)
        elif not indices and not pcrlock:
            raise UsageError(f"{where} is bound to no PCR, which tpmseal does not unlock",
                             "unlock it with systemd-cryptsetup")
        pcrs = PcrSelectionList((PcrSelection(bank, indices),) if indices else ())
        tok = cls(public, private, pcrs, alg, pin, srk, salt, authorizer, signed_pcrs,
                  pcrlock, lock_nv)
        if authorizer is not None and not indices and compute_policy(
                tok.sealed().steps(None, pin)) != public.auth_policy:
            raise BadInputError(f"{where}: the sealed object's policy is not PolicyAuthorize "
                                "by tpm2_pubkey" + (" with a PIN" if pin else ""),
                                "the token was edited or corrupted")
        return tok


def pin_auth(pin: bytes, salt: bytes | None = None) -> bytes:
    """The authValue systemd gives the sealed object: SHA-256 of the PIN, or with
    ``tpm2_salt`` of base64(PBKDF2-HMAC-SHA256(PIN, salt, 10000, 32))."""
    if salt is not None:
        import hashlib  # PBKDF2 for tpm2_salt tokens only: libcrypto's, loaded on use

        pin = base64.b64encode(hashlib.pbkdf2_hmac("sha256", pin, salt, PBKDF2_ITERATIONS))
    return digest("sha256", pin)


def default_signatures() -> list[SignedPolicy]:
    """systemd-measure's signatures from the first file systemd itself would read."""
    from tpmseal.recipes import signed

    path = next((p for p in SIGNATURE_PATHS if os.path.exists(p)), None)
    if path is None:
        raise UsageError("this systemd-tpm2 token is sealed to a signed PCR policy and "
                         "no signature was given (no tpm2-pcr-signature.json in "
                         "/etc/systemd, /run/systemd or /usr/lib/systemd)",
                         "pass systemd-measure's signature JSON with --policy FILE")
    return signed.load_policies([path])


def unseal_secret(tpm: Tpm, tok: SystemdToken, trust: TrustRecord | None,
                  pin: bytes | None, policies: Sequence[SignedPolicy] = (),
                  pcrlock: str | None = None) -> bytes:
    """The token's sealed secret, unsealed through tpmseal's EK-salted encrypted session;
    *policies*: the signed policies for a token with ``tpm2_pubkey`` (default: systemd's
    signature file); *pcrlock*: the pcrlock.json for a ``tpm2_pcrlock`` token (default:
    where systemd looks)."""
    if tok.pin and pin is None:
        raise UsageError("this systemd-tpm2 token needs its PIN", "pass --pin-file FILE")
    auth = pin_auth(pin, tok.salt) if tok.pin and pin is not None else None
    if tok.pcrlock:
        from tpmseal.recipes import systemd_pcrlock

        lock = systemd_pcrlock.load(pcrlock, tok.pcrlock_nv)
        return systemd_pcrlock.unseal(tpm, tok.sealed(tuple(lock.steps())), lock, trust, auth)
    if tok.authorizer is not None:
        assert tok.signed_pcrs is not None
        offered = list(policies) or default_signatures()
        policies = [p for p in offered if p.pcrs == tok.signed_pcrs]
        if not policies:
            raise BadInputError("no signed policy covers exactly "
                                f"{pcrspec.format_pcrs(tok.signed_pcrs)}, the PCRs this "
                                "token's signatures sign (tpm2_pubkey_pcrs)",
                                "pass the signature made for them (systemd-measure sign)")
    return unseal_under_primary(tpm, tok.sealed(), trust, auth, policies)


def unseal_token(tpm: Tpm, token: Mapping[str, Any], token_id: int,
                 trust: TrustRecord | None, pin: bytes | None,
                 policies: Sequence[SignedPolicy] = (), pcrlock: str | None = None) -> bytes:
    """The keyslot passphrase of a systemd-tpm2 token: base64 of the unsealed secret."""
    secret = unseal_secret(tpm, SystemdToken.parse(token, token_id), trust, pin, policies,
                           pcrlock)
    return base64.b64encode(secret)


def describe(token: Mapping[str, Any], token_id: int) -> dict[str, Any]:
    tok = SystemdToken.parse(token, token_id)
    out: dict[str, Any] = {"pcrs": pcrspec.format_pcrs(tok.pcrs) or None, "pin": tok.pin,
                           "primary": (f"{tok.srk.handle:#010x}" if tok.srk else tok.primary_alg)}
    if tok.signed_pcrs is not None:
        out["signed_pcrs"] = pcrspec.format_pcrs(tok.signed_pcrs)
    if tok.pcrlock:
        out["pcrlock"] = True
    return out


def needs_pin(token: Mapping[str, Any], token_id: int) -> bool:
    return SystemdToken.parse(token, token_id).pin
