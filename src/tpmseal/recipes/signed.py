"""Signed PCR policies: signer keys, signed policy files, and satisfying PolicyAuthorize.

A vendor key signs ``aHash = SHA-256(approvedPolicy ‖ policyRef)`` where
approvedPolicy is the PolicyPCR digest of one release's PCR values (Part 3
§23.16). A secret sealed with ``authPolicy = PolicyAuthorize(key Name,
policyRef)`` then unseals in any state some signed policy covers, so a new
release needs a new signature, not a reseal.

On the TPM: PolicyPCR with the signed pcrDigest (the TPM compares it with the
PCRs), LoadExternal of the public key in the *owner* hierarchy (in the NULL
hierarchy VerifySignature returns a NULL ticket, which PolicyAuthorize refuses),
VerifySignature (ticket), FlushContext, PolicyAuthorize. Which signed policy
covers the current state is decided by the TPM itself: a PolicyPCR whose
pcrDigest does not match the PCRs fails with TPM_RC_VALUE and leaves the
session's digest as it was, so the next candidate is tried in the same
session. An interposer can only turn a pass into a failure: a forged success
leaves a digest that PolicyAuthorize's ticket check (or Unseal) refuses.

Key files are PEM (PKCS#8 private key, SubjectPublicKeyInfo public key). The
key *fingerprint* is SHA-256 of the raw public key — PKCS#1 RSAPublicKey DER, or
the uncompressed EC point — as systemd-measure's ``pkfp``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, IntegrityError, PolicyMismatchError, UsageError
from tpmseal.files import read_input, write_atomic
from tpmseal.recipes import pcrspec
from tpmseal.session.auth import AuthSession, PasswordSession
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
from tpmseal.wire.constants import (
    NT_COUNTER,
    TPM_ALG,
    TPM_ECC,
    TPM_EO,
    TPM_RH,
    TPM_ST,
    TPMA_NV,
    TPMA_SESSION,
)
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import (
    EccParms,
    EccPoint,
    NvPublic,
    PcrSelectionList,
    Public,
    RsaParms,
    Signature,
    SymDef,
)

log = logging.getLogger("tpmseal.signed")

FORMAT = "tpmseal-signed-policy/1"

#: sign | decrypt | userWithAuth: the LoadExternal template systemd uses for its RSA key,
#: so a key's Name (and the sealed authPolicy) is the same in tpmseal and systemd.
SIGNER_ATTRS = 0x00060040
RSA_EXPONENT = 65537  # written out, not 0: it is part of the Name systemd computes


def _crypto() -> Any:
    """cryptography's asymmetric modules, imported on first use (start-up time)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    return hashes, serialization, ec, padding, rsa, utils


# ------------------------------------------------------------------------------ keys


def generate_key(kind: str = "ecc") -> Any:
    """A new signer key: ECDSA P-256 (default) or RSA-2048."""
    _, _, ec, _, rsa, _ = _crypto()
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=2048)
    if kind == "ecc":
        return ec.generate_private_key(ec.SECP256R1())
    raise UsageError(f"unknown key type {kind!r}", "use --type ecc or --type rsa")


def public_path(private_path: Path) -> Path:
    """Where keygen puts the public key: signer.pem -> signer.pub."""
    return private_path.with_suffix(".pub")


def write_keypair(key: Any, path: Path) -> Path:
    """Write the private key (0600) to *path* and the public key next to it; return the latter."""
    _, ser, *_ = _crypto()
    priv = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    pub = key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    out = public_path(path)
    write_atomic(path, priv, 0o600)
    write_atomic(out, pub, 0o644)
    return out


def load_private(path: str) -> Any:
    _, ser, ec, _, rsa, _ = _crypto()
    data = read_input(path, "signing key", limit=64 << 10)
    try:
        key = ser.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise BadInputError(f"{path} is not an unencrypted PEM private key ({e})",
                            "pass the file written by `tpmseal policy keygen`") from None
    _check_kind(key, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, path)
    return key


def load_public(path: str) -> Any:
    """A PEM public key (or the public half of a PEM private key)."""
    _, ser, ec, _, rsa, _ = _crypto()
    data = read_input(path, "public key", limit=64 << 10)
    try:
        key = ser.load_pem_public_key(data)
    except ValueError:
        try:
            key = ser.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as e:
            raise BadInputError(f"{path} is not a PEM public key ({e})",
                                "pass the .pub file written by `tpmseal policy keygen`") from None
    _check_kind(key, rsa.RSAPublicKey, ec.EllipticCurvePublicKey, path)
    return key


def _check_kind(key: Any, rsa_cls: Any, ec_cls: Any, path: str) -> None:
    _, _, ec, *_ = _crypto()
    if isinstance(key, rsa_cls):
        if key.key_size != 2048:
            raise BadInputError(f"{path}: RSA-{key.key_size} key; signers are RSA-2048",
                                "make one with `tpmseal policy keygen --type rsa`")
    elif isinstance(key, ec_cls):
        if not isinstance(key.curve, ec.SECP256R1):
            raise BadInputError(f"{path}: EC key on {key.curve.name}; signers use P-256",
                                "make one with `tpmseal policy keygen`")
    else:
        raise BadInputError(f"{path}: not an RSA or EC key",
                            "make one with `tpmseal policy keygen`")


def fingerprint(public_key: Any) -> bytes:
    """SHA-256 of the raw public key (systemd-measure's ``pkfp``)."""
    _, ser, _, _, rsa, _ = _crypto()
    if isinstance(public_key, rsa.RSAPublicKey):
        raw = public_key.public_bytes(ser.Encoding.DER, ser.PublicFormat.PKCS1)
    else:
        raw = public_key.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
    return hashlib.sha256(raw).digest()


def tpm_public(public_key: Any) -> Public:
    """The key as TPM2_LoadExternal loads it; its Name goes into PolicyAuthorize."""
    _, _, _, _, rsa, _ = _crypto()
    if isinstance(public_key, rsa.RSAPublicKey):
        n = public_key.public_numbers()
        return Public(TPM_ALG.RSA, TPM_ALG.SHA256, SIGNER_ATTRS, b"",
                      RsaParms(SymDef(), key_bits=2048, exponent=n.e),
                      n.n.to_bytes(256, "big"))
    nums = public_key.public_numbers()
    return Public(TPM_ALG.ECC, TPM_ALG.SHA256, SIGNER_ATTRS, b"",
                  EccParms(SymDef(), curve_id=TPM_ECC.NIST_P256),
                  EccPoint(nums.x.to_bytes(32, "big"), nums.y.to_bytes(32, "big")))


def crypto_key(public: Public) -> Any:
    """The cryptography public key of a signer's TPM public area (inverse of tpm_public)."""
    _, _, ec, _, rsa, _ = _crypto()
    try:
        if public.type == TPM_ALG.RSA and isinstance(public.parameters, RsaParms):
            assert isinstance(public.unique, bytes)
            return rsa.RSAPublicNumbers(public.parameters.exponent or RSA_EXPONENT,
                                        int.from_bytes(public.unique, "big")).public_key()
        if public.type == TPM_ALG.ECC and isinstance(public.unique, EccPoint):
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(public.unique.x, "big"), int.from_bytes(public.unique.y, "big"),
                ec.SECP256R1()).public_key()
    except (ValueError, AssertionError):
        pass
    raise BadInputError("the blob's policy signer is not a valid RSA or P-256 key",
                        "the file was edited or corrupted; restore it")


def authorizer_for(public_key: Any, policy_ref: bytes = b"") -> Authorizer:
    return Authorizer(tpm_public(public_key), policy_ref)


# ------------------------------------------------------------------ signed policies


@dataclass(frozen=True)
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
    return NvPublic(index, TPM_ALG.SHA256, NT_COUNTER | TPMA_NV.OWNERWRITE | TPMA_NV.AUTHREAD
                    | TPMA_NV.NO_DA | TPMA_NV.WRITTEN, b"", 8)


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
    hashes, _, ec, padding, rsa, utils = _crypto()
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

    hashes, _, ec, padding, rsa, utils = _crypto()
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
    try:
        doc = json.loads(text)
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
                            "pass a file written by `tpmseal policy sign` or "
                            "`systemd-measure sign`") from None


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
            pcrs = pcrspec.from_dict({bank: [int(i) for i in e["pcrs"]]})
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


# ------------------------------------------------------------------------- revocation


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


def revoke_below(tpm: Tpm, index: int, version: int, audit: AuthSession | None) -> int:
    """Increment the counter until it is at least *version*: every policy signed with
    a lower version then fails PolicyNV. Returns the final (verified) value."""
    now = read_counter(tpm, index, audit)
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
