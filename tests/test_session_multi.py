"""Several sessions on one command, AES-256, refusals, bound sessions, session lifetime.

Part 1 §19.6.5 / §21: an authorization session may be joined by separate
sessions that only decrypt or encrypt parameters; their current nonceTPM
values (nonceDecrypt, nonceEncrypt) then enter the *first* session's command
HMAC, once each, and not at all when the first session is itself the
decrypt/encrypt session. swtpm rejects the command if the client gets this
wrong, so every successful command below is a verified vector.
"""

from __future__ import annotations

import pytest

from test_session_support import (
    CONT,
    DEC,
    ENC,
    FaultyTransport,
    absent,
    load,
    new_secret,
    pcr_step,
    policy_for,
    salted,
    same,
    seal,
    srk,
    user_sealed_template,
)
from tpmseal.client.tpm import Tpm
from tpmseal.errors import IntegrityError, ResponseIntegrityError, UsageError
from tpmseal.recipes.templates import sealed_template
from tpmseal.session.auth import AuthSession, PasswordSession, trim_auth
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.transport.base import open_transport
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as c
from tpmseal.wire.constants import TPM_ALG, TPM_CC, TPM_RH, TPM_SE, TPMA_SESSION
from tpmseal.wire.frames import build_response, split_response
from tpmseal.wire.marshal import Reader, tpm2b
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import AES_256_CFB, SymDef


def _last(bus: CapturingTransport, code: int) -> tuple[bytes, bytes]:
    e = [x for x in bus.exchanges if x.code == code][-1]
    return e.command, e.response or b""


# ----------------------------------------------------------------- several sessions


@pytest.mark.parametrize("auth_salted", [False, True], ids=["auth-unsalted", "auth-salted"])
def test_create_with_separate_decrypt_session(tpm: Tpm, bus: CapturingTransport,
                                              auth_salted: bool) -> None:
    """Session 1 authorizes the SRK, session 2 only decrypts inSensitive (nonceDecrypt)."""
    parent = srk(tpm)
    auth = (salted(tpm, TPM_SE.HMAC, "p256") if auth_salted
            else tpm.start_session(TPM_SE.HMAC))
    enc = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | DEC)
    secret = new_secret()
    obj = seal(tpm, parent, secret, user_sealed_template(), auth, enc)
    cmd, _ = _last(bus, TPM_CC.Create)
    absent(secret, cmd)
    load(tpm, parent, obj, auth, enc)
    same(tpm.run(c.Unseal(obj.handle)).out_data, secret)  # password, in the clear


@pytest.mark.parametrize("order", ["auth-encrypts", "extra-encrypts"])
def test_create_split_roles(tpm: Tpm, bus: CapturingTransport, order: str) -> None:
    """Decrypt and encrypt carried by different sessions, in both assignments."""
    parent = srk(tpm)
    a = salted(tpm, TPM_SE.HMAC, "rsa2048")
    b = salted(tpm, TPM_SE.HMAC, "p384")
    if order == "auth-encrypts":
        a.attributes, b.attributes = CONT | ENC, CONT | DEC
    else:
        a.attributes, b.attributes = CONT | DEC, CONT | ENC
    secret = new_secret()
    obj = seal(tpm, parent, secret, user_sealed_template(), a, b)
    cmd, rsp = _last(bus, TPM_CC.Create)
    absent(secret, cmd)
    absent(obj.private, rsp)
    load(tpm, parent, obj)
    same(tpm.run(c.Unseal(obj.handle)).out_data, secret)


def test_three_sessions_auth_decrypt_encrypt(tpm: Tpm, bus: CapturingTransport) -> None:
    parent = srk(tpm)
    # the authorizing session is salted and confirmed: its HMAC binds the encrypt session
    auth = salted(tpm, TPM_SE.HMAC, "p384")
    dec = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | DEC)
    enc = salted(tpm, TPM_SE.HMAC, "p256", attributes=CONT | ENC)
    secret = new_secret()
    obj = seal(tpm, parent, secret, user_sealed_template(), auth, dec, enc)
    cmd, rsp = _last(bus, TPM_CC.Create)
    absent(secret, cmd)
    absent(obj.private, rsp)
    assert len(cmd) > 3 * 40  # three auth entries went out
    load(tpm, parent, obj)
    same(tpm.run(c.Unseal(obj.handle)).out_data, secret)


@pytest.mark.parametrize("policy_salted", [False, True])
def test_unseal_with_separate_encrypt_session(tpm: Tpm, bus: CapturingTransport,
                                              policy_salted: bool) -> None:
    """A policy session authorizes, another session encrypts outData (nonceEncrypt).

    Only when the policy session is salted (and confirmed): its HMAC then covers the
    encrypt session's nonce. Next to an unsalted policy session, which has no HMAC,
    the encrypt session could be deleted on the bus (test_attack_drop.py): refused.
    """
    parent = srk(tpm)
    step = pcr_step(tpm)
    secret = new_secret()
    obj = seal(tpm, parent, secret, sealed_template(policy_for(step)))
    load(tpm, parent, obj)
    pol = (salted(tpm, TPM_SE.POLICY, "rsa2048", attributes=0) if policy_salted
           else tpm.start_session(TPM_SE.POLICY, attributes=0))
    tpm.run_policy(pol, [step])
    enc = salted(tpm, TPM_SE.HMAC, "p256", attributes=CONT | ENC)
    if not policy_salted:
        with pytest.raises(UsageError, match="authorizes nothing"):
            tpm.run(c.Unseal(obj.handle), pol, enc)
        return
    same(tpm.run(c.Unseal(obj.handle), pol, enc).out_data, secret)
    _, rsp = _last(bus, TPM_CC.Unseal)
    absent(secret, rsp)
    assert pol.ended and not enc.ended


@pytest.mark.parametrize("first", ["encrypting", "auditing"])
def test_get_random_two_unauthorizing_sessions(tpm: Tpm, first: str) -> None:
    """No handle to authorize: each session must encrypt or audit (else TPM_RC_ATTRIBUTES)."""
    a = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | ENC)
    b = salted(tpm, TPM_SE.HMAC, "p256", attributes=CONT | TPMA_SESSION.audit)
    sessions = (a, b) if first == "encrypting" else (b, a)
    assert len(tpm.get_random(32, *sessions)) == 32
    assert len(tpm.get_random(32, *reversed(sessions))) == 32
    plain = salted(tpm, TPM_SE.HMAC, "p384")
    with pytest.raises(TpmResponseError, match="ATTRIBUTES"):
        tpm.get_random(8, plain)


def test_one_session_decrypts_and_encrypts_as_second(tpm: Tpm, bus: CapturingTransport) -> None:
    """The same session as decrypt and encrypt session: its nonce enters the HMAC once."""
    parent = srk(tpm)
    auth = salted(tpm, TPM_SE.HMAC, "p384")
    both = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | DEC | ENC)
    secret = new_secret()
    obj = seal(tpm, parent, secret, user_sealed_template(), auth, both)
    cmd, rsp = _last(bus, TPM_CC.Create)
    absent(secret, cmd)
    absent(obj.private, rsp)


# ------------------------------------------------------------------- algorithms


def test_aes_256_cfb_session(tpm: Tpm, bus: CapturingTransport) -> None:
    if not tpm.test_parms(AES_256_CFB):
        pytest.skip("this TPM has no AES-256-CFB")
    parent = srk(tpm)
    step = pcr_step(tpm)
    secret = new_secret()
    s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | DEC, symmetric=AES_256_CFB)
    obj = seal(tpm, parent, secret, sealed_template(policy_for(step)), s)
    absent(secret, _last(bus, TPM_CC.Create)[0])
    load(tpm, parent, obj, s)
    pol = salted(tpm, TPM_SE.POLICY, "p384", attributes=ENC, symmetric=AES_256_CFB)
    tpm.run_policy(pol, [step])
    same(tpm.run(c.Unseal(obj.handle), pol).out_data, secret)
    absent(secret, _last(bus, TPM_CC.Unseal)[1])


@pytest.mark.parametrize(("auth_hash", "salt"), [(TPM_ALG.SHA384, "p384"),
                                                 (TPM_ALG.SHA1, "rsa2048"),
                                                 (TPM_ALG.SHA256, "p384")])
def test_other_session_hashes(tpm: Tpm, auth_hash: int, salt: str) -> None:
    parent = srk(tpm)
    s = salted(tpm, TPM_SE.HMAC, salt, attributes=CONT | DEC | ENC, auth_hash=auth_hash)
    secret = new_secret()
    obj = seal(tpm, parent, secret, user_sealed_template(), s)
    load(tpm, parent, obj, s)
    s.attributes = ENC
    same(tpm.run(c.Unseal(obj.handle), s).out_data, secret)


# --------------------------------------------------------------------- refusals


def test_refuses_encryption_on_unsalted_unbound_session(tpm: Tpm,
                                                        bus: CapturingTransport) -> None:
    parent = srk(tpm)
    s = tpm.start_session(TPM_SE.HMAC, attributes=CONT | DEC)
    assert s.session_key == b"" and not s.salted
    before = len(bus.exchanges)
    with pytest.raises(UsageError, match="neither salted nor bound"):
        seal(tpm, parent, new_secret(), user_sealed_template(), s)
    s.attributes = CONT | ENC
    with pytest.raises(UsageError, match="public nonces"):
        tpm.get_random(8, s)
    assert len(bus.exchanges) == before  # nothing was sent
    s.attributes = CONT
    seal(tpm, parent, new_secret(), user_sealed_template(), s)  # fine for authorization


def test_refuses_encryption_bound_to_empty_auth(tpm: Tpm) -> None:
    """Bound to the SRK (empty authValue), unsalted: authorizes, but must not encrypt."""
    parent = srk(tpm)
    s = tpm.start_session(TPM_SE.HMAC, bind=parent)
    assert len(s.session_key) == 32  # the TPM derives one from the empty authValue
    obj = seal(tpm, parent, new_secret(), user_sealed_template(), s)  # bound authorization
    # its response HMAC verified, but with a key anyone derives from the nonces on the
    # bus (an interposer could have forged it): that confirms nothing
    assert not s.confirmed
    with pytest.raises(UsageError, match="public nonces"):
        tpm.confirm(s)
    s.attributes = CONT | DEC
    with pytest.raises(UsageError):
        load(tpm, parent, obj, s)


@pytest.mark.parametrize("case", ["no-symmetric", "password", "two-decrypt", "not-2b",
                                  "ended", "too-many"])
def test_other_refusals(tpm: Tpm, case: str) -> None:
    parent = srk(tpm)
    if case == "no-symmetric":
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | ENC, symmetric=SymDef())
        with pytest.raises(UsageError, match="symmetric"):
            tpm.get_random(8, s)
    elif case == "password":
        pw = PasswordSession()
        pw.attributes = CONT | DEC
        with pytest.raises(UsageError, match="password"):
            seal(tpm, parent, b"x", user_sealed_template(), pw)
    elif case == "two-decrypt":
        a = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | DEC)
        b = salted(tpm, TPM_SE.HMAC, "p256", attributes=CONT | DEC)
        with pytest.raises(UsageError, match="at most one"):
            seal(tpm, parent, b"x", user_sealed_template(), a, b)
    elif case == "not-2b":
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | DEC)
        with pytest.raises(UsageError, match="not a sized buffer"):
            tpm.get_random(8, s)  # bytesRequested is a UINT16
    elif case == "ended":
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=ENC)
        tpm.get_random(8, s)
        assert s.ended
        with pytest.raises(UsageError, match="already ended"):
            tpm.get_random(8, s)
    else:
        ss = [tpm.start_session(TPM_SE.HMAC) for _ in range(3)]
        with pytest.raises(UsageError, match="three"):
            tpm.get_random(8, *ss, PasswordSession())


def test_start_session_needs_key_and_handle(tpm: Tpm) -> None:
    with pytest.raises(UsageError):
        tpm.start_session(TPM_SE.HMAC, salt_handle=0x81010001)


# ------------------------------------------------------------------ bound sessions


def test_bound_session_authorizes_other_entity(tpm: Tpm, bus: CapturingTransport) -> None:
    """Bound to object A, authorizing object B: B's authValue keys HMAC and CFB."""
    parent = srk(tpm)
    a = seal(tpm, parent, new_secret(), user_sealed_template(), auth=b"alpha")
    b = seal(tpm, parent, new_secret(), user_sealed_template(), auth=b"bravo")
    load(tpm, parent, a)
    load(tpm, parent, b)
    s = tpm.start_session(TPM_SE.HMAC, bind=a.handle, bind_auth=b"alpha",
                          attributes=CONT | ENC)
    tpm.confirm(s)
    s.auth_value = b"bravo"
    same(tpm.run(c.Unseal(b.handle), s).out_data, b.secret)
    s.auth_value = b"alpha"  # and its bind entity, where the HMAC leaves the authValue out
    same(tpm.run(c.Unseal(a.handle), s).out_data, a.secret)
    for e in bus.exchanges:
        absent(a.secret, e.response or b"")
        absent(b.secret, e.response or b"")


def test_bound_and_salted_session(tpm: Tpm) -> None:
    parent = srk(tpm)
    obj = seal(tpm, parent, new_secret(), user_sealed_template(), auth=b"pin")
    load(tpm, parent, obj)
    h, pub = 0x81010001, tpm.read_public(0x81010001)
    s = tpm.start_session(TPM_SE.HMAC, salt_key=pub, salt_handle=h, bind=obj.handle,
                          bind_auth=b"pin", attributes=ENC)
    tpm.confirm(s)
    s.auth_value = b"pin"
    same(tpm.run(c.Unseal(obj.handle), s).out_data, obj.secret)


def test_wrong_password_is_bad_auth_not_integrity(tpm: Tpm) -> None:
    parent = srk(tpm)
    obj = seal(tpm, parent, new_secret(), user_sealed_template(), auth=b"pin")
    load(tpm, parent, obj)
    s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=ENC)
    s.auth_value = b"nip"
    with pytest.raises(TpmResponseError) as e:
        tpm.run(c.Unseal(obj.handle), s)
    assert e.value.name in {"AUTH_FAIL", "BAD_AUTH"} and e.value.rc.session == 1


# ------------------------------------------------------------------ session lifetime


def _flushes(bus: CapturingTransport) -> list[int]:
    return [int.from_bytes(e.command[10:14], "big") for e in bus.exchanges
            if e.code == TPM_CC.FlushContext]


def test_session_ended_by_tpm_is_not_flushed_again(sim: Simulator) -> None:
    bus = CapturingTransport(open_transport(sim.uri))
    tpm = Tpm(bus)
    ended = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=ENC)  # continueSession clear
    kept = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | ENC)
    tpm.get_random(8, ended)
    tpm.get_random(8, kept)
    assert ended.ended and not kept.ended
    bus.clear()
    tpm.close()
    assert _flushes(bus) == [kept.handle]
    assert all(e.rc == 0 for e in bus.exchanges)


def test_flushed_session_is_marked_ended(tpm: Tpm, bus: CapturingTransport) -> None:
    s = salted(tpm, TPM_SE.HMAC, "rsa2048")
    tpm.flush(s.handle)
    assert s.ended
    with pytest.raises(UsageError):
        tpm.get_random(8, s)


def test_policy_session_ended_by_unseal(sim: Simulator) -> None:
    bus = CapturingTransport(open_transport(sim.uri))
    with Tpm(bus) as tpm:
        parent = srk(tpm)
        step = pcr_step(tpm)
        obj = seal(tpm, parent, new_secret(), sealed_template(policy_for(step)))
        load(tpm, parent, obj)
        pol = salted(tpm, TPM_SE.POLICY, "p256", attributes=ENC)
        tpm.run_policy(pol, [step])
        tpm.run(c.Unseal(obj.handle), pol)
        bus.clear()
    assert _flushes(bus) == [obj.handle]  # the object, not the ended session


# --------------------------------------------------------------------- trim_auth


@pytest.mark.parametrize(("value", "trimmed"), [
    (b"", b""),
    (b"\0", b""),
    (b"\0\0\0", b""),
    (b"pw", b"pw"),
    (b"pw\0", b"pw"),
    (b"pw\0\0\0\0", b"pw"),
    (b"\0pw", b"\0pw"),
    (b"p\0w", b"p\0w"),
    (b"p\0w\0", b"p\0w"),
    (b"\xff\0", b"\xff"),
    (bytes(31) + b"\x01", bytes(31) + b"\x01"),
    (b"\x01" + bytes(31), b"\x01"),
])
def test_trim_auth(value: bytes, trimmed: bytes) -> None:
    """Part 1 §19.6.4.3: trailing zero octets are removed, leading and inner ones kept."""
    assert trim_auth(value) == trimmed


def test_trimmed_and_untrimmed_auth_are_the_same_to_the_tpm(tpm: Tpm) -> None:
    parent = srk(tpm)
    obj = seal(tpm, parent, new_secret(), user_sealed_template(), auth=b"pw\0\0")
    load(tpm, parent, obj)
    for given in (b"pw", b"pw\0", b"pw\0\0\0\0\0"):
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=ENC)
        s.auth_value = given
        same(tpm.run(c.Unseal(obj.handle), s).out_data, obj.secret)
        same(tpm.run(c.Unseal(obj.handle), PasswordSession(given)).out_data, obj.secret)


# ------------------------------------------------------------ Load's returned Name


def _rewrite_load_name(code: int, command: bytes, response: bytes) -> bytes:
    if code != TPM_CC.Load or response[6:10] != b"\0\0\0\0":
        return response
    frame = split_response(response, 1, 1)
    name = c.LoadResponse.from_wire(frame.handles, Reader(frame.params)).name
    forged = name[:-1] + bytes([name[-1] ^ 1])
    return build_response(0, frame.handles, tpm2b(forged), frame.auths)


def test_load_name_mismatch_is_integrity_error(sim: Simulator) -> None:
    faulty = FaultyTransport(open_transport(sim.uri))
    bus = CapturingTransport(faulty)
    tpm = Tpm(bus)
    parent = srk(tpm)
    obj = seal(tpm, parent, new_secret(), user_sealed_template())
    faulty.tamper = _rewrite_load_name
    with pytest.raises(IntegrityError, match="Name") as e:
        load(tpm, parent, obj)
    assert not isinstance(e.value, ResponseIntegrityError)  # password session: Name check
    loaded = int.from_bytes(([x for x in bus.exchanges if x.code == TPM_CC.Load][-1]
                            .response or b"")[10:14], "big")
    faulty.tamper = None
    bus.clear()
    tpm.close()
    assert _flushes(bus) == [loaded]  # the object the TPM did load is not leaked


def test_load_name_rewrite_under_hmac_session(sim: Simulator) -> None:
    """With an HMAC session the rewritten Name already breaks the response HMAC.

    The TPM did load the object, so the client still flushes it at close().
    """
    faulty = FaultyTransport(open_transport(sim.uri))
    with Tpm(faulty) as tpm:
        parent = srk(tpm)
        obj = seal(tpm, parent, new_secret(), user_sealed_template())
        s = salted(tpm, TPM_SE.HMAC, "rsa2048")
        faulty.tamper = _rewrite_load_name
        result = None
        with pytest.raises(ResponseIntegrityError):
            result = load(tpm, parent, obj, s)
        assert result is None and obj.handle == 0
        faulty.tamper = None
    with Tpm(open_transport(sim.uri)) as tpm:
        assert tpm.handles(0x80000000) == []  # nothing left loaded


def test_auth_session_repr_hides_keys() -> None:
    s = AuthSession(0x02000000, TPM_SE.HMAC, TPM_ALG.SHA256, AES_256_CFB, b"K" * 32,
                    b"N" * 32, salted=True, auth_value=b"secret-pin")
    text = repr(s)
    assert "KKKK" not in text and "secret-pin" not in text and "NNNN" not in text
    assert repr(PasswordSession(b"secret-pin")) == "PasswordSession()"
    assert TPMA_SESSION.continueSession & s.attributes
    assert PasswordSession().handle == TPM_RH.RS_PW
