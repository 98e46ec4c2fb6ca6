"""systemd-pcrlock policies (systemd 255+): the ``tpm2_pcrlock`` systemd-tpm2 token.

What systemd does (src/shared/tpm2-util.c, src/pcrlock/pcrlock.c; docs/ARCHITECTURE.md):

* ``systemd-pcrlock make-policy`` predicts the allowed values of each PCR, folds
  them into one policy digest (``tpm2_calculate_policy_super_pcr``: one PolicyPCR
  over every PCR with a single allowed value, then for each PCR with 2-8 values,
  in index order, a PolicyOR over "the digest so far extended by PolicyPCR of
  this PCR with that value") and writes it as a TPMT_HA into an NV index it
  defined (ordinary, TPMA_NV_WRITEALL|POLICYWRITE|OWNERREAD, nameAlg SHA-256,
  written through PolicySigned by a recovery PIN). The prediction and the index
  go to ``pcrlock.json`` (``/run/systemd``, then ``/var/lib/systemd``): fields
  ``pcrBank``, ``pcrValues`` (``[{"pcr": N, "values": [hex, ...]}, ...]``),
  ``nvIndex``, ``nvHandle`` (tpm2-tss' serialized ESYS_TR), ``nvPublic``
  (base64 TPM2B_NV_PUBLIC), ``srkHandle``, ``pinPublic``, ``pinPrivate``.
* systemd-cryptenroll seals the key under the SRK with authPolicy
  PolicyAuthorizeNV(index) [then PolicyPCR over ``tpm2-pcrs``] [then
  PolicyAuthValue]; the token says ``"tpm2_pcrlock": true`` and (newer systemd)
  ``tpm2_pcrlock_nv``, the index's serialized ESYS_TR.
* To unseal, systemd runs the fold on the TPM (``tpm2_policy_super_pcr``:
  PolicyPCR with the TPM's current values, then PolicyPCR + PolicyOR per
  multi-value PCR), then PolicyAuthorizeNV with the owner's (empty) password.

tpmseal runs the same steps in its EK-salted, confirmed policy session, with
the Unseal response encrypted. Nothing read from the bus is trusted:
the index's Name is computed from ``nvPublic`` (with TPMA_NV_WRITTEN, as the
TPM reports it once written), never from NV_ReadPublic, and checked offline
against the sealed object's authPolicy. The TPM enforces the rest: it compares
the session digest with the index's contents and replaces it by a digest of
*its own* copy of the index's Name (Part 3 §23.22), so an interposer naming
another index, or rewriting PolicyPCR/PolicyOR, leaves a digest Unseal
refuses; a tampered ``pcrlock.json`` prediction leaves one PolicyAuthorizeNV
refuses.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from tpmseal import files, safejson
from tpmseal.client.tpm import Tpm
from tpmseal.errors import (
    BUS_HINT,
    BadInputError,
    DecodeError,
    IntegrityError,
    PolicyMismatchError,
    UsageError,
)
from tpmseal.recipes import pcrspec
from tpmseal.recipes.owner_primary import (
    SealedUnderPrimary,
    require_trust,
    unseal_under_primary,
)
from tpmseal.recipes.trust import TrustRecord, salted_session
from tpmseal.session.auth import PasswordSession
from tpmseal.session.policy import (
    MAX_BRANCHES,
    AuthorizeNvStep,
    OrStep,
    PcrStep,
    PolicyStep,
    compute_policy,
    pcr_digest,
)
from tpmseal.wire.constants import (
    HASH_SIZES,
    TPM_ALG,
    TPM_HT,
    TPM_RH,
    TPMA_NV,
    TPMA_SESSION,
    handle_type,
)
from tpmseal.wire.marshal import parse_exact, u16
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import NvPublic, PcrSelection, PcrSelectionList

#: Where systemd looks for the policy, in order (tpm2_pcrlock_search_file).
PATHS = ("/run/systemd/pcrlock.json", "/var/lib/systemd/pcrlock.json")
HINT = "run `systemd-pcrlock make-policy` again, or pass the right file with --pcrlock FILE"
MAX_SIZE = 1 << 20
MAX_PCR = 24


@dataclass(frozen=True)
class PcrlockPolicy:
    """A parsed ``pcrlock.json``: the allowed values per PCR, and the NV index."""

    path: str
    bank: int
    values: dict[int, tuple[bytes, ...]]  # PCR -> allowed values, in the file's order
    nv: NvPublic  # nvPublic, as defined (before the first write)
    nv_handle: bytes  # nvHandle, the serialized ESYS_TR (compared, not parsed)

    @property
    def nv_name(self) -> bytes:
        """The index's Name as the TPM computes it once the index is written."""
        return self.nv.written().name()

    def _single(self) -> list[int]:
        return [p for p in sorted(self.values) if len(self.values[p]) == 1]

    def _sel(self, pcrs: list[int]) -> PcrSelectionList:
        return PcrSelectionList((PcrSelection(self.bank, tuple(pcrs)),))

    def digest(self) -> bytes:
        """The fold of the prediction (tpm2_calculate_policy_super_pcr): what the index
        must hold for a state the prediction allows."""
        return compute_policy(self.steps(offline=True))

    def steps(self, *, offline: bool = False) -> list[PolicyStep]:
        """The fold as policy steps, then PolicyAuthorizeNV. On the TPM (*offline*
        false) each PolicyPCR takes the current values; PolicyOR's branches are
        computed here from the prediction."""
        single = self._single()
        steps: list[PolicyStep] = []
        so_far = bytes(HASH_SIZES[TPM_ALG.SHA256])  # the fold's digest, computed offline
        if single:
            sel = self._sel(single)
            step = PcrStep(sel, pcr_digest(self.bank, [self.values[p][0] for p in single]))
            so_far = step.update(TPM_ALG.SHA256, so_far)
            steps.append(step if offline else PcrStep(sel, b""))
        for pcr in sorted(p for p in self.values if p not in single):
            sel = self._sel([pcr])
            either = OrStep(tuple(PcrStep(sel, pcr_digest(self.bank, [v])).update(
                TPM_ALG.SHA256, so_far) for v in self.values[pcr]))
            so_far = either.update(TPM_ALG.SHA256, so_far)
            steps += [either] if offline else [PcrStep(sel, b""), either]
        if offline:
            return steps
        return [*steps, AuthorizeNvStep(self.nv.nv_index, self.nv_name)]

    def check_state(self, now: Mapping[tuple[int, int], bytes]) -> None:
        """Raise :class:`PolicyMismatchError` naming the PCRs whose value *now* the
        prediction does not allow (reported only on values read in an audited session:
        :func:`unseal`)."""
        off = [p for p in sorted(self.values) if now.get((self.bank, p)) not in self.values[p]]
        if off:
            bank = pcrspec.bank_name(self.bank)
            which = (f"PCRs {', '.join(map(str, off))} hold values" if len(off) > 1
                     else f"PCR {off[0]} holds a value")
            raise PolicyMismatchError(
                f"PCR policy check failed: {bank} {which} the pcrlock policy {self.path} "
                "does not allow",
                {bank: off}, "boot a configuration systemd-pcrlock predicted, or run "
                             "`systemd-pcrlock make-policy` from a trusted state")

    @property
    def selection(self) -> PcrSelectionList:
        return self._sel(sorted(self.values))


def _where(path: str) -> str:
    return f"pcrlock policy {path}"


def _nv_public(raw: bytes, where: str) -> NvPublic:
    try:
        return parse_exact(raw, lambda r: r.sized(NvPublic.unmarshal, "TPM2B_NV_PUBLIC"),
                           "TPM2B_NV_PUBLIC")
    except DecodeError as e:
        raise BadInputError(f"{where}: nvPublic is malformed ({e.message})", HINT) from None


def _values(entries: Any, bank: int, where: str) -> dict[int, tuple[bytes, ...]]:
    if not isinstance(entries, list):
        raise BadInputError(f"{where}: pcrValues is not a list", HINT)
    out: dict[int, list[bytes]] = {}
    for e in entries:
        pcr = e.get("pcr") if isinstance(e, dict) else None
        values = e.get("values") if isinstance(e, dict) else None
        if not (isinstance(pcr, int) and not isinstance(pcr, bool) and 0 <= pcr < MAX_PCR
                and isinstance(values, list) and all(isinstance(v, str) for v in values)):
            raise BadInputError(f"{where}: a pcrValues entry is not "
                                "{\"pcr\": 0-23, \"values\": [hex, ...]}", HINT)
        have = out.setdefault(pcr, [])
        for v in values:
            try:
                value = bytes.fromhex(v)
            except ValueError:
                raise BadInputError(f"{where}: PCR {pcr} has a value that is not hex",
                                    HINT) from None
            if len(value) != HASH_SIZES[bank]:
                raise BadInputError(f"{where}: PCR {pcr} has a {len(value)}-byte value in "
                                    f"the {pcrspec.bank_name(bank)} bank", HINT)
            if value not in have:  # systemd keeps an ordered set: duplicates count once
                have.append(value)
    for pcr, vals in out.items():
        if not 1 <= len(vals) <= MAX_BRANCHES:
            raise BadInputError(f"{where}: PCR {pcr} has {len(vals)} allowed values "
                                f"(systemd allows 1 to {MAX_BRANCHES})", HINT)
    if not out:
        raise BadInputError(f"{where}: pcrValues lists no PCR", HINT)
    return {p: tuple(v) for p, v in out.items()}


def parse(text: bytes, path: str) -> PcrlockPolicy:
    """Parse ``pcrlock.json`` (untrusted: every field is checked; a wrong one can only
    deny, since the TPM compares the fold with the index and the index with the
    sealed object)."""
    where = _where(path)
    doc = safejson.loads(text, f"{where} is malformed", HINT)
    if not isinstance(doc, dict):
        raise BadInputError(f"{where} is not a JSON object", HINT)
    try:
        bank = pcrspec.bank_alg(str(doc["pcrBank"]))
        index = doc["nvIndex"]
        nv = _nv_public(base64.b64decode(str(doc["nvPublic"]), validate=True), where)
        nv_handle = base64.b64decode(str(doc.get("nvHandle", "")), validate=True)
        values = _values(doc["pcrValues"], bank, where)
    except KeyError as e:
        raise BadInputError(f"{where} lacks the field {e}", HINT) from None
    except (binascii.Error, ValueError):
        raise BadInputError(f"{where}: nvPublic or nvHandle is not base64", HINT) from None
    except UsageError as e:  # an unknown bank name
        raise BadInputError(f"{where}: {e.message}", HINT) from None
    if not isinstance(index, int) or isinstance(index, bool) or index != nv.nv_index:
        raise BadInputError(f"{where}: nvIndex is not the index nvPublic describes", HINT)
    if handle_type(index) != TPM_HT.NV_INDEX or nv.name_alg != TPM_ALG.SHA256:
        raise BadInputError(f"{where}: {index:#010x} is not a SHA-256 NV index", HINT)
    if not nv.attributes & TPMA_NV.OWNERREAD:
        raise UsageError(f"{where}: the owner may not read NV index {index:#010x}, which "
                         "systemd-pcrlock's indices allow", "unlock it with systemd-cryptsetup")
    if bank != TPM_ALG.SHA256:
        raise UsageError(f"{where} predicts the {pcrspec.bank_name(bank)} bank; tpmseal "
                         "reads sha256 pcrlock policies", "unlock it with systemd-cryptsetup")
    return PcrlockPolicy(path, bank, values, nv, nv_handle)


def load(path: str | None, token_nv: bytes | None) -> PcrlockPolicy:
    """The pcrlock policy at *path*, or where systemd looks; *token_nv* (the token's
    ``tpm2_pcrlock_nv``) must name the same index when both are known."""
    if path is None:
        path = next((p for p in PATHS if os.path.exists(p)), None)
        if path is None:
            raise UsageError("this systemd-tpm2 token is sealed to a systemd-pcrlock policy "
                             f"and there is no {' or '.join(PATHS)} (the boot credential "
                             "copy is not read)", "pass the policy with --pcrlock FILE")
    pol = parse(files.read_input(path, "pcrlock policy", MAX_SIZE), path)
    if token_nv and pol.nv_handle and not hmac.compare_digest(token_nv, pol.nv_handle):
        raise BadInputError(f"{_where(path)} is for another NV index than the token's "
                            "tpm2_pcrlock_nv", HINT)
    return pol


def _forged_unless_changed(tpm: Tpm, lock: PcrlockPolicy, trust: TrustRecord,
                           said: str) -> NoReturn:
    """After the PCRs looked off the prediction (a plain PCR_Read, or PolicyPCR/PolicyOR's
    TPM_RC_VALUE: neither HMAC-checked), read them again in an audited session salted to
    the pinned EK: a PCR is only named as off on those values (PolicyMismatchError), and
    values that fit mean the answer was forged (IntegrityError; SECURITY.md row 31)."""
    audit = salted_session(tpm, trust, TPMA_SESSION.continueSession | TPMA_SESSION.audit)
    with tpm.scoped(audit.handle):
        lock.check_state(tpm.pcr_read(lock.selection, audit))
    raise IntegrityError(f"{said} the PCRs do not fit the pcrlock policy {lock.path}, but "
                         "the same PCRs read through the pinned endorsement key do: a forged "
                         "answer (possible interposer)", BUS_HINT)


def _forged_unless_index_differs(tpm: Tpm, lock: PcrlockPolicy, trust: TrustRecord) -> None:
    """After PolicyAuthorizeNV failed (its answer has no HMAC): IntegrityError if the index,
    read as systemd reads it (the owner's empty password) in an audited session salted to
    the pinned EK, holds the fold of this prediction, so the refusal was forged or the
    command redirected (SECURITY.md row 32). The index's Name, from nvPublic, joins the
    command HMAC, so the read cannot be pointed elsewhere. If the TPM refuses the read
    too, the refusal's own explanation stands."""
    index = lock.nv.nv_index
    tpm.names[index] = lock.nv_name
    audit = salted_session(tpm, trust, TPMA_SESSION.continueSession | TPMA_SESSION.audit)
    try:
        with tpm.scoped(audit.handle):
            held = tpm.nv_read(index, lock.nv.data_size, TPM_RH.OWNER, PasswordSession(),
                               audit)
    except TpmResponseError:
        return
    if hmac.compare_digest(held, u16(TPM_ALG.SHA256) + lock.digest()):
        raise IntegrityError(
            f"the TPM refused TPM2_PolicyAuthorizeNV, but NV index {index:#010x}, read through "
            f"the pinned endorsement key, holds the policy {lock.path} predicts: a forged "
            "answer or a redirected command (possible interposer)", BUS_HINT)


def unseal(tpm: Tpm, obj: SealedUnderPrimary, lock: PcrlockPolicy, trust: TrustRecord | None,
           auth: bytes | None) -> bytes:
    """Unseal *obj*, whose policy *lock*'s steps lead (``obj.lead``), on tpmseal's encrypted
    path; *auth* is the object's authValue when its policy ends in PolicyAuthValue."""
    if not obj.pcrs.selections and not hmac.compare_digest(
            compute_policy(obj.steps({}, auth is not None)), obj.public.auth_policy):
        raise BadInputError(f"{_where(lock.path)}: the sealed object's policy is not "
                            f"PolicyAuthorizeNV of NV index {lock.nv.nv_index:#010x} as nvPublic "
                            "describes it" + (" with a PIN" if auth is not None else ""),
                            "the policy file or the token was edited, or they belong to "
                            f"different enrolments; {HINT}")
    trust = require_trust(obj, trust)
    try:
        lock.check_state(tpm.pcr_read(lock.selection))
    except PolicyMismatchError:
        _forged_unless_changed(tpm, lock, trust, "PCR_Read said")
    try:
        return unseal_under_primary(tpm, obj, trust, auth)
    except TpmResponseError as e:
        if e.command in ("PolicyPCR", "PolicyOR") and e.name == "VALUE":
            _forged_unless_changed(tpm, lock, trust, f"TPM2_{e.command} said")
        if e.command == "PolicyAuthorizeNV":
            _forged_unless_index_differs(tpm, lock, trust)
        if e.command == "PolicyAuthorizeNV" and e.name == "VALUE":
            raise BadInputError(
                f"the TPM refused TPM2_PolicyAuthorizeNV: NV index {lock.nv.nv_index:#010x} does "
                f"not hold the policy {lock.path} predicts (the file is stale or was edited, "
                "or a command was altered in transit)", HINT) from None
        if e.command == "PolicyAuthorizeNV" and e.name in ("AUTH_FAIL", "BAD_AUTH"):
            raise UsageError("TPM2_PolicyAuthorizeNV needs the owner's authorization, and the "
                             "owner hierarchy has a password (systemd cannot unlock it either), "
                             "or this answer and the audited read's were forged in transit",
                             "clear the owner password, or unlock with the recovery "
                             "passphrase") from None
        if e.command == "PolicyAuthorizeNV":
            raise BadInputError(f"the TPM refused TPM2_PolicyAuthorizeNV on NV index "
                                f"{lock.nv.nv_index:#010x} ({e.rc.describe()})", HINT) from None
        if e.name == "POLICY_FAIL":
            what = (f"{pcrspec.format_pcrs(obj.pcrs)} changed since enrolment, or "
                    if obj.pcrs.selections else "")
            raise IntegrityError(
                "the TPM refused the pcrlock policy at TPM2_Unseal although PolicyAuthorizeNV "
                f"passed: {what}a command or handle (the NV index) was altered in transit",
                BUS_HINT) from None
        raise
