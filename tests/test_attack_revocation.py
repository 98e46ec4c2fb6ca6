"""``policy revoke-below`` under an interposer: revocation must not be faked.

NV_Increment is authorized by the owner's empty password: no HMAC binds its NV index,
so an interposer can point every increment at a counter of its own, then answer the
counter reads with the value the admin expects. The old (vulnerable) release's signed
policy then still unseals although revoke-below reported success. Only a counter read
whose response HMAC verifies (an audit session salted to the pinned EK) tells.
"""

from __future__ import annotations

from pathlib import Path

from attacks.bus import direct, expect_error, expect_ok, interposer, tpm
from test_signed_policy import COUNTER, _counter, _keygen, _sealed, _sign
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes.revocation import define_counter
from tpmseal.sniff.capture.hooks import HookContext, Verdict
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_CC, TPM_ST

DECOY = 0x01500099  # the interposer's own counter


class FakeRevocation:
    """Redirects NV_Increment to DECOY and reports *claimed* in the counter reads after."""

    def __init__(self, claimed: int) -> None:
        self.claimed = claimed
        self.redirected = 0

    def on_command(self, ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.NV_Increment:  # authHandle, nvIndex: bytes 10..18
            self.redirected += 1
            return ctx.command[:14] + DECOY.to_bytes(4, "big") + ctx.command[18:]
        return None

    def on_response(self, ctx: HookContext) -> Verdict:
        if (ctx.code != TPM_CC.NV_Read or ctx.response is None or len(ctx.response) < 20
                or not self.redirected):  # the first read is the real one
            return None
        # TPM2B_MAX_NV_BUFFER of 8 bytes after the parameterSize (ST_SESSIONS)
        at = 16 if int.from_bytes(ctx.response[:2], "big") == TPM_ST.SESSIONS else 12
        value = self.claimed.to_bytes(8, "big")
        return ctx.response[:at] + value + ctx.response[at + 8:]


def _setup(sim: Simulator, d: Path) -> tuple[bytes, Path, Path, int]:
    key = _keygen(sim, d)
    secret, blob = _sealed(sim, d, key, "--min-version-nv", COUNTER)
    start = _counter(sim)
    old = _sign(sim, key, d / "old.json", "--current", "--version", str(start),
                "--nv-index", COUNTER)
    with Tpm.open(sim.uri) as t:
        define_counter(t, DECOY)
    return secret, blob, old, start


def test_faked_revocation_is_caught_by_the_audited_counter(tcg_sim: Simulator,
                                                           tmp_path: Path) -> None:
    secret, blob, old, start = _setup(tcg_sim, tmp_path)
    fake = FakeRevocation(start + 1)
    with interposer(tcg_sim, on_command=fake.on_command, on_response=fake.on_response) as p:
        r = tpm(p, "policy", "revoke-below", str(start + 1), "--nv-index", COUNTER)
    expect_error(r, ExitCode.INTEGRITY, "HMAC")
    assert fake.redirected == 1 and _counter(tcg_sim) == start  # nothing was revoked ...
    # ... and the admin was told: the old policy still works, as it must until revoked
    expect_ok(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(old)), secret)


def test_revoke_below_without_a_trust_record_refuses(tcg_sim: Simulator,
                                                     tmp_path: Path) -> None:
    """Without the pinned EK no counter read can be verified: the same interposer would
    make revoke-below report success while the old policy keeps unsealing."""
    _, _, _, start = _setup(tcg_sim, tmp_path)
    fake = FakeRevocation(start + 1)
    with interposer(tcg_sim, on_command=fake.on_command, on_response=fake.on_response) as p:
        r = tpm(p, "--trust-file", str(tmp_path / "none.json"), "policy", "revoke-below",
                str(start + 1), "--nv-index", COUNTER)
        expect_error(r, ExitCode.USAGE, "pinned endorsement key")
        assert not p.exchanges
    assert _counter(tcg_sim) == start


def test_dropping_policy_nv_does_not_unrevoke(tcg_sim: Simulator, tmp_path: Path) -> None:
    """After revoke-below, the old release's policy fails PolicyNV. An interposer that
    answers PolicyNV with success instead of forwarding it (an error-free, HMAC-free
    response) leaves the session digest without the NV condition: the TPM refuses the
    signed approvedPolicy at PolicyAuthorize, whatever ticket is presented."""
    from attacks.bus import assert_no_leak
    from tpmseal.sniff.capture.hooks import Respond

    secret, blob, old, start = _setup(tcg_sim, tmp_path)
    r = direct(tcg_sim, "policy", "revoke-below", str(start + 1), "--nv-index", COUNTER)
    assert r.rc == 0, r.err
    expect_error(direct(tcg_sim, "unseal", "--input", str(blob), "--policy", str(old)),
                 ExitCode.PCR_MISMATCH, "revoked")
    # success with the password session's empty answer: parameterSize 0, nonce, attrs, hmac
    ok = (TPM_ST.SESSIONS.to_bytes(2, "big") + (19).to_bytes(4, "big") + bytes(8)
          + b"\x00\x00\x01\x00\x00")

    def drop_policy_nv(ctx: HookContext) -> Verdict:
        return Respond(ok) if ctx.code == TPM_CC.PolicyNV else None

    with interposer(tcg_sim, on_command=drop_policy_nv) as p:
        r = tpm(p, "unseal", "--input", str(blob), "--policy", str(old))
        expect_error(r, ExitCode.INTEGRITY, "PolicyAuthorize")
        assert secret not in r.out
        assert "Unseal" not in [e.name for e in p.exchanges]
        assert_no_leak(p.exchanges, secret)
