"""Attacks on the LUKS unlock's walk over a volume's tokens (recipes/unlockers.py): a
failure of one token's unseal lets the next token try, so what the failure said must
not vanish when the next one unlocks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from attacks.bus import assert_no_leak, direct, expect_error, interposer, tpm
from luks_support import make_image, needs_cryptsetup, opens
from test_seal_support import cli, cli_subprocess, extend
from tpmseal.errors import ExitCode
from tpmseal.sniff.capture.hooks import HookContext, Respond, Verdict, error_response
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_CC

pytestmark = needs_cryptsetup

POLICY_FAIL = 0x99D  # TPM_RC_POLICY_FAIL for session 1: an error response carries no HMAC


def _two_tokens(tmp_path: Path) -> Path:
    """A volume with a systemd-tpm2 token (0, keyslot 1) and a tpmseal token (1, keyslot 2)."""
    img, pw = make_image(tmp_path)
    for kind in ("systemd-tpm2", "tpmseal"):
        r = cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw), "--token-type",
                 kind, "--pcrs", "sha256:7"])
        assert r.rc == 0, r.err
    return img


def _fail_first_unseal() -> tuple[list[int], Callable[[HookContext], Verdict]]:
    seen: list[int] = []

    def hook(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.Unseal and not seen:
            seen.append(ctx.index)
            return Respond(error_response(POLICY_FAIL))
        return None

    return seen, hook


def test_tampering_with_one_token_is_reported_when_another_unlocks(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    """The interposer forges a policy failure for token 0's Unseal while the PCRs hold
    their sealed values: tampering (exit 6 alone). Token 1 then unlocks, and the run
    used to exit 0 with nothing on stderr: the detected interposer went unreported
    (at info level only), at every boot. It is now a warning line."""
    img = _two_tokens(tmp_path)
    seen, hook = _fail_first_unseal()
    with interposer(tcg_sim, on_command=hook) as p:
        # a process of its own: the warning is logging's, which pytest's capture takes
        r = cli_subprocess(["--tpm", p.uri, "luks", "passphrase", str(img)])
        exchanges = p.exchanges
    assert seen and r.rc == 0, r.err
    assert opens(img, r.out, 2)
    assert_no_leak(exchanges, r.out)
    lines = r.err.splitlines()
    assert len(lines) == 1 and "token 0 (systemd-tpm2)" in lines[0], lines
    assert "interposer" in lines[0] and "token 1 unlocked" in lines[0], lines


def test_tampering_outranks_an_earlier_failure(tcg_sim: Simulator, tmp_path: Path) -> None:
    """When no token unlocks, the error reported is the tampering, not the first failure
    (here token 0's genuine PCR change), which named only a PCR change: exit 6."""
    img = _two_tokens(tmp_path)
    r = cli(["luks", "enroll", str(img), "--unlock-key-file", str(tmp_path / "luks.img.pass"),
             "--pcrs", "sha256:8"])  # token 2, keyslot 3: tampered below
    assert r.rc == 0, r.err
    extend(tcg_sim.uri, 7)  # tokens 0 and 1 no longer unseal: a real PCR change

    def hook(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.Unseal:
            return Respond(error_response(POLICY_FAIL))
        return None

    with interposer(tcg_sim, on_command=hook) as p:
        r = tpm(p, "luks", "test", str(img))
    expect_error(r, ExitCode.INTEGRITY, "interposer")
    # without the interposer token 2 unlocks, and token 0 alone still is a PCR change
    assert direct(tcg_sim, "luks", "test", str(img)).rc == 0
    expect_error(direct(tcg_sim, "luks", "test", str(img), "--token-id", "0"),
                 ExitCode.PCR_MISMATCH, "sha256:7")
