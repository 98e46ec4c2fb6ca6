"""Recover the PCR selection of a sealed object whose metadata is missing or wrong.

EVE's NV layout stores no PCR list, and a device's configured list can drift
from the one a blob was sealed with. The sealed object's ``authPolicy`` is
PolicyPCR over *some* selection (optionally followed by PolicyAuthValue); with
the current PCR values we can recompute that digest for candidate selections
in software and compare — first the profile's default, then every subset of
PCRs 0-15 of the bank (EVE's RecoverDiskKeyPolicyPcr). A match means the
current values satisfy the policy with that selection; no match means the PCRs
themselves changed.
"""

from __future__ import annotations

from itertools import combinations

from tpmseal.client.tpm import Tpm
from tpmseal.session.auth import Session
from tpmseal.session.policy import AuthValueStep, PcrStep, PolicyStep, compute_policy, pcr_digest
from tpmseal.wire.constants import TPM_ALG, TPM_CC
from tpmseal.wire.marshal import u8, u16, u32
from tpmseal.wire.structures import PcrSelection, PcrSelectionList, Public

CANDIDATES = tuple(range(16))


def _policy(sel: PcrSelectionList, values: dict[tuple[int, int], bytes], pin: bool) -> bytes:
    steps: list[PolicyStep] = [
        PcrStep(sel, pcr_digest(TPM_ALG.SHA256, [values[k] for k in sel.pairs()]))]
    if pin:
        steps.append(AuthValueStep())
    return compute_policy(steps)


def find_selection(public: Public, values: dict[tuple[int, int], bytes],
                   first: PcrSelectionList | None = None,
                   bank: int = TPM_ALG.SHA256) -> tuple[PcrSelectionList, bool] | None:
    """The selection (and whether a PIN step follows) whose policy equals the object's.

    *first* is tried first; then every non-empty subset of PCRs 0-15 of *bank*,
    smallest first. The subset loop hashes the PolicyPCR inputs directly (one
    TPML_PCR_SELECTION of one bank, 3-byte bitmap — Part 2 §10.6.2) so that the
    whole search takes a fraction of a second even when nothing matches.
    """
    target = public.auth_policy
    if first is not None and all(k in values for k in first.pairs()):
        for pin in (False, True):
            if _policy(first, values, pin) == target:
                return first, pin
    present = [i for i in CANDIDATES if (bank, i) in values]
    prefix = bytes(32) + u32(TPM_CC.PolicyPCR) + u32(1) + u16(bank) + u8(3)
    auth_value = u32(TPM_CC.PolicyAuthValue)
    import hashlib  # many hashes: the fastest API (only when PCRs are recovered)
    sha256 = hashlib.sha256
    for n in range(1, len(present) + 1):
        for combo in combinations(present, n):
            bitmap = sum(1 << i for i in combo).to_bytes(3, "little")
            pcr_hash = sha256(b"".join(values[(bank, i)] for i in combo)).digest()
            digest = sha256(prefix + bitmap + pcr_hash).digest()
            pin = digest != target
            if not pin or sha256(digest + auth_value).digest() == target:
                return PcrSelectionList((PcrSelection(bank, combo),)), pin
    return None


def recover(tpm: Tpm, public: Public, first: PcrSelectionList | None = None,
            bank: int = TPM_ALG.SHA256,
            *sessions: Session) -> tuple[PcrSelectionList, bool] | None:
    """Read PCRs 0-15 of *bank* (2 PCR_Read calls) and search for the selection.

    A match always names the selection the object's authPolicy covers (forging
    another needs a preimage), but whether the *current* values match, and "no
    match", can be forged: pass an EK-salted audit session (*sessions*) when the
    answer is reported as a PCR change, or as tampering.
    """
    values = tpm.pcr_read(PcrSelectionList((PcrSelection(bank, CANDIDATES),)), *sessions)
    if first is not None:
        missing = PcrSelectionList(tuple(
            PcrSelection(s.hash_alg, tuple(i for i in s.pcrs if (s.hash_alg, i) not in values))
            for s in first.selections if any((s.hash_alg, i) not in values for i in s.pcrs)))
        if missing.selections:
            values.update(tpm.pcr_read(missing, *sessions))
    return find_selection(public, values, first, bank)
