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

systemd 254 and later seal under a *persistent* SRK instead and store its
public area in the token (:class:`PersistentParent`). Its Name, computed from
that public area and never read back with the unauthenticated ReadPublic,
joins the cpHash of Load, which the salted session authenticates (Part 1
§16, §19.6): if the key at the handle is another one, the TPM rejects the
command's HMAC. A *lead* of steps runs first when set: systemd-pcrlock's fold of
PolicyPCR/PolicyOR and PolicyAuthorizeNV (recipes/systemd_pcrlock.py), which resets
the digest, so only the index's Name counts offline. With an *authorizer*
(systemd's ``tpm2_pubkey``) the policy
starts with PolicyAuthorize over signed PolicyPCR digests (recipes/signed.py),
followed by PolicyPCR over the fixed PCRs if any (systemd-cryptenroll's default
binds PCR 7 next to the signed PCR 11), then PolicyAuthValue for a PIN.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tpmseal.client.tpm import Tpm
from tpmseal.digests import equal
from tpmseal.errors import (
    BUS_HINT,
    EK_MISMATCH,
    IntegrityError,
    PolicyMismatchError,
    TrustError,
    UsageError,
)
from tpmseal.recipes import pcrspec, sealing
from tpmseal.recipes.blob import ENCRYPTED, SaltKey, SealedBlob
from tpmseal.recipes.trust import TrustRecord, salted_session
from tpmseal.records import record
from tpmseal.session.auth import AuthSession
from tpmseal.session.policy import (
    Authorizer,
    AuthorizeStep,
    AuthValueStep,
    PcrStep,
    PolicyStep,
    compute_policy,
)
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_ECC, TPM_RH, TPMA_OBJECT, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import (
    AES_128_CFB,
    EccParms,
    EccPoint,
    PcrSelectionList,
    Public,
    RsaParms,
    SensitiveCreate,
)

if TYPE_CHECKING:
    from tpmseal.recipes.signed import SignedPolicy

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


@record
class PersistentParent:
    """A persistent storage key given by its handle and public area (systemd's SRK)."""

    handle: int
    public: Public


@record
class SealedUnderPrimary:
    """A sealed object, its PolicyPCR selection and its parent: a transient primary of
    *primary_alg*, or *parent* when that is set."""

    public: Public
    private: bytes  # TPM2B_PRIVATE contents
    pcrs: PcrSelectionList  # PolicyPCR over their current values; may be empty if signed
    primary_alg: str
    what: str  # for messages: "systemd-tpm2 token", "clevis binding"
    parent: PersistentParent | None = None
    authorizer: Authorizer | None = None  # PolicyAuthorize first, by this signer
    signed_pcrs: PcrSelectionList | None = None  # what the signer's policies cover
    lead: tuple[PolicyStep, ...] = ()  # run first: pcrlock's fold and PolicyAuthorizeNV

    def steps(self, values: dict[tuple[int, int], bytes] | None, pin: bool) -> list[PolicyStep]:
        """The policy: [lead,] [PolicyAuthorize,] [PolicyPCR,] [PolicyAuthValue] — PolicyPCR
        with the digest of *values*, or an empty one (the TPM's current values) without."""
        steps: list[PolicyStep] = list(self.lead)
        if self.authorizer is not None:
            steps.append(AuthorizeStep(self.authorizer.name, self.authorizer.policy_ref))
        if self.pcrs.selections:
            steps.append(PcrStep(self.pcrs, b"") if values is None
                         else sealing.pcr_step(self.pcrs, values))
        return steps + ([AuthValueStep()] if pin else [])


def require_trust(obj: SealedUnderPrimary, trust: TrustRecord | None) -> TrustRecord:
    """*trust*, or UsageError: every unseal of another stack's object salts to the pinned EK."""
    if trust is None:
        raise UsageError(f"unsealing a {obj.what} needs the pinned endorsement key",
                         "run `tpmseal provision` first, or pass the right --trust-file")
    return trust


def unseal_under_primary(tpm: Tpm, obj: SealedUnderPrimary, trust: TrustRecord | None,
                         auth: bytes | None, policies: Sequence[SignedPolicy] = ()) -> bytes:
    """Recreate the parent (or name the persistent one), then unseal *obj* on tpmseal's
    encrypted path.

    *auth* is the object's authValue when its policy ends in PolicyAuthValue;
    *policies* are the signed policies for an object with an authorizer. The
    PCR values are compared with a PolicyPCR policy first, for a clear message
    when they moved (the TPM enforces the policy either way); a mismatch is only
    reported as one after an audited read agrees.
    """
    trust = require_trust(obj, trust)
    if obj.parent is not None and obj.parent.handle == trust.srk_handle and (
            obj.parent.public.name() != trust.srk_name):
        raise IntegrityError(
            f"the {obj.what} names a storage key at {obj.parent.handle:#x} that is not the "
            "one pinned for this TPM: it was enrolled on another TPM, or its enrolment read "
            "a substituted key over the bus (interposer)",
            "unlock with the recovery passphrase and enrol again on this TPM")
    pin = auth is not None
    if obj.pcrs.selections and not _pcrs_match(tpm, obj, pin, None):
        _forged_unless_changed(tpm, obj, pin, trust, "PCR_Read said")
        raise _changed(obj, pin)
    salt = SaltKey(trust.ek_handle, trust.ek_public)

    def unseal(parent: int, parent_name: bytes) -> bytes:
        blob = SealedBlob(obj.public, obj.private, obj.signed_pcrs or obj.pcrs, {}, parent,
                          parent_name, salt, ENCRYPTED, auth is not None,
                          authorizer=obj.authorizer, created="")  # never saved: no clock
        if obj.lead or (obj.authorizer is not None and obj.pcrs.selections):
            return _own_steps(tpm, obj, blob, trust, auth, policies)
        try:
            return sealing.unseal(tpm, blob, trust=trust, pin=auth, policies=policies)
        except PolicyMismatchError:
            if obj.authorizer is not None:
                raise
            # PolicyPCR failed at Unseal, whose POLICY_FAIL carries no HMAC
            _forged_unless_changed(tpm, obj, pin, trust, "TPM2_Unseal said")
            raise _changed(obj, pin) from None

    if obj.parent is not None:
        try:
            return unseal(obj.parent.handle, obj.parent.public.name())
        except TrustError as e:
            if e.message != EK_MISMATCH:
                raise
            # the first HMAC checked is Load's, which covers the parent's Name too
            raise TrustError(
                f"the TPM rejected the HMAC of TPM2_Load: the key at {obj.parent.handle:#x} is "
                f"not the one the {obj.what} names, or the endorsement key is not the pinned "
                "one, or the command was altered in transit (possible interposer)",
                e.hint) from None
    created = tpm.run(cmds.CreatePrimary(TPM_RH.OWNER, SensitiveCreate(),
                                         PRIMARY_TEMPLATES[obj.primary_alg]))
    with tpm.scoped(created.object_handle) as parent:
        return unseal(parent, created.name)


ENROL_AGAIN = ("boot the measured configuration again, or unlock with the recovery "
               "passphrase and enrol again")


def _changed(obj: SealedUnderPrimary, pin: bool) -> PolicyMismatchError:
    return PolicyMismatchError(
        f"PCR policy check failed: {pcrspec.format_pcrs(obj.pcrs)} changed since the "
        f"{obj.what} was made, or its policy is not PolicyPCR" + (" with a PIN" if pin else ""),
        hint=ENROL_AGAIN)


def _forged_unless_changed(tpm: Tpm, obj: SealedUnderPrimary, pin: bool, trust: TrustRecord,
                           said: str) -> None:
    """After a PolicyPCR failure (a plain PCR_Read or the TPM's error response, neither
    HMAC-checked): IntegrityError if the PCRs read in an audited session satisfy the
    policy, so a PCR change is only ever named on authenticated values."""
    if _pcrs_match(tpm, obj, pin, trust):
        raise IntegrityError(
            f"{said} {pcrspec.format_pcrs(obj.pcrs)} do not fit, but the same PCRs read "
            "through the pinned endorsement key satisfy the policy: a forged answer "
            "(possible interposer)", BUS_HINT)


def _pcrs_match(tpm: Tpm, obj: SealedUnderPrimary, pin: bool,
                trust: TrustRecord | None) -> bool:
    """Whether *obj*'s PolicyPCR over the current values gives its authPolicy: read plainly
    (a pre-check for a clear message), or with *trust* in an audited session salted to the
    pinned EK, whose response HMAC covers the values (before a PCR is ever named as
    changed: SECURITY.md, authenticated diagnostics)."""
    if trust is None:
        values = tpm.pcr_read(obj.pcrs)
    else:
        audit = salted_session(tpm, trust, TPMA_SESSION.continueSession | TPMA_SESSION.audit)
        with tpm.scoped(audit.handle):
            values = tpm.pcr_read(obj.pcrs, audit)
    return equal(compute_policy(obj.steps(values, pin)), obj.public.auth_policy)


def _own_steps(tpm: Tpm, obj: SealedUnderPrimary, blob: SealedBlob, trust: TrustRecord,
               auth: bytes | None, policies: Sequence[SignedPolicy]) -> bytes:
    """*obj*'s steps — the lead, or PolicyAuthorize with a signed policy, then PolicyPCR
    over the fixed PCRs (and PolicyAuthValue) — in the one EK-salted session
    :func:`sealing.unseal` would use: policy shapes its blob records do not describe.
    Errors of a lead's steps are the caller's to explain."""
    assert blob.salt_key is not None
    if not trust.aes_128_cfb:
        raise UsageError(f"unsealing this {obj.what} needs AES-128-CFB parameter encryption, "
                         "which the trust file says this TPM lacks",
                         "unlock it with the recovery passphrase")
    steps = obj.steps(None, auth is not None)
    run: Callable[[AuthSession], None] = functools.partial(tpm.run_policy, steps=steps)
    if obj.authorizer is not None:
        from tpmseal.recipes import signed, signer

        authorizer = obj.authorizer
        candidates = signed.usable(list(policies), signer.crypto_key(authorizer.key),
                                   authorizer.policy_ref)

        def run_signed(session: AuthSession) -> None:
            signed.satisfy(tpm, session, authorizer, candidates)
            tpm.run_policy(session, steps[1:])

        run = run_signed
    try:  # sealing's own session flow and error wording, with this runner
        return sealing.unseal_object(tpm, blob, blob.salt_key, run, auth)
    except PolicyMismatchError:  # no candidate fitted: unless forged (then exit 6)
        if obj.authorizer is not None:
            sealing.forged_choice(tpm, blob.salt_key, blob, candidates)
        raise
    except TpmResponseError as e:
        if obj.lead and (e.command.startswith("Policy") or e.name == "POLICY_FAIL"):
            raise  # the lead's failures: its caller knows what they mean
        if e.command == "Unseal" and e.name == "POLICY_FAIL":
            # PolicyPCR without a pcrDigest takes the current values: a change shows here
            _forged_unless_changed(tpm, obj, auth is not None, trust,
                                   "TPM2_Unseal said")
            raise PolicyMismatchError(
                f"PCR policy check failed at TPM2_Unseal: {pcrspec.format_pcrs(obj.pcrs)} do "
                f"not hold the values the {obj.what} was sealed to (they were read without "
                "bus protection before)", None, ENROL_AGAIN) from None
        raise sealing.explain_error(e, trust, auth is not None) from None
