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
from tpmseal.session.policy import AuthValueStep, PcrStep, PolicyStep, compute_policy, pcr_digest
from tpmseal.wire.constants import TPM_ALG
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
    """The selection (and whether a PIN step follows) whose policy equals the object's."""
    target = public.auth_policy
    tries: list[PcrSelectionList] = [first] if first is not None else []
    for n in range(1, len(CANDIDATES) + 1):
        tries += [PcrSelectionList((PcrSelection(bank, combo),))
                  for combo in combinations(CANDIDATES, n)]
    for pin in (False, True):
        for sel in tries:
            if all(k in values for k in sel.pairs()) and _policy(sel, values, pin) == target:
                return sel, pin
    return None


def recover(tpm: Tpm, public: Public, first: PcrSelectionList | None = None,
            bank: int = TPM_ALG.SHA256) -> tuple[PcrSelectionList, bool] | None:
    """Read PCRs 0-15 of *bank* (2 PCR_Read calls) and search for the selection."""
    values = tpm.pcr_read(PcrSelectionList((PcrSelection(bank, CANDIDATES),)))
    if first is not None:
        missing = PcrSelectionList(tuple(
            PcrSelection(s.hash_alg, tuple(i for i in s.pcrs if (s.hash_alg, i) not in values))
            for s in first.selections if any((s.hash_alg, i) not in values for i in s.pcrs)))
        if missing.selections:
            values.update(tpm.pcr_read(missing))
    return find_selection(public, values, first, bank)
