"""Signed PCR policies: policy files, signing, and satisfying PolicyAuthorize.

A signer key (recipes/signer.py) signs ``aHash = SHA-256(approvedPolicy ‖
policyRef)`` where approvedPolicy is the PolicyPCR digest of one release's PCR
values (Part 3 §23.16), plus PolicyNV for a revocable one
(recipes/revocation.py). A secret sealed with ``authPolicy =
PolicyAuthorize(key Name, policyRef)`` then unseals in any state some signed
policy covers, so a new release needs a new signature, not a reseal.

On the TPM: PolicyPCR with the signed pcrDigest (the TPM compares it with the
PCRs), LoadExternal of the public key in the *owner* hierarchy (in the NULL
hierarchy VerifySignature returns a NULL ticket, which PolicyAuthorize refuses),
VerifySignature (ticket), FlushContext, PolicyAuthorize. Which signed policy
covers the current state is decided by the TPM itself: a PolicyPCR whose
pcrDigest does not match the PCRs fails with TPM_RC_VALUE and leaves the
session's digest as it was, so the next candidate is tried in the same
session. An interposer can only turn a pass into a failure: a forged success
leaves a digest that PolicyAuthorize's ticket check (or Unseal) refuses.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from tpmseal import safejson
from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, IntegrityError, PolicyMismatchError, UsageError
from tpmseal.files import read_input
from tpmseal.log import get_logger
from tpmseal.recipes import pcrspec
from tpmseal.recipes.revocation import counter_public, revocation_ref
from tpmseal.recipes.signer import crypto_modules, fingerprint
from tpmseal.records import record
from tpmseal.session.auth import AuthSession
from tpmseal.session.policy import (
    Authorizer,
    AuthorizeStep,
    NvStep,
    PcrStep,
    PolicyStep,
    compute_policy,
    signed_digest,
)
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_EO, TPM_RH, TPM_ST
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import PcrSelectionList, Public, Signature

log = get_logger("tpmseal.signed")

FORMAT = "tpmseal-signed-policy/1"

# ------------------------------------------------------------------ signed policies


@record
class SignedPolicy:
    """One signed approvedPolicy, as read from a policy file.

    *pcr_digest* is None for systemd-measure entries, which record only the
    PolicyPCR digest: the TPM then computes it from the current values.
    """

    pcrs: PcrSelectionList
    pcr_digest: bytes | None
    approved_policy: bytes
    policy_ref: bytes
    key_fingerprint: bytes
    signature: bytes  # PKCS#1 v1.5 for RSA, DER for ECDSA: what the signer produced
    version: int | None = None
    source: str = ""
    nv_index: int | None = None  # revocation counter: valid while counter <= version

    @property
    def steps(self) -> list[PolicyStep]:
        """The approved steps, run before PolicyAuthorize."""
        return approved_steps(self.pcrs, self.pcr_digest or b"", self.version, self.nv_index)

    def to_systemd_json(self) -> str:
        """systemd-measure's signature JSON for this policy (unversioned policies only)."""
        if self.nv_index is not None or self.policy_ref:
            raise UsageError("a revocable policy has no systemd-measure form",
                             "drop --nv-index for --format systemd")
        banks = {s.hash_alg for s in self.pcrs.selections if s.pcrs}
        if banks != {TPM_ALG.SHA256}:
            raise UsageError("systemd-measure's format covers sha256 PCRs only",
                             "sign sha256 PCRs, or drop --format systemd")
        doc = {"sha256": [{"pcrs": [i for _, i in self.pcrs.pairs()],
                           "pkfp": self.key_fingerprint.hex(),
                           "pol": self.approved_policy.hex(),
                           "sig": base64.b64encode(self.signature).decode()}]}
        return json.dumps(doc) + "\n"

    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "pcrs": pcrspec.to_dict(self.pcrs),
            "pcr_digest": None if self.pcr_digest is None else self.pcr_digest.hex(),
            "approved_policy": self.approved_policy.hex(),
            "policy_ref": self.policy_ref.hex(),
            "version": self.version,
            "nv_index": None if self.nv_index is None else f"{self.nv_index:#010x}",
            "key_fingerprint": self.key_fingerprint.hex(),
            "signature": base64.b64encode(self.signature).decode(),
        }
        return json.dumps(doc, indent=2) + "\n"


def approved_steps(pcrs: PcrSelectionList, pcr_digest: bytes, version: int | None,
                   nv_index: int | None) -> list[PolicyStep]:
    """PolicyPCR, then (for a revocable policy) PolicyNV: counter <= version."""
    steps: list[PolicyStep] = [PcrStep(pcrs, pcr_digest)]
    if nv_index is not None:
        if version is None:
            raise UsageError("a revocable policy needs a --version", "add --version N")
        steps.append(NvStep(nv_index, counter_public(nv_index).name(),
                            version.to_bytes(8, "big"), TPM_EO.UNSIGNED_LE))
    return steps


def sign(key: Any, pcrs: PcrSelectionList, pcr_digest: bytes, *, policy_ref: bytes = b"",
         version: int | None = None, nv_index: int | None = None) -> SignedPolicy:
    """Sign the PolicyPCR digest of *pcrs* holding values whose digest is *pcr_digest*
    (followed by the revocation condition when *nv_index* is given)."""
    if version is not None and not 0 <= version < 1 << 64:
        raise UsageError("--version must be between 0 and 2**64-1", "give a smaller --version")
    approved = compute_policy(approved_steps(pcrs, pcr_digest, version, nv_index))
    if nv_index is not None:
        policy_ref = revocation_ref(nv_index)
    ahash = signed_digest(approved, policy_ref)
    hashes, _, ec, padding, rsa, utils = crypto_modules()
    pre = utils.Prehashed(hashes.SHA256())
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(ahash, padding.PKCS1v15(), pre)
    else:
        sig = key.sign(ahash, ec.ECDSA(pre))
    return SignedPolicy(pcrs, pcr_digest, approved, policy_ref, fingerprint(key.public_key()),
                        sig, version, nv_index=nv_index)


def verify(policy: SignedPolicy, public_key: Any) -> bool:
    """Does *public_key* sign *policy* (checked in software, before any TPM command)?"""
    from cryptography.exceptions import InvalidSignature

    hashes, _, ec, padding, rsa, utils = crypto_modules()
    ahash = signed_digest(policy.approved_policy, policy.policy_ref)
    pre = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(policy.signature, ahash, padding.PKCS1v15(), pre)
        else:
            public_key.verify(policy.signature, ahash, ec.ECDSA(pre))
    except (InvalidSignature, ValueError):
        return False
    return True


def tpm_signature(policy: SignedPolicy, public: Public) -> Signature:
    """The signature as TPMT_SIGNATURE for VerifySignature."""
    if public.type == TPM_ALG.RSA:
        return Signature(TPM_ALG.RSASSA, TPM_ALG.SHA256, policy.signature)
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    try:
        r, s = decode_dss_signature(policy.signature)
    except ValueError:
        raise BadInputError(f"{policy.source}: the ECDSA signature is not DER",
                            "get the policy file again from the signer") from None
    return Signature(TPM_ALG.ECDSA, TPM_ALG.SHA256, r=r.to_bytes(32, "big"),
                     s=s.to_bytes(32, "big"))


def load_policies(paths: list[str]) -> list[SignedPolicy]:
    """Every signed policy in *paths* (files, or directories of ``*.json``)."""
    out: list[SignedPolicy] = []
    for p in paths:
        path = Path(p)
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise BadInputError(f"{p} holds no *.json signed policy",
                                "point --policy at policy files or a directory of them")
        for f in files:
            try:
                out.extend(parse_policies(read_input(str(f), "signed policy"), str(f)))
            except BadInputError as e:
                if not path.is_dir():
                    raise
                log.warning("skipping %s", e.one_line())  # other files may share the directory
    if not out:
        raise BadInputError("no signed policy found in " + ", ".join(paths),
                            "pass files written by `tpmseal policy sign` or systemd-measure")
    return out


def parse_policies(text: bytes, where: str) -> list[SignedPolicy]:
    """A tpmseal policy file, or systemd-measure's ``{"sha256": [{pcrs, pkfp, pol, sig}]}``."""
    hint = "pass a file written by `tpmseal policy sign` or `systemd-measure sign`"
    try:
        doc = safejson.loads(text, f"{where} is not a signed policy", hint)
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
        if doc.get("format") == FORMAT:
            return [_parse_own(doc, where)]
        if "format" in doc:
            raise BadInputError(f"{where} has format {doc['format']!r}, expected {FORMAT!r}",
                                "pass a signed policy, not a blob or another file")
        return _parse_systemd(doc, where)
    except BadInputError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
            AttributeError, binascii.Error) as e:
        raise BadInputError(f"{where} is not a signed policy ({type(e).__name__}: {e})",
                            hint) from None


def _parse_own(doc: dict[str, Any], where: str) -> SignedPolicy:
    pcrs = pcrspec.from_dict(doc["pcrs"])
    pd = bytes.fromhex(doc["pcr_digest"])
    approved = bytes.fromhex(doc["approved_policy"])
    version = doc.get("version")
    if version is not None and (not isinstance(version, int) or not 0 <= version < 1 << 64):
        raise BadInputError(f"{where}: version must be an integer from 0 to 2**64-1",
                            "the file was edited; get it again from the signer")
    nv = None if doc.get("nv_index") is None else int(doc["nv_index"], 16)
    if nv is not None and version is None:
        raise BadInputError(f"{where}: a revocable policy (nv_index) needs a version",
                            "the file was edited; get it again from the signer")
    if nv is not None and bytes.fromhex(doc.get("policy_ref", "")) != revocation_ref(nv):
        raise BadInputError(f"{where}: a revocable policy's policy_ref must name its counter",
                            "the file was edited; get it again from the signer")
    if compute_policy(approved_steps(pcrs, pd, version, nv)) != approved:
        raise BadInputError(f"{where}: approved_policy is not PolicyPCR over its pcrs and "
                            "pcr_digest (and its version condition)",
                            "the file was edited; get it again from the signer")
    return SignedPolicy(pcrs, pd, approved, bytes.fromhex(doc.get("policy_ref", "")),
                        bytes.fromhex(doc["key_fingerprint"]),
                        base64.b64decode(doc["signature"], validate=True), version, where, nv)


def _parse_systemd(doc: dict[str, Any], where: str) -> list[SignedPolicy]:
    out = []
    for bank, entries in doc.items():
        alg = pcrspec.bank_alg(bank)
        if alg != TPM_ALG.SHA256:
            continue  # the policy session hashes with SHA-256: only that bank's entries fit
        for e in entries:
            indices = e["pcrs"]
            if not isinstance(indices, list) or not all(
                    isinstance(i, int) and not isinstance(i, bool) for i in indices):
                raise TypeError("pcrs is not a list of PCR indices")
            pcrs = pcrspec.from_dict({bank: indices})
            out.append(SignedPolicy(pcrs, None, bytes.fromhex(e["pol"]), b"",
                                    bytes.fromhex(e["pkfp"]),
                                    base64.b64decode(e["sig"], validate=True), None, where))
    if not out:
        raise BadInputError(f"{where} holds no sha256 signed policy",
                            "sign with --bank=sha256 (systemd-measure) or `tpmseal policy sign`")
    return out


def usable(policies: list[SignedPolicy], public_key: Any, policy_ref: bytes,
           revocation_nv: int | None = None) -> list[SignedPolicy]:
    """The policies *public_key* really signed with *policy_ref*, newest version first.

    Refuses (BadInputError) when none is left, saying why: another key's, a
    forged or an unsigned policy never reaches the TPM. With *revocation_nv*
    (seal --min-version-nv) only policies gated by that counter are offered.
    """
    fp = fingerprint(public_key)
    mine = [p for p in policies if p.key_fingerprint == fp]
    if not mine:
        raise BadInputError("no signed policy is by the key this secret is sealed to (key "
                            f"fingerprint {fp.hex()[:16]}…)",
                            "pass a policy signed with that key (--policy)")
    if revocation_nv is not None:  # policy_ref names the counter: the TPM checks this too
        mine = [p for p in mine if p.nv_index == revocation_nv]
        if not mine:
            raise BadInputError(f"no signed policy is revocable through NV {revocation_nv:#x}, "
                                "as this secret requires",
                                f"sign policies with --nv-index {revocation_nv:#x} and "
                                "--version")
    good = [p for p in mine if p.policy_ref == policy_ref and verify(p, public_key)]
    if not good:
        raise IntegrityError("no signed policy carries a valid signature by the sealing key: "
                             "forged or altered policy files",
                             "get the policy files again from the signer")
    return sorted(good, key=lambda p: -(p.version or 0))


def satisfy(tpm: Tpm, session: AuthSession, authorizer: Authorizer,
            candidates: list[SignedPolicy]) -> SignedPolicy:
    """Run a covering candidate's approved steps, then LoadExternal, VerifySignature and
    PolicyAuthorize in *session*; return the candidate used."""
    chosen = _choose(tpm, session, candidates)
    ext = tpm.run(cmds.LoadExternal(b"", authorizer.key, TPM_RH.OWNER))
    with tpm.scoped(ext.object_handle):
        ticket = tpm.run(cmds.VerifySignature(
            ext.object_handle, signed_digest(chosen.approved_policy, chosen.policy_ref),
            tpm_signature(chosen, authorizer.key))).validation
    if ticket.tag != TPM_ST.VERIFIED:
        raise IntegrityError("VerifySignature returned no verification ticket",
                             "check the bus between CPU and TPM, then retry")
    tpm.run_policy(session, [AuthorizeStep(authorizer.name, chosen.policy_ref,
                                           chosen.approved_policy, ticket)])
    return chosen


def _choose(tpm: Tpm, session: AuthSession, candidates: list[SignedPolicy]) -> SignedPolicy:
    """The first candidate whose approved steps pass in *session*, as the TPM judges.

    A PolicyPCR with the wrong pcrDigest fails with TPM_RC_VALUE and leaves the
    digest unchanged. Candidates without a pcrDigest (systemd-measure's) are
    matched by PolicyPCR over the current values and the resulting digest.
    """
    revoked: list[SignedPolicy] = []
    for cand in (c for c in candidates if c.pcr_digest is not None):
        first, *rest = cand.steps
        try:
            tpm.run_policy(session, [first])
        except TpmResponseError as e:
            if e.name != "VALUE":
                raise
            continue
        try:
            tpm.run_policy(session, rest)
        except TpmResponseError as e:
            if e.command != "PolicyNV" or e.name != "POLICY":
                raise
            revoked.append(cand)  # the counter passed its version
            tpm.run(cmds.PolicyRestart(session.handle))
            continue
        return cand
    if revoked:
        raise PolicyMismatchError(
            f"the signed policy for this state (version {revoked[0].version}) is revoked: "
            f"NV counter {revoked[0].nv_index:#x} is above its version", None,
            "pass a newer signed policy for this state (--policy)")
    measured = [c for c in candidates if c.pcr_digest is None]
    for sel in dict.fromkeys(c.pcrs for c in measured):
        tpm.run_policy(session, [PcrStep(sel, b"")])
        now = tpm.policy_digest(session)
        for cand in measured:
            if cand.pcrs == sel and cand.approved_policy == now:
                return cand
        tpm.run(cmds.PolicyRestart(session.handle))
    raise PolicyMismatchError(
        f"no signed policy covers the current PCR values ({len(candidates)} tried)",
        None, "pass the policy signed for this release (--policy), or boot a release "
              "that one of them covers")
