"""EK certificate chains: cryptography's X.509 verification enforces CA constraints.

The hand-written issuer walk this replaced accepted an EK certificate signed by any
certificate in the bundle: one that is not a CA, or a CA not allowed to sign
certificates. These build small PKIs in memory (no TPM needed).
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tpmseal.errors import TrustError
from tpmseal.recipes.ekcert import verify_chain

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(*, ca: bool = True, cert_sign: bool = True, path_length: int | None = None,
        ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=cert_sign, crl_sign=True, encipher_only=False,
                          decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(_name("TPM CA")).issuer_name(_name("TPM CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                           critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _ek_cert(issuer_key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate, *,
             expired: bool = False) -> x509.Certificate:
    """An EK certificate as TCG's profile has them: empty subject, critical
    directory-name SAN, keyEncipherment."""
    key = ec.generate_private_key(ec.SECP384R1())
    san = x509.SubjectAlternativeName([x509.DirectoryName(_name("id:54504D00"))])
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=True, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False,
                          decipher_only=False)
    end = NOW - DAY if expired else NOW + 365 * DAY
    return (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - 2 * DAY).not_valid_after(end)
            .add_extension(san, critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256()))


def test_a_proper_ca_passes() -> None:
    key, ca = _ca()
    verify_chain(_ek_cert(key, ca), [ca])


@pytest.mark.parametrize(("kw", "what"), [({"ca": False}, "not a CA"),
                                          ({"cert_sign": False}, "no keyCertSign")])
def test_an_issuer_that_may_not_issue_is_refused(kw: dict[str, bool], what: str) -> None:
    key, ca = _ca(**kw)
    with pytest.raises(TrustError, match="does not chain"):
        verify_chain(_ek_cert(key, ca), [ca])


def test_an_expired_ek_certificate_is_refused() -> None:
    key, ca = _ca()
    with pytest.raises(TrustError, match="does not chain"):
        verify_chain(_ek_cert(key, ca, expired=True), [ca])


def test_a_certificate_from_outside_the_bundle_is_refused() -> None:
    key, ca = _ca()
    _, other = _ca()
    with pytest.raises(TrustError, match="does not chain"):
        verify_chain(_ek_cert(key, ca), [other])
