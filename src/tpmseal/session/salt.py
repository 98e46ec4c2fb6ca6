"""Session salts: a secret only the TPM's key can recover (Part 1 §24, Annex B/C).

A salted session mixes a random *salt* into its session key. The caller encrypts
the salt to a TPM-resident decryption key (``tpmKey`` of StartAuthSession), so
an observer of the bus cannot derive the session key — and therefore neither
the HMAC keys nor the parameter-encryption keys.

* RSA (Part 1 Annex B.10.3): salt = random(digestSize(nameAlg)); encryptedSalt =
  RSA-OAEP(MGF1 and hash = the key's nameAlg, label ``"SECRET\\0"``).
* ECC (Part 1 Annex C.6.1): an ephemeral key pair on the TPM key's curve;
  Z = x(d_e · Q_tpm); salt = KDFe(nameAlg, Z, "SECRET", x(Q_e), x(Q_tpm),
  digestBits); encryptedSalt = the ephemeral public point (TPMS_ECC_POINT).

Which key to trust is the caller's decision (the recipes pin it); this module
only does the arithmetic on a :class:`~tpmseal.wire.structures.Public`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes

from tpmseal.errors import UsageError
from tpmseal.records import record
from tpmseal.session.kdf import LABEL_SECRET, kdfe
from tpmseal.wire.constants import HASH_SIZES, TPM_ALG, TPM_ECC, enum_name
from tpmseal.wire.structures import EccParms, EccPoint, Public, RsaParms

if TYPE_CHECKING:  # each key type loads on use: a salt needs only its own (~2 ms for RSA)
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

#: the curves, by their class names in ``cryptography.hazmat.primitives.asymmetric.ec``
_CURVES: dict[int, str] = {
    TPM_ECC.NIST_P256: "SECP256R1",
    TPM_ECC.NIST_P384: "SECP384R1",
    TPM_ECC.NIST_P521: "SECP521R1",
}

_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    TPM_ALG.SHA1: hashes.SHA1,
    TPM_ALG.SHA256: hashes.SHA256,
    TPM_ALG.SHA384: hashes.SHA384,
    TPM_ALG.SHA512: hashes.SHA512,
}


def crypto_hash(alg: int) -> hashes.HashAlgorithm:
    """The ``cryptography`` hash object for a TPM hash algorithm."""
    try:
        return _HASHES[alg]()
    except KeyError:
        raise UsageError(f"unsupported hash algorithm {enum_name(TPM_ALG, alg)}",
                         hint="use SHA-1, SHA-256, SHA-384 or SHA-512") from None


def _curve(curve_id: int) -> ec.EllipticCurve:
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        curve: type[ec.EllipticCurve] = getattr(ec, _CURVES[curve_id])
    except KeyError:
        raise UsageError(f"unsupported ECC curve {enum_name(TPM_ECC, curve_id)}",
                         hint="use NIST P-256, P-384 or P-521") from None
    return curve()


def public_key(pub: Public) -> PublicKey:
    """The RSA or ECC public key held in a TPM public area."""
    if pub.type == TPM_ALG.RSA and isinstance(pub.parameters, RsaParms):
        assert isinstance(pub.unique, bytes)
        from cryptography.hazmat.primitives.asymmetric import rsa

        e = pub.parameters.exponent or 65537
        return rsa.RSAPublicNumbers(e, int.from_bytes(pub.unique, "big")).public_key()
    if pub.type == TPM_ALG.ECC and isinstance(pub.parameters, EccParms):
        assert isinstance(pub.unique, EccPoint)
        curve = _curve(pub.parameters.curve_id)
        from cryptography.hazmat.primitives.asymmetric import ec

        x = int.from_bytes(pub.unique.x, "big")
        y = int.from_bytes(pub.unique.y, "big")
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    raise UsageError(f"a {enum_name(TPM_ALG, pub.type)} key cannot salt a session; "
                     "use an RSA or ECC decryption key such as the EK",
                     hint="use an RSA or ECC decryption key such as the EK")


def key_problem(pub: Public) -> str | None:
    """Why *pub* cannot salt a session, or None if it can.

    For keys read from files (blob, trust file): an RSA modulus too small for
    OAEP with the key's nameAlg, an even or tiny exponent, an ECC point off its
    curve, an unsupported curve or nameAlg (Part 1 Annex B.10.3, C.6.1).
    """
    if pub.name_alg not in _HASHES:
        return f"nameAlg {enum_name(TPM_ALG, pub.name_alg)} is not supported"
    if pub.type == TPM_ALG.RSA and isinstance(pub.parameters, RsaParms) \
            and isinstance(pub.unique, bytes):
        n = int.from_bytes(pub.unique, "big")
        e = pub.parameters.exponent or 65537
        h = HASH_SIZES[pub.name_alg]
        if n.bit_length() < 1024 or len(pub.unique) < 2 * h + 2 + h or n % 2 == 0:
            return f"its RSA modulus ({n.bit_length()} bits) is too small or even"
        if e < 3 or e % 2 == 0 or e >= n:
            return f"its RSA exponent {e} is not a valid public exponent"
        return None
    if pub.type == TPM_ALG.ECC and isinstance(pub.parameters, EccParms) \
            and isinstance(pub.unique, EccPoint):
        if pub.parameters.curve_id not in _CURVES:
            return f"curve {enum_name(TPM_ECC, pub.parameters.curve_id)} is not supported"
        try:
            public_key(pub)
        except ValueError:
            return "its ECC point is not on the curve"
        return None
    return f"a {enum_name(TPM_ALG, pub.type)} key cannot salt a session"


@record
class Salt:
    """The salt (secret) and its encryption for the TPM (public)."""

    value: bytes
    encrypted: bytes

    def __repr__(self) -> str:
        return f"Salt(<{len(self.value)} bytes>, encrypted=<{len(self.encrypted)} bytes>)"


def make_salt(pub: Public) -> Salt:
    """Draw a fresh salt and encrypt it to the key *pub* (Part 1 Annex B.10.3 / C.6.1)."""
    key = public_key(pub)
    size = HASH_SIZES[pub.name_alg]
    if pub.type == TPM_ALG.RSA:
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        assert isinstance(key, rsa.RSAPublicKey)
        value = os.urandom(size)
        h = crypto_hash(pub.name_alg)
        pad = padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=LABEL_SECRET)
        return Salt(value, key.encrypt(value, pad))
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(key, ec.EllipticCurvePublicKey)
    eph = ec.generate_private_key(key.curve)
    z = eph.exchange(ec.ECDH(), key)
    n = (key.curve.key_size + 7) // 8
    nums = eph.public_key().public_numbers()
    ex, ey = nums.x.to_bytes(n, "big"), nums.y.to_bytes(n, "big")
    tx = key.public_numbers().x.to_bytes(n, "big")
    value = kdfe(pub.name_alg, z, LABEL_SECRET, ex, tx, size * 8)
    return Salt(value, EccPoint(ex, ey).marshal())
