"""Policy steps: the software calculator equals the TPM's trial and policy sessions.

digest_new = H(digest_old ‖ commandCode ‖ args) (Part 1 §19.7.2): PolicyPCR
(Part 3 §23.7) extends with the TPML_PCR_SELECTION and the pcrDigest;
PolicyAuthValue (§23.17) and PolicyPassword (§23.18) both extend with
TPM_CC_PolicyAuthValue. The same step objects run on swtpm and compute offline.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from test_session_support import (
    ENC,
    PCRS,
    load,
    new_secret,
    pcr_step,
    salted,
    same,
    seal,
    srk,
)
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.templates import sealed_template
from tpmseal.session.policy import (
    AuthValueStep,
    PasswordStep,
    PcrStep,
    PolicyStep,
    compute_policy,
    pcr_digest,
)
from tpmseal.wire import commands as c
from tpmseal.wire.constants import TPM_ALG, TPM_CC, TPM_SE
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import DigestValues, PcrSelection, PcrSelectionList

DESIGN_VECTOR = "60006f998f510089c2196373158d2289c202688be9c31141d423d64a9532a004"


def test_design_vector_all_zero_pcrs() -> None:
    step = PcrStep(PCRS, pcr_digest(TPM_ALG.SHA256, [bytes(32)] * 7))
    assert compute_policy([step]).hex() == DESIGN_VECTOR


def test_pcr_step_by_hand() -> None:
    values = [bytes([i]) * 32 for i in range(7)]
    pd = hashlib.sha256(b"".join(values)).digest()
    sel = bytes.fromhex("00000001000b03df0000")
    expected = hashlib.sha256(bytes(32) + struct.pack(">I", 0x17F) + sel + pd).digest()
    assert compute_policy([PcrStep(PCRS, pcr_digest(TPM_ALG.SHA256, values))]) == expected


def test_auth_value_and_password_share_a_digest() -> None:
    expected = hashlib.sha256(bytes(32) + struct.pack(">I", TPM_CC.PolicyAuthValue)).digest()
    assert compute_policy([AuthValueStep()]) == expected
    assert compute_policy([PasswordStep()]) == expected
    assert compute_policy([AuthValueStep()], TPM_ALG.SHA1) == hashlib.sha1(
        bytes(20) + struct.pack(">I", TPM_CC.PolicyAuthValue)).digest()
    assert compute_policy([]) == bytes(32)


def _trial(tpm: Tpm, steps: list[PolicyStep], kind: int = TPM_SE.TRIAL) -> bytes:
    s = tpm.start_session(kind, attributes=0)
    tpm.run_policy(s, steps)
    got = tpm.policy_digest(s)
    tpm.flush(s.handle)
    return got


def test_design_vector_on_fresh_tpm(blank_tpm_digest: bytes) -> None:
    assert blank_tpm_digest.hex() == DESIGN_VECTOR


@pytest.fixture
def blank_tpm_digest(blank_sim: object) -> bytes:
    from tpmseal.transport.base import open_transport
    from tpmseal.transport.simulator import Simulator

    assert isinstance(blank_sim, Simulator)
    with Tpm(open_transport(blank_sim.uri)) as tpm:
        values = tpm.pcr_read(PCRS)
        assert set(values.values()) == {bytes(32)}
        return _trial(tpm, [PcrStep(PCRS, pcr_digest(TPM_ALG.SHA256, list(values.values())))])


@pytest.mark.parametrize("chain", ["pcr", "authvalue", "password", "pcr+authvalue",
                                   "authvalue+pcr", "pcr16", "pcr+pcr"])
@pytest.mark.parametrize("kind", [TPM_SE.TRIAL, TPM_SE.POLICY], ids=["trial", "policy"])
def test_calculator_equals_tpm(tpm: Tpm, chain: str, kind: int) -> None:
    steps: list[PolicyStep] = []
    for part in chain.split("+"):
        if part == "pcr":
            steps.append(pcr_step(tpm))
        elif part == "pcr16":
            sel = PcrSelectionList((PcrSelection(TPM_ALG.SHA256, tuple(range(16))),))
            values = tpm.pcr_read(sel)  # more than 8: read in two PCR_Read calls
            steps.append(PcrStep(sel, pcr_digest(TPM_ALG.SHA256,
                                                 [values[p] for p in sel.pairs()])))
        elif part == "authvalue":
            steps.append(AuthValueStep())
        else:
            steps.append(PasswordStep())
    assert _trial(tpm, steps, kind) == compute_policy(steps)


def test_policy_restart(tpm: Tpm) -> None:
    s = tpm.start_session(TPM_SE.TRIAL, attributes=0)
    tpm.run_policy(s, [AuthValueStep()])
    tpm.run(c.PolicyRestart(s.handle))
    assert tpm.policy_digest(s) == bytes(32)


def test_step_commands() -> None:
    step = PcrStep(PCRS, b"\x01" * 32)
    cmd = step.command(0x03000000)
    assert isinstance(cmd, c.PolicyPCR)
    assert cmd.pcrs == PCRS and cmd.pcr_digest == b"\x01" * 32
    assert isinstance(AuthValueStep().command(1), c.PolicyAuthValue)
    assert isinstance(PasswordStep().command(1), c.PolicyPassword)


# ------------------------------------------------------------- policies that gate Unseal


def test_pcr_change_fails_the_policy(tpm: Tpm) -> None:
    parent = srk(tpm)
    step = pcr_step(tpm)
    obj = seal(tpm, parent, new_secret(), sealed_template(compute_policy([step])))
    load(tpm, parent, obj)
    tpm.run(c.PCR_Extend(7, DigestValues(((TPM_ALG.SHA256, b"\x77" * 32),))))
    # the old explicit pcrDigest no longer matches the PCRs: PolicyPCR itself refuses
    pol = salted(tpm, TPM_SE.POLICY, "rsa2048", attributes=ENC)
    with pytest.raises(TpmResponseError) as e:
        tpm.run_policy(pol, [step])
    assert e.value.name == "VALUE"
    # with the current values PolicyPCR passes, but the digest is not the object's policy
    tpm.run_policy(pol, [pcr_step(tpm)])
    with pytest.raises(TpmResponseError) as e:
        tpm.run(c.Unseal(obj.handle), pol)
    assert e.value.name == "POLICY_FAIL" and e.value.rc.session == 1
    assert "policy check failed" in e.value.message


def test_pcr_changed_between_policy_and_use(tpm: Tpm) -> None:
    parent = srk(tpm)
    step = pcr_step(tpm)
    obj = seal(tpm, parent, new_secret(), sealed_template(compute_policy([step])))
    load(tpm, parent, obj)
    pol = salted(tpm, TPM_SE.POLICY, "rsa2048", attributes=ENC)
    tpm.run_policy(pol, [step])
    tpm.run(c.PCR_Extend(7, DigestValues(((TPM_ALG.SHA256, b"\x16" * 32),))))
    with pytest.raises(TpmResponseError) as e:
        tpm.run(c.Unseal(obj.handle), pol)
    assert e.value.name == "PCR_CHANGED"


@pytest.mark.parametrize("step", [AuthValueStep(), PasswordStep()],
                         ids=["PolicyAuthValue", "PolicyPassword"])
def test_auth_value_policies_unseal(tpm: Tpm, step: PolicyStep) -> None:
    parent = srk(tpm)
    steps = [pcr_step(tpm), step]
    obj = seal(tpm, parent, new_secret(), sealed_template(compute_policy(steps)), auth=b"pin")
    load(tpm, parent, obj)
    pol = salted(tpm, TPM_SE.POLICY, "p256", attributes=ENC)
    tpm.run_policy(pol, steps)
    assert pol.policy_auth_value == isinstance(step, AuthValueStep)
    assert pol.policy_password == isinstance(step, PasswordStep)
    pol.auth_value = b"pin"
    same(tpm.run(c.Unseal(obj.handle), pol).out_data, obj.secret)
    # the wrong value fails
    pol = salted(tpm, TPM_SE.POLICY, "p256", attributes=ENC)
    tpm.run_policy(pol, steps)
    pol.auth_value = b"nip"
    with pytest.raises(TpmResponseError) as e:
        tpm.run(c.Unseal(obj.handle), pol)
    assert e.value.name in {"AUTH_FAIL", "BAD_AUTH"}
