"""Attack 14: steering the admin with forged diagnostics.

A forged policy error plus forged PCR_Read values used to make tpmseal say "PCR 7
changed; reseal", nudging an admin to drop PCR 7 from the policy. Error responses
and unaudited reads carry no HMAC, so the report now names only PCRs whose
current values came back in an authenticated (audited, EK-salted) response; and
``probe``/``pcrs show`` say whether what they print is authenticated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from attacks.bus import direct, expect_error, interposer, tpm, unchanged
from test_attack_forgery import _forge_pcr_values
from tpmseal.errors import ExitCode
from tpmseal.records import replace
from tpmseal.sniff.capture.hooks import HookContext, Respond, Verdict, build_command, error_response
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_CC
from tpmseal.wire.structures import SymDef

RC_POLICY_FAIL_S1 = 0x99D  # TPM_RC_POLICY_FAIL, session 1


def _forge_policy_fail(ctx: HookContext) -> Verdict:
    return Respond(error_response(RC_POLICY_FAIL_S1)) if ctx.code == TPM_CC.Unseal else None


def test_forged_policy_failure_and_pcr_values_name_no_pcr(tcg_sim: Simulator,
                                                          tmp_path: Path) -> None:
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    assert direct(tcg_sim, "seal", "--input", str(key), "--output", str(blob)).rc == 0
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    with interposer(tcg_sim, on_command=_forge_policy_fail,
                    on_response=_forge_pcr_values) as p:
        r = tpm(p, "unseal", "--input", str(blob))
    # the diagnostic PCR_Read is audited: the forged values break its HMAC
    expect_error(r, ExitCode.INTEGRITY, "HMAC")
    assert "changed since sealing" not in r.err
    watch.check()


def test_forged_policy_failure_alone_is_tampering(tcg_sim: Simulator, tmp_path: Path) -> None:
    """Authenticated values all match the blob: an honest TPM would have unsealed."""
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(os.urandom(32))
    assert direct(tcg_sim, "seal", "--input", str(key), "--output", str(blob)).rc == 0
    with interposer(tcg_sim, on_command=_forge_policy_fail) as p:
        r = tpm(p, "unseal", "--input", str(blob))
    expect_error(r, ExitCode.INTEGRITY, "every PCR holds its sealed value", "interposer")


def test_pcrs_show_and_probe_authenticated_refuse_forgeries(tcg_sim: Simulator) -> None:
    with interposer(tcg_sim, on_response=_forge_pcr_values) as p:
        plain = tpm(p, "pcrs", "show", "--json")
        assert plain.rc == 0 and json.loads(plain.out)["authenticated"] is False
        expect_error(tpm(p, "pcrs", "show", "--authenticated"), ExitCode.INTEGRITY, "HMAC")
    r = direct(tcg_sim, "probe", "--authenticated", "--json")
    assert r.rc == 0 and json.loads(r.out)["authenticated"] is True
    r = direct(tcg_sim, "probe")
    assert "authenticated:    no (read over the bus without an HMAC" in r.out.decode()



EK_HANDLE = 0x81010001
RC_HANDLE_1 = 0x18B  # TPM_RC_HANDLE, handle 1
RC_VALUE_P1 = 0x1C4  # TPM_RC_VALUE, parameter 1


def _forge_absent_ek(ctx: HookContext) -> Verdict:
    if ctx.code == TPM_CC.ReadPublic and ctx.command[10:14] == EK_HANDLE.to_bytes(4, "big"):
        return Respond(error_response(RC_HANDLE_1))
    return None


def _forge_no_aes(ctx: HookContext) -> Verdict:
    return Respond(error_response(RC_VALUE_P1)) if ctx.code == TPM_CC.TestParms else None


def test_probe_authenticated_refuses_a_forged_absent_key(tcg_sim: Simulator) -> None:
    """An error response carries no HMAC; the audited handle list says the EK is there."""
    with interposer(tcg_sim, on_command=_forge_absent_ek) as p:
        plain = tpm(p, "probe")  # unauthenticated: shows the forgery, and says so
        assert plain.rc == 0 and "0x81010001 absent" in plain.out.decode()
        assert "authenticated:    no" in plain.out.decode()
        r = tpm(p, "probe", "--authenticated")
    expect_error(r, ExitCode.INTEGRITY, "forged error response")
    assert "--repin" not in r.err


def _null_symmetric(ctx: HookContext) -> Verdict:
    """The session's symmetric joins no HMAC: make it TPM_ALG_NULL (an audit still works)."""
    if ctx.code == TPM_CC.StartAuthSession:
        cmd, auths = ctx.parse()
        assert isinstance(cmd, cmds.StartAuthSession)
        return build_command(replace(cmd, symmetric=SymDef()), auths)
    return _forge_no_aes(ctx)


@pytest.mark.parametrize("hook", [_forge_no_aes, _null_symmetric],
                         ids=["testparms", "testparms-and-null-session-symmetric"])
def test_probe_authenticated_refuses_a_forged_testparms_error(
        tcg_sim: Simulator, hook: Callable[[HookContext], Verdict]) -> None:
    """Also when the audit session was made to carry no cipher, so that deciphering a
    parameter with it would fail: the TPM accepted an AES-128-CFB StartAuthSession."""
    with interposer(tcg_sim, on_command=hook) as p:
        plain = tpm(p, "probe")
        assert plain.rc == 0 and "AES-128-CFB:      NOT supported" in plain.out.decode()
        assert "authenticated:    no" in plain.out.decode()
        r = tpm(p, "probe", "--authenticated")
    expect_error(r, ExitCode.INTEGRITY, "TestParms", "forged error response")


@pytest.mark.parametrize("layout", ["blob", "nv"])
def test_pcrs_recover_does_not_report_a_change_on_forged_values(
        request: pytest.FixtureRequest, tmp_path: Path, layout: str) -> None:
    """A match cannot be forged, "no match" can: the PCR_Read is audited."""
    sim: Simulator = request.getfixturevalue("tcg_sim" if layout == "blob" else "eve_sim")
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(os.urandom(32))
    if layout == "blob":
        assert direct(sim, "seal", "--input", str(key), "--output", str(blob)).rc == 0
        where = ["--input", str(blob)]
    else:
        assert direct(sim, "seal", "--profile", "eve", "--nv", "--input", str(key)).rc == 0
        where = ["--profile", "eve", "--nv"]
    assert direct(sim, "pcrs", "recover", *where).rc == 0
    with interposer(sim, on_response=_forge_pcr_values) as p:
        r = tpm(p, "pcrs", "recover", *where)
    expect_error(r, ExitCode.INTEGRITY, "HMAC")
    assert "changed" not in r.err


@pytest.mark.parametrize("command", ["unseal", "vault-key"])
def test_forged_policy_failure_on_the_nv_layout_is_tampering(eve_sim: Simulator,
                                                             tmp_path: Path,
                                                             command: str) -> None:
    """No seal-time values to compare with, but the recovery search, on audited values,
    finds that the current PCRs satisfy the policy: an honest TPM would have passed."""
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    if command == "unseal":
        assert direct(eve_sim, "seal", "--profile", "eve", "--nv", "--input", str(key)).rc == 0
        argv = ["unseal", "--profile", "eve", "--nv"]
    else:
        assert direct(eve_sim, "vault-key", "--profile", "eve").rc == 0
        argv = ["vault-key", "--profile", "eve"]
    watch = unchanged(eve_sim, eve_sim.state / "trust.json")
    with interposer(eve_sim, on_command=_forge_policy_fail) as p:
        r = tpm(p, *argv)
    expect_error(r, ExitCode.INTEGRITY, "interposer")
    watch.check()


def test_forged_hmac_rejection_after_confirmation_never_advises_a_repin(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    """Create runs after the audited PCR_Read confirmed the EK-salted session: a forged
    TPM_RC_AUTH_FAIL there cannot mean another EK, and `provision --repin` advice would
    have the admin pin whatever key an interposer then hands out (without --ek-ca)."""
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    watch = unchanged(tcg_sim, tcg_sim.state / "trust.json")

    def auth_fail(ctx: HookContext) -> Verdict:
        return Respond(error_response(0x98E)) if ctx.code == TPM_CC.Create else None

    with interposer(tcg_sim, on_command=auth_fail) as p:
        r = tpm(p, "seal", "--input", str(key), "--output", str(tmp_path / "b.json"))
    expect_error(r, ExitCode.INTEGRITY, "altered in transit")
    assert "--repin" not in r.err and "or EK" not in r.err
    assert not (tmp_path / "b.json").exists()
    watch.check()
