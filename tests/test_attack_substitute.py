"""Attack 13: sealed-object substitution in EVE's NV layout.

The SRK's authorization is empty and so is the owner's, so anyone on the bus
can create an object under the SRK, sealed to the current PCR values, holding a
key of their choosing — and either write that pair into NV 0x1800000/0x1900000
or forge the NV_ReadPublic/NV_Read responses for it. The TPM then really does
unseal it and every HMAC verifies. Without a pin the device takes the
attacker's key (the control below); tpmseal pins the Name of what it sealed in
the trust file and refuses anything else with exit 6, changing nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from attacks.bus import direct, expect_error, expect_ok, interposer, tpm, unchanged
from test_seal_support import pinned_json
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes import sealing
from tpmseal.recipes.blob import SealedBlob
from tpmseal.recipes.policies import pcr_policy
from tpmseal.recipes.profiles import EVE
from tpmseal.recipes.stores import NvStore
from tpmseal.sniff.capture.hooks import HookContext, Verdict, success_response
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_CC, TPMA_NV, TPMA_SESSION, enum_name
from tpmseal.wire.frames import AuthResponse
from tpmseal.wire.structures import NvPublic

PRIV_NV, PUB_NV = 0x01800000, 0x01900000
NOT_OURS = "is not the one tpmseal sealed"


def attacker_object(sim: Simulator, key: bytes) -> SealedBlob:
    """The attacker's own object under EVE's SRK, sealed to the current PCR values."""
    with Tpm.open(sim.uri) as t:
        return sealing.seal(t, key, pcr_policy(EVE.default_pcrs), profile=EVE, legacy=True)


def write_pair(sim: Simulator, blob: SealedBlob) -> None:
    """Store it in EVE's layout with the empty owner authorization."""
    assert EVE.nv is not None
    with Tpm.open(sim.uri) as t:
        NvStore(EVE.nv, EVE.default_pcrs, EVE.srk, None).save(t, blob)


@pytest.fixture
def vault(eve_sim: Simulator) -> Iterator[bytes]:
    """The device's real vault key, generated and sealed by tpmseal (and so pinned)."""
    r = direct(eve_sim, "vault-key")
    assert r.rc == 0, r.err
    pins = pinned_json(json.loads((eve_sim.state / "trust.json").read_text()), "eve")
    assert len(pins["nv_sealed"]) == 1
    yield r.out


@pytest.mark.parametrize("argv", [["vault-key"], ["unseal", "--profile", "eve", "--nv"],
                                  ["reseal", "--profile", "eve", "--nv"]],
                         ids=["vault-key", "unseal-nv", "reseal-nv"])
def test_substituted_pair_in_nv_is_refused(eve_sim: Simulator, vault: bytes, tmp_path: Path,
                                           argv: list[str]) -> None:
    mine = os.urandom(32)
    write_pair(eve_sim, attacker_object(eve_sim, mine))
    watch = unchanged(eve_sim, eve_sim.state / "trust.json")
    r = direct(eve_sim, *argv)
    expect_error(r, ExitCode.INTEGRITY, NOT_OURS, "possible interposer", "nothing was changed")
    watch.check()


def test_control_an_unpinned_device_takes_the_attackers_key(eve_sim: Simulator, vault: bytes,
                                                            tmp_path: Path) -> None:
    """The attack works where nothing is pinned: a trust file from before pinning takes
    the first object it finds (pin on first use, docs/SECURITY.md)."""
    trust = eve_sim.state / "trust.json"
    doc = json.loads(trust.read_text())
    del pinned_json(doc, "eve")["nv_sealed"]
    trust.write_text(json.dumps(doc))
    mine = os.urandom(32)
    write_pair(eve_sim, attacker_object(eve_sim, mine))
    expect_ok(direct(eve_sim, "vault-key"), mine)  # the device now encrypts under `mine`
    # ... and from then on that object is the pinned one
    assert pinned_json(json.loads(trust.read_text()), "eve")["nv_sealed"]


def test_forged_nv_reads_are_refused(eve_sim: Simulator, vault: bytes) -> None:
    mine = os.urandom(32)
    fake = attacker_object(eve_sim, mine)
    contents = {PRIV_NV: fake.private, PUB_NV: fake.public.marshal()}
    attrs = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.WRITTEN

    def forge(ctx: HookContext) -> Verdict:
        index = int.from_bytes(ctx.command[10:14], "big") if ctx.code == TPM_CC.NV_ReadPublic \
            else int.from_bytes(ctx.command[14:18], "big")
        if ctx.code == TPM_CC.NV_ReadPublic and index in contents:
            pub = NvPublic(index, TPM_ALG.SHA256, attrs, b"", len(contents[index]))
            return success_response(cmds.NV_ReadPublicResponse(pub, pub.name()))
        if ctx.code == TPM_CC.NV_Read and index in contents:
            ack = AuthResponse(b"", TPMA_SESSION.continueSession, b"")
            return success_response(cmds.NV_ReadResponse(contents[index]), [ack])
        return None

    watch = unchanged(eve_sim, eve_sim.state / "trust.json")
    with interposer(eve_sim, on_response=forge) as p:
        r = tpm(p, "vault-key")
        expect_error(r, ExitCode.INTEGRITY, NOT_OURS)
        assert "Unseal" not in [enum_name(TPM_CC, e.code) for e in p.exchanges]
    watch.check()
    expect_ok(direct(eve_sim, "vault-key"), vault)


def test_reseal_and_seal_force_move_the_pin(eve_sim: Simulator, vault: bytes,
                                            tmp_path: Path) -> None:
    trust = eve_sim.state / "trust.json"

    def pins() -> list[str]:
        return list(pinned_json(json.loads(trust.read_text()), "eve")["nv_sealed"])

    before = pins()
    assert direct(eve_sim, "reseal", "--profile", "eve", "--nv").rc == 0
    assert pins() != before and len(pins()) == 1
    expect_ok(direct(eve_sim, "vault-key"), vault)
    key = tmp_path / "k"
    key.write_bytes(os.urandom(32))
    assert direct(eve_sim, "seal", "--profile", "eve", "--nv", "--force", "--input",
                  str(key)).rc == 0
    expect_ok(direct(eve_sim, "unseal", "--profile", "eve", "--nv"), key.read_bytes())


def test_accept_sealed_object_repins_after_eve_resealed(eve_sim: Simulator, vault: bytes) -> None:
    """Other software (EVE itself) may legitimately re-seal: the explicit way back."""
    mine = os.urandom(32)
    write_pair(eve_sim, attacker_object(eve_sim, mine))  # stands in for EVE's own re-seal
    assert direct(eve_sim, "vault-key").rc == ExitCode.INTEGRITY
    expect_ok(direct(eve_sim, "vault-key", "--accept-sealed-object"), mine)
    expect_ok(direct(eve_sim, "vault-key"), mine)


def test_a_crash_mid_swap_leaves_a_pinned_copy(eve_sim: Simulator, vault: bytes,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """reseal pins the new Name before writing and drops the old one after: a crash
    between the two leaves both pinned, so whichever pair is complete unseals."""
    from tpmseal.recipes import stores

    real = stores.nv_undefine

    def crash_on_staging_cleanup(t: Tpm, index: int) -> None:
        # staging is undefined only once it was written (save lists it first)
        if index == EVE.nv.staging_public:  # type: ignore[union-attr]
            raise KeyboardInterrupt
        real(t, index)

    monkeypatch.setattr(stores, "nv_undefine", crash_on_staging_cleanup)
    r = direct(eve_sim, "reseal", "--profile", "eve", "--nv")
    assert r.rc == 130
    monkeypatch.setattr(stores, "nv_undefine", real)
    pins = pinned_json(json.loads((eve_sim.state / "trust.json").read_text()), "eve")
    assert len(pins["nv_sealed"]) == 2
    expect_ok(direct(eve_sim, "vault-key"), vault)
