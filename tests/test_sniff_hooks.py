"""Interposer hooks: an active bus attacker in a few lines each, against the tpmseal client."""

from __future__ import annotations

import time

import pytest

from tpmseal import records
from tpmseal.client.tpm import Tpm
from tpmseal.errors import DecodeError, ResponseIntegrityError, TransportError, TrustError
from tpmseal.session.auth import AuthSession
from tpmseal.session.salt import make_salt
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.capture.hooks import (
    ANSWER,
    CLOSE,
    DROP,
    HANG,
    WAIT,
    Close,
    HookContext,
    Outcome,
    Respond,
    Verdict,
    build_command,
    check_verdict,
    error_response,
    flip,
    parse_command,
    parse_response,
    resolve,
    session_attribute_offsets,
    set_session_attributes,
    success_response,
)
from tpmseal.sniff.capture.proxy import HookError, Proxy
from tpmseal.transport.base import parse_uri
from tpmseal.transport.stream import StreamTransport
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_CC, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import (
    DigestList,
    DigestValues,
    PcrSelection,
    PcrSelectionList,
    Public,
)

EK = 0x81010001
ENCRYPT = TPMA_SESSION.continueSession | TPMA_SESSION.encrypt
TPM_RC_SYMMETRIC_P1 = 0x1D6  # format one: SYMMETRIC, parameter 1


def _salted(t: Tpm, ek: Public, attributes: int = ENCRYPT) -> AuthSession:
    """A salted session, confirmed by one StirRandom so that it may encrypt responses."""
    s = t.start_session(salt_key=ek, salt_handle=EK, attributes=attributes)
    t.confirm(s)
    return s


def _last(proxy: Proxy, code: int) -> Exchange:
    return [e for e in proxy.exchanges if e.code == code][-1]


def test_byte_flip_in_response_is_caught_by_the_hmac(sniffed: Proxy) -> None:
    with Tpm.open(sniffed.uri) as t:
        s = _salted(t, t.read_public(EK))

        def attack(ctx: HookContext) -> Verdict:  # flip the first random byte
            assert ctx.response is not None
            return flip(ctx.response, 16) if ctx.code == TPM_CC.GetRandom else None

        with sniffed.interpose(on_response=attack), pytest.raises(ResponseIntegrityError):
            t.get_random(16, s)
    assert _last(sniffed, TPM_CC.GetRandom).note == "response rewritten by hook"


def test_every_byte_flip_after_the_header_is_rejected(sniffed: Proxy) -> None:
    target = {"offset": 0}

    def attack(ctx: HookContext) -> Verdict:
        assert ctx.response is not None
        return flip(ctx.response, target["offset"]) if ctx.code == TPM_CC.GetRandom else None

    with Tpm.open(sniffed.uri) as t:
        ek = t.read_public(EK)
        s = _salted(t, ek)
        t.get_random(16, s)
        size = len(sniffed.exchanges[-1].response or b"")
        t.flush(s.handle)
        assert size == 101
        outcomes = set()
        for offset in range(10, size):  # the header is unauthenticated by design
            target["offset"] = offset
            s = _salted(t, ek)
            with sniffed.interpose(on_response=attack):
                with pytest.raises(ResponseIntegrityError) as e:
                    t.get_random(16, s)
                outcomes.add(type(e.value).__name__)
            t.flush(s.handle)
    # broken framing of an authorized response counts as tampering too
    assert outcomes == {"ResponseIntegrityError"}


def test_truncated_response_gives_a_clean_transport_error(sniffed: Proxy) -> None:
    def truncate(ctx: HookContext) -> Verdict:
        assert ctx.response is not None
        return Close(ctx.response[:12])

    with Tpm.open(sniffed.uri) as t, sniffed.interpose(on_response=truncate), \
            pytest.raises(TransportError, match="closed the connection after 12 bytes"):
        t.get_random(16)
    ex = _last(sniffed, TPM_CC.GetRandom)
    assert ex.tpm_response is not None and ex.response == ex.tpm_response[:12]


def test_dropped_command_closes_the_connection(sniffed: Proxy) -> None:
    with Tpm.open(sniffed.uri) as t, sniffed.interpose(on_command=lambda ctx: DROP), \
            pytest.raises(TransportError, match="closed the connection after 0 bytes"):
        t.get_random(16)
    ex = sniffed.exchanges[-1]
    assert ex.response is None and ex.tpm_command is None
    assert ex.note == "connection closed by hook at the command"


def test_never_answering_makes_the_client_time_out(sniffed: Proxy) -> None:
    with Tpm(StreamTransport(parse_uri(sniffed.uri), 0.3)) as t, sniffed.interpose(
            on_command=lambda ctx: HANG):
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="did not answer in time"):
            t.get_random(16)
        assert time.monotonic() - t0 >= 0.3
    assert sniffed.exchanges[-1].note == "hook never answered the command"


def test_delay_past_the_client_time_out(sniffed: Proxy) -> None:
    def slow(ctx: HookContext) -> Verdict:
        ctx.delay(0.4)
        return None

    with Tpm(StreamTransport(parse_uri(sniffed.uri), 0.2)) as t, sniffed.interpose(
            on_response=slow), pytest.raises(TransportError, match="did not answer in time"):
        t.get_random(16)
    with Tpm.open(sniffed.uri) as t, sniffed.interpose(on_response=slow):
        t.get_random(16)
    ex = sniffed.exchanges[-1]
    assert ex.finished - ex.started >= 0.4 and ex.tpm_seconds is not None
    assert ex.tpm_seconds < 0.4  # the TPM was fast; the bus was not


def test_forged_testparms_error(sniffed: Proxy) -> None:
    def forge(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.TestParms:
            return Respond(error_response(TPM_RC_SYMMETRIC_P1))
        return None

    with Tpm.open(sniffed.uri) as t:
        assert t.test_parms()
        with sniffed.interpose(on_command=forge):
            assert not t.test_parms()  # an unauthenticated error is believed
    ex = sniffed.exchanges[-1]
    assert ex.tpm_command is None and ex.rc_text == "0x1d6 TPM_RC_SYMMETRIC (parameter 1)"
    assert ex.note == "answered by hook; the TPM never saw the command"


def test_replayed_response(sniffed: Proxy) -> None:
    def replay(ctx: HookContext) -> Verdict:
        earlier = ctx.previous(TPM_CC.GetRandom)
        return Respond(earlier.response) if earlier and earlier.response else None

    with Tpm.open(sniffed.uri) as t:
        first = t.get_random(16)
        with sniffed.interpose(on_command=replay):
            assert t.get_random(16) == first


def test_forged_pcr_values_without_a_session(sniffed: Proxy) -> None:
    sel = PcrSelectionList((PcrSelection(TPM_ALG.SHA256, (16,)),))

    def forge(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.PCR_Read or ctx.response is None:
            return None
        real, auths = parse_response(ctx.response, ctx.command)
        assert isinstance(real, cmds.PCR_ReadResponse)
        fake = records.replace(real, pcr_values=DigestList((bytes(32),)))
        return success_response(fake, auths)

    with Tpm.open(sniffed.uri) as t:
        t.run(cmds.PCR_Extend(16, DigestValues(((TPM_ALG.SHA256, b"\x11" * 32),))))
        real = t.pcr_read(sel)[(TPM_ALG.SHA256, 16)]
        with sniffed.interpose(on_response=forge):
            assert t.pcr_read(sel)[(TPM_ALG.SHA256, 16)] == bytes(32) != real


def test_mitm_of_the_ek_salt_breaks_the_session(sniffed: Proxy) -> None:
    def swap_salt(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.StartAuthSession:
            return None
        cmd, auths = ctx.parse()
        assert isinstance(cmd, cmds.StartAuthSession)
        mine = make_salt(ek)  # a salt the attacker knows, instead of the client's
        return build_command(records.replace(cmd, encrypted_salt=mine.encrypted), auths)

    with Tpm.open(sniffed.uri) as t:
        ek = t.read_public(EK)
        with sniffed.interpose(on_command=swap_salt):
            s = t.start_session(salt_key=ek, salt_handle=EK, attributes=ENCRYPT)
        # the TPM refuses the client's first HMAC in the session, which the client reports
        # as the salt not having reached the TPM (never asking for an encrypted response)
        with pytest.raises(TrustError, match="does not match the trusted one") as e:
            t.confirm(s)
    assert "first HMAC of the salted session" in e.value.one_line()
    assert _last(sniffed, TPM_CC.StirRandom).rc == 0x9A2  # BAD_AUTH, session 1


def test_dropping_the_encrypt_attribute(sniffed: Proxy) -> None:
    def strip(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.GetRandom:
            return None
        return set_session_attributes(ctx.command, TPMA_SESSION.continueSession)

    with Tpm.open(sniffed.uri) as t:
        s = _salted(t, t.read_public(EK))
        with sniffed.interpose(on_command=strip), pytest.raises(TpmResponseError) as e:
            t.get_random(16, s)
    # a session that neither authorizes nor encrypts/audits is refused (Part 1 §19.6.2)
    assert e.value.rc.describe() == "0x982 TPM_RC_ATTRIBUTES (session 1)"
    ex = _last(sniffed, TPM_CC.GetRandom)
    assert ex.tpm_command != ex.command and ex.note == "command rewritten by hook"


def test_hook_exceptions_surface(sniffed: Proxy) -> None:
    def broken(ctx: HookContext) -> Verdict:
        raise ValueError("bug in the attack")

    with Tpm.open(sniffed.uri) as t, sniffed.interpose(on_command=broken), \
            pytest.raises(TransportError):
        t.get_random(1)
    assert "hook raised ValueError: bug in the attack" in sniffed.exchanges[-1].note
    with pytest.raises(HookError) as e:
        sniffed.check()
    assert isinstance(e.value.__cause__, ValueError)
    sniffed.hook_errors.clear()


def test_hook_returning_nonsense(sniffed: Proxy) -> None:
    def nonsense(ctx: HookContext) -> Verdict:
        return "oops"  # type: ignore[return-value]

    with Tpm.open(sniffed.uri) as t, sniffed.interpose(on_command=nonsense), \
            pytest.raises(TransportError):
        t.get_random(1)
    assert isinstance(sniffed.hook_errors.pop(), TypeError)


def test_context_decodes_for_the_hook(sniffed: Proxy) -> None:
    seen: list[tuple[str, int, str | None]] = []

    def look(ctx: HookContext) -> Verdict:
        dec = ctx.decoded_response
        seen.append((ctx.name, ctx.index, dec.params[0].name if dec and dec.params else None))
        return None

    with Tpm.open(sniffed.uri) as t, sniffed.interpose(on_response=look):
        t.get_random(4)
        t.get_random(4)
    assert seen == [("GetRandom", 0, "random_bytes"), ("GetRandom", 1, "random_bytes")]


def test_session_attribute_helpers() -> None:
    from tpmseal.wire.frames import AuthCommand
    from tpmseal.wire.frames import build_command as frame

    auths = [AuthCommand(0x02000000, b"n" * 16, 0x21, b"h" * 32),
             AuthCommand(0x40000009, b"", 0x01, b"")]
    data = frame(int(TPM_CC.NV_Read), [0x40000001, 0x01500000], auths, bytes(4))
    offsets = session_attribute_offsets(data)
    assert [data[o] for o in offsets] == [0x21, 0x01]
    changed = set_session_attributes(data, 0x01, 0)
    cmd, got = parse_command(changed)
    assert isinstance(cmd, cmds.NV_Read) and cmd.nv_index == 0x01500000
    assert [a.attributes for a in got] == [0x01, 0x01]
    assert build_command(cmd, got) == changed
    with pytest.raises(DecodeError, match="not in the registry"):
        parse_command(bytes.fromhex("80010000000a00000999"))


def test_verdicts_resolve() -> None:
    assert resolve(None, b"r", "response") == Outcome(b"r")
    assert resolve(b"x", b"r", "response") == Outcome(b"x", ANSWER, "response rewritten by hook")
    assert resolve(Respond(b"f"), None, "command").note.startswith("answered by hook")
    assert resolve(Close(b"abc"), b"r", "response") == Outcome(
        b"abc", CLOSE, "connection closed by hook at the response after sending 3 bytes")
    assert resolve(DROP, None, "command").reply is None
    assert resolve(HANG, b"r", "response") == Outcome(None, WAIT,
                                                      "hook never answered the response")
    with pytest.raises(TypeError, match="hook returned str"):
        check_verdict("nope")
