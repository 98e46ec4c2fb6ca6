"""Hashes, HMACs and constant-time comparison through ``cryptography`` alone.

:mod:`hashlib` and :mod:`hmac` load the system's libcrypto (``_hashlib``): about
3.5 MB of every ``tpmseal unseal``'s resident memory, on top of the OpenSSL that
``cryptography`` already carries for AES and RSA. Everything on the unseal path
hashes through this module instead; code off that path may use :mod:`hashlib`.
(``cryptography``'s ``constant_time`` imports :mod:`hmac` too, so :func:`equal`
calls the C function behind :func:`hmac.compare_digest` directly.)
Hash names are those of ``tpmseal.wire.constants.HASH_NAMES``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac

try:  # the C function behind hmac.compare_digest, without hmac's import of _hashlib
    from _operator import _compare_digest
except ImportError:  # pragma: no cover - another Python implementation
    from hmac import compare_digest as _compare_digest  # type: ignore[no-redef]

_ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512, "sm3": hashes.SM3,
}


def _algorithm(name: str) -> hashes.HashAlgorithm:
    try:
        return _ALGORITHMS[name]()
    except KeyError:
        raise ValueError(f"unsupported hash {name!r}") from None


def digest(name: str, data: bytes) -> bytes:
    """H_name(data)."""
    h = hashes.Hash(_algorithm(name))
    h.update(data)
    return h.finalize()


def hmac_digest(key: bytes, data: bytes, name: str) -> bytes:
    """HMAC_name(key, data)."""
    h = _hmac.HMAC(key, _algorithm(name))
    h.update(data)
    return h.finalize()


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison: :func:`hmac.compare_digest` itself."""
    return _compare_digest(a, b)
