"""Key derivation functions of TPM 2.0 (Part 1 §11.4.10).

KDFa (§11.4.10.2) is NIST SP 800-108 counter mode with HMAC as the PRF:

    K(i) = HMAC_hash(key, [i]_32 ‖ label ‖ contextU ‖ contextV ‖ [bits]_32)

concatenated for i = 1, 2, ... and cut to ceil(bits/8) bytes. KDFe (§11.4.10.3)
is the SP 800-56A concatenation KDF used after ECDH:

    K(i) = H([i]_32 ‖ Z ‖ label ‖ partyUInfo ‖ partyVInfo)

In both, the label is the ASCII string *including* its terminating NUL (callers
pass e.g. ``b"ATH\\0"``), and when *bits* is not a multiple of 8 the unused
high-order bits of the first byte are cleared, as the TPM reference code does.
"""

from __future__ import annotations

import struct

from tpmseal.digests import digest, hmac_digest
from tpmseal.wire.constants import HASH_NAMES

LABEL_ATH = b"ATH\0"
LABEL_CFB = b"CFB\0"
LABEL_SECRET = b"SECRET\0"
LABEL_IDENTITY = b"IDENTITY\0"
LABEL_STORAGE = b"STORAGE\0"
LABEL_INTEGRITY = b"INTEGRITY\0"


def _trim(stream: bytes, bits: int) -> bytes:
    out = bytearray(stream[: (bits + 7) // 8])
    if bits % 8 and out:
        out[0] &= (1 << (bits % 8)) - 1
    return bytes(out)


def kdfa(hash_alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes,
         bits: int) -> bytes:
    """KDFa (Part 1 §11.4.10.2); *label* includes its trailing NUL."""
    name = HASH_NAMES[hash_alg]
    out = b""
    counter = 0
    tail = label + context_u + context_v + struct.pack(">I", bits)
    while len(out) * 8 < bits:
        counter += 1
        out += hmac_digest(key, struct.pack(">I", counter) + tail, name)
    return _trim(out, bits)


def kdfe(hash_alg: int, z: bytes, label: bytes, party_u: bytes, party_v: bytes,
         bits: int) -> bytes:
    """KDFe (Part 1 §11.4.10.3); *z* is the x-coordinate of the ECDH shared point."""
    name = HASH_NAMES[hash_alg]
    out = b""
    counter = 0
    tail = z + label + party_u + party_v
    while len(out) * 8 < bits:
        counter += 1
        out += digest(name, struct.pack(">I", counter) + tail)
    return _trim(out, bits)
