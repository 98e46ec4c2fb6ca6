"""Attack 21: a substituted SRK for systemd 254+'s ``tpm2_srk`` tokens.

systemd-cryptenroll (254+) reads the SRK at 0x81000001 with ReadPublic, which no
HMAC covers, and stores it in the token (the LUKS2 header, which nothing
authenticates either); every unlock salts its session to that stored key. The
man in the middle (tests/attacks/mitm.py, aimed at the SRK) answers that
ReadPublic with its own RSA key — the token then holds it, as it would after a
rewrite of the header — and from then on unwraps each salt, re-wraps it to the
real SRK and decrypts the unsealed key. (Only the SRK read goes through it
here: the enrolment's Create, whose cpHash holds the SRK's Name, would need the
HMAC rewriting tests/attacks/strip.py does.)
The control reproduces systemd's unlock with tpm2-tools (``--tpmkey-context``
on the token's serialized ESYS_TR: what Esys_TR_Deserialize gives systemd) and
the attack recovers the key. tpmseal salts to the pinned EK and names the
parent only through its Name, which it never reads back: the substituted token
is refused before any command, nothing is recovered. An interposer pointing
Load at a storage key of its own is refused by the TPM itself: the token's SRK
Name is in Load's cpHash, under the EK-salted session's HMAC.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from attacks.bus import assert_no_leak, direct, expect_error, interposer, tpm
from attacks.mitm import ManInTheMiddle
from luks_support import make_image, needs_cryptsetup
from test_luks_systemd_newer import SRK, _tools, add_token, srk_token
from test_seal_support import flush_leftovers, tools
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes import systemd_tpm2
from tpmseal.sniff.capture.hooks import HookContext, Verdict
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_CC
from tpmseal.wire.structures import Public

pytestmark = [needs_cryptsetup, pytest.mark.skipif(
    shutil.which("tpm2_create") is None,
    reason="tpm2-tools is not installed (apt-get install tpm2-tools)")]

NOT_PINNED = "not the one pinned for this TPM"


def real_srk(sim: Simulator) -> Public:
    with Tpm.open(sim.uri) as t:
        return t.read_public(SRK)


def load_token_object(tcti: str, work: Path, token: dict[str, object]) -> None:
    """Load the token's sealed object under the SRK (u.ctx)."""
    blob = base64.b64decode(str(token["tpm2-blob"]))
    size = int.from_bytes(blob[:2], "big") + 2
    (work / "u.priv").write_bytes(blob[:size])
    (work / "u.pub").write_bytes(blob[size:])
    _tools(tcti, work, "tpm2_load", "-C", hex(SRK), "-u", "u.pub", "-r", "u.priv",
           "-c", "u.ctx")


def systemd_style_unseal(tcti: str, work: Path, token: dict[str, object]) -> None:
    """What systemd 254+ does at unlock, with tpm2-tools: salt a policy session to the
    token's SRK (its serialized ESYS_TR), PolicyPCR, Unseal the loaded object (u.ctx) with
    the response encrypted."""
    (work / "token-srk.tr").write_bytes(base64.b64decode(str(token["tpm2_srk"])))
    _tools(tcti, work, "tpm2_startauthsession", "--policy-session", "--tpmkey-context",
           "token-srk.tr", "-g", "sha256", "-G", "aes", "-S", "pol.ctx")
    _tools(tcti, work, "tpm2_policypcr", "-S", "pol.ctx", "-l", "sha256:7")
    _tools(tcti, work, "tpm2_sessionconfig", "--enable-encrypt", "pol.ctx")
    _tools(tcti, work, "tpm2_unseal", "-c", "u.ctx", "-p", "session:pol.ctx", "-o",
           "unsealed")
    _tools(tcti, work, "tpm2_flushcontext", "-t")


def test_srk_substituted_at_enrolment_robs_systemds_unlock_not_tpmseals(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = os.urandom(32)
    img, pw = make_image(tmp_path)
    mitm = ManInTheMiddle(real_srk(tcg_sim), SRK)
    token = srk_token(tcg_sim.tools_tcti, tmp_path / "enrol", secret)
    flush_leftovers(tcg_sim.uri)
    load_token_object(tcg_sim.tools_tcti, tmp_path / "enrol", token)
    with interposer(tcg_sim, on_command=mitm.on_command, on_response=mitm.on_response) as p:
        _tools(p.tools_tcti, tmp_path, "tpm2_readpublic", "-c", hex(SRK), "-t", "read.tr")
        assert mitm.read_publics_substituted >= 1
        token["tpm2_srk"] = base64.b64encode((tmp_path / "read.tr").read_bytes()).decode()
        stored = systemd_tpm2.parse_srk(base64.b64decode(str(token["tpm2_srk"])), "token")
        assert stored.public.name() == mitm.fake_ek.name()  # the attacker's key, in the token
        # control: systemd's unlock salts to the stored key, and the attacker reads the key
        systemd_style_unseal(p.tools_tcti, tmp_path / "enrol", token)
        assert (tmp_path / "enrol" / "unsealed").read_bytes() == secret  # relay transparent
        assert mitm.salts_unwrapped == 1
        mitm.expect_recovered(secret, "the Unseal response of a systemd-style unlock")
        assert_no_leak(p.exchanges, secret)  # a passive observer still sees nothing
    flush_leftovers(tcg_sim.uri)
    add_token(img, pw, secret, token)
    mitm.recovered.clear()
    with interposer(tcg_sim, on_command=mitm.on_command, on_response=mitm.on_response) as p:
        r = tpm(p, "luks", "test", str(img))
        expect_error(r, ExitCode.INTEGRITY, NOT_PINNED, "substituted")
        assert p.exchanges == [], "tpmseal sent a command for a token it refuses"
    mitm.expect_nothing(secret)


def test_load_pointed_at_another_storage_key_is_refused_by_the_tpm(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    """The interposer rewrites Load's parent to a storage key of its own (same template,
    persisted at 0x81000002). The Name the token gives for 0x81000001 is in the cpHash
    the salted session's HMAC covers, so the TPM rejects the command: exit 6, no key."""
    secret = os.urandom(32)
    img, pw = make_image(tmp_path)
    add_token(img, pw, secret, srk_token(tcg_sim.tools_tcti, tmp_path / "enrol", secret))
    tools(tcg_sim, "tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "rsa2048:aes128cfb",
          "-c", str(tmp_path / "own.ctx"))
    tools(tcg_sim, "tpm2_evictcontrol", "-C", "o", "-c", str(tmp_path / "own.ctx"),
          "0x81000002")
    flush_leftovers(tcg_sim.uri)
    rewritten, answers = [], []

    def redirect(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.Load:
            return None
        rewritten.append(ctx.code)
        return ctx.command[:10] + (0x81000002).to_bytes(4, "big") + ctx.command[14:]

    def watch(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.Load and ctx.response is not None:
            answers.append(int.from_bytes(ctx.response[6:10], "big"))
        return None

    try:
        with interposer(tcg_sim, on_command=redirect, on_response=watch) as p:
            r = tpm(p, "luks", "test", str(img))
            exchanges = p.exchanges
        expect_error(r, ExitCode.INTEGRITY, "TPM2_Load", "not the one the systemd-tpm2 token names")
        rc = answers[-1]  # after any TPM_RC_RETRY: a session's AUTH_FAIL or BAD_AUTH
        assert rewritten and rc & 0x800 and rc & 0x0BF in (0x08E, 0x0A2), \
            f"Load answered {rc:#x}, not an HMAC failure"
        assert "Unseal" not in [e.name for e in exchanges]
        assert_no_leak(exchanges, secret, base64.b64encode(secret))
        # without the interposer the same token unlocks
        assert direct(tcg_sim, "luks", "test", str(img)).rc == 0
    finally:
        tools(tcg_sim, "tpm2_evictcontrol", "-C", "o", "-c", "0x81000002", check=False)
