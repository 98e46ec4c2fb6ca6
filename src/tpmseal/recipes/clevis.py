"""Unlocking LUKS2 volumes bound with ``clevis luks bind … tpm2`` (clevis 19).

clevis stores a ``clevis`` LUKS2 token whose ``jwe`` is a JWE in flattened
JSON serialization (RFC 7516 §7.2.2): ``protected`` (base64url of the JSON
protected header), ``iv``, ``ciphertext``, ``tag`` and an empty
``encrypted_key``. The header is ``{"alg": "dir", "enc": "A256GCM", "clevis":
{"pin": "tpm2", "tpm2": {hash, key, pcr_bank, pcr_ids, jwk_pub, jwk_priv}}}``,
where ``jwk_pub``/``jwk_priv`` are base64url of the TPM2B_PUBLIC/TPM2B_PRIVATE
of an object sealed under PolicyPCR beneath the owner-hierarchy primary
:mod:`tpmseal.recipes.owner_primary` recreates. The object holds the JWK
``{"alg": "A256GCM", "k": …, "kty": "oct"}``; the keyslot passphrase is the
AES-256-GCM decryption of the ciphertext with ``k``, the ASCII of
``protected`` as additional data (RFC 7516 §5.2 step 14) — what ``clevis luks
pass`` prints.

clevis' own unlock (tpm2_unseal with no salted session) sends the JWK in
plaintext in the Unseal response; here it is unsealed on tpmseal's encrypted
path, and the JWE is decrypted in this process with ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tpmseal import safejson
from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, DecodeError, IntegrityError, UsageError
from tpmseal.recipes import pcrspec
from tpmseal.recipes.owner_primary import PRIMARY_ALGS, SealedUnderPrimary, unseal_under_primary
from tpmseal.recipes.trust import TrustRecord
from tpmseal.records import field, record
from tpmseal.wire.marshal import Reader, parse_exact
from tpmseal.wire.structures import PcrSelection, PcrSelectionList, Public

JWE_HINT = ("the clevis binding in the LUKS header is corrupted; restore the header from a "
            "backup, or unlock with a passphrase and bind again")

TOKEN_TYPE = "clevis"  # noqa: S105 (a LUKS2 token type, not a password)

#: The tpm2 pin's configuration keys this module understands (clevis 19's ``clevis
#: encrypt tpm2`` writes these; signed policies add policy_pubkey / policy_ref).
_KNOWN = {"hash", "key", "pcr_bank", "pcr_ids", "pcr_digest", "jwk_pub", "jwk_priv"}


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url(text: object, what: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 §2)."""
    if not isinstance(text, str):
        raise BadInputError(f"{what} is not a string", hint=JWE_HINT)
    if not _B64URL.fullmatch(text):
        raise BadInputError(f"{what} is not base64url", hint=JWE_HINT)
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadInputError(f"{what} is not base64url", hint=JWE_HINT) from None


@record
class ClevisBinding:
    """A parsed clevis tpm2 binding (nothing in it is secret)."""

    protected: str = field(repr=False)
    iv: bytes
    ciphertext: bytes = field(repr=False)
    tag: bytes
    public: Public
    private: bytes
    pcrs: PcrSelectionList
    primary_alg: str

    @classmethod
    def parse(cls, token: Mapping[str, Any], token_id: int) -> ClevisBinding:
        where = f"clevis token {token_id}"
        try:
            return cls._parse(token, where)
        except BadInputError as e:
            raise BadInputError(e.message if e.message.startswith(where)
                                else f"{where}: {e.message}",
                                e.hint or "check it with `cryptsetup token export`") from None
        except DecodeError as e:
            raise BadInputError(f"{where}: a TPM structure is malformed ({e.message})",
                                "check it with `cryptsetup token export`") from None
        except (KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else type(e).__name__
            raise BadInputError(f"{where} is malformed ({what})",
                                "check it with `cryptsetup token export`") from None

    @classmethod
    def _parse(cls, token: Mapping[str, Any], where: str) -> ClevisBinding:
        jwe = token["jwe"]
        if not isinstance(jwe, dict):
            raise BadInputError("jwe is not a JSON object", hint=JWE_HINT)
        protected = jwe["protected"]
        header = safejson.loads(b64url(protected, "protected"), "the protected header",
                                JWE_HINT)
        if not isinstance(header, dict):
            raise BadInputError("the protected header is not a JSON object", hint=JWE_HINT)
        pin = header.get("clevis", {}).get("pin")
        if pin != "tpm2":
            raise UsageError(f"{where} uses the clevis {pin!r} pin; tpmseal unlocks only the "
                             "tpm2 pin", "unlock it with clevis")
        if (header.get("alg"), header.get("enc")) != ("dir", "A256GCM") or jwe.get(
                "encrypted_key", ""):
            raise UsageError(f"{where} is not a direct A256GCM JWE (alg {header.get('alg')!r}, "
                             f"enc {header.get('enc')!r})", "unlock it with clevis")
        conf = header["clevis"]["tpm2"]
        unknown = sorted(set(conf) - _KNOWN)
        if unknown:
            raise UsageError(f"{where} uses tpm2 pin option {unknown[0]!r}, which tpmseal "
                             "does not support", "unlock it with clevis")
        if conf.get("hash", "sha256") != "sha256":
            raise UsageError(f"{where} uses hash {conf.get('hash')!r}; tpmseal supports sha256",
                             "unlock it with clevis, or bind again with hash sha256")
        alg = conf.get("key", "ecc")
        if alg not in PRIMARY_ALGS:
            raise UsageError(f"{where} uses primary key {alg!r}",
                             f"supported: {', '.join(PRIMARY_ALGS)}")
        ids = str(conf.get("pcr_ids", "")).strip()
        if not ids:
            raise UsageError(f"{where} is bound to no PCR, which tpmseal does not unlock",
                             "unlock it with clevis")
        indices = tuple(sorted({int(i) for i in ids.split(",")}))
        if not all(0 <= i < 24 for i in indices):
            raise BadInputError("pcr_ids lists a PCR outside 0-23", hint=JWE_HINT)
        bank = pcrspec.bank_alg(str(conf.get("pcr_bank", "sha256")))
        public = Public.from_sized(b64url(conf["jwk_pub"], "jwk_pub"))
        private = parse_exact(b64url(conf["jwk_priv"], "jwk_priv"),
                              lambda r: Reader.tpm2b(r, "TPM2B_PRIVATE"), "TPM2B_PRIVATE")
        iv, tag = b64url(jwe["iv"], "iv"), b64url(jwe["tag"], "tag")
        if len(iv) != 12 or len(tag) != 16:
            raise BadInputError("the JWE's iv or tag has the wrong length for A256GCM",
                                hint=JWE_HINT)
        return cls(protected, iv, b64url(jwe["ciphertext"], "ciphertext"), tag, public,
                   private, PcrSelectionList((PcrSelection(bank, indices),)), alg)


def jwk_key(jwk: bytes) -> bytes:
    """The AES-256 key ``k`` of the unsealed JWK."""
    try:
        doc = safejson.loads(jwk, "the JWK", "")  # its message is dropped: it is secret
        k = b64url(doc["k"], "the JWK's k") if isinstance(doc, dict) else b""
    except (KeyError, BadInputError):
        k = b""
    if len(k) != 32:  # says nothing about the content: it is secret
        raise IntegrityError("the unsealed clevis JWK is not an A256GCM key",
                             "the TPM response was altered or the binding is corrupted")
    return k


def decrypt(binding: ClevisBinding, jwk: bytes) -> bytes:
    """The keyslot passphrase: the JWE's plaintext (AAD = ASCII of the protected header)."""
    try:
        return AESGCM(jwk_key(jwk)).decrypt(binding.iv, binding.ciphertext + binding.tag,
                                            binding.protected.encode("ascii"))
    except InvalidTag:
        raise IntegrityError("the clevis JWE does not decrypt under the unsealed key",
                             "the token was altered or the binding is corrupted") from None


def unseal_token(tpm: Tpm, token: Mapping[str, Any], token_id: int,
                 trust: TrustRecord | None, pin: bytes | None) -> bytes:
    """The keyslot passphrase of a clevis tpm2 binding (the JWK unsealed encrypted)."""
    binding = ClevisBinding.parse(token, token_id)
    jwk = unseal_under_primary(tpm, SealedUnderPrimary(
        binding.public, binding.private, binding.pcrs, binding.primary_alg, "clevis binding"),
        trust, None)
    return decrypt(binding, jwk)


def describe(token: Mapping[str, Any], token_id: int) -> dict[str, Any]:
    b = ClevisBinding.parse(token, token_id)
    return {"pcrs": pcrspec.format_pcrs(b.pcrs), "pin": False, "primary": b.primary_alg}


def needs_pin(token: Mapping[str, Any], token_id: int) -> bool:
    return False
