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
"""

from __future__ import annotations

from typing import Any

from tpmseal.records import record
from tpmseal.wire.commands import Command, PolicyAuthValue, PolicyPassword, PolicyPCR
from tpmseal.wire.constants import HASH_SIZES, TPM_ALG, TPM_CC
from tpmseal.wire.marshal import u32
from tpmseal.wire.structures import PcrSelectionList, digest


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

    def command(self, session_handle: int) -> PolicyPassword:
        return PolicyPassword(session_handle)


def compute_policy(steps: list[PolicyStep], alg: int = TPM_ALG.SHA256) -> bytes:
    """The policy digest the TPM would hold after *steps*, starting from zeros."""
    d = bytes(HASH_SIZES[alg])
    for s in steps:
        d = s.update(alg, d)
    return d
