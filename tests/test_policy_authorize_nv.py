"""PolicyAuthorizeNV (Part 3 §23.22): the software step equals swtpm's sessions.

The index is defined as systemd-pcrlock defines its own (ordinary, written whole
through a policy, readable by the owner; here the write policy is PolicyAuthValue
with an empty authValue instead of pcrlock's PolicySigned by the recovery PIN),
holds a TPMT_HA with a policy digest, and a trial and a real policy session must
end with :func:`compute_policy`'s digest. A real session whose digest is not the
stored one is refused, and an object sealed to the index unseals only while the
index holds the policy the session satisfies.
"""

from __future__ import annotations

import pytest

from test_session_support import PCRS, load, new_secret, pcr_step, same, seal, srk
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.templates import sealed_template
from tpmseal.session.policy import AuthorizeNvStep, AuthValueStep, PcrStep, compute_policy
from tpmseal.wire import commands as c
from tpmseal.wire.constants import TPM_ALG, TPM_RH, TPM_SE, TPMA_NV
from tpmseal.wire.marshal import u16
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import NvPublic

INDEX = 0x01D10001
#: systemd's tpm2_define_policy_nv_index: TPM_NT_ORDINARY|WRITEALL|POLICYWRITE|OWNERREAD
ATTRS = TPMA_NV.WRITEALL | TPMA_NV.POLICYWRITE | TPMA_NV.OWNERREAD


def define(tpm: Tpm, index: int = INDEX) -> NvPublic:
    pub = NvPublic(index, TPM_ALG.SHA256, ATTRS, compute_policy([AuthValueStep()]), 34)
    tpm.run(c.NV_DefineSpace(TPM_RH.OWNER, b"", pub))
    return pub


def store(tpm: Tpm, index: int, policy: bytes) -> None:
    """Write *policy* as the TPMT_HA systemd stores, through the index's write policy."""
    s = tpm.start_session(TPM_SE.POLICY, attributes=0)
    with tpm.scoped(s.handle):
        tpm.run_policy(s, [AuthValueStep()])
        tpm.run(c.NV_Write(index, index, u16(TPM_ALG.SHA256) + policy), s)


def _digest(tpm: Tpm, steps: list[PcrStep | AuthorizeNvStep], kind: int) -> bytes:
    s = tpm.start_session(kind, attributes=0)
    with tpm.scoped(s.handle):
        tpm.run_policy(s, list(steps))
        return tpm.policy_digest(s)


@pytest.mark.parametrize("kind", [TPM_SE.TRIAL, TPM_SE.POLICY], ids=["trial", "policy"])
def test_authorize_nv_equals_tpm(tpm: Tpm, kind: int) -> None:
    pub = define(tpm)
    store(tpm, INDEX, compute_policy([pcr_step(tpm)]))
    step = AuthorizeNvStep(INDEX, pub.written().name())
    assert _digest(tpm, [pcr_step(tpm), step], kind) == compute_policy([pcr_step(tpm), step])
    # the step replaces what came before: only the index's Name remains
    assert compute_policy([step]) == compute_policy([pcr_step(tpm), step])
    assert step.update(TPM_ALG.SHA256, b"\x01" * 32) == compute_policy([step])


def test_authorize_nv_refuses_another_policy(tpm: Tpm) -> None:
    define(tpm)
    store(tpm, INDEX, compute_policy([PcrStep(PCRS, b"\x05" * 32)]))
    step = AuthorizeNvStep(INDEX, b"")
    with pytest.raises(TpmResponseError) as e:
        _digest(tpm, [pcr_step(tpm), step], TPM_SE.POLICY)
    assert (e.value.command, e.value.name) == ("PolicyAuthorizeNV", "VALUE")


def test_sealed_to_the_index_unseals_while_it_holds_the_state(tpm: Tpm) -> None:
    pub = define(tpm)
    step = AuthorizeNvStep(INDEX, pub.written().name())
    parent = srk(tpm)
    obj = seal(tpm, parent, new_secret(), sealed_template(compute_policy([step])))
    load(tpm, parent, obj)
    store(tpm, INDEX, compute_policy([pcr_step(tpm)]))
    s = tpm.start_session(TPM_SE.POLICY, attributes=0)
    tpm.run_policy(s, [pcr_step(tpm), step])
    same(tpm.run(c.Unseal(obj.handle), s).out_data, obj.secret)
    # another index holding the same policy gives another digest: Unseal refuses it
    other = define(tpm, INDEX + 1)
    store(tpm, other.nv_index, compute_policy([pcr_step(tpm)]))
    s = tpm.start_session(TPM_SE.POLICY, attributes=0)
    with tpm.scoped(s.handle):
        tpm.run_policy(s, [pcr_step(tpm), AuthorizeNvStep(other.nv_index, b"")])
        with pytest.raises(TpmResponseError) as e:
            tpm.run(c.Unseal(obj.handle), s)
        assert e.value.name == "POLICY_FAIL"
