"""Forged errors while tpmseal picks a PolicyOR branch or a signed policy.

Policy commands carry no sessions, so their error responses are the interposer's to
write. Unseal tries each PolicyOR branch (and each signed candidate) with PolicyPCR and
takes TPM_RC_VALUE as "not this state": an interposer answering VALUE to every try
makes none fit. That is a denial of service, but it must not be *reported* as "the
PCR values match none of the states" (exit 5, "boot one of the sealed configurations,
or reseal"): SECURITY.md's authenticated diagnostics name a PCR change only on values
read in an audited session. Where those values do fit a state, it is tampering (exit 6).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from attacks.bus import direct, expect_error, interposer, tpm, unchanged
from test_signed_policy import COUNTER, PCRS, _counter, _extend, _keygen, _sealed, _sign
from tpmseal.errors import ExitCode
from tpmseal.sniff.capture.hooks import HookContext, Respond, Verdict, error_response
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_CC

RC_VALUE_P1 = 0x1C4  # TPM_RC_VALUE, parameter 1: PolicyPCR's pcrDigest does not match
RC_POLICY = 0x126  # TPM_RC_POLICY: PolicyNV's comparison failed


def _no_branch_fits(ctx: HookContext) -> Verdict:
    return Respond(error_response(RC_VALUE_P1)) if ctx.code == TPM_CC.PolicyPCR else None


def _states(sim: Simulator, d: Path) -> list[str]:
    """A secret in d/key, and ``--pcr-values`` for another state and the current one."""
    (d / "key").write_bytes(os.urandom(32))
    now = direct(sim, "pcrs", "show", "--pcrs", PCRS, "--json")
    (d / "now.json").write_bytes(now.out)
    other = json.loads(now.out)
    other["sha256"]["7"] = "22" * 32
    (d / "other.json").write_text(json.dumps(other))
    return ["--input", str(d / "key"), "--pcrs", PCRS, "--pcr-values", str(d / "other.json"),
            "--pcr-values", str(d / "now.json")]


def _two_states(sim: Simulator, d: Path) -> Path:
    """A secret sealed to PolicyOR over the current state and another one."""
    blob = d / "blob.json"
    r = direct(sim, "seal", "--output", str(blob), *_states(sim, d))
    assert r.rc == 0, r.err
    return blob


def test_forged_value_errors_on_every_branch_are_tampering(tcg_sim: Simulator,
                                                           tmp_path: Path) -> None:
    blob = _two_states(tcg_sim, tmp_path)
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    with interposer(tcg_sim, on_command=_no_branch_fits) as p:
        r = tpm(p, "unseal", "--input", str(blob))
    expect_error(r, ExitCode.INTEGRITY, "interposer")
    watch.check()
    _extend(tcg_sim)  # a real change is still a PCR mismatch
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob)), ExitCode.PCR_MISMATCH,
                 "none of the 2 states")


def test_forged_value_errors_on_every_signed_policy_are_tampering(tcg_sim: Simulator,
                                                                  tmp_path: Path) -> None:
    key = _keygen(tcg_sim, tmp_path)
    _, blob = _sealed(tcg_sim, tmp_path, key)
    pol = _sign(tcg_sim, key, tmp_path / "p.json", "--current")
    with interposer(tcg_sim, on_command=_no_branch_fits) as p:
        r = tpm(p, "unseal", "--input", str(blob), "--policy", str(pol))
    expect_error(r, ExitCode.INTEGRITY, "interposer")
    _extend(tcg_sim)
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(pol)),
                 ExitCode.PCR_MISMATCH, "no signed policy covers")


def test_forged_policy_nv_failure_is_not_a_revocation(tcg_sim: Simulator,
                                                      tmp_path: Path) -> None:
    """A valid versioned policy whose PolicyNV the interposer answers with TPM_RC_POLICY
    would be reported as "revoked" (exit 5, "pass a newer signed policy"); the counter
    read in the audited session says it is not."""
    key = _keygen(tcg_sim, tmp_path)
    _, blob = _sealed(tcg_sim, tmp_path, key, "--min-version-nv", COUNTER)
    pol = _sign(tcg_sim, key, tmp_path / "v.json", "--current", "--version",
                str(_counter(tcg_sim)), "--nv-index", COUNTER)

    def not_revoked(ctx: HookContext) -> Verdict:
        return Respond(error_response(RC_POLICY)) if ctx.code == TPM_CC.PolicyNV else None

    with interposer(tcg_sim, on_command=not_revoked) as p:
        r = tpm(p, "unseal", "--input", str(blob), "--policy", str(pol))
    expect_error(r, ExitCode.INTEGRITY, "interposer")
    assert "revoked" not in r.err


def test_forged_policy_failure_at_unseal_of_states_or_signed_is_tampering(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    """TPM_RC_POLICY_FAIL from Unseal (no HMAC) after a branch or a signed policy was
    accepted. For PolicyOR it used to read "sha256 PCR 7 changed since sealing" (exit 5:
    the audited values compared with the first state only); they fit the second."""
    blob = _two_states(tcg_sim, tmp_path)
    key = _keygen(tcg_sim, tmp_path)
    (tmp_path / "s").mkdir()
    _, signed_blob = _sealed(tcg_sim, tmp_path / "s", key)
    pol = _sign(tcg_sim, key, tmp_path / "p.json", "--current")

    def policy_fail(ctx: HookContext) -> Verdict:
        return Respond(error_response(0x99D)) if ctx.code == TPM_CC.Unseal else None

    with interposer(tcg_sim, on_command=policy_fail) as p:
        expect_error(tpm(p, "unseal", "--input", str(blob)), ExitCode.INTEGRITY, "interposer")
        expect_error(tpm(p, "unseal", "--input", str(signed_blob), "--policy", str(pol)),
                     ExitCode.INTEGRITY, "altered in transit")  # so it was already


def test_forged_value_errors_on_eves_nv_layout_are_tampering(eve_sim: Simulator,
                                                             tmp_path: Path) -> None:
    """The same forgery on PolicyOR states recorded for EVE's NV layout (trust file)."""
    r = direct(eve_sim, "seal", "--profile", "eve", "--nv", *_states(eve_sim, tmp_path))
    assert r.rc == 0, r.err
    with interposer(eve_sim, on_command=_no_branch_fits) as p:
        r = tpm(p, "unseal", "--profile", "eve", "--nv")
    expect_error(r, ExitCode.INTEGRITY, "interposer")
    assert direct(eve_sim, "unseal", "--profile", "eve", "--nv").rc == 0
