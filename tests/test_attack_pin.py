"""Attack 10: the PIN on the bus, wrong PINs, and reset-and-replay of the PCRs.

A PIN adds TPM2_PolicyAuthValue to the sealed object's policy: the PIN is the
object's authValue, set inside Create's encrypted inSensitive and afterwards
only used as part of the HMAC key of the salted policy session (Part 1
§19.6.12, Part 3 §23.17), so it never crosses the bus in any form.

Reset-and-replay: an attacker who can reset the TPM (a glitch on its reset
line, or a reboot into software of their choice) gets PCRs at zero and can
extend them with the measurements of the good boot, which are public (event
log). The PCR policy then holds. No session mechanism can tell; only a secret
the attacker lacks — the PIN — stops the unseal.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from attacks.bus import (
    assert_no_leak,
    direct,
    expect_error,
    expect_ok,
    interposer,
    tpm,
    unchanged,
)
from conftest import measure_boot
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.sniff.capture.hooks import HookContext, Verdict, set_session_attributes
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_CC, TPM_SU, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError


def _files(tmp: Path) -> tuple[bytes, Path, bytes, Path, Path]:
    secret, pin = os.urandom(32), f"pin-{secrets.token_hex(6)}".encode()
    key, pin_file, wrong = tmp / "key", tmp / "pin", tmp / "wrong"
    key.write_bytes(secret)
    pin_file.write_bytes(pin + b"\n")
    wrong.write_bytes(b"pin-" + secrets.token_hex(6).encode() + b"\n")
    return secret, key, pin, pin_file, wrong


def test_pin_never_crosses_the_bus(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret, key, pin, pin_file, wrong = _files(tmp_path)
    blob = tmp_path / "blob.json"
    with interposer(tcg_sim) as p:
        r = tpm(p, "seal", "--pin-file", str(pin_file), "--input", str(key), "--output",
                str(blob))
        assert (r.rc, r.err) == (0, "")
        expect_ok(tpm(p, "unseal", "--pin-file", str(pin_file), "--input", str(blob)), secret)
        assert_no_leak(p.exchanges, secret, pin, wrong.read_bytes().strip())


def test_wrong_pin_is_exit_9_and_changes_nothing(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret, key, pin, pin_file, wrong = _files(tmp_path)
    blob = tmp_path / "blob.json"
    assert direct(tcg_sim, "seal", "--pin-file", str(pin_file), "--input", str(key),
                  "--output", str(blob)).rc == 0
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    with interposer(tcg_sim) as p:
        r = tpm(p, "unseal", "--pin-file", str(wrong), "--input", str(blob))
        expect_error(r, ExitCode.AUTH_FAILED, "wrong PIN")
        assert_no_leak(p.exchanges, secret, pin, wrong.read_bytes().strip())
    watch.check()


def reset_tpm(sim: Simulator) -> None:
    """Power-cycle the TPM (PCRs back to zero) and start it up, as a reboot would."""
    sim.power_cycle()
    with Tpm.open(sim.uri) as t:
        try:
            t.run(cmds.Startup(TPM_SU.CLEAR))
        except TpmResponseError as e:
            if e.name != "INITIALIZE":  # swtpm's startup-clear flag may have done it
                raise


def test_reset_and_replay_defeats_pcrs_but_not_a_pin(tcg_sim: Simulator,
                                                     tmp_path: Path) -> None:
    secret, key, _, pin_file, wrong = _files(tmp_path)
    plain, guarded = tmp_path / "plain.json", tmp_path / "pin.json"
    assert direct(tcg_sim, "seal", "--input", str(key), "--output", str(plain)).rc == 0
    assert direct(tcg_sim, "seal", "--pin-file", str(pin_file), "--input", str(key),
                  "--output", str(guarded)).rc == 0
    key.unlink()
    # a reset alone changes the PCRs: the policy holds
    reset_tpm(tcg_sim)
    r = direct(tcg_sim, "unseal", "--input", str(plain))
    expect_error(r, ExitCode.PCR_MISMATCH, "PCR policy check failed")
    # ... but replaying the good boot's measurements restores them
    measure_boot(tcg_sim)
    expect_ok(direct(tcg_sim, "unseal", "--input", str(plain)), secret,
              what="reset-and-replay without a PIN")
    # the PIN-protected copy holds: the attacker has no PIN, and guessing is rate-limited
    r = direct(tcg_sim, "unseal", "--input", str(guarded))
    expect_error(r, ExitCode.USAGE, "protected by a PIN")
    r = direct(tcg_sim, "unseal", "--pin-file", str(wrong), "--input", str(guarded))
    expect_error(r, ExitCode.AUTH_FAILED, "wrong PIN")
    # the owner, with the PIN, still unseals
    expect_ok(direct(tcg_sim, "unseal", "--pin-file", str(pin_file), "--input",
                     str(guarded)), secret)


TPM_PT_LOCKOUT_COUNTER = 0x20E  # PT_VAR + 14 (Part 2 §6.13)


def _lockout_counter(sim: Simulator) -> int:
    with Tpm.open(sim.uri) as t:
        return t.properties(TPM_PT_LOCKOUT_COUNTER, 1)[TPM_PT_LOCKOUT_COUNTER]


def test_tampering_under_a_pin_looks_like_a_wrong_pin(tcg_sim: Simulator,
                                                      tmp_path: Path) -> None:
    """With PolicyAuthValue the authValue is in the HMAC key: an altered command fails
    with TPM_RC_AUTH_FAIL exactly as a wrong PIN does, and counts toward DA lockout."""
    secret, key, pin, pin_file, _ = _files(tmp_path)
    blob = tmp_path / "blob.json"
    assert direct(tcg_sim, "seal", "--pin-file", str(pin_file), "--input", str(key),
                  "--output", str(blob)).rc == 0
    before = _lockout_counter(tcg_sim)

    def strip_encrypt(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.Unseal:
            return None
        decoded = ctx.decoded
        assert decoded is not None
        attrs = decoded.sessions[0].attributes
        return set_session_attributes(ctx.command, attrs & ~TPMA_SESSION.encrypt)

    with interposer(tcg_sim, on_command=strip_encrypt) as p:
        r = tpm(p, "unseal", "--pin-file", str(pin_file), "--input", str(blob))
        expect_error(r, ExitCode.AUTH_FAILED, "wrong PIN")
        assert_no_leak(p.exchanges, secret, pin)
    assert _lockout_counter(tcg_sim) == before + 1
