"""Policy signer keys: generation, PEM files, fingerprints, and their TPM public areas.

Key files are PEM (PKCS#8 private key, SubjectPublicKeyInfo public key), ECDSA
P-256 or RSA-2048. The *fingerprint* is SHA-256 of the raw public key — PKCS#1
RSAPublicKey DER, or the uncompressed EC point — as systemd-measure's ``pkfp``.
The TPM public area (what TPM2_LoadExternal loads, Part 3 §12.3) uses systemd's
template, so a key's Name, and with it the sealed PolicyAuthorize digest, is the
one systemd computes. cryptography's asymmetric modules load on first use.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tpmseal.errors import BadInputError, UsageError
from tpmseal.files import read_input, write_atomic
from tpmseal.session.policy import Authorizer
from tpmseal.wire.constants import TPM_ALG, TPM_ECC
from tpmseal.wire.structures import EccParms, EccPoint, Public, RsaParms, SymDef

#: sign | decrypt | userWithAuth: the LoadExternal template systemd uses for its RSA key,
#: so a key's Name (and the sealed authPolicy) is the same in tpmseal and systemd.
SIGNER_ATTRS = 0x00060040
RSA_EXPONENT = 65537  # written out, not 0: it is part of the Name systemd computes


def crypto_modules() -> Any:
    """cryptography's asymmetric modules, imported on first use (start-up time)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    return hashes, serialization, ec, padding, rsa, utils


# ------------------------------------------------------------------------------ keys


def generate_key(kind: str = "ecc") -> Any:
    """A new signer key: ECDSA P-256 (default) or RSA-2048."""
    _, _, ec, _, rsa, _ = crypto_modules()
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=2048)
    if kind == "ecc":
        return ec.generate_private_key(ec.SECP256R1())
    raise UsageError(f"unknown key type {kind!r}", "use --type ecc or --type rsa")


def public_path(private_path: Path) -> Path:
    """Where keygen puts the public key: signer.pem -> signer.pub."""
    return private_path.with_suffix(".pub")


def write_keypair(key: Any, path: Path) -> Path:
    """Write the private key (0600) to *path* and the public key next to it; return the latter."""
    _, ser, *_ = crypto_modules()
    priv = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    pub = key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    out = public_path(path)
    write_atomic(path, priv, 0o600)
    write_atomic(out, pub, 0o644)
    return out


def load_private(path: str) -> Any:
    _, ser, ec, _, rsa, _ = crypto_modules()
    data = read_input(path, "signing key", limit=64 << 10)
    try:
        key = ser.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise BadInputError(f"{path} is not an unencrypted PEM private key ({e})",
                            "pass the file written by `tpmseal policy keygen`") from None
    _check_kind(key, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, path)
    return key


def load_public(path: str) -> Any:
    """A PEM public key (or the public half of a PEM private key)."""
    _, ser, ec, _, rsa, _ = crypto_modules()
    data = read_input(path, "public key", limit=64 << 10)
    try:
        key = ser.load_pem_public_key(data)
    except ValueError:
        try:
            key = ser.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as e:
            raise BadInputError(f"{path} is not a PEM public key ({e})",
                                "pass the .pub file written by `tpmseal policy keygen`") from None
    _check_kind(key, rsa.RSAPublicKey, ec.EllipticCurvePublicKey, path)
    return key


def _check_kind(key: Any, rsa_cls: Any, ec_cls: Any, path: str) -> None:
    _, _, ec, *_ = crypto_modules()
    if isinstance(key, rsa_cls):
        if key.key_size != 2048:
            raise BadInputError(f"{path}: RSA-{key.key_size} key; signers are RSA-2048",
                                "make one with `tpmseal policy keygen --type rsa`")
    elif isinstance(key, ec_cls):
        if not isinstance(key.curve, ec.SECP256R1):
            raise BadInputError(f"{path}: EC key on {key.curve.name}; signers use P-256",
                                "make one with `tpmseal policy keygen`")
    else:
        raise BadInputError(f"{path}: not an RSA or EC key",
                            "make one with `tpmseal policy keygen`")


def fingerprint(public_key: Any) -> bytes:
    """SHA-256 of the raw public key (systemd-measure's ``pkfp``)."""
    _, ser, _, _, rsa, _ = crypto_modules()
    if isinstance(public_key, rsa.RSAPublicKey):
        raw = public_key.public_bytes(ser.Encoding.DER, ser.PublicFormat.PKCS1)
    else:
        raw = public_key.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
    return hashlib.sha256(raw).digest()


def tpm_public(public_key: Any) -> Public:
    """The key as TPM2_LoadExternal loads it; its Name goes into PolicyAuthorize."""
    _, _, _, _, rsa, _ = crypto_modules()
    if isinstance(public_key, rsa.RSAPublicKey):
        n = public_key.public_numbers()
        return Public(TPM_ALG.RSA, TPM_ALG.SHA256, SIGNER_ATTRS, b"",
                      RsaParms(SymDef(), key_bits=2048, exponent=n.e),
                      n.n.to_bytes(256, "big"))
    nums = public_key.public_numbers()
    return Public(TPM_ALG.ECC, TPM_ALG.SHA256, SIGNER_ATTRS, b"",
                  EccParms(SymDef(), curve_id=TPM_ECC.NIST_P256),
                  EccPoint(nums.x.to_bytes(32, "big"), nums.y.to_bytes(32, "big")))


def crypto_key(public: Public) -> Any:
    """The cryptography public key of a signer's TPM public area (inverse of tpm_public)."""
    _, _, ec, _, rsa, _ = crypto_modules()
    try:
        if public.type == TPM_ALG.RSA and isinstance(public.parameters, RsaParms):
            assert isinstance(public.unique, bytes)
            return rsa.RSAPublicNumbers(public.parameters.exponent or RSA_EXPONENT,
                                        int.from_bytes(public.unique, "big")).public_key()
        if public.type == TPM_ALG.ECC and isinstance(public.unique, EccPoint):
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(public.unique.x, "big"), int.from_bytes(public.unique.y, "big"),
                ec.SECP256R1()).public_key()
    except (ValueError, AssertionError):
        pass
    raise BadInputError("the blob's policy signer is not a valid RSA or P-256 key",
                        "the file was edited or corrupted; restore it")


def authorizer_for(public_key: Any, policy_ref: bytes = b"") -> Authorizer:
    return Authorizer(tpm_public(public_key), policy_ref)
