"""Secret lifecycle over a store: unseal with fallback and recovery, reseal, vault key.

* :func:`unseal_stored` tries each stored copy (main, then staging), and when
  the policy fails on a copy without seal-time PCR values it recovers the PCR
  selection from the object's authPolicy (EVE's UnsealDiskKeyWithRecovery).
* :func:`reseal` unseals with the old policy and stores a copy sealed to the
  new one; the store's ``save`` keeps an unsealable copy at every instant.
* :func:`vault_key` is EVE's FetchSealedVaultKey: generate, migrate a legacy
  plaintext key, or unseal.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain

from tpmseal.client.tpm import Tpm
from tpmseal.errors import (
    IntegrityError,
    NotFoundError,
    PolicyMismatchError,
    TpmsealError,
    UsageError,
)
from tpmseal.recipes import recovery, sealing
from tpmseal.recipes.blob import PcrValues, SealedBlob
from tpmseal.recipes.pcrspec import format_pcrs
from tpmseal.recipes.profiles import Profile
from tpmseal.recipes.signed import SignedPolicy
from tpmseal.recipes.stores import (
    NvStore,
    Store,
    first_candidate,
    nv_public,
    nv_undefine,
    require_candidates,
)
from tpmseal.recipes.trust import TrustRecord, salted_session
from tpmseal.session.auth import AuthSession, PasswordSession, Session
from tpmseal.session.policy import Authorizer
from tpmseal.wire.constants import TPM_RH, TPMA_NV, TPMA_SESSION
from tpmseal.wire.structures import NvPublic, PcrSelectionList

log = logging.getLogger("tpmseal.lifecycle")

VAULT_KEY_BYTES = 32


@dataclass(frozen=True)
class UnsealOptions:
    legacy: bool = False
    allow_downgrade: bool = False
    pin: bytes | None = field(default=None, repr=False)
    trust: TrustRecord | None = None
    recover: bool = True
    policies: tuple[SignedPolicy, ...] = ()  # for a secret sealed to a signer (signed.py)
    #: the signer of an NV-stored object (the NV layout records only public and private)
    authorizer: Authorizer | None = None
    revocation_nv: int | None = None


def _unseal_one(tpm: Tpm, blob: SealedBlob, opts: UnsealOptions,
                carrier: AuthSession | None = None) -> bytes:
    def attempt(b: SealedBlob) -> bytes:
        return sealing.unseal(tpm, b, legacy=opts.legacy, allow_downgrade=opts.allow_downgrade,
                              pin=opts.pin, trust=opts.trust, carrier=carrier,
                              policies=opts.policies)

    if opts.authorizer is not None and blob.authorizer is None and not blob.pcr_values:
        blob = replace(blob, authorizer=opts.authorizer, revocation_nv=opts.revocation_nv)
    try:
        return attempt(blob)
    except PolicyMismatchError:
        if blob.pcr_values or blob.authorizer is not None or not opts.recover:
            raise
        found = recovery.recover(tpm, blob.public, blob.pcrs)
        if found is None:
            raise
        sel, pin = found
        log.warning("unseal with PCRs %s failed; recovered PCRs %s", format_pcrs(blob.pcrs),
                    format_pcrs(sel))
        return attempt(replace(blob, pcrs=sel, pin=pin))


def unseal_stored(tpm: Tpm, store: Store, opts: UnsealOptions) -> bytes:
    """Unseal the first stored copy that unseals; report the first copy's failure."""
    return unseal_source(tpm, store, opts)[0]


def unseal_source(tpm: Tpm, store: Store, opts: UnsealOptions,
                  blobs: Iterator[SealedBlob] | None = None,
                  carrier: AuthSession | None = None) -> tuple[bytes, SealedBlob]:
    """Like :func:`unseal_stored`, also returning the stored copy that unsealed.

    *blobs*: the store's candidates if the caller has just read them. *carrier*:
    the flow's EK-salted session, to carry the encryption (sealing.unseal).
    """
    first_error: TpmsealError | None = None
    for blob in blobs if blobs is not None else require_candidates(tpm, store):
        try:
            secret = _unseal_one(tpm, blob, opts, carrier)
        except TpmsealError as e:
            if first_error is None:
                first_error = e
            log.info("copy in %s did not unseal: %s", store.describe(), e.one_line())
            continue
        store.unsealed(blob)
        return secret, blob
    assert first_error is not None
    raise first_error


def reseal(tpm: Tpm, store: Store, new_pcrs: PcrSelectionList | None, opts: UnsealOptions,
           profile: Profile, *, allow_unmeasured: bool = False,
           target: Store | None = None, add_states: Sequence[PcrValues] = (),
           drop_states: Sequence[PcrValues] = ()) -> SealedBlob:
    """Unseal from *store* and seal the same secret to *new_pcrs* into *target* (default: store).

    One EK-salted session serves both halves (a salted StartAuthSession is the
    expensive command on a chip): it carries the Unseal response's encryption next
    to an unsalted policy session, then reads the PCRs (audited) and authorizes
    Create. With a PIN the unseal needs a salted policy session of its own.

    *add_states* / *drop_states* change the set of allowed PCR states (PolicyOR,
    sealing.seal): the old states (or the old values), minus those dropped, plus
    those added.
    """
    with shared_session(tpm, opts.trust, opts.legacy) as session:
        secret, old = unseal_source(tpm, store, opts, carrier=session)
        same_pcrs = new_pcrs is None or new_pcrs == old.pcrs
        states = old.states if same_pcrs else ()
        if add_states or drop_states:
            states = sealing.change_states(old, new_pcrs or old.pcrs, add_states, drop_states)
        blob = sealing.seal(tpm, secret, new_pcrs or old.pcrs, profile=profile,
                            trust=opts.trust, legacy=opts.legacy,
                            allow_unmeasured=allow_unmeasured, pin=opts.pin,
                            check=old.check is not None or None, session=session,
                            states=states,
                            authorizer=old.authorizer, revocation_nv=old.revocation_nv)
    if target is None:
        store.save(tpm, blob, keep=old)  # the copy that unsealed stays until blob is stored
    else:
        target.save(tpm, blob)
    return blob


def fresh_key(tpm: Tpm, session: AuthSession | None) -> bytes:
    """32 bytes: the TPM's RNG (through *session*, encrypted, if given) mixed with the OS's."""
    if session is not None:
        session.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.encrypt
        tpm_bytes = tpm.get_random(VAULT_KEY_BYTES, session)
    else:
        tpm_bytes = tpm.get_random(VAULT_KEY_BYTES)
    return hashlib.sha256(tpm_bytes + os.urandom(VAULT_KEY_BYTES)).digest()


def _read_legacy(tpm: Tpm, pub: NvPublic | None, session: AuthSession | None) -> bytes | None:
    """The legacy plaintext key in the index *pub* describes, read through *session*
    (encrypted) when given; None if there is no written index."""
    if pub is None or not pub.attributes & TPMA_NV.WRITTEN:
        return None
    sessions: tuple[Session, ...] = ()
    if session is not None:
        if not session.confirmed:  # an audited NV_ReadPublic confirms it (and the size)
            session.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.audit
            pub = tpm.nv_read_public(pub.nv_index, session)
        session.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.encrypt
        sessions = (PasswordSession(), session)
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


def seal_into(tpm: Tpm, store: Store, secret: bytes, pcrs: PcrSelectionList | None,
              profile: Profile, trust: TrustRecord | None, *, force: bool = False,
              legacy: bool = False, allow_unmeasured: bool = False, pin: bytes | None = None,
              check: bool | None = None, states: Sequence[PcrValues] = (),
              authorizer: Authorizer | None = None,
              revocation_nv: int | None = None) -> SealedBlob:
    """Seal *secret* into an empty *store* (or replace its content with *force*).

    An NV store that looks empty is confirmed empty through the same salted
    session the seal then uses, so a forged "no such index" cannot make this
    overwrite a sealed secret, and no second expensive session is started.
    """
    if not force and first_candidate(tpm, store) is not None:
        raise UsageError(f"{store.describe()} already holds a sealed secret",
                         "use `tpmseal reseal` to change its policy, or --force to replace it "
                         "(the old secret is then lost)")
    with shared_session(tpm, trust, legacy) as session:
        if not force and isinstance(store, NvStore):
            store.confirm_nothing_stored(tpm, session)
        blob = sealing.seal(tpm, secret, pcrs, profile=profile, trust=trust, legacy=legacy,
                            allow_unmeasured=allow_unmeasured, pin=pin, check=check,
                            session=session, states=states, authorizer=authorizer,
                            revocation_nv=revocation_nv)
    store.save(tpm, blob)
    return blob


@dataclass(frozen=True)
class VaultResult:
    key: bytes
    action: str  # "generated" | "migrated" | "unsealed"

    def __repr__(self) -> str:
        return f"VaultResult(action={self.action!r})"


def vault_key(tpm: Tpm, profile: Profile, store: NvStore, opts: UnsealOptions, *,
              allow_unmeasured: bool = False) -> VaultResult:
    """EVE's FetchSealedVaultKey, with the legacy index removed only after a verified unseal."""
    assert profile.nv is not None
    legacy_index = profile.nv.legacy_key
    stored = store.candidates(tpm)
    first = next(stored, None)
    if first is not None:
        key = unseal_source(tpm, store, opts, chain([first], stored))[0]
        pub = nv_public(tpm, legacy_index)
        if pub is not None:  # rare: don't start a session for nothing
            with shared_session(tpm, opts.trust, opts.legacy) as session:
                legacy = _read_legacy(tpm, pub, session)
            if legacy is not None:
                _retire_legacy(tpm, legacy_index, legacy, key)
        return VaultResult(key, "unsealed")
    # first boot: one salted session confirms the store is empty and whether a legacy key
    # exists (an audited listing: a forged "no such index" can neither make us overwrite a
    # sealed key nor skip migrating a legacy one), reads the legacy key or draws a fresh
    # one (encrypted), reads the PCRs (audited) and seals (encrypted)
    with shared_session(tpm, opts.trust, opts.legacy) as session:
        listed = store.confirm_nothing_stored(tpm, session, also=[legacy_index])
        pub = listed.get(legacy_index) if listed is not None else nv_public(tpm, legacy_index)
        legacy = _read_legacy(tpm, pub, session)
        key, action = (legacy, "migrated") if legacy is not None else (
            fresh_key(tpm, session), "generated")
        log.info("%s vault key: sealing it", action)
        blob = sealing.seal(tpm, key, store.pcrs, profile=profile, trust=opts.trust,
                            legacy=opts.legacy, allow_unmeasured=allow_unmeasured, pin=opts.pin,
                            session=session)
    store.save(tpm, blob)
    # the copy was just sealed on the path asked for: verify it on the same path
    check = unseal_stored(tpm, store, replace(opts, allow_downgrade=opts.legacy))
    if not hmac.compare_digest(check, key):
        raise IntegrityError("the freshly sealed vault key did not unseal to the same value")
    if legacy is not None:
        _retire_legacy(tpm, legacy_index, legacy, key)
    return VaultResult(key, action)


def _retire_legacy(tpm: Tpm, index: int, legacy: bytes, key: bytes) -> None:
    if hmac.compare_digest(legacy, key):
        log.info("sealed vault key verified; removing the legacy plaintext key in NV %#x", index)
        nv_undefine(tpm, index)
    else:
        log.warning("legacy key in NV %#x differs from the sealed key; leaving it in place", index)


def require_nv(profile: Profile) -> None:
    if profile.nv is None:
        raise NotFoundError(f"profile {profile.name!r} keeps no vault key in NV",
                            "use --profile eve")

