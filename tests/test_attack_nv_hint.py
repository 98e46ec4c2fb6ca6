"""Attack 34: poison the trust file's NV read hint (``nv_public``) through a forged
NV_ReadPublic.

vault-key and ``unseal --nv`` read EVE's pair with the sizes the trust file keeps;
when that read fails they read it the ordinary way (NV_ReadPublic, NV_Read) and,
if what they found differs from the hint, rewrite the hint after the unseal
(recipes/stores.py). NV_ReadPublic carries no HMAC: its public area is the
interposer's choice, as long as the Name it returns matches it.
"""

from __future__ import annotations

from attacks.bus import expect_error, expect_ok, interposer, names, tpm, unchanged
from tpmseal.errors import ExitCode
from tpmseal.records import replace
from tpmseal.sniff.capture.hooks import (
    HookContext,
    Respond,
    Verdict,
    error_response,
    parse_response,
    success_response,
)
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_CC

MAIN_PRIVATE = 0x01800000
RC_HANDLE_NV_2 = 0x28B  # TPM_RC_HANDLE on NV_Read's second handle, the index


def other_index(ctx: HookContext) -> Verdict:
    """Answer NV_ReadPublic of the main private index with another index's public area
    (and its matching Name)."""
    if ctx.code != TPM_CC.NV_ReadPublic or ctx.response is None or \
            ctx.response[6:10] != bytes(4) or \
            int.from_bytes(ctx.command[10:14], "big") != MAIN_PRIVATE:
        return None
    real, auths = parse_response(ctx.response, ctx.command)
    assert isinstance(real, cmds.NV_ReadPublicResponse)
    fake = replace(real.nv_public, nv_index=MAIN_PRIVATE + 7)
    return success_response(cmds.NV_ReadPublicResponse(fake, fake.name()), auths)


def test_forged_nv_read_public_of_another_index_does_not_poison_the_trust_file(
        eve_sim: Simulator) -> None:
    """The interposer fails the hinted NV_Read, then answers NV_ReadPublic of the main
    private index with a public area naming another index (its own Name, so the
    Name check passes). Before: the unseal succeeded, the hint was 'healed' with that
    public area, and the trust file was then refused on every later run, with or
    without the interposer ('malformed ... re-pin with provision --repin': the EK
    re-pinned under the interposer). Now the answer is refused as tampering (exit 6),
    nothing is written, and the next boot unseals."""
    with interposer(eve_sim) as p:
        first = tpm(p, "vault-key")
        expect_ok(first, size=32)
    watch = unchanged(eve_sim, eve_sim.state / "trust.json")
    state = {"failed": False}

    def fail_hinted_read(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.NV_Read and not state["failed"]:
            state["failed"] = True
            return Respond(error_response(RC_HANDLE_NV_2))
        return None

    with interposer(eve_sim, on_command=fail_hinted_read, on_response=other_index) as p:
        r = tpm(p, "vault-key")
        assert "NV_ReadPublic" in names(p.exchanges)
    expect_error(r, ExitCode.INTEGRITY, "NV 0x1800000", "another index")
    watch.check()
    with interposer(eve_sim) as p:
        expect_ok(tpm(p, "vault-key"), first.out, what="the next boot's vault key")


def test_forged_public_area_of_another_index_in_reseal_nv_changes_nothing(
        eve_sim: Simulator) -> None:
    """The same answer to the plain listing reseal --nv takes before it saves (crash
    safety only: which indices to rewrite in place). Before, the reseal reported
    success (exit 0) and its save recorded that public area as the new hint, with the
    same effect on every later run; now it stops before writing anything (exit 6)."""
    with interposer(eve_sim) as p:
        first = tpm(p, "vault-key")
        expect_ok(first, size=32)
    watch = unchanged(eve_sim, eve_sim.state / "trust.json")

    with interposer(eve_sim, on_response=other_index) as p:
        r = tpm(p, "reseal", "--profile", "eve", "--nv")
        assert "Unseal" in names(p.exchanges) and "NV_Write" not in names(p.exchanges)
    expect_error(r, ExitCode.INTEGRITY, "NV 0x1800000", "another index")
    watch.check()
    with interposer(eve_sim) as p:
        expect_ok(tpm(p, "vault-key"), first.out, what="the next boot's vault key")
