"""EK certificates: read from NV, verify the chain, match the key.

The TPM manufacturer (or swtpm_setup's local CA) certifies the EK's public key;
the certificate lives in NV at the indices of the TCG EK Credential Profile
§2.2.1.4 (low range for L-1/L-2 templates, high range for H-1..H-7). An EK whose
public key equals a certificate that chains to a CA the user trusts is the
TPM's real EK — the only defence against an interposer who substitutes its own
key when the EK is read over the bus.

A key that is not in the endorsement hierarchy (EVE keeps the EK template
under the owner hierarchy at 0x81000001) is never covered by an EK
certificate; a mismatch with such a key is reported as that, not as an
interposer.

Chain rule: the certificate must chain to a certificate in the user's bundle
(every certificate in the bundle is a trust anchor, as with ``openssl verify
-partial_chain``) through valid CA certificates, within validity dates — checked
by cryptography's X.509 verification API (:func:`verify_chain`).
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification

from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, NotFoundError, TrustError, UsageError
from tpmseal.files import read_capped
from tpmseal.recipes.hierarchy import HIERARCHY_NAMES, hierarchy_of
from tpmseal.session.salt import public_key
from tpmseal.wire.constants import TPM_ALG, TPM_ECC, TPM_RH
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import EccParms, Public

#: EK certificate NV indices (TCG EK Credential Profile 2.0 §2.2.1.4).
EK_CERT_INDICES: dict[int, str] = {
    0x01C00002: "RSA-2048 (template L-1)",
    0x01C0000A: "ECC NIST P-256 (template L-2)",
    0x01C00012: "RSA-2048 (template H-1)",
    0x01C00014: "ECC NIST P-256 (template H-2)",
    0x01C00016: "ECC NIST P-384 (template H-3)",
    0x01C00018: "ECC NIST P-521 (template H-4)",
    0x01C0001A: "ECC SM2 P-256 (template H-5)",
    0x01C0001C: "RSA-3072 (template H-6)",
    0x01C0001E: "RSA-4096 (template H-7)",
}


def cert_indices_for(pub: Public) -> list[int]:
    """The NV indices where a certificate for an EK like *pub* may be stored."""
    if pub.type == TPM_ALG.RSA:
        return [0x01C00002, 0x01C00012, 0x01C0001C, 0x01C0001E]
    assert isinstance(pub.parameters, EccParms)
    by_curve: dict[int, list[int]] = {TPM_ECC.NIST_P256: [0x01C0000A, 0x01C00014],
                                      TPM_ECC.NIST_P384: [0x01C00016],
                                      TPM_ECC.NIST_P521: [0x01C00018]}
    return by_curve.get(pub.parameters.curve_id, [])


def _der_length(data: bytes) -> int:
    """Length of the DER SEQUENCE at the start of *data* (NV areas may be padded)."""
    if len(data) < 2 or data[0] != 0x30:
        raise BadInputError("EK certificate in NV is not a DER certificate",
                            hint=("check the EK certificate with the TPM vendor's tools, or "
                                 "provision without --ek-ca"))
    first = data[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    return 2 + n + int.from_bytes(data[2 : 2 + n], "big")


def read_ek_cert(tpm: Tpm, pub: Public) -> tuple[int, x509.Certificate]:
    """Find and parse the EK certificate for *pub* in NV."""
    for index in cert_indices_for(pub):
        try:
            nvpub = tpm.nv_read_public(index)
        except TpmResponseError as e:
            if e.name == "HANDLE":
                continue
            raise
        data = tpm.nv_read(index, nvpub.data_size, index)  # AUTHREAD, empty authValue
        der = data[: _der_length(data)]
        try:
            return index, x509.load_der_x509_certificate(der)
        except ValueError:
            raise BadInputError(f"EK certificate in NV {index:#x} does not parse",
                                hint="check it with the vendor's tools, or drop --ek-ca") from None
    raise NotFoundError("the TPM holds no EK certificate for its endorsement key",
                        "provision without --ek-ca, or install the manufacturer certificate")


#: a system CA bundle is about 200 kB; a file far larger than that is not a bundle
MAX_BUNDLE_FILE = 4 << 20


def load_bundle(path: str) -> list[x509.Certificate]:
    """Certificates (PEM or DER) from a file or every file of a directory."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    certs: list[x509.Certificate] = []
    for f in files:
        data = read_capped(f, "CA bundle", MAX_BUNDLE_FILE)
        if data is None:
            raise UsageError(f"CA bundle {f} does not exist", "check the --ek-ca path")
        try:
            with warnings.catch_warnings():  # odd certificates in system bundles warn
                warnings.simplefilter("ignore")
                if b"-----BEGIN CERTIFICATE-----" in data:
                    certs += x509.load_pem_x509_certificates(data)
                else:
                    certs.append(x509.load_der_x509_certificate(data))
        except ValueError:
            if not p.is_dir():
                raise BadInputError(f"CA bundle {f} holds no readable certificate",
                                    "pass PEM or DER CA certificates with --ek-ca") from None
    if not certs:
        raise BadInputError(f"no certificates found in CA bundle {path}",
                            "pass PEM or DER CA certificates with --ek-ca")
    return certs


def verify_chain(cert: x509.Certificate, bundle: list[x509.Certificate],
                 now: datetime | None = None) -> None:
    """Raise :class:`TrustError` unless *cert* chains to a certificate in *bundle*.

    Path building and checking are cryptography's X.509 verification
    (``cryptography.x509.verification``): every issuer must be a CA
    (basicConstraints cA, within its pathLenConstraint) allowed to sign
    certificates (keyUsage keyCertSign), every certificate within its validity
    period, every signature valid. CA certificates get the Web PKI CA extension
    policy; the EK certificate itself gets a permissive one, because a TCG EK
    certificate (EK Credential Profile §3) has no DNS or IP subjectAltName, often
    an empty subject with a critical directory-name SAN, and the EK's key usage
    (keyEncipherment), none of which a TLS client profile accepts.
    """
    verifier = (verification.PolicyBuilder()
                .store(verification.Store(bundle))
                .time(now or datetime.now(timezone.utc))
                .max_chain_depth(8)
                .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                    ee_policy=verification.ExtensionPolicy.permit_all())
                .build_client_verifier())
    try:
        verifier.verify(cert, [])
    except verification.VerificationError as e:
        raise TrustError(f"the EK certificate does not chain to the given CA bundle ({e}): "
                         "possible interposer or counterfeit TPM",
                         "check --ek-ca (it must hold the TPM manufacturer's CA certificates, "
                         "which must be valid CA certificates)") from None


def same_key(cert: x509.Certificate, pub: Public) -> bool:
    """Whether the certificate certifies exactly the key in *pub*."""
    a = cert.public_key()
    b = public_key(pub)
    if isinstance(a, rsa.RSAPublicKey) and isinstance(b, rsa.RSAPublicKey):
        return a.public_numbers() == b.public_numbers()
    if isinstance(a, ec.EllipticCurvePublicKey) and isinstance(b, ec.EllipticCurvePublicKey):
        return a.public_numbers() == b.public_numbers()
    return False


def verify_ek(tpm: Tpm, pub: Public, ca_bundle: str, handle: int | None = None) -> int:
    """Check that *pub* (the key at *handle*, if known) is certified by a CA in
    *ca_bundle*; return the cert's NV index."""
    index, cert = read_ek_cert(tpm, pub)
    verify_chain(cert, load_bundle(ca_bundle))
    if not same_key(cert, pub):
        where = hierarchy_of(tpm, handle) if handle is not None else None
        if where not in (None, TPM_RH.ENDORSEMENT):
            assert handle is not None
            raise UsageError(
                f"the key at {handle:#x} was created under the {HIERARCHY_NAMES[where]} "
                "hierarchy, and an EK certificate covers only the endorsement hierarchy's EK, "
                "so this key cannot match it",
                "for --profile eve, re-provision with --ek-ca to salt with the certified EK; "
                f"else evict {handle:#x} (tpm2_evictcontrol -C o -c {handle:#x}) and "
                "provision again")
        raise TrustError("the EK certificate is for a different key than the endorsement key "
                         "in use: possible interposer or replaced TPM",
                         hint="check the TPM bus; if the TPM was replaced, `tpmseal provision "
                              "--repin`")
    return index

