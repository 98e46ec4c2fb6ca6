"""Salted sessions with AES-CFB parameter encryption against swtpm (issue 3 test list).

For every salt key (RSA-2048 EK, ECC P-256 EK from the TCG L-2 template, the
swtpm_setup ECC P-384 EK) and every direction (decrypt, encrypt, both):
Create a sealed object under the SRK through a salted HMAC session, Load it,
satisfy its PolicyPCR in a salted policy session and Unseal with the response
encrypted; GetRandom with an encrypted response. The client checks every
response HMAC, so "no exception" means swtpm accepted every command HMAC and
sent back responses whose HMACs verify. The captured bus then must hold the
secret exactly where the direction leaves it in the clear.
"""

from __future__ import annotations

import pytest

from test_session_support import (
    CONT,
    DEC,
    ENC,
    SALTS,
    absent,
    load,
    new_secret,
    pcr_step,
    policy_for,
    present,
    salted,
    same,
    seal,
    srk,
)
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.templates import sealed_template
from tpmseal.session.auth import PasswordSession
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.wire import commands as c
from tpmseal.wire.constants import TPM_CC, TPM_SE, TPMA_SESSION, enum_name

DIRECTIONS = {"decrypt": DEC, "encrypt": ENC, "both": DEC | ENC}


def _exchange(bus: CapturingTransport, code: int) -> tuple[bytes, bytes]:
    found = [e for e in bus.exchanges if e.code == code]
    assert len(found) == 1, [enum_name(TPM_CC, x) for x in bus.codes()]
    return found[0].command, found[0].response or b""


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("salt", SALTS)
def test_seal_unseal_through_salted_sessions(tpm: Tpm, bus: CapturingTransport, salt: str,
                                             direction: str) -> None:
    bits = DIRECTIONS[direction]
    parent = srk(tpm)
    step = pcr_step(tpm)
    secret = new_secret()
    hmac_s = salted(tpm, TPM_SE.HMAC, salt, attributes=CONT | bits)
    assert hmac_s.salted and hmac_s.session_key
    bus.clear()
    obj = seal(tpm, parent, secret, sealed_template(policy_for(step)), hmac_s)
    create_cmd, create_rsp = _exchange(bus, TPM_CC.Create)
    # inSensitive is hidden exactly when the decrypt attribute is set
    present(secret, create_cmd, not bits & DEC)
    # outPrivate was encrypted on the way back when encrypt is set: the bytes on the
    # bus differ from the decrypted blob the client returned, yet Load accepts the blob
    present(obj.private, create_rsp, not bits & ENC)
    bus.clear()
    load(tpm, parent, obj, hmac_s)
    load_cmd, load_rsp = _exchange(bus, TPM_CC.Load)
    present(obj.private, load_cmd, not bits & DEC)
    present(obj.public.name(), load_rsp, not bits & ENC)
    tpm.flush(hmac_s.handle)

    pol = salted(tpm, TPM_SE.POLICY, salt, attributes=ENC)  # ends with the Unseal
    tpm.run_policy(pol, [step])
    bus.clear()
    out = tpm.run(c.Unseal(obj.handle), pol).out_data
    same(out, secret)
    _, unseal_rsp = _exchange(bus, TPM_CC.Unseal)
    absent(secret, unseal_rsp)
    assert pol.ended  # continueSession was clear: the TPM flushed it

    rng = salted(tpm, TPM_SE.HMAC, salt, attributes=ENC)
    bus.clear()
    random = tpm.get_random(32, rng)
    assert len(random) == 32
    _, rnd_rsp = _exchange(bus, TPM_CC.GetRandom)
    absent(random, rnd_rsp)


def test_password_session_path_leaks_the_secret(tpm: Tpm, bus: CapturingTransport) -> None:
    """The baseline the encrypted path is measured against (the seed's legacy path)."""
    parent = srk(tpm)
    step = pcr_step(tpm)
    secret = new_secret()
    bus.clear()
    obj = seal(tpm, parent, secret, sealed_template(policy_for(step)), PasswordSession())
    create_cmd, _ = _exchange(bus, TPM_CC.Create)
    present(secret, create_cmd)
    load(tpm, parent, obj)
    plain = tpm.start_session(TPM_SE.POLICY, attributes=0)  # unsalted, no encryption
    tpm.run_policy(plain, [step])
    bus.clear()
    same(tpm.run(c.Unseal(obj.handle), plain).out_data, secret)
    _, rsp = _exchange(bus, TPM_CC.Unseal)
    present(secret, rsp)


def test_encrypted_path_leaves_no_copy_anywhere(tpm: Tpm, bus: CapturingTransport) -> None:
    """Whole flow with both directions: no command or response carries the secret."""
    parent = srk(tpm)
    step = pcr_step(tpm)
    secret = new_secret()
    s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | DEC | ENC)
    obj = seal(tpm, parent, secret, sealed_template(policy_for(step)), s)
    load(tpm, parent, obj, s)
    pol = salted(tpm, TPM_SE.POLICY, "p256", attributes=ENC)
    tpm.run_policy(pol, [step])
    same(tpm.run(c.Unseal(obj.handle), pol).out_data, secret)
    for e in bus.exchanges:
        absent(secret, e.command)
        absent(secret, e.response or b"")
        absent(secret[:8], e.command)
        absent(secret[-8:], e.response or b"")


def test_sessions_keep_working_over_many_commands(tpm: Tpm) -> None:
    """Nonces roll correctly: one salted session carries twenty encrypted commands."""
    s = salted(tpm, TPM_SE.HMAC, "p384", attributes=CONT | ENC)
    seen = {tpm.get_random(16, s) for _ in range(20)}
    assert len(seen) == 20
    assert not s.ended
    assert s.attributes & TPMA_SESSION.continueSession
