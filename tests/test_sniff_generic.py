"""Commands outside the registry decode generically from the Part 3 table; password
sessions never mark a parameter encrypted."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from tpmseal.sniff.analysis.leaks import scan
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.analysis.render import render_exchange
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.wire.commands import REGISTRY, Command
from tpmseal.wire.constants import TPM_CC, TPM_RH, TPMA_SESSION, enum_name, members
from tpmseal.wire.decode import command_name, decode_command, decode_response
from tpmseal.wire.frames import AuthCommand, AuthResponse, build_command, build_response
from tpmseal.wire.handles import SHAPES, shape

PW = TPM_RH.RS_PW
CONT = TPMA_SESSION.continueSession


@pytest.mark.parametrize("cls", [REGISTRY[cc] for cc in sorted(REGISTRY)],
                         ids=lambda cls: enum_name(TPM_CC, cls.CC))
def test_table_agrees_with_the_registry(cls: type[Command[Any]]) -> None:
    s = shape(int(cls.CC))
    assert s is not None and s.name == enum_name(TPM_CC, cls.CC)
    lay, rlay = cls.layout(), cls.RESPONSE.layout()
    auth = [h.auth for h in lay.handles]
    assert len(auth) == s.handles
    assert auth == [True] * s.auth_handles + [False] * (s.handles - s.auth_handles)
    assert len(rlay.handles) == s.response_handles
    assert lay.first_param_encryptable == s.decrypt
    assert rlay.first_param_encryptable == s.encrypt


def test_table_covers_every_command_code() -> None:
    for name, cc in members(TPM_CC).items():
        s = shape(cc)
        assert s is not None and s.name == name, name
    assert all(0 <= s.auth_handles <= s.handles <= 3 for s in SHAPES.values())
    assert {s.code for s in SHAPES.values() if s.response_handles} == {
        TPM_CC.CreatePrimary, TPM_CC.Load, TPM_CC.LoadExternal, TPM_CC.CreateLoaded,
        TPM_CC.ContextLoad, TPM_CC.StartAuthSession, TPM_CC.HMAC_Start,
        TPM_CC.HashSequenceStart}
    assert command_name(0x19D) == "NV_DefineSpace2" and command_name(0x999) == "0x999"


def test_unregistered_command_decodes_handles_sessions_and_first_tpm2b() -> None:
    cmd = build_command(TPM_CC.HierarchyChangeAuth, [TPM_RH.OWNER],
                        [AuthCommand(PW, b"", CONT, b"oldpass")], b"\x00\x07newpass")
    dec = decode_command(cmd)
    assert dec.error is None and dec.name == "HierarchyChangeAuth"
    assert dec.handles == [("handle 1 (authorized)", TPM_RH.OWNER)]
    assert [s.hmac for s in dec.sessions] == [b"oldpass"]
    assert [(p.name, p.value) for p in dec.params] == [("parameter 1", b"newpass")]
    assert dec.note == ("remaining parameters not decoded (TPM2_HierarchyChangeAuth is not in "
                        "tpmseal's command registry): 0 bytes")
    resp = build_response(0, [], b"", [AuthResponse(b"", CONT, b"")])
    rdec = decode_response(resp, dec)
    assert rdec.error is None and len(rdec.sessions) == 1
    text = render_exchange(Exchange.passive(0, 1, cmd, resp, 0.0, 0.0))
    assert "handle 1 (authorized): 0x40000001 (OWNER)" in text
    assert "decode error" not in text and "not in tpmseal's command registry" in text

    # HashSequenceStart: no command handles, one response handle; parameters left undecoded
    le = build_command(TPM_CC.HashSequenceStart, [], [], b"\x00\x04abcd" + b"\x00\x0b")
    ldec = decode_command(le)
    assert ldec.error is None and ldec.handles == []
    assert [p.value for p in ldec.params] == [b"abcd"]
    assert ldec.note is not None and ldec.note.endswith(": 2 bytes")
    lresp = build_response(0, [0x80000001], b"", [])
    lrdec = decode_response(lresp, ldec)
    assert lrdec.error is None and lrdec.handles == [("handle 1", 0x80000001)]

    # PolicySecret: two handles, the first authorized; a garbled one is a real decode error
    ps = build_command(TPM_CC.PolicySecret, [TPM_RH.ENDORSEMENT, 0x03000000],
                       [AuthCommand(PW, b"", CONT, b"")], b"\x00\x00" + bytes(10))
    psd = decode_command(ps)
    assert [n for n, _ in psd.handles] == ["handle 1 (authorized)", "handle 2"]
    assert psd.error is None
    bad = decode_command(build_command(TPM_CC.PolicySecret, [], [], b""))
    assert bad.error is not None and "handle" in bad.error
    unknown = decode_command(bytes.fromhex("80010000000a00000999"))
    assert unknown.error is not None and "not a TPM 2.0 command code" in unknown.error


def test_password_session_never_marks_encrypted() -> None:
    # decrypt/encrypt on TPM_RS_PW: the TPM has no key for it, the bytes are plaintext
    pw = AuthCommand(PW, b"", CONT | TPMA_SESSION.decrypt | TPMA_SESSION.encrypt, b"")
    cmd = build_command(TPM_CC.NV_Write, [TPM_RH.OWNER, 0x01500000], [pw],
                        b"\x00\x04data\x00\x00")
    dec = decode_command(cmd)
    assert dec.error is None and not any(p.encrypted for p in dec.params)
    assert dec.params[0].value == b"data"
    unseal = build_command(TPM_CC.Unseal, [0x80000001], [pw], b"")
    resp = build_response(0, [], b"\x00\x04" + b"ssss", [AuthResponse(b"", CONT, b"")])
    rdec = decode_response(resp, decode_command(unseal))
    assert not rdec.params[0].encrypted and rdec.params[0].value == b"ssss"
    text = render_exchange(Exchange.passive(0, 1, unseal, resp, 0.0, 0.0))
    assert "[encrypted" not in text and "out_data (TPM2B_SENSITIVE_DATA): 4 bytes" in text
    # a real session next to the password session still counts
    hmac = AuthCommand(0x02000000, b"n" * 16, CONT | TPMA_SESSION.decrypt, b"h" * 32)
    both = build_command(TPM_CC.NV_Write, [TPM_RH.OWNER, 0x01500000],
                         [AuthCommand(PW, b"", CONT, b""), hmac], b"\x00\x04data\x00\x00")
    assert decode_command(both).params[0].encrypted


def test_password_session_decrypt_bit_on_a_real_tpm(bus: CapturingTransport) -> None:
    """PCR_Event (not in the registry) with decrypt set on TPM_RS_PW: plaintext on the bus."""
    pw = AuthCommand(PW, b"", CONT | TPMA_SESSION.decrypt, b"")
    event = b"plaintext event data"
    bus.send(build_command(TPM_CC.PCR_Event, [16], [pw], len(event).to_bytes(2, "big") + event))
    [ex] = bus.exchanges
    text = render_exchange(ex)
    assert ">>> Command: PCR_Event" in text and "handle 1 (authorized): 0x00000010 (PCR 16)" \
        in text
    assert "[encrypted" not in text and f"parameter 1 (TPM2B): {len(event)} bytes" in text
    assert [lk.direction for lk in scan([ex], [event])] == ["command"]


@pytest.mark.skipif(shutil.which("tpm2_changeauth") is None,
                    reason="tpm2-tools is not installed (Debian `tpm2-tools`)")
def test_tpm2_changeauth_is_decoded(sniffed: Proxy) -> None:
    env = {**os.environ, "TPM2TOOLS_TCTI": sniffed.tools_tcti}
    done = subprocess.run(["tpm2_changeauth", "-c", "owner", "newOwnerPass"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    [ex] = [e for e in sniffed.exchanges if e.code == TPM_CC.HierarchyChangeAuth]
    assert ex.rc == 0
    text = render_exchange(ex)
    assert ">>> Command: HierarchyChangeAuth" in text
    assert "handle 1 (authorized): 0x40000001 (OWNER)" in text
    assert "decode error" not in text and "not in tpmseal's command registry" in text
    assert [lk.direction for lk in scan([ex], [b"newOwnerPass"])] == ["command"]
