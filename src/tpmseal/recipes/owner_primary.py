"""Unsealing objects other stacks sealed under a transient owner-hierarchy primary.

systemd-cryptenroll (``tpm2-primary-alg``) and clevis' tpm2 pin (``key``)
both seal under a primary they recreate at every unlock from the same
template (TPM 2.0 Part 2 §12.2.4): restricted|decrypt|fixedTPM|fixedParent|
sensitiveDataOrigin|userWithAuth, nameAlg SHA-256, AES-128-CFB, ECC NIST P-256
or RSA-2048 (exponent 0), empty ``unique`` — what ``tpm2_createprimary -C o -g
sha256 -G ecc256:aes128cfb`` makes. Both then unseal under PolicyPCR (systemd
adds PolicyAuthValue for a PIN).

Those stacks salt their session with that freshly created primary, whose
public area they read over the bus (systemd), or use no salt at all (clevis
19: the secret crosses in plaintext). Here the primary is only the object's
parent: :func:`tpmseal.recipes.sealing.unseal` runs the policy session salted
with the EK pinned at provisioning, with the response encrypted, so the secret
never crosses the bus readable. A substituted primary gains an interposer
nothing: it could not load the object.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from tpmseal.client.tpm import Tpm
from tpmseal.errors import PolicyMismatchError, UsageError
from tpmseal.recipes import pcrspec, sealing
from tpmseal.recipes.blob import ENCRYPTED, SaltKey, SealedBlob
from tpmseal.recipes.trust import TrustRecord
from tpmseal.session.policy import compute_policy
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_ECC, TPM_RH, TPMA_OBJECT
from tpmseal.wire.structures import (
    AES_128_CFB,
    EccParms,
    EccPoint,
    PcrSelectionList,
    Public,
    RsaParms,
    SensitiveCreate,
)

_ATTRS = (TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt | TPMA_OBJECT.fixedTPM
          | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.userWithAuth)

#: The primary templates by algorithm name (systemd's ``tpm2-primary-alg``, clevis' ``key``).
PRIMARY_TEMPLATES = {
    "ecc": Public(TPM_ALG.ECC, TPM_ALG.SHA256, _ATTRS, b"",
                  EccParms(AES_128_CFB, curve_id=TPM_ECC.NIST_P256), EccPoint(b"", b"")),
    "rsa": Public(TPM_ALG.RSA, TPM_ALG.SHA256, _ATTRS, b"",
                  RsaParms(AES_128_CFB, key_bits=2048, exponent=0), b""),
}
PRIMARY_ALGS = tuple(PRIMARY_TEMPLATES)


@dataclass(frozen=True)
class SealedUnderPrimary:
    """A sealed object, its PolicyPCR selection and its parent's algorithm."""

    public: Public
    private: bytes  # TPM2B_PRIVATE contents
    pcrs: PcrSelectionList
    primary_alg: str
    what: str  # for messages: "systemd-tpm2 token", "clevis binding"


def unseal_under_primary(tpm: Tpm, obj: SealedUnderPrimary, trust: TrustRecord | None,
                         auth: bytes | None) -> bytes:
    """Recreate the parent, then unseal *obj* on tpmseal's encrypted path.

    *auth* is the object's authValue when its policy ends in PolicyAuthValue.
    The PCR values are compared with the policy first, for a clear message when
    they moved (the TPM enforces the policy either way).
    """
    if trust is None:
        raise UsageError(f"unsealing a {obj.what} needs the pinned endorsement key",
                         "run `tpmseal provision` first, or pass the right --trust-file")
    values = tpm.pcr_read(obj.pcrs)
    steps = sealing.policy_steps(obj.pcrs, values, auth is not None)
    if not hmac.compare_digest(compute_policy(steps), obj.public.auth_policy):
        raise PolicyMismatchError(
            f"PCR policy check failed: {pcrspec.format_pcrs(obj.pcrs)} changed since the "
            f"{obj.what} was made, or its policy is not PolicyPCR"
            + (" with a PIN" if auth is not None else ""),
            hint="boot the measured configuration again, or unlock with the recovery "
                 "passphrase and enrol again")
    created = tpm.run(cmds.CreatePrimary(TPM_RH.OWNER, SensitiveCreate(),
                                         PRIMARY_TEMPLATES[obj.primary_alg]))
    with tpm.scoped(created.object_handle) as parent:
        blob = SealedBlob(obj.public, obj.private, obj.pcrs, {}, parent, created.name,
                          SaltKey(trust.ek_handle, trust.ek_public), ENCRYPTED,
                          auth is not None)
        return sealing.unseal(tpm, blob, trust=trust, pin=auth)
