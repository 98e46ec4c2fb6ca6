"""Secret lifecycle over a store: unseal with fallback and recovery, reseal, vault key.

* :func:`unseal_stored` tries each stored copy (main, then staging), and when
  the policy fails on a copy without seal-time PCR values it recovers the PCR
  selection from the object's authPolicy (EVE's UnsealDiskKeyWithRecovery).
* :func:`reseal` unseals with the old policy and stores a copy sealed to the
  new one; the store's ``save`` keeps an unsealable copy at every instant.
* :func:`vault_key` is EVE's FetchSealedVaultKey: generate, migrate a legacy
  plaintext key, or unseal. Like EVE it keeps the legacy key (NV 0x1700000)
  after migrating it: releases from before sealing read it, so removing it
  would lose the vault on a rollback; it goes only on explicit request. A torn
  layout (part of a pair, no complete one) is refused, never replaced by a
  new key.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from itertools import chain
from typing import TYPE_CHECKING

from tpmseal.client.tpm import Tpm
from tpmseal.digests import digest, equal
from tpmseal.errors import (
    IntegrityError,
    NotFoundError,
    PolicyMismatchError,
    TpmsealError,
    UsageError,
)
from tpmseal.log import get_logger
from tpmseal.recipes import sealing
from tpmseal.recipes.blob import SealedBlob
from tpmseal.recipes.pcrspec import format_pcrs
from tpmseal.recipes.policies import SealPolicy
from tpmseal.recipes.profiles import Profile
from tpmseal.recipes.stores import (
    NvStore,
    Store,
    first_candidate,
    nv_undefine,
    require_candidates,
)
from tpmseal.recipes.trust import TrustRecord, salted_session
from tpmseal.records import field, record, replace
from tpmseal.session.auth import AuthSession, Session
from tpmseal.wire.constants import TPM_ALG, TPM_RH, TPMA_NV, TPMA_SESSION

if TYPE_CHECKING:  # signed policies and NV public areas load on use only
    from tpmseal.recipes.signed import SignedPolicy
    from tpmseal.wire.structures import NvPublic

log = get_logger("tpmseal.lifecycle")

VAULT_KEY_BYTES = 32


@record
class UnsealOptions:
    legacy: bool = False
    allow_downgrade: bool = False
    pin: bytes | None = field(default=None, repr=False)
    trust: TrustRecord | None = None
    recover: bool = True
    policies: tuple[SignedPolicy, ...] = ()  # for a secret sealed to a signer (signed.py)
    #: the signer of an NV-stored object that has no record in the trust file
    #: (sealed before records, or by other software); a record must name the same
    nv_signer: SealPolicy | None = None
    #: reseal: for the copy about to be unsealed, the list that receives its confirmed
    #: salted session kept alive (sealing.unseal *keep*), or None to end it at Unseal
    keep: Callable[[SealedBlob], list[AuthSession] | None] | None = field(default=None,
                                                                        repr=False)


def _unseal_one(tpm: Tpm, blob: SealedBlob, opts: UnsealOptions) -> bytes:
    def attempt(b: SealedBlob) -> bytes:
        return sealing.unseal(tpm, b, legacy=opts.legacy, allow_downgrade=opts.allow_downgrade,
                              pin=opts.pin, trust=opts.trust, policies=opts.policies,
                              keep=opts.keep(b) if opts.keep is not None else None)

    try:
        return attempt(blob)
    except PolicyMismatchError:
        if blob.pcr_values or blob.authorizer is not None or not opts.recover:
            raise
        from tpmseal.recipes import recovery  # only after a policy failure

        authenticated = not opts.legacy and opts.trust is not None and opts.trust.aes_128_cfb
        if authenticated:
            assert opts.trust is not None
            audit = salted_session(tpm, opts.trust, TPMA_SESSION.continueSession
                                   | TPMA_SESSION.audit)
            with tpm.scoped(audit.handle):
                found = recovery.recover(tpm, blob.public, blob.pcrs, TPM_ALG.SHA256, audit)
        else:
            found = recovery.recover(tpm, blob.public, blob.pcrs)
        if found is None:
            raise
        sel, pin = found
        if (sel, pin) != (blob.pcrs, blob.pin):
            log.warning("unseal with PCRs %s failed; recovered PCRs %s",
                        format_pcrs(blob.pcrs), format_pcrs(sel))
            try:
                return attempt(replace(blob, pcrs=sel, pin=pin))
            except PolicyMismatchError:
                if not authenticated:
                    raise
        elif not authenticated:
            raise
        # the TPM's own (audited) current values satisfy the policy with *sel*: an
        # honest TPM would have passed it
        raise IntegrityError(
            "the TPM refused the PCR policy although its authenticated current PCR values "
            f"satisfy it (PCRs {format_pcrs(sel)}): a command or handle was altered in "
            "transit, possible interposer",
            "retry; if it persists, suspect an interposer on the TPM bus") from None


def _with_signer(blob: SealedBlob, opts: UnsealOptions) -> SealedBlob:
    """*blob* sealed to the signer ``--authorized-by`` names at unseal (*opts.nv_signer*)
    when it records no policy of its own: an NV object the trust file has no record of.

    A record naming the same signer and counter agrees; one naming another, or a PCR
    policy, is :class:`UsageError`: a named signer is never silently replaced by a
    record's (as named PCRs are not: stores.py, NvStore.candidates).
    """
    signer = opts.nv_signer
    if signer is None:
        return blob
    if blob.authorizer is None and not blob.pcr_values:
        return replace(blob, authorizer=signer.authorizer, revocation_nv=signer.revocation_nv)
    assert signer.authorizer is not None
    if blob.authorizer is not None and blob.authorizer.name == signer.authorizer.name and \
            blob.revocation_nv == signer.revocation_nv:
        return blob
    says = "PCR values, not a signer" if blob.authorizer is None else (
        f"signer {blob.authorizer.name.hex()[:16]}" + (
            "" if blob.revocation_nv is None else f" with counter {blob.revocation_nv:#x}"))
    where = opts.trust.path if opts.trust is not None else None
    raise UsageError(
        f"--authorized-by names signer {signer.authorizer.name.hex()[:16]}"
        + ("" if signer.revocation_nv is None else f" with counter {signer.revocation_nv:#x}")
        + f", but the record of NV object {blob.name.hex()[:16]} in trust file {where} says "
        f"it is sealed to {says}; nothing was changed",
        "drop --authorized-by and --min-version-nv (the record is used)")


def unseal_stored(tpm: Tpm, store: Store, opts: UnsealOptions) -> bytes:
    """Unseal the first stored copy that unseals; report the first copy's failure."""
    return unseal_source(tpm, store, opts)[0]


def unseal_source(tpm: Tpm, store: Store, opts: UnsealOptions,
                  blobs: Iterator[SealedBlob] | None = None) -> tuple[bytes, SealedBlob]:
    """Like :func:`unseal_stored`, also returning the stored copy that unsealed.

    *blobs*: the store's candidates if the caller has just read them.
    """
    first_error: TpmsealError | None = None
    for stored in blobs if blobs is not None else require_candidates(tpm, store):
        try:  # a copy whose record disagrees with --authorized-by fails like any other
            blob = _with_signer(stored, opts)
            secret = _unseal_one(tpm, blob, opts)
        except TpmsealError as e:
            if first_error is None:
                first_error = e
            log.info("copy in %s did not unseal: %s", store.describe(), e.one_line())
            continue
        store.unsealed(blob)
        return secret, blob
    assert first_error is not None
    raise first_error


#: what reseal seals to: a policy, or one computed from the old one (None: renewed)
NewPolicy = SealPolicy | Callable[[SealPolicy], SealPolicy] | None


def reseal(tpm: Tpm, store: Store, policy: NewPolicy, opts: UnsealOptions,
           profile: Profile, *, allow_unmeasured: bool = False,
           target: Store | None = None, force: bool = False) -> SealedBlob:
    """Unseal from *store* and seal the same secret under *policy* into *target*
    (default: store).

    *policy* (recipes/policies.py): a new policy, a function of the old one (e.g.
    ``lambda old: old.change_states(add, drop)`` for ``--add-state/--drop-state``),
    or None for :meth:`~tpmseal.recipes.policies.SealPolicy.renewed`: the same
    signer or PolicyOR states, else the current values of the same PCRs.

    The unseal's policy session is EK-salted and must carry the Unseal response's
    encryption itself (a salted HMAC session next to an unsalted policy session
    authorizes nothing, so an interposer could delete it and read the plaintext:
    session/auth.py, required-session rule). It stays open after Unseal, and a new
    policy that reads no PCRs (a signer, PolicyOR states, given values) is sealed
    with it as Create's decrypt-only carrier (sealing.seal *carrier*): one salted
    StartAuthSession in all. A policy over the current PCR values needs the audited
    PCR_Read, which needs an HMAC session: a second salted session. A *target* is
    created exclusively unless *force* (then it is replaced).
    """
    def new_policy(b: SealedBlob) -> SealPolicy:
        was = b.sealed_policy
        return was.renewed() if policy is None else policy(was) if callable(policy) else policy

    kept: list[AuthSession] = []

    def keep(b: SealedBlob) -> list[AuthSession] | None:
        try:
            return None if new_policy(b).reads_pcrs else kept
        except TpmsealError:  # reported after the unseal, whose errors come first
            return None

    secret, old = unseal_source(tpm, store, replace(opts, keep=keep))
    carrier = kept[-1] if kept else None  # copies that failed flushed theirs
    try:
        new = new_policy(old)
        blob = sealing.seal(tpm, secret, new, profile=profile, trust=opts.trust,
                            legacy=opts.legacy, allow_unmeasured=allow_unmeasured, pin=opts.pin,
                            check=old.check is not None or None, carrier=carrier)
    finally:
        if carrier is not None and not carrier.ended:
            with contextlib.suppress(TpmsealError):
                tpm.flush(carrier.handle)
    if target is None:
        store.save(tpm, blob, keep=old)  # the copy that unsealed stays until blob is stored
    else:
        target.save(tpm, blob, exclusive=not force)
    return blob


def fresh_key(tpm: Tpm, session: AuthSession | None) -> bytes:
    """32 bytes: the TPM's RNG (through *session*, encrypted, if given) mixed with the OS's.

    The encryption only hides the TPM's bytes from a passive observer: GetRandom
    authorizes nothing, so an active interposer can delete the session and read
    them (session/auth.py, required-session rule). The OS's bytes, which never
    cross the bus, keep the key secret.
    """
    if session is not None:
        session.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.encrypt
        tpm_bytes = tpm.get_random(VAULT_KEY_BYTES, session)
    else:
        tpm_bytes = tpm.get_random(VAULT_KEY_BYTES)
    return digest("sha256", tpm_bytes + os.urandom(VAULT_KEY_BYTES))


def _read_legacy(tpm: Tpm, pub: NvPublic | None, session: AuthSession | None) -> bytes | None:
    """The legacy plaintext key in the index *pub* describes, read through *session*
    (encrypted) when given; None if there is no written index.

    The session itself authorizes the owner (empty authValue), so the TPM needs it
    and its HMAC covers ``encrypt``: next to a password session it would authorize
    nothing and an interposer could delete it (session/auth.py).
    """
    if pub is None or not pub.attributes & TPMA_NV.WRITTEN:
        return None
    sessions: tuple[Session, ...] = ()
    if session is not None:
        if not session.confirmed:  # an audited NV_ReadPublic confirms it (and the size)
            session.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.audit
            pub = tpm.nv_read_public(pub.nv_index, session)
        session.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.encrypt
        sessions = (session,)
    return tpm.nv_read(pub.nv_index, pub.data_size, TPM_RH.OWNER, *sessions)


@contextlib.contextmanager
def shared_session(tpm: Tpm, trust: TrustRecord | None,
                   legacy: bool = False) -> Iterator[AuthSession | None]:
    """One EK-salted session for a whole flow (None on the legacy path); flushed at the end
    unless a command ended it."""
    if legacy or trust is None or not trust.aes_128_cfb:
        yield None
        return
    s = salted_session(tpm, trust)
    try:
        yield s
    finally:
        if not s.ended:
            with contextlib.suppress(TpmsealError):
                tpm.flush(s.handle)


def refuse_downgrade(legacy: bool, trust: TrustRecord | None, allow_downgrade: bool) -> None:
    """The legacy path where the pinned TPM does AES-128-CFB needs *allow_downgrade*: the
    secret would cross the bus in plaintext (the same rule as for unseal)."""
    if legacy and trust is not None and trust.aes_128_cfb and not allow_downgrade:
        raise UsageError("--legacy would put the secret on the bus in plaintext, and the TPM "
                         "pinned in the trust file supports AES-128-CFB parameter encryption",
                         "drop --legacy, or pass --allow-downgrade if you really mean it")


def seal_into(tpm: Tpm, store: Store, secret: bytes, policy: SealPolicy | None,
              profile: Profile, trust: TrustRecord | None, *, force: bool = False,
              legacy: bool = False, allow_unmeasured: bool = False, pin: bytes | None = None,
              check: bool | None = None) -> SealedBlob:
    """Seal *secret* under *policy* (sealing.seal) into an empty *store* (or replace its
    content with *force*).

    An NV store that looks empty is confirmed empty through the same salted
    session the seal then uses, so a forged "no such index" cannot make this
    overwrite a sealed secret, and no second expensive session is started.
    """
    nv = store if isinstance(store, NvStore) else None
    if nv is None and not force and first_candidate(tpm, store) is not None:
        raise UsageError(f"{store.describe()} already holds a sealed secret",
                         "use `tpmseal reseal` to change its policy, or --force to replace it "
                         "(the old secret is then lost)")
    listing = None
    with shared_session(tpm, trust, legacy) as session:
        if nv is not None:  # one listing instead of probing each index
            listing = nv.listing(tpm, session)
            if not force:
                nv.refuse_occupied(listing, looked_empty=False)
        blob = sealing.seal(tpm, secret, policy, profile=profile, trust=trust, legacy=legacy,
                            allow_unmeasured=allow_unmeasured, pin=pin, check=check,
                            session=session)
    if nv is not None:
        nv.save(tpm, blob, listing=listing, exclusive=not force)
    else:
        store.save(tpm, blob, exclusive=not force)
    return blob


@record
class VaultResult:
    key: bytes
    action: str  # "generated" | "migrated" | "unsealed"

    def __repr__(self) -> str:
        return f"VaultResult(action={self.action!r})"


def vault_key(tpm: Tpm, profile: Profile, store: NvStore, opts: UnsealOptions, *,
              allow_unmeasured: bool = False, remove_legacy: bool = False) -> VaultResult:
    """EVE's FetchSealedVaultKey: unseal the sealed key, else migrate the legacy key,
    else (only when the authenticated listing shows no sealed pair, no staging pair
    and no legacy key) generate one. The legacy key stays unless *remove_legacy*.

    Every boot (a sealed key): read the pair (two NV_Reads with the sizes the trust
    file keeps, stores.py), unseal: 7 commands.
    """
    assert profile.nv is not None
    legacy_index = profile.nv.legacy_key
    stored = store.candidates(tpm)
    first = next(stored, None)
    if first is not None:
        key = unseal_source(tpm, store, opts, chain([first], stored))[0]
        if remove_legacy:
            _remove_legacy(tpm, store, legacy_index, key, opts)
        return VaultResult(key, "unsealed")
    # first boot: one salted session lists the layout and the legacy index (an audited
    # listing: a forged "no such index" can neither make us overwrite a sealed key nor
    # skip migrating a legacy one), reads the legacy key or draws a fresh one
    # (encrypted), reads the PCRs (audited) and seals (encrypted)
    with shared_session(tpm, opts.trust, opts.legacy) as session:
        listing = store.listing(tpm, session, also=[legacy_index])
        store.refuse_occupied(listing, looked_empty=True)
        legacy = _read_legacy(tpm, listing.pubs.get(legacy_index), session)
        key, action = (legacy, "migrated") if legacy is not None else (
            fresh_key(tpm, session), "generated")
        log.info("%s vault key: sealing it", action)
        blob = sealing.seal(tpm, key, SealPolicy(store.pcrs), profile=profile, trust=opts.trust,
                            legacy=opts.legacy, allow_unmeasured=allow_unmeasured, pin=opts.pin,
                            session=session)
    store.save(tpm, blob, listing=listing)
    # the copy was just sealed on the path asked for: verify it on the same path (the
    # blob in memory is what was written: reading NV back proves nothing more)
    check = _unseal_one(tpm, blob, replace(opts, allow_downgrade=opts.legacy))
    if not equal(check, key):
        raise IntegrityError("the freshly sealed vault key did not unseal to the same value",
                             hint=("nothing was removed; retry, and if it persists suspect the "
                                  "TPM bus"))
    if legacy is not None:
        if remove_legacy:
            _remove_legacy(tpm, store, legacy_index, key, opts, legacy)
        else:
            log.info("keeping the legacy key in NV %#x, as EVE does (a rollback to a release "
                     "from before sealing reads it)", legacy_index)
    return VaultResult(key, action)


def _remove_legacy(tpm: Tpm, store: NvStore, index: int, key: bytes, opts: UnsealOptions,
                   legacy: bytes | None = None) -> None:
    """Remove the legacy key if it is the (verified) sealed key; warn about rollback."""
    if legacy is None:
        with shared_session(tpm, opts.trust, opts.legacy) as session:
            listing = store.listing(tpm, session, also=[index])
            legacy = _read_legacy(tpm, listing.pubs.get(index), session)
    if legacy is None:
        log.info("no legacy key in NV %#x to remove", index)
    elif equal(legacy, key):
        log.warning("removing the legacy plaintext key in NV %#x: a rollback to a release "
                    "from before sealing can no longer open the vault", index)
        nv_undefine(tpm, index)
    else:
        log.warning("legacy key in NV %#x differs from the sealed key; leaving it in place",
                    index)


def require_nv(profile: Profile) -> None:
    if profile.nv is None:
        raise NotFoundError(f"profile {profile.name!r} keeps no vault key in NV",
                            "use --profile eve")

