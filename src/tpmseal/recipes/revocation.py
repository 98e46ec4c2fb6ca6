"""Revocation of signed policies: a monotonic NV counter and TPM2_PolicyNV (Part 3 §23.9).

A revocable signed policy ends with PolicyNV(counter ≤ version) and is signed
with a policyRef naming the counter (:func:`revocation_ref`); a secret sealed
``--min-version-nv`` is PolicyAuthorize(key, that policyRef). Raising the
counter (:func:`revoke_below`) voids every policy with a lower version on this
TPM. docs/SECURITY.md says what can and cannot be revoked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tpmseal.client.tpm import Tpm
from tpmseal.errors import IntegrityError, NotFoundError, UsageError
from tpmseal.records import replace
from tpmseal.session.auth import AuthSession, PasswordSession
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import NT_COUNTER, TPM_ALG, TPM_RH, TPMA_NV, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError

if TYPE_CHECKING:  # wire/structures_cold.py: loaded on use
    from tpmseal.wire.structures import NvPublic


def revocation_ref(index: int) -> bytes:
    """The policyRef of policies revocable through counter *index*.

    A secret sealed with ``--min-version-nv`` is PolicyAuthorize(key, this ref),
    so the TPM itself refuses the key's other signatures (empty ref: unversioned
    policies, systemd-measure's), which no counter could revoke.
    """
    return b"tpmseal/nv-counter/" + index.to_bytes(4, "big")


def counter_public(index: int) -> NvPublic:
    """The revocation counter's public area (as read once incremented).

    Fixed so that a signer computes its Name without the device: an NV counter,
    incremented with owner authorization, read with its own empty authValue (so
    PolicyNV needs no owner secret), no dictionary-attack lockout.
    """
    from tpmseal.wire.structures import NvPublic

    return NvPublic(index, TPM_ALG.SHA256, NT_COUNTER | TPMA_NV.OWNERWRITE | TPMA_NV.AUTHREAD
                    | TPMA_NV.NO_DA | TPMA_NV.WRITTEN, b"", 8)


def define_counter(tpm: Tpm, index: int) -> int:
    """Define the revocation counter with :func:`counter_public`'s template if it is
    missing, and increment it once (a counter reads only once written); return its
    value (unauthenticated, for information: a fresh counter starts at the highest
    count any counter on this TPM ever held)."""
    want = counter_public(index)
    try:
        have = tpm.nv_read_public(index)
    except TpmResponseError as e:
        if e.name != "HANDLE":
            raise
        tpm.run(cmds.NV_DefineSpace(TPM_RH.OWNER, b"", replace(
            want, attributes=want.attributes & ~TPMA_NV.WRITTEN)))
        tpm.run(cmds.NV_Increment(TPM_RH.OWNER, index))
    else:
        if have != want:
                raise UsageError(f"NV {index:#x} exists but is not a tpmseal revocation counter",
                             "choose another --min-version-nv index")
    return read_counter(tpm, index, None)


def read_counter(tpm: Tpm, index: int, audit: AuthSession | None) -> int:
    """The counter's value; through *audit* (a salted session) the response HMAC proves
    it, and the index's Name (pinned to the template) joins the command HMAC."""
    tpm.names[index] = counter_public(index).name()
    if audit is None:
        return int.from_bytes(tpm.nv_read(index, 8, index), "big")
    audit.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.audit
    return int.from_bytes(tpm.nv_read(index, 8, index, PasswordSession(), audit), "big")


#: revoke-below increments one by one (each an NV write): refuse absurd distances.
MAX_INCREMENTS = 100_000


def revoke_below(tpm: Tpm, index: int, version: int, audit: AuthSession) -> int:
    """Increment the counter until it is at least *version*: every policy signed with
    a lower version then fails PolicyNV. Returns the final value, verified through
    *audit* (a salted session): NV_Increment's index joins no HMAC (owner password),
    so an interposer can redirect the increments and fake an unaudited read
    (tests/test_attack_revocation.py)."""
    try:
        now = read_counter(tpm, index, audit)
    except TpmResponseError as e:
        if e.name != "HANDLE":
            raise
        raise NotFoundError(f"NV {index:#x} is not defined on this TPM: there is no "
                            "revocation counter to raise", "seal with --authorized-by … "
                            f"--min-version-nv {index:#x} first (it defines the counter), "
                            "or pass the index the secret was sealed with") from None
    if version - now > MAX_INCREMENTS:
        raise UsageError(f"NV {index:#x} is at {now}; reaching {version} takes "
                         f"{version - now} increments (at most {MAX_INCREMENTS})",
                         "revoke in smaller steps, or choose versions near the counter")
    for _ in range(max(0, version - now)):
        tpm.run(cmds.NV_Increment(TPM_RH.OWNER, index))
    final = read_counter(tpm, index, audit)
    if final < version:
        raise IntegrityError(f"NV {index:#x} reads {final} after incrementing to {version}: "
                             "the increments were dropped in transit, possible interposer",
                             "check the bus between CPU and TPM, then run revoke-below again")
    return final
