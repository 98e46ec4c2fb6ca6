"""Key templates: TCG EK templates, the SRK, and the sealed data object.

* EK L-1 (RSA-2048) and L-2 (ECC NIST P-256): TCG EK Credential Profile 2.0,
  §B.3.3 and §B.3.4 — adminWithPolicy under PolicyA = PolicySecret(TPM_RH_ENDORSEMENT),
  restricted decryption keys with AES-128-CFB, zero-filled ``unique``.
* SRK: TCG TPM v2.0 Provisioning Guidance §7.5.1 — RSA-2048, AES-128-CFB,
  restricted decrypt, userWithAuth with an empty authValue, noDA.
* Sealed object: a keyedHash data object (Part 1 §27.2) with
  fixedTPM|fixedParent|adminWithPolicy (no userWithAuth: only the policy can
  unseal it), NULL scheme, nameAlg SHA-256 — EVE's encrypted-path template.
"""

from __future__ import annotations

from tpmseal.wire.constants import TPM_ALG, TPM_ECC, TPMA_OBJECT
from tpmseal.wire.structures import (
    AES_128_CFB,
    EccParms,
    EccPoint,
    KeyedHashParms,
    Public,
    RsaParms,
)

#: PolicyA of the EK templates: PolicySecret(TPM_RH_ENDORSEMENT) (EK profile §B.3.2).
EK_POLICY_A = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")

_EK_ATTRS = (TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin
             | TPMA_OBJECT.adminWithPolicy | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt)

EK_RSA_TEMPLATE = Public(
    TPM_ALG.RSA, TPM_ALG.SHA256, _EK_ATTRS, EK_POLICY_A,
    RsaParms(AES_128_CFB, key_bits=2048, exponent=0), bytes(256))

EK_ECC_TEMPLATE = Public(
    TPM_ALG.ECC, TPM_ALG.SHA256, _EK_ATTRS, EK_POLICY_A,
    EccParms(AES_128_CFB, curve_id=TPM_ECC.NIST_P256), EccPoint(bytes(32), bytes(32)))

SRK_ATTRS = (TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin
             | TPMA_OBJECT.userWithAuth | TPMA_OBJECT.noDA | TPMA_OBJECT.restricted
             | TPMA_OBJECT.decrypt)

SRK_RSA_TEMPLATE = Public(
    TPM_ALG.RSA, TPM_ALG.SHA256, SRK_ATTRS, b"",
    RsaParms(AES_128_CFB, key_bits=2048, exponent=0), bytes(256))

SEALED_ATTRS = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.adminWithPolicy


def sealed_template(auth_policy: bytes, name_alg: int = TPM_ALG.SHA256) -> Public:
    """The public area of a sealed data object gated by *auth_policy*."""
    return Public(TPM_ALG.KEYEDHASH, name_alg, SEALED_ATTRS, auth_policy, KeyedHashParms(), b"")
