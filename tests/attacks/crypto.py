"""The attacker's arithmetic, written from the specification, independent of tpmseal.session.

* KDFa (TPM 2.0 Part 1 §11.4.10.2): SP 800-108 counter mode with HMAC;
  K(i) = HMAC(key, [i]32 ‖ label ‖ 00 ‖ contextU ‖ contextV ‖ [bits]32).
* sessionKey (Part 1 §19.6.8) = KDFa(authHash, authValue(bind) ‖ salt, "ATH",
  nonceTPM, nonceCaller, digestBits).
* Parameter encryption (Part 1 §21.3): key ‖ IV = KDFa(authHash, sessionKey ‖
  authValue, "CFB", nonceNewer, nonceOlder, keyBits + 128), AES-CFB over the
  data bytes of the first TPM2B parameter.
* RSA salt (Part 1 Annex B.10.3): OAEP with SHA-256 and label "SECRET\\0".
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 47 moved CFB to the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB


def kdfa_sha256(key: bytes, label: bytes, context_u: bytes, context_v: bytes,
                bits: int) -> bytes:
    out = b""
    i = 1
    while len(out) * 8 < bits:
        msg = (i.to_bytes(4, "big") + label + b"\0" + context_u + context_v
               + bits.to_bytes(4, "big"))
        out += hmac.new(key, msg, hashlib.sha256).digest()
        i += 1
    assert bits % 8 == 0
    return out[: bits // 8]


def session_key(salt: bytes, nonce_tpm: bytes, nonce_caller: bytes) -> bytes:
    """sessionKey of an unbound session salted with *salt* (SHA-256)."""
    return kdfa_sha256(salt, b"ATH", nonce_tpm, nonce_caller, 256)


def cfb_crypt(session_value: bytes, nonce_newer: bytes, nonce_older: bytes, data: bytes,
              *, key_bits: int = 128, decrypt: bool = True) -> bytes:
    material = kdfa_sha256(session_value, b"CFB", nonce_newer, nonce_older, key_bits + 128)
    cipher = Cipher(algorithms.AES(material[: key_bits // 8]), CFB(material[key_bits // 8 :]))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=b"SECRET\0")


def unwrap_salt(key: rsa.RSAPrivateKey, encrypted: bytes) -> bytes | None:
    """The salt, if *encrypted* was encrypted to *key*; None otherwise."""
    try:
        return key.decrypt(encrypted, _oaep())
    except ValueError:
        return None


def wrap_salt(key: rsa.RSAPublicKey, salt: bytes) -> bytes:
    return key.encrypt(salt, _oaep())
