"""reseal with one salted session: Create's decrypt rides on the unseal's session.

A reseal whose new policy reads no PCRs (PolicyOR states, a signer, given values)
keeps the unseal's EK-salted policy session after Unseal and passes it to Create
as a decrypt-only session next to the SRK's empty password (recipes/sealing.py,
``carrier``), as Load already does with inPrivate. That is sound only if

* deleting the carrier leaks nothing: the client encrypted inSensitive before
  sending, the TPM takes the ciphertext for the data (or refuses it), and the
  response then lacks the carrier's HMAC, which the client refuses;
* the parent cannot be swapped: the TPM checks the command HMAC of a session that
  authorizes nothing too (reference SessionProcess.c, "check HMAC for
  encrypt/decrypt/audit only sessions"), and its cpHash holds the SRK's Name.

Both are attacked here on swtpm; a policy that reads PCRs still takes a second
salted session for the audited PCR_Read (test_seal_roundtrip.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from attacks.bus import (
    assert_no_leak,
    direct,
    expect_error,
    expect_ok,
    interposer,
    tpm,
    unchanged,
)
from test_seal_support import TpmLog, cli
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.templates import SRK_RSA_TEMPLATE
from tpmseal.records import replace
from tpmseal.sniff.capture.hooks import (
    HookContext,
    Verdict,
    error_response,
    parse_response,
    success_response,
)
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_CC, TPM_RH, TPMA_SESSION
from tpmseal.wire.frames import build_command, split_command
from tpmseal.wire.structures import SensitiveCreate

PCRS = "sha256:0,4,7"
SALTED_START = bytes.fromhex("00000176")


def _states(sim: Simulator, d: Path) -> Path:
    """A second PCR state (PCR 7 other) for --add-state."""
    now = json.loads(direct(sim, "pcrs", "show", "--pcrs", PCRS, "--json").out)
    now["sha256"]["7"] = "33" * 32
    (d / "next.json").write_text(json.dumps(now))
    return d / "next.json"


def _sealed(sim: Simulator, d: Path, pin: bool) -> tuple[bytes, list[str]]:
    secret = os.urandom(32)
    (d / "key").write_bytes(secret)
    (d / "pin").write_bytes(b"2468")
    extra = ["--pin-file", str(d / "pin")] if pin else []
    r = direct(sim, "seal", *extra, "--pcrs", PCRS, "--input", str(d / "key"), "--output",
               str(d / "b.json"))
    assert r.rc == 0, r.err
    return secret, extra


@pytest.mark.parametrize("pin", [False, True], ids=["plain", "pin"])
def test_reseal_to_states_starts_one_salted_session(tcg_sim: Simulator, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    pin: bool) -> None:
    secret, extra = _sealed(tcg_sim, tmp_path, pin)
    log = TpmLog().install(monkeypatch)
    r = cli(["--tpm", tcg_sim.uri, "reseal", *extra, "--input", str(tmp_path / "b.json"),
             "--add-state", str(_states(tcg_sim, tmp_path))])
    assert r.rc == 0, r.err
    names = log.names()
    assert names.count("StartAuthSession") == 1 and "PCR_Read" not in names[1:]
    assert names[-2:] == ["FlushContext", "Create"]  # the loaded object, then the new one
    create = next(c for c, _ in log.exchanges() if c[6:10] == bytes.fromhex("00000153"))
    frame = split_command(create, 1)
    assert frame.auths[0].session_handle == TPM_RH.RS_PW
    assert frame.auths[1].attributes == TPMA_SESSION.decrypt
    expect_ok(direct(tcg_sim, "unseal", *extra, "--input", str(tmp_path / "b.json")), secret)


def test_deleting_the_carrier_from_create_leaks_nothing(tcg_sim: Simulator,
                                                        tmp_path: Path) -> None:
    """The interposer deletes the decrypt-only session from Create: the TPM sees the
    ciphertext as inSensitive; nothing secret crosses the bus, the client refuses
    the answer, and the blob is not rewritten."""
    secret, _ = _sealed(tcg_sim, tmp_path, False)
    more = _states(tcg_sim, tmp_path)
    dropped = {"n": 0}

    def drop(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.Create:
            return None
        frame = split_command(ctx.command, 1)
        assert len(frame.auths) == 2 and frame.auths[1].attributes == TPMA_SESSION.decrypt
        dropped["n"] += 1
        return build_command(ctx.code, frame.handles, frame.auths[:1],
                             ctx.command[frame.params_offset:])

    watch = unchanged(tcg_sim, tmp_path / "b.json")
    with interposer(tcg_sim, on_command=drop) as p:
        r = tpm(p, "reseal", "--input", str(tmp_path / "b.json"), "--add-state", str(more))
        assert dropped["n"] == 1
        assert r.rc != 0 and r.out == b"", r.err
        assert_no_leak(p.exchanges, secret)
    watch.check()
    expect_ok(direct(tcg_sim, "unseal", "--input", str(tmp_path / "b.json")), secret)


def test_swapping_the_parent_under_the_carrier_is_refused_by_the_tpm(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    """The interposer points Create at a storage key of its own (empty authValue, so
    the password session still authorizes it; another unique than the SRK's, or it
    would be the SRK itself, primary keys being derived from seed and template): the
    carrier's command HMAC covers the SRK's Name, the TPM checks it although the
    carrier authorizes nothing, and refuses; no object is created under that key."""
    secret, _ = _sealed(tcg_sim, tmp_path, False)
    more = _states(tcg_sim, tmp_path)
    with Tpm.open(tcg_sim.uri) as t:
        own = t.run(cmds.CreatePrimary(TPM_RH.OWNER, SensitiveCreate(b"", b""),
                                       SRK_RSA_TEMPLATE.with_unique(b"attacker"))).object_handle
        t.run(cmds.EvictControl(TPM_RH.OWNER, own, 0x81000077))
    answers: list[int] = []

    def swap(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.Create:
            return None
        frame = split_command(ctx.command, 1)
        return build_command(ctx.code, [0x81000077], frame.auths,
                             ctx.command[frame.params_offset:])

    def seen(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.Create and ctx.response is not None:
            answers.append(int.from_bytes(ctx.response[6:10], "big"))
        return None

    watch = unchanged(tcg_sim, tmp_path / "b.json")
    try:
        with interposer(tcg_sim, on_command=swap, on_response=seen) as p:
            r = tpm(p, "reseal", "--input", str(tmp_path / "b.json"), "--add-state", str(more))
            assert r.rc != 0 and r.out == b"", r.err
            assert_no_leak(p.exchanges, secret)
        assert len(answers) == 1 and answers[0] != 0  # the TPM refused, not the client
        watch.check()
    finally:
        with Tpm.open(tcg_sim.uri) as t:
            t.run(cmds.EvictControl(TPM_RH.OWNER, 0x81000077, 0x81000077))
    expect_ok(direct(tcg_sim, "unseal", "--input", str(tmp_path / "b.json")), secret)


def _other_state(sim: Simulator, d: Path, name: str, value: str) -> Path:
    now = json.loads(direct(sim, "pcrs", "show", "--pcrs", PCRS, "--json").out)
    now["sha256"]["7"] = value * 32
    (d / name).write_text(json.dumps(now))
    return d / name


@pytest.mark.parametrize("how", ["replayed", "spliced"])
def test_create_response_under_the_carrier_is_authenticated(tcg_sim: Simulator,
                                                            tmp_path: Path, how: str) -> None:
    """Attack 35. The admin drops a state (PCR 7 of a boot path now known bad) from a
    PolicyOR secret. The interposer answers the reseal's Create with the Create
    response it recorded when that state was added (a real object of this TPM's
    SRK that still admits it), or splices that object into the live answer, whose
    session area (the carrier's fresh nonce and HMAC) it keeps.
    The carrier's response HMAC covers outPrivate/outPublic with fresh nonces, so
    both are refused (exit 6) and the blob keeps what it had; the dropped state is
    still in it because the reseal failed, and says so."""
    secret, _ = _sealed(tcg_sim, tmp_path, False)
    blob = tmp_path / "b.json"
    bad = _other_state(tcg_sim, tmp_path, "bad.json", "44")
    recorded: list[bytes] = []

    def record(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.Create and ctx.response is not None:
            recorded.append(ctx.response)
        return None

    with interposer(tcg_sim, on_response=record) as p:
        expect_ok(tpm(p, "reseal", "--input", str(blob), "--add-state", str(bad)))
    assert len(recorded) == 1 and recorded[0][6:10] == bytes(4)
    watch = unchanged(tcg_sim, blob)

    def answer(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.Create or ctx.response is None:
            return None
        if how == "replayed":
            return recorded[0]
        old, _ = parse_response(recorded[0], ctx.command)
        live, auths = parse_response(ctx.response, ctx.command)
        assert isinstance(old, cmds.CreateResponse) and isinstance(live, cmds.CreateResponse)
        return success_response(replace(live, out_private=old.out_private,
                                        out_public=old.out_public), auths)

    with interposer(tcg_sim, on_response=answer) as p:
        r = tpm(p, "reseal", "--input", str(blob), "--drop-state", str(bad))
        assert_no_leak(p.exchanges, secret)
    expect_error(r, 6, "HMAC")
    watch.check()
    expect_ok(direct(tcg_sim, "unseal", "--input", str(blob)), secret)


RC_RETRY = 0x922  # TPM_RC_RETRY: a warning the client answers by sending the command again


@pytest.mark.parametrize("pin", [False, True], ids=["plain", "pin"])
@pytest.mark.parametrize("at", [TPM_CC.Unseal, TPM_CC.Create], ids=["unseal", "create"])
def test_forged_retry_after_the_tpm_ran_the_command(tcg_sim: Simulator, tmp_path: Path,
                                                    pin: bool, at: int) -> None:
    """The TPM ran Unseal (which now continues the session) or Create (which ends the
    carrier); the interposer keeps the real answer and says TPM_RC_RETRY, so the client
    sends the command again in a session the TPM has moved on. Measured on swtpm: the
    retried Unseal is refused without a PIN (exit 6, 'altered in transit') and runs
    again with one (its answer encrypted and HMAC-checked like the first); the retried
    Create names an ended session (exit 4). Nothing leaks, a failed reseal leaves the
    blob as it was, and the stored copy unseals."""
    secret, extra = _sealed(tcg_sim, tmp_path, pin)
    more = _states(tcg_sim, tmp_path)
    forged = {"n": 0}

    def retry(ctx: HookContext) -> Verdict:
        if ctx.code == at and ctx.response is not None and not forged["n"]:
            forged["n"] += 1
            return error_response(RC_RETRY)
        return None

    watch = unchanged(tcg_sim, tmp_path / "b.json")
    with interposer(tcg_sim, on_response=retry) as p:
        r = tpm(p, "reseal", *extra, "--input", str(tmp_path / "b.json"), "--add-state",
                str(more))
        assert forged["n"] == 1
        assert_no_leak(p.exchanges, secret)
    if at == TPM_CC.Unseal and pin:
        expect_ok(r)
    else:
        expect_error(r, 6 if at == TPM_CC.Unseal else 4)
        watch.check()
    expect_ok(direct(tcg_sim, "unseal", *extra, "--input", str(tmp_path / "b.json")), secret)
