"""PolicyOR, PolicyAuthorize and PolicyNV: the software calculator equals swtpm's sessions.

Each vector starts a TPM_SE.TRIAL session (and a real policy session where the
TPM checks more), runs the step, reads PolicyGetDigest and compares it with
:func:`compute_policy` (Part 3 §23.6, §23.16, §23.9). The signed-policy steps
then gate a real Unseal: VerifySignature's ticket from a key loaded in the owner
hierarchy (the NULL hierarchy yields a NULL ticket that PolicyAuthorize refuses).
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from test_session_support import PCRS, load, new_secret, pcr_step, same, seal, srk
from tpmseal.client.tpm import Tpm
from tpmseal.recipes import signed, signer
from tpmseal.recipes.templates import sealed_template
from tpmseal.session.policy import (
    AuthorizeStep,
    AuthValueStep,
    NvStep,
    OrStep,
    PcrStep,
    Policy,
    PolicyStep,
    compute_policy,
    signed_digest,
)
from tpmseal.wire import commands as c
from tpmseal.wire.constants import NT_COUNTER, TPM_ALG, TPM_EO, TPM_RH, TPM_SE, TPM_ST, TPMA_NV
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import NvPublic, Ticket

NULL_TICKET = Ticket(TPM_ST.VERIFIED, TPM_RH.NULL, b"")


def _digest(tpm: Tpm, steps: list[PolicyStep], kind: int = TPM_SE.TRIAL) -> bytes:
    s = tpm.start_session(kind, attributes=0)
    with tpm.scoped(s.handle):
        tpm.run_policy(s, steps)
        return tpm.policy_digest(s)


def test_or_by_hand() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    expected = hashlib.sha256(bytes(32) + struct.pack(">I", 0x171) + a + b).digest()
    assert compute_policy([OrStep((a, b))]) == expected


def test_authorize_by_hand() -> None:
    name, ref = b"\x00\x0b" + b"\x03" * 32, b"ref"
    first = hashlib.sha256(bytes(32) + struct.pack(">I", 0x16A) + name).digest()
    assert compute_policy([AuthorizeStep(name, ref)]) == hashlib.sha256(first + ref).digest()


@pytest.mark.parametrize("kind", [TPM_SE.TRIAL, TPM_SE.POLICY], ids=["trial", "policy"])
def test_or_equals_tpm(tpm: Tpm, kind: int) -> None:
    branch = pcr_step(tpm)
    other = compute_policy([PcrStep(PCRS, b"\x05" * 32)])
    for branches in ((compute_policy([branch]), other), (other, compute_policy([branch]))):
        steps: list[PolicyStep] = [branch, OrStep(branches), AuthValueStep()]
        assert _digest(tpm, steps, kind) == compute_policy(steps)


def test_or_refuses_a_digest_not_in_the_list(tpm: Tpm) -> None:
    s = tpm.start_session(TPM_SE.POLICY, attributes=0)
    with tpm.scoped(s.handle):
        tpm.run_policy(s, [pcr_step(tpm)])
        with pytest.raises(TpmResponseError) as e:
            tpm.run_policy(s, [OrStep((b"\x01" * 32, b"\x02" * 32))])
        assert e.value.name == "VALUE"


def test_policy_value_or_matches_tpm(tpm: Tpm) -> None:
    here = pcr_step(tpm)
    pol = Policy((PcrStep(PCRS, b"\x07" * 32), here), pin=True)
    assert _digest(tpm, pol.steps(1)) == pol.digest()


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_authorize_equals_tpm_trial(tpm: Tpm, kind: str) -> None:
    auth = signer.authorizer_for(signer.generate_key(kind).public_key(), b"ref")
    steps: list[PolicyStep] = [pcr_step(tpm), AuthorizeStep(
        auth.name, auth.policy_ref, compute_policy([pcr_step(tpm)]), NULL_TICKET)]
    # a trial session does not check the ticket
    assert _digest(tpm, steps) == compute_policy(steps) == Policy((), auth).digest()


def _counter(tpm: Tpm, index: int) -> NvPublic:
    pub = NvPublic(index, TPM_ALG.SHA256, NT_COUNTER | TPMA_NV.OWNERWRITE | TPMA_NV.AUTHREAD
                   | TPMA_NV.NO_DA, b"", 8)
    tpm.run(c.NV_DefineSpace(TPM_RH.OWNER, b"", pub))
    tpm.run(c.NV_Increment(TPM_RH.OWNER, index))
    return pub.written()


@pytest.mark.parametrize("kind", [TPM_SE.TRIAL, TPM_SE.POLICY], ids=["trial", "policy"])
def test_nv_equals_tpm(tpm: Tpm, kind: int) -> None:
    pub = _counter(tpm, 0x01500013)
    value = tpm.nv_read(pub.nv_index, 8, pub.nv_index)
    step = NvStep(pub.nv_index, pub.name(), value, TPM_EO.UNSIGNED_LE)
    assert _digest(tpm, [pcr_step(tpm), step], kind) == compute_policy([pcr_step(tpm), step])
    if kind == TPM_SE.POLICY:  # the TPM compares: counter <= value - 1 is false
        below = (int.from_bytes(value, "big") - 1).to_bytes(8, "big")
        with pytest.raises(TpmResponseError) as e:
            _digest(tpm, [NvStep(pub.nv_index, pub.name(), below, TPM_EO.UNSIGNED_LE)], kind)
        assert e.value.name == "POLICY"
    tpm.run(c.NV_UndefineSpace(TPM_RH.OWNER, pub.nv_index))


def _ticket(tpm: Tpm, key: object, approved: bytes, ref: bytes, hierarchy: int) -> Ticket:
    auth = signer.authorizer_for(key.public_key(), ref)  # type: ignore[attr-defined]
    pol = signed.SignedPolicy(PCRS, None, approved, ref, b"", _raw_sign(key, approved, ref))
    ext = tpm.run(c.LoadExternal(b"", auth.key, hierarchy))
    assert ext.name == auth.name
    with tpm.scoped(ext.object_handle):
        return tpm.run(c.VerifySignature(ext.object_handle, signed_digest(approved, ref),
                                         signed.tpm_signature(pol, auth.key))).validation


def _raw_sign(key: object, approved: bytes, ref: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    pre = utils.Prehashed(hashes.SHA256())
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(signed_digest(approved, ref), padding.PKCS1v15(), pre)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.sign(signed_digest(approved, ref), ec.ECDSA(pre))


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_signed_policy_unseals(tpm: Tpm, kind: str) -> None:
    key = signer.generate_key(kind)
    auth = signer.authorizer_for(key.public_key())
    parent = srk(tpm)
    obj = seal(tpm, parent, new_secret(), sealed_template(Policy((), auth).digest()))
    load(tpm, parent, obj)
    step = pcr_step(tpm)
    approved = compute_policy([step])
    ticket = _ticket(tpm, key, approved, b"", TPM_RH.OWNER)
    assert ticket.tag == TPM_ST.VERIFIED and ticket.hierarchy == TPM_RH.OWNER
    s = tpm.start_session(TPM_SE.POLICY, attributes=0)
    tpm.run_policy(s, [step, AuthorizeStep(auth.name, b"", approved, ticket)])
    same(tpm.run(c.Unseal(obj.handle), s).out_data, obj.secret)


def test_null_hierarchy_ticket_is_refused(tpm: Tpm) -> None:
    key = signer.generate_key("ecc")
    auth = signer.authorizer_for(key.public_key())
    step = pcr_step(tpm)
    approved = compute_policy([step])
    ticket = _ticket(tpm, key, approved, b"", TPM_RH.NULL)
    assert ticket.hierarchy == TPM_RH.NULL and not ticket.digest
    s = tpm.start_session(TPM_SE.POLICY, attributes=0)
    with tpm.scoped(s.handle):
        tpm.run_policy(s, [step])
        with pytest.raises(TpmResponseError):
            tpm.run_policy(s, [AuthorizeStep(auth.name, b"", approved, ticket)])


def test_authorize_refuses_another_state(tpm: Tpm) -> None:
    """A valid signature over one state does not authorize a session in another."""
    key = signer.generate_key("ecc")
    auth = signer.authorizer_for(key.public_key())
    other = compute_policy([PcrStep(PCRS, b"\x09" * 32)])
    ticket = _ticket(tpm, key, other, b"", TPM_RH.OWNER)
    s = tpm.start_session(TPM_SE.POLICY, attributes=0)
    with tpm.scoped(s.handle):
        tpm.run_policy(s, [pcr_step(tpm)])
        with pytest.raises(TpmResponseError):
            tpm.run_policy(s, [AuthorizeStep(auth.name, b"", other, ticket)])
