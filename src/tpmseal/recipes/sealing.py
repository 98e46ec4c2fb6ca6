"""Seal and unseal a secret under a PCR policy — the encrypted path and the legacy path.

Encrypted path (the default whenever the pinned TPM supports AES-128-CFB):

* **seal** — 1 salted HMAC session (salt encrypted to the *pinned* EK, never a
  fresh ReadPublic), used first as an audit session on PCR_Read so forged PCR
  values are detected (the response HMAC covers them), then to authorize Create
  under the SRK with the ``decrypt`` attribute: the secret crosses the bus only
  as AES-128-CFB ciphertext. The PolicyPCR digest is computed in software
  (no trial session). Commands: StartAuthSession, PCR_Read (one per 8 PCRs),
  Create — 3 for up to 6 PCRs plus PCR 0 and 4.
* **unseal** — Load, StartAuthSession (policy, salted, ``encrypt``), PolicyPCR
  with the seal-time pcrDigest, Unseal (continueSession clear, so the TPM ends
  the session), FlushContext: 5 commands. The secret crosses the bus only as
  ciphertext, and the response HMAC proves it came from the TPM.

Legacy path (TPMs without AES-128-CFB, or ``legacy=True``): password sessions
and an unsalted policy session, exactly what such a TPM can do; the secret is in
plaintext on the bus. The sealed object has the same form on both paths, so
each unseals what the other sealed. A blob sealed on the encrypted path is never
unsealed on the legacy path without ``allow_downgrade``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from tpmseal.client.tpm import Tpm
from tpmseal.digests import equal
from tpmseal.errors import (
    BUS_HINT,
    AuthFailedError,
    BadInputError,
    IntegrityError,
    PolicyMismatchError,
    TpmsealError,
    TrustError,
    UsageError,
)
from tpmseal.log import get_logger
from tpmseal.recipes import pcrspec
from tpmseal.recipes.blob import (
    ENCRYPTED,
    LEGACY,
    SaltKey,
    SealedBlob,
    check_value,
    key_like,
)
from tpmseal.recipes.policies import PcrValues, SealPolicy
from tpmseal.recipes.profiles import TCG, Profile
from tpmseal.recipes.trust import TrustRecord, salted_session, start_salted
from tpmseal.records import replace
from tpmseal.session.auth import AuthSession, PasswordSession, trim_auth
from tpmseal.session.policy import (
    AuthValueStep,
    PcrStep,
    PolicyStep,
    compute_policy,
    pcr_digest,
)
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import HASH_SIZES, TPM_ALG, TPM_SE, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import PcrSelection, PcrSelectionList, SensitiveCreate, SymDef

if TYPE_CHECKING:  # signed policies load X.509-free but heavier modules: only on use
    from tpmseal.recipes.signed import SignedPolicy

log = get_logger("tpmseal.seal")

MSG_AES = "TPM supports AES-128-CFB, sealing with parameter encryption"
MSG_NO_AES = "TPM does not support AES-128-CFB, sealing without parameter encryption"

#: The PCRs whose all-zero value means "boot not measured" (PC Client: CRTM/firmware, boot loader).
ANCHOR_PCRS = (0, 4)

MAX_SECRET = 128  # MAX_SYM_DATA of TPM 2.0 (Part 2 §10.4.7)

OTHER_TPM = "the blob was sealed on another TPM or before this one was re-provisioned"
OTHER_TPM_HINT = ("unseal it on the TPM it was sealed on (with that TPM's --trust-file), or "
                  "restore the right blob")


def pcr_step(pcrs: PcrSelectionList, values: PcrValues) -> PcrStep:
    """PolicyPCR over *values* in selection order."""
    # pcrDigest uses the policy session's hash (SHA-256), whatever the PCR bank
    return PcrStep(pcrs, pcr_digest(TPM_ALG.SHA256, [values[k] for k in pcrs.pairs()]))


def policy_steps(pcrs: PcrSelectionList, values: dict[tuple[int, int], bytes],
                 pin: bool) -> list[PolicyStep]:
    """PolicyPCR over *values* in selection order, then PolicyAuthValue if a PIN is set."""
    steps: list[PolicyStep] = [pcr_step(pcrs, values)]
    if pin:
        steps.append(AuthValueStep())
    return steps


def _with_anchors(pcrs: PcrSelectionList) -> PcrSelectionList:
    return PcrSelectionList(tuple(
        PcrSelection(s.hash_alg, tuple(sorted(set(s.pcrs) | set(ANCHOR_PCRS))))
        for s in pcrs.selections))


def _check_measured(values: dict[tuple[int, int], bytes], pcrs: PcrSelectionList) -> None:
    """Refuse values whose PCR 0 or 4 is all zero (the seal's own read always holds
    both; a given state holds the ones its selection names)."""
    zero = [f"{pcrspec.bank_name(b)}:{i}" for s in pcrs.selections for (b, i) in
            ((s.hash_alg, i) for i in ANCHOR_PCRS)
            if (b, i) in values and not any(values[(b, i)])]
    if zero:
        raise UsageError(
            f"refusing to seal: PCR {', '.join(zero)} is all zero, so the boot was not "
            "measured and anyone could recreate these PCR values (TPM Carte Blanche)",
            "seal on a measured boot, or pass --allow-unmeasured if you accept that")


def seal(tpm: Tpm, secret: bytes, policy: SealPolicy | None = None, *,
         profile: Profile = TCG, trust: TrustRecord | None = None, legacy: bool = False,
         allow_unmeasured: bool = False, pin: bytes | None = None,
         check: bool | None = None, session: AuthSession | None = None,
         carrier: AuthSession | None = None) -> SealedBlob:
    """Seal *secret* under *policy* (recipes/policies.py; default: PolicyPCR over the
    current values of the profile's PCRs) under the profile's SRK.

    *session*: an EK-salted HMAC session the caller already started (see
    :func:`~tpmseal.recipes.trust.salted_session`) to use instead of a new one;
    it ends with the Create command.

    *carrier*: a confirmed EK-salted session the caller holds (reseal's unseal
    session, :func:`unseal` with *keep*): for a policy that reads no PCRs, Create
    is then authorized by the SRK's empty password and the carrier only decrypts
    inSensitive, exactly as it decrypted Load's inPrivate, so no salted session of
    our own is started. The required-session rule (session/auth.py) concerns
    ``encrypt`` only: deleting a decrypt-only session leaks nothing, since the
    client already encrypted inSensitive (the TPM would take the ciphertext for
    the secret, and the response then lacks the carrier's HMAC, refused); and the
    TPM checks a non-authorizing session's command HMAC (reference code,
    SessionProcess.c: "check HMAC for encrypt/decrypt/audit only sessions"),
    whose cpHash covers the SRK's pinned Name, so the parent cannot be swapped.
    Its response HMAC authenticates outPrivate/outPublic. It ends with Create (the
    caller flushes it if Create is not reached); a policy that reads PCRs needs an
    HMAC session for the audit and ignores it.

    A policy that reads the PCRs (:func:`~tpmseal.recipes.policies.pcr_policy`) reads
    them in that session, audited; given states (PolicyOR) and a signer
    (PolicyAuthorize) need no read. The blob records the policy. *pin*: the
    object's authValue, for a policy with a PIN (given alone, it adds one).
    A signer gated by a revocation counter (``min_version_nv``) gets the counter
    defined here if it is missing.
    """
    policy = policy or SealPolicy()
    if policy.pin and pin is None:
        raise UsageError("the policy asks for a PIN and none was given",
                         "pass the PIN (--pin-file), or a policy without one")
    if not secret:
        raise UsageError("refusing to seal an empty secret",
                         hint="pass a non-empty secret")
    if len(secret) > MAX_SECRET:
        raise UsageError(f"secret is {len(secret)} bytes; a TPM seals at most {MAX_SECRET}",
                         "seal a key and encrypt larger data with it")
    pcrs = policy.pcrs or profile.default_pcrs
    if not pcrs.selections:
        raise UsageError("no PCRs selected",
                         hint="name at least one PCR with --pcrs")
    policy = replace(policy.with_pcrs(pcrs), pin=pin is not None)
    encrypted = not legacy and trust is not None and trust.aes_128_cfb
    if not legacy:
        if trust is None:
            raise UsageError("no pinned endorsement key: the encrypted path needs one",
                             f"run `tpmseal provision --profile {profile.name}` first, or pass "
                             "--legacy to seal without bus protection")
        if encrypted:
            log.info(MSG_AES)
        else:
            log.warning(MSG_NO_AES)
    if pin is not None:
        if not trim_auth(pin):
            raise UsageError("the PIN is empty (trailing zero bytes do not count)",
                             hint="give a PIN of 1 to 32 bytes")
        if len(trim_auth(pin)) > HASH_SIZES[TPM_ALG.SHA256]:
            raise UsageError(f"the PIN is longer than {HASH_SIZES[TPM_ALG.SHA256]} bytes, the "
                             "most a SHA-256 object's authValue holds",
                             hint="give a PIN of at most 32 bytes")
        if not encrypted:
            raise UsageError("a PIN needs the encrypted path (it would cross the bus in a form "
                             "open to offline guessing)",
                             hint="drop the PIN, or provision a TPM with AES-128-CFB")
    srk = trust.srk_handle if trust else profile.srk
    read_sel = pcrs if allow_unmeasured else _with_anchors(pcrs)
    if not encrypted:
        session = None
    if policy.revocation_nv is not None:
        from tpmseal.recipes import revocation  # signed policies only: off unseal's path

        start = revocation.define_counter(tpm, policy.revocation_nv)
        log.info("revocation counter %#x is at %d: signed policies need a version of at "
                 "least %d", policy.revocation_nv, start, start)
    if not encrypted or policy.reads_pcrs:
        carrier = None
    try:
        if encrypted and carrier is None:
            assert trust is not None
            session = session or salted_session(tpm, trust)
        if policy.reads_pcrs:
            if session is not None:
                session.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.audit
                values = tpm.pcr_read(read_sel, session)
            else:
                values = tpm.pcr_read(read_sel)
            if not allow_unmeasured:
                _check_measured(values, pcrs)
            policy = policy.at(values)
        elif not allow_unmeasured:
            for v in policy.states:
                _check_measured(v, pcrs)
        from tpmseal.recipes.templates import sealed_template  # seal only: off unseal's path

        template = sealed_template(policy.digest())
        sensitive = SensitiveCreate(pin or b"", secret)
        if session is not None:
            assert trust is not None
            tpm.names[srk] = trust.srk_name
            session.attributes = TPMA_SESSION.decrypt  # ends with this command
            r = tpm.run(cmds.Create(srk, sensitive, template), session)
        elif carrier is not None:
            assert trust is not None
            tpm.names[srk] = trust.srk_name
            carrier.attributes = TPMA_SESSION.decrypt  # ends with this command
            r = tpm.run(cmds.Create(srk, sensitive, template), PasswordSession(), carrier)
        else:
            r = tpm.run(cmds.Create(srk, sensitive, template))
    except TpmResponseError as e:
        raise explain_error(e, trust) from None
    finally:
        if session is not None and not session.ended:
            # only reached when something failed: that error, not the flush's, says what
            # happened (a tampered Create response leaves a session the TPM already ended)
            with contextlib.suppress(TpmsealError):
                tpm.flush(session.handle)
    public = r.out_public
    if public.with_unique(b"") != template:
        raise IntegrityError("TPM returned a different public area than the one sent: "
                             "possible bus tampering",
                             hint=BUS_HINT)
    use_check = key_like(secret) if check is None else check
    salt = SaltKey(trust.ek_handle, trust.ek_public) if trust else None
    parent_name = trust.srk_name if trust else tpm.name_of(srk)
    states = policy.states
    return SealedBlob(public, r.out_private, pcrs, dict(states[0]) if states else {}, srk,
                      parent_name, salt, ENCRYPTED if encrypted else LEGACY, pin is not None,
                      check_value(secret, public.name()) if use_check else None,
                      states=states if len(states) > 1 else (), authorizer=policy.authorizer,
                      revocation_nv=policy.revocation_nv)


def explain_error(e: TpmResponseError, trust: TrustRecord | None, pin: bool = False) -> Exception:
    """Turn TPM errors of the seal/unseal flows into what they mean here.

    A TPM that rejects an HMAC we computed correctly means the command changed
    on its way (or the session key differs from ours): with a PIN that is most
    likely a wrong PIN, without one it is tampering.
    """
    if e.command == "Load" and e.name in ("INTEGRITY", "BINDING", "KEY", "TYPE", "HANDLE"):
        return BadInputError(f"the TPM refused to load the sealed object ({e.rc.describe()})",
                             "the blob was sealed on another TPM or under another SRK, or it "
                             "is corrupted")
    if e.name in ("AUTH_FAIL", "BAD_AUTH") and e.command == "Unseal" and pin:
        return AuthFailedError("wrong PIN", "repeated failures lock the TPM for a while "
                                            "(dictionary-attack protection)")
    if e.command in ("VerifySignature", "PolicyAuthorize"):
        return IntegrityError(f"the TPM refused TPM2_{e.command} ({e.rc.describe()}) of a "
                              "signed policy that verifies in software: a command was "
                              "altered in transit, possible interposer",
                              "check the bus between CPU and TPM, then retry")
    if e.name == "LOCKOUT":
        return AuthFailedError(f"TPM2_{e.command} refused: the TPM is in dictionary-attack "
                               "lockout", "wait for the lockout to expire, or reset it with the "
                                          "lockout authorization")
    if e.command in ("Create", "Load") and e.name in ("AUTH_FAIL", "BAD_AUTH") and trust:
        # a salted session's first rejected HMAC is the EK diagnosis (client/tpm.py); this
        # one is not about the EK, and `provision --repin` advice would, under a man in
        # the middle, have the admin pin the interposer's key
        return TrustError("the TPM rejected our HMAC: the command was altered in transit, or "
                          "the SRK at the pinned handle is not the pinned one (possible "
                          "interposer, or a cleared TPM)",
                          hint=("check the TPM bus; if the TPM was cleared, `tpmseal provision` "
                                "pins its new SRK"))
    if e.name in ("AUTH_FAIL", "BAD_AUTH"):
        return IntegrityError(f"the TPM rejected the HMAC of TPM2_{e.command} "
                              f"({e.rc.describe()}): the command was altered in transit, "
                              "possible interposer",
                              hint=BUS_HINT)
    return e


def changed_pcrs(tpm: Tpm, blob: SealedBlob, salt: SaltKey | None) -> dict[str, list[int]]:
    """Which of the blob's PCRs differ now from their seal-time values.

    The current values come from an audited PCR_Read (its response HMAC covers
    them) in a session salted to *salt*, so a report never names a
    PCR on the word of an interposer. Without a salt key (legacy path) nothing can
    be authenticated and the report says so.
    """
    if not blob.pcr_values:
        return {}
    if salt is None:
        now = tpm.pcr_read(blob.pcrs)
    else:
        audit = start_salted(tpm, salt.public, salt.handle, TPM_SE.HMAC,
                             TPMA_SESSION.continueSession | TPMA_SESSION.audit)
        with tpm.scoped(audit.handle):
            now = tpm.pcr_read(blob.pcrs, audit)
    changed: dict[str, list[int]] = {}
    for k in blob.pcrs.pairs():
        if blob.pcr_values.get(k) != now[k]:
            changed.setdefault(pcrspec.bank_name(k[0]), []).append(k[1])
    return changed


def mismatch_error(changed: dict[str, list[int]], *,
                   authenticated: bool = True) -> PolicyMismatchError:
    if changed:
        what = "; ".join(f"{bank} PCR {', '.join(map(str, ix))}" for bank, ix in changed.items())
        msg = f"PCR policy check failed: {what} changed since sealing"
        if not authenticated:
            msg += " (values read without bus protection, on the legacy path)"
    else:  # no seal-time values to compare with (EVE's NV layout)
        msg = ("PCR policy check failed: the PCR values, or the PCR list given with --pcrs, "
               "differ from those the secret was sealed to")
        return PolicyMismatchError(msg, changed, "give the PCR list it was sealed to (--pcrs, "
                                                 "or drop --no-recover to search for it), or "
                                                 "boot the measured configuration again")
    return PolicyMismatchError(msg, changed, "boot the measured configuration again, or reseal "
                                             "from a trusted state (`tpmseal reseal`)")


def unseal(tpm: Tpm, blob: SealedBlob, *, legacy: bool = False, allow_downgrade: bool = False,
           pin: bytes | None = None, trust: TrustRecord | None = None,
           policies: Sequence[SignedPolicy] = (),
           keep: list[AuthSession] | None = None) -> bytes:
    """Unseal *blob*; the secret crosses the bus encrypted unless on the legacy path.

    A blob without seal-time PCR values (EVE's NV layout) gets PolicyPCR with an
    empty pcrDigest: the TPM then uses the current values, and a mismatch shows
    up as TPM_RC_POLICY_FAIL at Unseal.

    *policies*: the signed policies offered for a blob sealed to a signer
    (recipes/signed.py); forged, unsigned and other keys' policies are refused
    before any TPM command, and the TPM picks the one that covers the PCRs.

    *keep*: on the encrypted path, the confirmed salted policy session is kept
    alive after Unseal and appended to *keep*, for :func:`seal`'s *carrier*; the
    caller flushes it. On any failure it is flushed here.
    """
    if legacy and blob.sealed_with == ENCRYPTED and not allow_downgrade:
        raise UsageError("refusing to unseal on the legacy path: the secret would cross the "
                         "bus in plaintext although this TPM supports parameter encryption",
                         "pass --allow-downgrade if you really mean it")
    salt = blob.salt_key
    if trust is not None:
        pinned = SaltKey(trust.ek_handle, trust.ek_public)
        if salt is not None and salt.name != pinned.name:
            raise BadInputError(OTHER_TPM + " (its salt key is not the pinned endorsement key, "
                                f"trust file {trust.path})", OTHER_TPM_HINT)
        if (blob.parent_name and blob.parent_handle == trust.srk_handle
                and blob.parent_name != trust.srk_name):
            raise BadInputError(OTHER_TPM + " (its parent is not the pinned storage key, "
                                f"trust file {trust.path})", OTHER_TPM_HINT)
        salt = salt or pinned
    encrypted = not legacy
    if encrypted and salt is None:
        raise UsageError("no pinned endorsement key to protect this unseal with",
                         "run `tpmseal provision` or pass the right --trust-file; --legacy "
                         "unseals without bus protection")
    if encrypted and trust is not None and not trust.aes_128_cfb:
        if blob.sealed_with == ENCRYPTED:
            raise TrustError("the trust file says this TPM lacks AES-128-CFB, but the secret "
                             "was sealed with it: wrong trust file or replaced TPM",
                             hint="pass this TPM's trust file, or `tpmseal provision --repin`")
        log.warning("TPM does not support AES-128-CFB, unsealing without parameter encryption")
        encrypted = False
    if blob.pin and pin is None:
        raise UsageError("this secret is protected by a PIN", "pass --pin-file FILE")
    if pin is not None and not blob.pin:
        raise UsageError("this secret has no PIN", "drop --pin-file")
    if blob.pin and not encrypted:
        raise UsageError("a PIN-protected secret can only be unsealed on the encrypted path",
                         hint="drop --legacy")
    run: Callable[[AuthSession], None]
    candidates: list[SignedPolicy] = []
    if (blob.authorizer is not None or blob.states) and (
            blob.policy().digest() != blob.policy_digest):
        raise BadInputError("the sealed object's authPolicy (policy_digest) is not what its "
                            "policy record gives",
                            "with --nv: check --authorized-by and --min-version-nv; a blob "
                            "file was edited or corrupted: restore it")
    if policies and blob.authorizer is None:
        raise UsageError("this secret is not sealed to a policy signer", "drop --policy")
    if blob.authorizer is not None:
        if not policies:
            raise UsageError("this secret is sealed to a policy signer",
                             "pass the signed policy for this release with --policy FILE|DIR")
        from tpmseal.recipes import signed, signer

        key = signer.crypto_key(blob.authorizer.key)
        candidates = signed.usable(list(policies), key, blob.authorizer.policy_ref,
                                   blob.revocation_nv)
        run = _signed_runner(tpm, blob, candidates)
    elif blob.states:
        run = _branch_runner(tpm, blob)
    elif blob.pcr_values:
        if set(blob.pcr_values) != set(blob.pcrs.pairs()):
            raise BadInputError("the blob's pcr_values do not list exactly its pcrs",
                                "the file was edited or corrupted; restore it")
        steps = policy_steps(blob.pcrs, blob.pcr_values, blob.pin)
        if compute_policy(steps) != blob.policy_digest:
            raise BadInputError("the blob's pcr_values do not give its policy_digest",
                                "the file was edited or corrupted; restore it")
    else:
        steps = [PcrStep(blob.pcrs, b"")] + ([AuthValueStep()] if blob.pin else [])
    if not (blob.authorizer is not None or blob.states):
        run = functools.partial(tpm.run_policy, steps=steps)
    kept: list[AuthSession] = []
    try:
        secret = _checked_unseal(tpm, blob, salt if encrypted else None, run, pin, trust,
                                 candidates, kept if keep is not None else None)
    except BaseException:
        for s in kept:
            if not s.ended:
                with contextlib.suppress(TpmsealError):
                    tpm.flush(s.handle)
        raise
    if keep is not None:
        keep.extend(kept)
    return secret


def _checked_unseal(tpm: Tpm, blob: SealedBlob, salt: SaltKey | None,
                    run: Callable[[AuthSession], None], pin: bytes | None,
                    trust: TrustRecord | None, candidates: Sequence[SignedPolicy],
                    keep: list[AuthSession] | None) -> bytes:
    """:func:`unseal_object` with its errors explained and the check value verified;
    *salt* is None on the legacy path."""
    try:
        secret = unseal_object(tpm, blob, salt, run, pin, keep)
    except PolicyMismatchError:
        if salt is not None and (blob.states or candidates):
            forged_choice(tpm, salt, blob, candidates)
        raise
    except TrustError as e:
        if trust is not None:
            raise
        # nothing pinned to compare with: the TPM cannot use the blob's own salt key
        raise BadInputError(OTHER_TPM + f" ({e.hint})", OTHER_TPM_HINT) from None
    except TpmResponseError as e:
        if blob.authorizer is not None and e.name == "POLICY_FAIL" and e.command == "Unseal":
            raise IntegrityError("the TPM refused the signed policy at TPM2_Unseal: its key "
                                 "or policyRef is not the one this secret is sealed to, or a "
                                 "command was altered in transit",
                                 "pass policies signed for this secret; if they are, check "
                                 "the bus") from None
        if e.name in ("POLICY_FAIL", "VALUE") and e.command in ("PolicyPCR", "Unseal"):
            if salt is not None and blob.states:
                forged_choice(tpm, salt, blob, candidates)  # the TPM accepted a branch
            changed = changed_pcrs(tpm, blob, salt)
            if blob.pcr_values and not changed:
                # the PCRs hold their sealed values, so an honest TPM would have passed
                # the policy: a handle or command was altered on the bus
                raise IntegrityError(
                    f"the TPM refused the PCR policy in TPM2_{e.command} although every PCR "
                    "holds its sealed value: a command or handle was altered in transit, "
                    "possible interposer",
                    hint=BUS_HINT) from None
            raise mismatch_error(changed, authenticated=salt is not None) from None
        raise explain_error(e, trust, blob.pin) from None
    if blob.check is not None and not equal(
            check_value(secret, blob.name), blob.check):
        raise IntegrityError("the unsealed secret failed its check value: the TPM response "
                             "was altered or the blob does not match the object",
                             hint="retry; if it persists, restore the blob from a backup")
    return secret


def forged_choice(tpm: Tpm, salt: SaltKey, blob: SealedBlob,
                  candidates: Sequence[SignedPolicy]) -> None:
    """Raise IntegrityError if PCR values read in an audited session salted to *salt*
    (and, for revocable policies, the counter) fit one of *blob*'s PolicyOR states or one
    of the signed *candidates*: asked after none fitted in the policy session, whose
    TPM_RC_VALUE answers carry no HMAC, before a PCR mismatch is reported."""
    from tpmseal.recipes import revocation  # signed policies only: off unseal's path

    audit = start_salted(tpm, salt.public, salt.handle, TPM_SE.HMAC,
                         TPMA_SESSION.continueSession | TPMA_SESSION.audit)
    read: dict[PcrSelectionList, PcrStep] = {}

    def now(pcrs: PcrSelectionList) -> PcrStep:
        if pcrs not in read:
            read[pcrs] = pcr_step(pcrs, tpm.pcr_read(pcrs, audit))
        return read[pcrs]

    def fits(cand: SignedPolicy) -> bool:
        step = now(cand.pcrs)
        covers = (step.pcr_digest == cand.pcr_digest if cand.pcr_digest is not None
                  else compute_policy([step]) == cand.approved_policy)
        return covers and (cand.nv_index is None or revocation.read_counter(
            tpm, cand.nv_index, audit) <= (cand.version or 0))

    with tpm.scoped(audit.handle):
        forged = any(fits(c) for c in candidates) or (bool(blob.states) and (
            now(blob.pcrs).pcr_digest in {b.pcr_digest for b in blob.policy().branches}))
    if forged:
        raise IntegrityError("the TPM answered that no allowed PCR state or signed policy "
                             "fits, but the values read through the pinned endorsement key "
                             "fit one: forged error responses (possible interposer)", BUS_HINT)


def _signed_runner(tpm: Tpm, blob: SealedBlob,
                   candidates: list[SignedPolicy]) -> Callable[[AuthSession], None]:
    """Satisfy PolicyAuthorize with the first candidate that covers the PCRs (signed.py),
    then the PIN's PolicyAuthValue."""
    authorizer, policy = blob.authorizer, blob.policy()
    assert authorizer is not None

    def run(s: AuthSession) -> None:
        from tpmseal.recipes import signed

        signed.satisfy(tpm, s, authorizer, candidates)
        tpm.run_policy(s, policy.finish([]))

    return run


def _branch_runner(tpm: Tpm, blob: SealedBlob) -> Callable[[AuthSession], None]:
    """Satisfy a PolicyOR: the branch the TPM accepts (PolicyPCR with another state's
    pcrDigest fails with TPM_RC_VALUE and leaves the digest alone), then PolicyOR."""
    policy = blob.policy()

    def run(s: AuthSession) -> None:
        for n in range(len(policy.branches)):
            try:
                tpm.run_policy(s, [policy.branches[n]])
            except TpmResponseError as e:
                if e.name != "VALUE":
                    raise
                continue
            tpm.run_policy(s, policy.steps(n)[1:])
            return
        raise PolicyMismatchError(
            f"PCR policy check failed: the PCR values match none of the {len(blob.states)} "
            "states the secret was sealed to", None,
            "boot one of the sealed configurations, or reseal from a trusted state")

    return run


def unseal_object(tpm: Tpm, blob: SealedBlob, salt: SaltKey | None,
                  run: Callable[[AuthSession], None], pin: bytes | None,
                  keep: list[AuthSession] | None = None) -> bytes:
    """Load the object, satisfy its policy and unseal it.

    Encrypted path: the policy session is salted to the pinned EK and used first
    as a ``decrypt`` session on Load, whose response HMAC confirms that the TPM
    holds the same session key (session/auth.py, confirmation rule); only then is
    Unseal sent with ``encrypt``. As the authorizing session of Unseal its command
    HMAC covers the object's Name (Part 1 §19.6.12), so the TPM itself refuses an
    object swapped in by an interposer. 5 commands: StartAuthSession, Load,
    PolicyPCR, Unseal (ends the session), FlushContext (+ PolicyAuthValue with a PIN).

    The encryption rides on the policy session itself, never on a salted HMAC
    session next to an unsalted policy session: such a session authorizes
    nothing, an interposer can delete it and the TPM then returns outData in
    plaintext (session/auth.py, required-session rule).

    *keep*: on the encrypted path, Unseal continues the session, which is appended
    to *keep* instead of flushed (:func:`unseal`).
    """
    if salt is None:
        session = tpm.start_session(TPM_SE.POLICY, symmetric=SymDef(), attributes=0)
    else:
        session = start_salted(tpm, salt.public, salt.handle, TPM_SE.POLICY)
    encrypting = session if salt is not None else None
    keeping = keep is not None and encrypting is not None
    with tpm.scoped(session.handle) if not keeping else _flushed_on_error(tpm, session.handle):
        confirm: tuple[AuthSession, ...] = ()
        if encrypting is not None and not encrypting.confirmed:
            confirm = (encrypting,)
            encrypting.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.decrypt
            if blob.parent_name:
                # the Name pinned at seal time joins Load's cpHash: never a ReadPublic
                tpm.names[blob.parent_handle] = blob.parent_name
        loaded = tpm.run(cmds.Load(blob.parent_handle, blob.private, blob.public),
                         PasswordSession(), *confirm)
        with tpm.scoped(loaded.object_handle) as handle:
            session.attributes = 0  # ends with Unseal; a policy session's digest is fresh
            run(session)
            # the authValue keys the response encryption (Part 1 §21.3): only with a PIN
            session.auth_value = (pin or b"") if blob.pin else b""
            if encrypting is not None:
                session.attributes = TPMA_SESSION.encrypt | (
                    TPMA_SESSION.continueSession if keeping else 0)
            out = tpm.run(cmds.Unseal(handle), session).out_data
    if keeping:
        assert keep is not None
        keep.append(session)
    return out


@contextlib.contextmanager
def _flushed_on_error(tpm: Tpm, handle: int) -> Iterator[None]:
    """Flush *handle* if the block raises (a failing flush is ignored: the block's error
    says what happened); keep it otherwise."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(TpmsealError):
            tpm.flush(handle)
        raise
