"""Which authValue goes into the AES-CFB parameter key? Settled against swtpm.

TPM 2.0 Part 1 §21.3: the CFB key and IV come from KDFa(sessionAlg,
sessionValue, "CFB", nonceNewer, nonceOlder, bits) with sessionValue =
sessionKey ‖ authValue, where authValue belongs to the entity the session
authorizes. The HMAC key (§19.6.12) has exceptions: it leaves the authValue out
for a bound session authorizing its bind entity and for a policy session that
did not run PolicyAuthValue. Does the CFB key share those exceptions? The
reference implementation says no (SessionProcess.c: "authValue is concatenated
with sessionKey to generate encryption key, no matter if the handle is the
session bound entity or not", and the policy case takes the same path), and
swtpm agrees: all four cases below recover the plaintext only when the
authValue is part of the CFB key. A wrong key is *silent* — the response HMAC
covers the ciphertext, so the client would return garbage — which is why each
case compares plaintexts and not just "no exception".

Both directions are checked: Unseal's outData (encrypt) on a sealed object, and
NV_Write data (decrypt) / NV_Read data (encrypt) on an NV index whose contents
are then read back through a plain password session.
"""

from __future__ import annotations

import os

import pytest

from test_session_support import (
    CONT,
    DEC,
    ENC,
    load,
    new_secret,
    pcr_step,
    salted,
    same,
    seal,
    srk,
    user_sealed_template,
)
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.templates import sealed_template
from tpmseal.session.auth import AuthSession, PasswordSession, trim_auth
from tpmseal.session.policy import AuthValueStep, PolicyStep, compute_policy
from tpmseal.wire import commands as c
from tpmseal.wire.constants import TPM_ALG, TPM_RH, TPM_SE, TPMA_NV
from tpmseal.wire.structures import AES_128_CFB, NvPublic

AUTH = b"correct horse\0\0"  # trailing zeros: the TPM trims them, so must we
CASES = ["a-hmac", "b-policy-authvalue", "c-policy-no-authvalue", "d-bound-to-entity"]
NV_INDEX = 0x01500020


def _steps(tpm: Tpm, case: str) -> list[PolicyStep]:
    if case.startswith("b"):
        return [AuthValueStep()]
    if case.startswith("c"):
        return [pcr_step(tpm)]
    return []


def _session(tpm: Tpm, case: str, entity: int, steps: list[PolicyStep],
             attributes: int) -> AuthSession:
    if case.startswith("d"):
        # bound, not salted: the sessionKey comes from the bind entity's authValue
        s = tpm.start_session(TPM_SE.HMAC, bind=entity, bind_auth=AUTH, attributes=attributes)
        assert s.bind_name == tpm.name_of(entity)
        tpm.confirm(s)
    elif case.startswith("a"):
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=attributes)
    else:
        s = salted(tpm, TPM_SE.POLICY, "rsa2048", attributes=attributes)
        tpm.run_policy(s, steps)
    s.auth_value = AUTH  # also for case c, where only the CFB key uses it
    return s


@pytest.mark.parametrize("case", CASES)
def test_unseal_response_key_includes_entity_auth(tpm: Tpm, case: str) -> None:
    parent = srk(tpm)
    steps = _steps(tpm, case)
    template = (sealed_template(compute_policy(steps)) if steps else user_sealed_template())
    obj = seal(tpm, parent, new_secret(), template, auth=AUTH)
    load(tpm, parent, obj)
    s = _session(tpm, case, obj.handle, steps, ENC)
    same(tpm.run(c.Unseal(obj.handle), s).out_data, obj.secret)


def _define_nv(tpm: Tpm, case: str, steps: list[PolicyStep]) -> NvPublic:
    attrs = TPMA_NV.AUTHREAD | TPMA_NV.NO_DA
    if steps:
        attrs |= TPMA_NV.POLICYWRITE | TPMA_NV.POLICYREAD
    else:
        attrs |= TPMA_NV.AUTHWRITE
    pub = NvPublic(NV_INDEX, TPM_ALG.SHA256, attrs, compute_policy(steps) if steps else b"", 64)
    tpm.run(c.NV_DefineSpace(TPM_RH.OWNER, AUTH, pub))
    return pub


@pytest.mark.parametrize("case", CASES)
def test_nv_write_and_read_keys_include_entity_auth(tpm: Tpm, case: str) -> None:
    steps = _steps(tpm, case)
    pub = _define_nv(tpm, case, steps)
    data = os.urandom(48)
    s = _session(tpm, case, NV_INDEX, steps, DEC)
    tpm.run(c.NV_Write(NV_INDEX, NV_INDEX, data, 0), s)
    # the TPM stored what the client encrypted: read it back in the clear
    same(tpm.nv_read(NV_INDEX, len(data), NV_INDEX, PasswordSession(AUTH)), data)
    assert tpm.names[NV_INDEX] == pub.written().name()
    # and an encrypted read decrypts (for case d the index's Name changed with
    # TPMA_NV_WRITTEN, so the session no longer counts as bound to it)
    s2 = _session(tpm, case, NV_INDEX, steps, ENC)
    got = tpm.run(c.NV_Read(NV_INDEX, NV_INDEX, len(data), 0), s2).data
    same(got, data)


def test_bound_session_unbinds_when_nv_name_changes(tpm: Tpm) -> None:
    """Same bound session before and after the first write of the index it is bound to."""
    _define_nv(tpm, "d", [])
    s = tpm.start_session(TPM_SE.HMAC, bind=NV_INDEX, bind_auth=AUTH, attributes=CONT | DEC)
    s.auth_value = AUTH
    first, second = os.urandom(16), os.urandom(16)
    tpm.run(c.NV_Write(NV_INDEX, NV_INDEX, first, 0), s)   # bound: HMAC key lacks AUTH
    tpm.run(c.NV_Write(NV_INDEX, NV_INDEX, second, 16), s)  # Name changed: HMAC key has AUTH
    assert tpm.nv_read(NV_INDEX, 32, NV_INDEX, PasswordSession(AUTH)) == first + second


def test_session_only_for_encryption_uses_session_key() -> None:
    """A session that authorizes nothing (entity None) keys CFB with sessionKey alone."""
    s = AuthSession(0x02000000, TPM_SE.POLICY, TPM_ALG.SHA256, AES_128_CFB, b"K" * 32,
                    b"n" * 32, salted=True, auth_value=AUTH)
    assert s.cfb_key(None) == b"K" * 32
    assert s.hmac_key(None) == b"K" * 32


@pytest.mark.parametrize(("kind", "bound", "policy_auth", "hmac_has_auth"), [
    (TPM_SE.HMAC, False, False, True),      # (a)
    (TPM_SE.POLICY, False, True, True),     # (b) PolicyAuthValue
    (TPM_SE.POLICY, False, False, False),   # (c) no PolicyAuthValue
    (TPM_SE.HMAC, True, False, False),      # (d) bound to the entity it authorizes
])
def test_key_table(kind: int, bound: bool, policy_auth: bool, hmac_has_auth: bool) -> None:
    name = b"\x00\x0b" + b"N" * 32
    s = AuthSession(0x03000000, kind, TPM_ALG.SHA256, AES_128_CFB, b"K" * 32, b"n" * 32,
                    salted=True, bind_name=name if bound else None, auth_value=AUTH,
                    policy_auth_value=policy_auth)
    assert s.cfb_key(name) == b"K" * 32 + trim_auth(AUTH)
    assert s.hmac_key(name) == b"K" * 32 + (trim_auth(AUTH) if hmac_has_auth else b"")
    other = b"\x00\x0b" + b"O" * 32  # a bound session authorizing a different entity
    if bound:
        assert s.hmac_key(other) == b"K" * 32 + trim_auth(AUTH)
