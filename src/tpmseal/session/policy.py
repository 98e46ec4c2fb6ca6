"""Policy steps that both run on a TPM and compute offline (docs/ARCHITECTURE.md, principle 6).

A policy digest evolves as ``digest_new = H(digest_old ‖ commandCode ‖ args)``
(Part 1 §19.7.2, Part 3 §23). Each :class:`PolicyStep` knows its own update and
the command that performs it in a policy session, so the same list of steps
computes an object's ``authPolicy`` in software at seal time (no trial session,
no round trips) and satisfies it on the TPM at unseal time.

* PolicyPCR (Part 3 §23.7): ``H(old ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖
  pcrDigest)`` with pcrDigest = H(PCR values concatenated in selection order).
* PolicyAuthValue (§23.17) and PolicyPassword (§23.18) both extend with
  TPM_CC_PolicyAuthValue: the two are interchangeable in the digest.
* PolicyOR (§23.6): ``H(zeros ‖ TPM_CC_PolicyOR ‖ branch digests)``; the TPM
  first checks that the session's digest is one of the branches.
* PolicyAuthorize (§23.16): ``H(H(zeros ‖ TPM_CC_PolicyAuthorize ‖ keyName) ‖
  policyRef)``; the TPM first checks a ticket that the key signed
  ``H(session digest ‖ policyRef)``.
* PolicyNV (§23.9): ``H(old ‖ TPM_CC_PolicyNV ‖ H(operandB ‖ offset ‖ operation)
  ‖ nvIndexName)``.
* PolicyAuthorizeNV (§23.22): the TPM first checks that the session's digest
  equals the TPMT_HA stored in the index, then resets it to
  ``H(zeros ‖ TPM_CC_PolicyAuthorizeNV ‖ nvIndexName)`` — the Name the TPM
  computes from its own copy of the index's public area, so a caller that names
  another index ends with another digest.

:class:`Policy` is a whole policy as a value: PCR branches, an optional
authorizer and a PIN. It computes the sealed object's ``authPolicy`` offline and
lists the steps that satisfy it in a session.
"""

from __future__ import annotations

from typing import Any

from tpmseal.records import record
from tpmseal.wire import commands as cmds
from tpmseal.wire.commands import Command, PolicyAuthValue, PolicyPCR
from tpmseal.wire.constants import HASH_SIZES, TPM_ALG, TPM_CC, TPM_RH
from tpmseal.wire.marshal import u16, u32
from tpmseal.wire.structures import DigestList, PcrSelectionList, Public, Ticket, digest

#: PolicyOR takes at most 8 branches (TPML_DIGEST, Part 2 §10.9.3).
MAX_BRANCHES = 8


def pcr_digest(alg: int, values: list[bytes]) -> bytes:
    """H(PCR values concatenated in selection order), the pcrDigest of PolicyPCR."""
    return digest(alg, b"".join(values))


class PolicyStep:
    """One policy assertion: a digest update and the command that asserts it."""

    def update(self, alg: int, old: bytes) -> bytes:
        raise NotImplementedError

    def command(self, session_handle: int) -> Command[Any]:
        raise NotImplementedError


@record
class PcrStep(PolicyStep):
    """TPM2_PolicyPCR with an explicit *pcr_digest* (Part 3 §23.7)."""

    selection: PcrSelectionList
    pcr_digest: bytes

    def update(self, alg: int, old: bytes) -> bytes:
        return digest(alg, old + u32(TPM_CC.PolicyPCR) + self.selection.marshal()
                      + self.pcr_digest)

    def command(self, session_handle: int) -> PolicyPCR:
        return PolicyPCR(session_handle, self.pcr_digest, self.selection)


@record
class AuthValueStep(PolicyStep):
    """TPM2_PolicyAuthValue: the object's authValue keys the session HMAC (§23.17)."""

    def update(self, alg: int, old: bytes) -> bytes:
        return digest(alg, old + u32(TPM_CC.PolicyAuthValue))

    def command(self, session_handle: int) -> PolicyAuthValue:
        return PolicyAuthValue(session_handle)


@record
class PasswordStep(PolicyStep):
    """TPM2_PolicyPassword: the authValue travels as a plain password (§23.18).

    Its digest equals PolicyAuthValue's; prefer :class:`AuthValueStep`, which
    never puts the value on the bus.
    """

    def update(self, alg: int, old: bytes) -> bytes:
        return digest(alg, old + u32(TPM_CC.PolicyAuthValue))

    def command(self, session_handle: int) -> cmds.PolicyPassword:
        return cmds.PolicyPassword(session_handle)


@record
class OrStep(PolicyStep):
    """TPM2_PolicyOR over 2 to 8 branch digests (Part 3 §23.6)."""

    branches: tuple[bytes, ...]

    def update(self, alg: int, old: bytes) -> bytes:
        return digest(alg, bytes(HASH_SIZES[alg]) + u32(TPM_CC.PolicyOR)
                      + b"".join(self.branches))

    def command(self, session_handle: int) -> cmds.PolicyOR:
        return cmds.PolicyOR(session_handle, DigestList(self.branches))


@record
class AuthorizeStep(PolicyStep):
    """TPM2_PolicyAuthorize (Part 3 §23.16): *key_name* signed *approved_policy*.

    Offline only the key's Name and the policyRef matter; on the TPM the step
    needs the TPMT_TK_VERIFIED *ticket* from VerifySignature.
    """

    key_name: bytes
    policy_ref: bytes = b""
    approved_policy: bytes = b""
    ticket: Ticket | None = None

    def update(self, alg: int, old: bytes) -> bytes:
        first = digest(alg, bytes(HASH_SIZES[alg]) + u32(TPM_CC.PolicyAuthorize) + self.key_name)
        return digest(alg, first + self.policy_ref)

    def command(self, session_handle: int) -> cmds.PolicyAuthorize:
        if self.ticket is None:
            raise ValueError("PolicyAuthorize needs the ticket of TPM2_VerifySignature")
        return cmds.PolicyAuthorize(session_handle, self.approved_policy, self.policy_ref,
                               self.key_name, self.ticket)


@record
class NvStep(PolicyStep):
    """TPM2_PolicyNV (Part 3 §23.9): NV index contents at *offset* ``operation`` *operand*.

    *auth_handle* authorizes reading the index (the index itself by default).
    """

    nv_index: int
    nv_name: bytes
    operand: bytes
    operation: int
    offset: int = 0
    auth_handle: int | None = None

    def update(self, alg: int, old: bytes) -> bytes:
        args = digest(alg, self.operand + u16(self.offset) + u16(self.operation))
        return digest(alg, old + u32(TPM_CC.PolicyNV) + args + self.nv_name)

    def command(self, session_handle: int) -> cmds.PolicyNV:
        auth = self.nv_index if self.auth_handle is None else self.auth_handle
        return cmds.PolicyNV(auth, self.nv_index, session_handle, self.operand, self.offset,
                        self.operation)


@record
class AuthorizeNvStep(PolicyStep):
    """TPM2_PolicyAuthorizeNV (Part 3 §23.22): the policy so far is the one stored in
    *nv_index*, whose Name (public area with TPMA_NV_WRITTEN) is *nv_name*.

    *auth_handle* authorizes reading the index: the owner (TPMA_NV_OWNERREAD,
    systemd-pcrlock's index, empty owner authValue) by default.
    """

    nv_index: int
    nv_name: bytes
    auth_handle: int = TPM_RH.OWNER

    def update(self, alg: int, old: bytes) -> bytes:
        return digest(alg, bytes(HASH_SIZES[alg]) + u32(TPM_CC.PolicyAuthorizeNV)
                      + self.nv_name)

    def command(self, session_handle: int) -> cmds.PolicyAuthorizeNV:
        return cmds.PolicyAuthorizeNV(self.auth_handle, self.nv_index, session_handle)


@record
class Authorizer:
    """A policy signer: its public key as TPM2_LoadExternal loads it, and the policyRef."""

    key: Public
    policy_ref: bytes = b""

    @property
    def name(self) -> bytes:
        return self.key.name()


@record
class Policy:
    """What a sealed object's authPolicy requires, as a value.

    * *branches*: the allowed PCR states, each a PolicyPCR step; one is a plain
      PolicyPCR, 2 to 8 are combined with PolicyOR. Empty with an *authorizer*.
    * *authorizer*: any state the signer signs (PolicyAuthorize); the PCR
      condition then lives in the signed policy, not in the object.
    * *pin*: PolicyAuthValue last, so the object's authValue keys the HMAC.
    """

    branches: tuple[PcrStep, ...] = ()
    authorizer: Authorizer | None = None
    pin: bool = False

    def __post_init__(self) -> None:
        if self.authorizer is None and not 1 <= len(self.branches) <= MAX_BRANCHES:
            raise ValueError(f"a PCR policy has 1 to {MAX_BRANCHES} branches, "
                             f"not {len(self.branches)}")
        if self.authorizer is not None and self.branches:
            raise ValueError("a signed policy's PCR condition is in the signature")

    def digest(self, alg: int = TPM_ALG.SHA256) -> bytes:
        """The authPolicy, computed offline."""
        if self.authorizer is not None:
            return compute_policy(self.finish([AuthorizeStep(
                self.authorizer.name, self.authorizer.policy_ref)]), alg)
        return compute_policy(self.steps(0, alg), alg)

    def steps(self, branch: int = 0, alg: int = TPM_ALG.SHA256) -> list[PolicyStep]:
        """The steps that satisfy branch *branch* of a PCR policy (no authorizer)."""
        chosen: list[PolicyStep] = [self.branches[branch]]
        if len(self.branches) > 1:
            chosen.append(OrStep(tuple(compute_policy([b], alg) for b in self.branches)))
        return self.finish(chosen)

    def finish(self, steps: list[PolicyStep]) -> list[PolicyStep]:
        """*steps* followed by PolicyAuthValue when the policy has a PIN."""
        return steps + ([AuthValueStep()] if self.pin else [])


def signed_digest(approved: bytes, policy_ref: bytes, alg: int = TPM_ALG.SHA256) -> bytes:
    """aHash = H(approvedPolicy ‖ policyRef), what a signer signs (Part 3 §23.16)."""
    return digest(alg, approved + policy_ref)


def compute_policy(steps: list[PolicyStep], alg: int = TPM_ALG.SHA256) -> bytes:
    """The policy digest the TPM would hold after *steps*, starting from zeros."""
    d = bytes(HASH_SIZES[alg])
    for s in steps:
        d = s.update(alg, d)
    return d
