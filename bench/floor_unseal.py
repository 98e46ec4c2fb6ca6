#!/usr/bin/env python3
"""The floor of a Python unseal: the 5 TPM commands of ``tpmseal unseal``, nothing else.

Reads tpmseal's trust file and sealed blob, connects to swtpm's unix socket and
sends TPM2_Load, TPM2_StartAuthSession (salted with the pinned EK: RSA-OAEP or ECDH),
TPM2_PolicyPCR, TPM2_Unseal and TPM2_FlushContext, with the checks tpmseal makes:
the loaded object's Name against its public area, the Unseal response HMAC
(Part 1 §19.6), the blob's check value; then it writes the secret to stdout.
No argparse, no registry, no error messages worth the name: what is left is the
interpreter, the sockets and the crypto. bench/bench_cli.py runs it as a process.

Modes: ``crypto`` (default) uses ``cryptography`` for the salt (RSA-OAEP, or for
an ECC EK ECDH and KDFe, Part 1 Annex C.6.1) and AES-128-CFB response
encryption, as tpmseal does. ``stdlib`` uses only the standard library:
OAEP by ``pow()`` and hashlib, and — the standard library having no AES — the
Unseal response without parameter encryption (HMAC still checked), so it is a
lower bound, not an equivalent (and RSA only).

Usage: floor_unseal.py SOCKET TRUST_FILE PROFILE BLOB [crypto|stdlib]
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys

RH_NULL, RS_PW = 0x40000007, 0x40000009
SHA256, AES, CFB, SE_POLICY, ECC = 0x000B, 0x0006, 0x0043, 0x01, 0x0023
ATTR_ENCRYPT = 0x40


def kdfa(key: bytes, label: bytes, u: bytes, v: bytes, bits: int) -> bytes:
    out, i = b"", 0
    while len(out) * 8 < bits:
        i += 1
        out += hmac.new(key, struct.pack(">I", i) + label + u + v + struct.pack(">I", bits),
                        "sha256").digest()
    return out[: bits // 8]


def b2(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def take2(buf: bytes, at: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">H", buf, at)
    return buf[at + 2 : at + 2 + n], at + 2 + n


class Tpm:
    def __init__(self, path: str) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)

    def run(self, tag: int, cc: int, body: bytes) -> bytes:
        self.s.sendall(struct.pack(">HII", tag, 10 + len(body), cc) + body)
        head = self.s.recv(10, socket.MSG_WAITALL)
        _, size, rc = struct.unpack(">HII", head)
        rest = self.s.recv(size - 10, socket.MSG_WAITALL) if size > 10 else b""
        if rc:
            raise SystemExit(f"TPM command {cc:#x} failed: rc {rc:#x}")
        return rest


def _parameters(public: bytes) -> int:
    """Where the key-specific parameters of a TPMT_PUBLIC (Part 2 §12.2.4) start: after
    authPolicy, the symmetric definition and the scheme."""
    _, at = take2(public, 8)  # type, nameAlg, objectAttributes; authPolicy
    (sym,) = struct.unpack_from(">H", public, at)
    at += 2 if sym == 0x0010 else 6
    (scheme,) = struct.unpack_from(">H", public, at)
    return at + (2 if scheme == 0x0010 else 4)


def rsa_modulus(public: bytes) -> int:
    """The RSA modulus of a TPMT_PUBLIC."""
    n, _ = take2(public, _parameters(public) + 6)  # keyBits, exponent
    return int.from_bytes(n, "big")


def ecc_point(public: bytes) -> tuple[bytes, bytes]:
    """The unique point (x, y) of an ECC TPMT_PUBLIC."""
    at = _parameters(public) + 2  # curveID
    (kdf,) = struct.unpack_from(">H", public, at)
    at += 2 if kdf == 0x0010 else 4
    x, at = take2(public, at)
    y, _ = take2(public, at)
    return x, y


def ecdh_salt(public: bytes) -> tuple[bytes, bytes]:
    """A salt for a P-256 EK and its encryption, the ephemeral point (Part 1 Annex C.6.1):
    salt = KDFe(SHA-256, Z, "SECRET", x(Q_e), x(Q_tpm), 256), one hash block."""
    from cryptography.hazmat.primitives.asymmetric import ec

    x, y = ecc_point(public)
    key = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                        ec.SECP256R1()).public_key()
    eph = ec.generate_private_key(ec.SECP256R1())
    z = eph.exchange(ec.ECDH(), key)
    nums = eph.public_key().public_numbers()
    ex, ey = nums.x.to_bytes(32, "big"), nums.y.to_bytes(32, "big")
    salt = hashlib.sha256(struct.pack(">I", 1) + z + b"SECRET\0" + ex + x).digest()
    return salt, b2(ex) + b2(ey)


def oaep_stdlib(n: int, message: bytes, label: bytes) -> bytes:
    """RSAES-OAEP-ENCRYPT (RFC 8017 §7.1.1) with SHA-256 and MGF1-SHA-256, e = 65537."""
    k, hlen = (n.bit_length() + 7) // 8, 32

    def mgf1(seed: bytes, length: int) -> bytes:
        return b"".join(hashlib.sha256(seed + struct.pack(">I", i)).digest()
                        for i in range((length + hlen - 1) // hlen))[:length]

    db = hashlib.sha256(label).digest() + bytes(k - len(message) - 2 * hlen - 2) + b"\1" + message
    seed = os.urandom(hlen)
    masked_db = bytes(a ^ b for a, b in zip(db, mgf1(seed, len(db)), strict=True))
    masked_seed = bytes(a ^ b for a, b in zip(seed, mgf1(masked_db, hlen), strict=True))
    em = int.from_bytes(b"\0" + masked_seed + masked_db, "big")
    return pow(em, 65537, n).to_bytes(k, "big")


def main(sock: str, trust_file: str, profile: str, blob_file: str, mode: str = "crypto") -> int:
    with open(trust_file) as t, open(blob_file) as b:
        doc, blob = json.load(t), json.load(b)
    trust = doc["profiles"][profile] if "profiles" in doc else next(  # format 1 or 2
        e["profiles"][profile] for e in doc["tpms"].values() if profile in e["profiles"])
    ek_public, _ = take2(base64.b64decode(trust["ek"]["public"]), 0)
    if struct.pack(">H", SHA256) + hashlib.sha256(ek_public).digest() \
            != bytes.fromhex(trust["ek"]["name"]):
        raise SystemExit("EK public area does not match its pinned Name")
    ek, srk = int(trust["ek"]["handle"], 16), int(trust["srk"]["handle"], 16)
    public, private = base64.b64decode(blob["public"]), base64.b64decode(blob["private"])
    pcrs = blob["pcrs"]["sha256"]
    values = blob["pcr_values"]["sha256"]
    tpm = Tpm(sock)

    # TPM2_Load under the SRK (password session), then check the returned Name
    pw = struct.pack(">I", RS_PW) + b2(b"") + b"\0" + b2(b"")
    r = tpm.run(0x8002, 0x157, struct.pack(">II", srk, len(pw)) + pw + private + public)
    (item,) = struct.unpack_from(">I", r)
    name, _ = take2(r, 8)
    if name != struct.pack(">H", SHA256) + hashlib.sha256(public[2:]).digest():
        raise SystemExit("TPM2_Load returned a Name that is not the blob's")

    # TPM2_StartAuthSession: policy session salted with the pinned EK, AES-128-CFB
    salt = os.urandom(32)
    ecc = struct.unpack_from(">H", ek_public)[0] == ECC
    if ecc and mode == "stdlib":
        raise SystemExit("the stdlib mode salts with RSA only: the standard library has no ECDH")
    if ecc:
        salt, secret = ecdh_salt(ek_public)
    elif mode == "stdlib":
        secret = oaep_stdlib(rsa_modulus(ek_public), salt, b"SECRET\0")
    else:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        key = rsa.RSAPublicNumbers(65537, rsa_modulus(ek_public)).public_key()
        secret = key.encrypt(salt, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                                b"SECRET\0"))
    nonce_caller = os.urandom(32)
    r = tpm.run(0x8001, 0x176, struct.pack(">II", ek, RH_NULL) + b2(nonce_caller) + b2(secret)
                + struct.pack(">BHHHH", SE_POLICY, AES, 128, CFB, SHA256))
    (session,) = struct.unpack_from(">I", r)
    nonce_tpm, _ = take2(r, 4)
    session_key = kdfa(salt, b"ATH\0", nonce_tpm, nonce_caller, 256)

    # TPM2_PolicyPCR with the digest of the sealed PCR values
    bitmap = bytearray(3)
    for i in pcrs:
        bitmap[i // 8] |= 1 << (i % 8)
    pcr_digest = hashlib.sha256(b"".join(bytes.fromhex(values[str(i)]) for i in pcrs)).digest()
    tpm.run(0x8001, 0x17F, struct.pack(">I", session) + b2(pcr_digest)
            + struct.pack(">IHB", 1, SHA256, 3) + bytes(bitmap))

    # TPM2_Unseal: HMAC over cpHash, response HMAC over rpHash checked, outData decrypted
    attrs = ATTR_ENCRYPT if mode != "stdlib" else 0
    nonce_caller = os.urandom(32)
    cp = hashlib.sha256(struct.pack(">I", 0x15E) + name).digest()
    mac = hmac.new(session_key, cp + nonce_caller + nonce_tpm + bytes([attrs]), "sha256").digest()
    auth = struct.pack(">I", session) + b2(nonce_caller) + bytes([attrs]) + b2(mac)
    r = tpm.run(0x8002, 0x15E, struct.pack(">II", item, len(auth)) + auth)
    (psize,) = struct.unpack_from(">I", r)
    params = r[4 : 4 + psize]
    nonce_tpm, at = take2(r, 4 + psize)
    rattrs = r[at]
    rmac, _ = take2(r, at + 1)
    rp = hashlib.sha256(struct.pack(">II", 0, 0x15E) + params).digest()
    want = hmac.new(session_key, rp + nonce_tpm + nonce_caller + bytes([rattrs]), "sha256")
    if not hmac.compare_digest(want.digest(), rmac):
        raise SystemExit("Unseal response HMAC does not verify")
    out, _ = take2(params, 0)
    if mode != "stdlib":
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
        try:  # cryptography >= 47 keeps CFB among the "decrepit" modes
            from cryptography.hazmat.decrepit.ciphers.modes import CFB as CFB_MODE
        except ImportError:  # older cryptography
            from cryptography.hazmat.primitives.ciphers.modes import CFB as CFB_MODE
        km = kdfa(session_key, b"CFB\0", nonce_tpm, nonce_caller, 256)
        dec = Cipher(algorithms.AES(km[:16]), CFB_MODE(km[16:])).decryptor()
        out = dec.update(out) + dec.finalize()

    # TPM2_FlushContext of the loaded object (the session ended with Unseal)
    tpm.run(0x8001, 0x165, struct.pack(">I", item))
    check = blob.get("check")
    if check and not hmac.compare_digest(
            hmac.new(out, b"tpmseal-check/1" + name, "sha256").digest(), bytes.fromhex(check)):
        raise SystemExit("unsealed secret fails the blob's check value")
    sys.stdout.buffer.write(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
