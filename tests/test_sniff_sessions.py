"""The sniffer follows sessions: "encryption" under a key derivable from the bus is read.

A session started neither salted nor bound has an empty sessionKey (TPM 2.0
Part 1 §19.6.8), so its parameter-encryption key is KDFa over the authValue
and two nonces that crossed the bus. The proxy and ``tpmseal decode`` see the
StartAuthSession exchange and every nonce after it, and decrypt such fields;
salted sessions stay opaque.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tpmseal.cli.main import main
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.session.auth import AuthSession
from tpmseal.sniff.analysis.leaks import scan
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.analysis.render import render_exchange
from tpmseal.sniff.analysis.sessions import DERIVABLE, SessionTracker
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.sniff.formats.jsonl import JsonlWriter, exchange_json
from tpmseal.sniff.formats.offline import load
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_CC, TPM_RH, TPMA_NV, TPMA_SESSION
from tpmseal.wire.structures import NvPublic, Public

CONT = TPMA_SESSION.continueSession
ENC = CONT | TPMA_SESSION.encrypt
DEC = CONT | TPMA_SESSION.decrypt
EK = 0x81010001
needs_tools = pytest.mark.skipif(shutil.which("tpm2_startauthsession") is None,
                                 reason="tpm2-tools is not installed (Debian `tpm2-tools`)")


def _tools(proxy: Proxy, *argv: str) -> str:
    env = {**os.environ, "TPM2TOOLS_TCTI": proxy.tools_tcti}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _last(proxy: Proxy, code: int) -> Exchange:
    return [e for e in proxy.exchanges if e.code == code][-1]


@pytest.fixture
def careless(monkeypatch: pytest.MonkeyPatch) -> None:
    """tpmseal refuses to encrypt with an unsalted, unbound session; a careless TSS does not."""
    monkeypatch.setattr(AuthSession, "check_can_encrypt", lambda self: None)
    monkeypatch.setattr(AuthSession, "check_can_encrypt_response", lambda self: None)


@needs_tools
def test_tpm2_tools_unsalted_session_is_decrypted(sniffed: Proxy, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ctx = str(tmp_path / "s.ctx")
    _tools(sniffed, "tpm2_startauthsession", "--hmac-session", "-S", ctx)
    _tools(sniffed, "tpm2_sessionconfig", ctx, "--enable-encrypt")
    random = bytes.fromhex(_tools(sniffed, "tpm2_getrandom", "16", "--hex", "-S", ctx))
    ex = _last(sniffed, TPM_CC.GetRandom)
    assert ex.deciphering is not None and ex.deciphering.response is not None
    assert ex.deciphering.response.plaintext == random
    assert random not in (ex.response or b"")  # it did cross encrypted
    text = render_exchange(ex, secrets=[random])
    assert f"random_bytes (TPM2B_DIGEST) [{DERIVABLE}]: 16 bytes: " in text
    assert f"decrypted: 16 bytes: {random.hex()}" in text
    assert "secret visible once decrypted (the key derives from the bus)" in text
    [leak] = scan(sniffed.exchanges, [random])
    assert leak.direction == "response (decrypted with a key derivable from the bus)"
    assert leak.command == "GetRandom" and leak.offset == 16
    obj = exchange_json(ex)["response"]["params"][0]
    assert obj["exposed"] == DERIVABLE and obj["decrypted"] is True
    assert obj["value"] == random.hex()
    assert sniffed.sessions.live == {0x02000000: (False, False)}
    _tools(sniffed, "tpm2_flushcontext", ctx)
    assert sniffed.sessions.live == {}

    # tpmseal decode follows the sessions too, and --secret finds the random bytes
    cap = tmp_path / "c.jsonl"
    jw = JsonlWriter(cap)
    jw.write_all(sniffed.exchanges)
    jw.close()
    assert main(["decode", "--color", "never", "--secret", random.hex(),
                 str(cap)]) == ExitCode.LEAK_FOUND
    out, err = capsys.readouterr()
    assert f"decrypted: 16 bytes: {random.hex()}" in out
    assert err.count("LEAK: ") == 1 and "(decrypted with a key derivable from the bus)" in err


def test_tpmseal_client_unsalted_sessions_are_read(sniffed: Proxy, careless: None) -> None:
    secret = os.urandom(32)
    pub = NvPublic(0x01500020, TPM_ALG.SHA256,
                   TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.NO_DA, b"", 32)
    with Tpm.open(sniffed.uri) as t:
        t.run(cmds.NV_DefineSpace(TPM_RH.OWNER, b"", pub))
        s = t.start_session(attributes=DEC)
        t.nv_write(pub.nv_index, secret, TPM_RH.OWNER, s)  # s authorizes OWNER (empty auth)
        s.attributes = ENC
        got = t.get_random(16, s)
        # the response HMAC confirms OWNER's empty authValue, so the decrypt is certain
        s.attributes = ENC
        assert t.nv_read(pub.nv_index, 32, TPM_RH.OWNER, s) == secret
    write = _last(sniffed, TPM_CC.NV_Write)
    assert write.deciphering is not None and write.deciphering.command is not None
    assert write.deciphering.command.plaintext == secret
    assert "the authorized entity's authValue is empty" in write.deciphering.command.how
    rand = _last(sniffed, TPM_CC.GetRandom)
    assert rand.deciphering is not None and rand.deciphering.response is not None
    assert rand.deciphering.response.plaintext == got
    assert rand.deciphering.response.how == DERIVABLE
    leaks = scan(sniffed.exchanges, [secret])
    assert [(lk.command, lk.direction) for lk in leaks] == [
        ("NV_Write", "command (decrypted with a key derivable from the bus)"),
        ("NV_Read", "response (decrypted with a key derivable from the bus)")]


def test_bound_session_with_empty_bind_auth_is_read(sniffed: Proxy, careless: None) -> None:
    with Tpm.open(sniffed.uri) as t:
        s = t.start_session(bind=TPM_RH.OWNER, attributes=ENC)
        got = t.get_random(16, s)
    rand = _last(sniffed, TPM_CC.GetRandom)
    assert rand.deciphering is not None and rand.deciphering.response is not None
    assert rand.deciphering.response.plaintext == got
    assert "bound to an entity with an empty authValue" in rand.deciphering.response.how
    assert sniffed.sessions.live == {}  # Tpm.close() flushed it


def test_salted_sessions_stay_opaque(sniffed: Proxy) -> None:
    with Tpm.open(sniffed.uri) as t:
        ek: Public = t.read_public(EK)
        s = t.start_session(salt_key=ek, salt_handle=EK, attributes=ENC)
        t.confirm(s)
        got = t.get_random(16, s)
    rand = _last(sniffed, TPM_CC.GetRandom)
    assert rand.deciphering is None
    text = render_exchange(rand)
    assert "random_bytes (TPM2B_DIGEST) [encrypted]: 16 bytes: " in text
    assert got.hex() not in text and "decrypted" not in text
    assert scan(sniffed.exchanges, [got]) == []


def test_unconfirmed_authvalue_is_labelled_not_decrypted(sniffed: Proxy,
                                                         careless: None) -> None:
    pub = NvPublic(0x01500021, TPM_ALG.SHA256,
                   TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA, b"", 16)
    secret = os.urandom(16)
    with Tpm.open(sniffed.uri) as t:
        t.run(cmds.NV_DefineSpace(TPM_RH.OWNER, b"index-pass", pub))
        s = t.start_session(attributes=DEC)
        s.auth_value = b"index-pass"
        t.nv_write(pub.nv_index, secret, pub.nv_index, s)
    write = _last(sniffed, TPM_CC.NV_Write)
    assert write.rc == 0 and write.deciphering is not None
    d = write.deciphering.command
    assert d is not None and d.plaintext is None
    assert "and the authorized entity's authValue" in d.how
    assert scan(sniffed.exchanges, [secret]) == []


def test_tracker_offline_matches_live(sniffed: Proxy, careless: None, tmp_path: Path) -> None:
    with Tpm.open(sniffed.uri) as t:
        s = t.start_session(attributes=ENC)
        got = t.get_random(8, s)
    raw = tmp_path / "c.bin"
    raw.write_bytes(b"".join(e.command + (e.response or b"") for e in sniffed.exchanges))
    cap = load(raw.read_bytes())
    [rand] = [e for e in cap.exchanges if e.code == TPM_CC.GetRandom]
    assert rand.deciphering is not None and rand.deciphering.response is not None
    assert rand.deciphering.response.plaintext == got
    # a tracker that missed StartAuthSession knows nothing of the session
    late = SessionTracker()
    assert late.observe(rand).deciphering is None
