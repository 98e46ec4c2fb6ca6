"""tpmseal and LF Edge EVE's real vault-key code on one TPM, over a device's life.

Both directions of every path (EVE's encrypted and legacy seal, UnsealDiskKey,
FetchSealedVaultKey), the legacy key migration both ways, a rollback to a
release from before sealing (EVE's FetchVaultKey reads NV 0x1700000: tpmseal
keeps it), and a torn pair (a power cut after EVE or tpmseal wrote 0x1800000
but before 0x1900000): refused with exit code 12, NV untouched, restorable.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import measure_boot, start_copy
from eve_support import EvePeer, eve_for, evepeer_binary
from test_seal_support import Crash, assert_one_line_error, cli, install_crash
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes.stores import NV_ATTRS, nv_public, nv_undefine
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_RH
from tpmseal.wire.structures import NvPublic

__all__ = ["evepeer_binary"]  # the fixture, imported for pytest

LEGACY, PRIV, PUB, STAGE_PRIV = 0x01700000, 0x01800000, 0x01900000, 0x01800001
REUSED = "Key is copied and protected using PCRs"


@pytest.fixture
def eve(evepeer_binary: Path, blank_sim: Simulator, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> EvePeer:
    """A TPM provisioned by EVE and then tpmseal, after a measured boot."""
    measure_boot(blank_sim)
    monkeypatch.setenv("TPMSEAL_TPM", blank_sim.uri)
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(tmp_path / "trust.json"))
    peer = eve_for(evepeer_binary, blank_sim, tmp_path / "eve")
    peer.run("provision")
    r = cli(["provision", "--profile", "eve"])
    assert r.rc == 0, r.err
    return peer


def nv_state(sim: Simulator) -> dict[int, bytes | None]:
    """Every index of EVE's layout (and staging) that exists -> its content."""
    out: dict[int, bytes | None] = {}
    with Tpm.open(sim.uri) as t:
        for i in (LEGACY, PRIV, PUB, STAGE_PRIV, 0x01900001):
            p = nv_public(t, i)
            if p is not None:
                out[i] = t.nv_read(i, p.data_size) if p.attributes & 0x20000000 else None
    return out


def vault(**kw: str) -> bytes:
    r = cli(["vault-key", *(f"--{k.replace('_', '-')}" for k in kw)])
    assert r.rc == 0, r.err
    assert len(r.out) == 32
    return r.out


# ------------------------------------------------------------------ seal / unseal both ways


@pytest.mark.parametrize("how", ["seal-enc", "seal-legacy", "seal"])
def test_eve_seal_unseals_with_tpmseal(eve: EvePeer, how: str) -> None:
    secret = os.urandom(32)
    eve.put(how, secret)
    r = cli(["unseal", "--profile", "eve", "--nv"])
    assert (r.rc, r.out) == (0, secret), r.err


@pytest.mark.parametrize("how", ["unseal-enc", "unseal-legacy", "unseal", "unseal-recover"])
def test_tpmseal_seal_unseals_with_eve(eve: EvePeer, tmp_path: Path, how: str) -> None:
    secret = os.urandom(32)
    (tmp_path / "key").write_bytes(secret)
    assert cli(["seal", "--profile", "eve", "--nv", "--input", str(tmp_path / "key")]).rc == 0
    assert eve.get(how) == secret


def test_eve_legacy_layout_is_what_a_faithful_reenactment_writes(eve: EvePeer) -> None:
    """EVE's legacy path: NV indices named with SHA-1, object attributes 0x12
    (fixedTPM|fixedParent): what tests/test_nv_interop.py re-enacts with tpm2-tools."""
    eve.put("seal-legacy", os.urandom(32))
    with Tpm.open(eve.sim.uri) as t:
        for i in (PRIV, PUB):
            p = t.nv_read_public(i)
            assert p.name_alg == TPM_ALG.SHA1 and p.attributes & NV_ATTRS == NV_ATTRS
        from tpmseal.wire.structures import Public

        pub = Public.from_bytes(t.nv_read(PUB, t.nv_read_public(PUB).data_size))
    assert pub.object_attributes == 0x12


# --------------------------------------------------------------------------- vault key


def test_vault_key_both_ways(eve: EvePeer) -> None:
    ours = vault()
    assert eve.get("vault-key") == ours
    assert vault() == ours
    # and EVE first, on a layout EVE set up from scratch
    with Tpm.open(eve.sim.uri) as t:
        for i in (PRIV, PUB):
            nv_undefine(t, i)
    theirs = eve.get("vault-key")
    assert theirs != ours
    # an object tpmseal did not seal (pinned: ours) is accepted only when told so
    assert_one_line_error(cli(["vault-key"]), ExitCode.INTEGRITY, "--accept-sealed-object")
    assert vault(accept_sealed_object="") == theirs
    assert vault() == theirs


def test_legacy_key_migrated_by_tpmseal_survives_a_rollback(eve: EvePeer) -> None:
    legacy = eve.get("fetch-vault-key")  # a release from before sealing: NV 0x1700000
    assert vault() == legacy  # migrated
    assert nv_state(eve.sim)[LEGACY] == legacy  # kept, as EVE keeps it
    assert vault() == legacy  # every boot
    assert nv_state(eve.sim)[LEGACY] == legacy
    assert eve.run("compare").out.strip() == REUSED
    assert eve.get("vault-key") == legacy  # EVE's sealing release
    assert eve.get("fetch-vault-key") == legacy  # rollback: still the vault's key


def test_legacy_key_migrated_by_eve_unseals_with_tpmseal(eve: EvePeer) -> None:
    legacy = eve.get("fetch-vault-key")
    assert eve.get("vault-key") == legacy
    assert vault() == legacy
    assert nv_state(eve.sim)[LEGACY] == legacy
    assert eve.get("fetch-vault-key") == legacy


def test_removing_the_legacy_key_is_explicit_and_loses_a_rollback(eve: EvePeer) -> None:
    """What the warning of --remove-legacy-key says: after it, EVE's pre-sealing path
    makes up a new random key (the vault encrypted with the old one is lost)."""
    legacy = eve.get("fetch-vault-key")
    assert vault() == legacy
    r = cli(["vault-key", "--remove-legacy-key"])
    assert (r.rc, r.out) == (0, legacy), r.err
    assert LEGACY not in nv_state(eve.sim)
    assert eve.get("fetch-vault-key") != legacy


# ---------------------------------------------------------------------------- torn pairs


def _tear(sim: Simulator, how: str) -> None:
    """The layout a power cut leaves: EVE (and tpmseal) write 0x1800000 first."""
    with Tpm.open(sim.uri) as t:
        nv_undefine(t, PUB)
        if how == "defined-unwritten":  # cut between NV_DefineSpace and NV_Write
            t.run(cmds.NV_DefineSpace(TPM_RH.OWNER, b"", NvPublic(
                PUB, TPM_ALG.SHA256, NV_ATTRS, b"", 100)))


@pytest.mark.parametrize("how", ["public-missing", "defined-unwritten"])
@pytest.mark.parametrize("sealed_by", ["eve", "tpmseal"])
def test_a_torn_pair_is_refused_and_restorable(eve: EvePeer, how: str,
                                               sealed_by: str) -> None:
    key = eve.get("vault-key") if sealed_by == "eve" else vault()
    _tear(eve.sim, how)
    before = nv_state(eve.sim)
    for argv in (["vault-key"], ["unseal", "--profile", "eve", "--nv"]):
        r = cli(argv)
        assert_one_line_error(r, ExitCode.TORN_STORE, "incomplete sealed pair", "0x1800000",
                              "nothing was changed", "seal --nv --profile eve --input KEY "
                              "--force")
        assert r.out == b""
    assert nv_state(eve.sim) == before  # no new key written over the old one
    assert eve.run("vault-key", eve.root / "k", check=False).rc != 0  # EVE fails too
    # restored from escrow (EVE: the controller's copy of the key)
    assert cli(["seal", "--profile", "eve", "--nv", "--input", "-"], stdin=key).rc == \
        ExitCode.TORN_STORE
    r = cli(["seal", "--profile", "eve", "--nv", "--input", "-", "--force"], stdin=key)
    assert r.rc == 0, r.err
    assert vault() == key
    assert eve.get("vault-key") == key


def test_a_torn_staging_pair_is_refused(eve: EvePeer) -> None:
    """Only the staging private index, and no main pair: never a fresh key either."""
    vault()
    with Tpm.open(eve.sim.uri) as t:
        data = t.nv_read(PRIV, t.nv_read_public(PRIV).data_size)
        for i in (PRIV, PUB):
            nv_undefine(t, i)
        t.run(cmds.NV_DefineSpace(TPM_RH.OWNER, b"", NvPublic(
            STAGE_PRIV, TPM_ALG.SHA256, NV_ATTRS, b"", len(data))))
        t.nv_write(STAGE_PRIV, data)
    before = nv_state(eve.sim)
    assert_one_line_error(cli(["vault-key"]), ExitCode.TORN_STORE, "0x1800001")
    assert nv_state(eve.sim) == before


def test_a_torn_pair_next_to_a_legacy_key_is_refused(eve: EvePeer) -> None:
    legacy = eve.get("fetch-vault-key")
    assert vault() == legacy
    _tear(eve.sim, "public-missing")
    before = nv_state(eve.sim)
    assert_one_line_error(cli(["vault-key"]), ExitCode.TORN_STORE)
    assert nv_state(eve.sim) == before
    assert eve.get("fetch-vault-key") == legacy  # a rollback still opens the vault


# ------------------------------------------------------------------------ power cuts


@pytest.mark.parametrize("with_legacy", [False, True], ids=["generate", "migrate"])
def test_a_power_cut_at_every_command_of_a_first_boot(eve: EvePeer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      with_legacy: bool) -> None:
    """vault-key's first boot cut after each of its commands. Afterwards tpmseal and EVE
    agree: both give the same key, or the layout is torn (exit 12, EVE fails too) and
    nothing is replaced; a legacy key is never lost (a rollback still opens the vault)."""
    legacy = eve.get("fetch-vault-key") if with_legacy else None
    eve.sim.stop()
    template = eve.sim.state
    k = 0
    seen: set[str] = set()
    while True:
        k += 1
        sim = start_copy(template)  # the power comes back: a fresh boot, measured again
        try:
            measure_boot(sim)
            monkeypatch.setenv("TPMSEAL_TPM", sim.uri)
            peer = eve_for(eve.binary, sim, tmp_path / f"eve{k}")
            with monkeypatch.context() as m:
                install_crash(m, k)
                try:
                    r = cli(["vault-key"])
                except Crash:
                    r = None
            sim.stop()  # the power cut: transients gone, PCRs reset, NV kept
            sim.start()
            measure_boot(sim)
            if r is not None:  # ran to the end: every command was cut after once
                assert r.rc == 0 and (legacy is None or r.out == legacy), r.err
                break
            after = cli(["vault-key"])
            seen.add("torn" if after.rc == ExitCode.TORN_STORE else "key")
            if after.rc == ExitCode.TORN_STORE:
                state = nv_state(sim)
                eve_says = peer.run("vault-key", peer.root / "k", check=False).rc
                if state.get(PRIV) is not None:
                    assert eve_says != 0  # EVE's FetchSealedVaultKey fails too
                else:  # 0x1800000 defined but never written: EVE takes that for nothing
                    assert PRIV in state and eve_says == 0
            else:
                assert after.rc == 0, (k, after.err)
                assert legacy is None or after.out == legacy
                assert peer.get("vault-key") == after.out
            if legacy is not None:
                assert peer.get("fetch-vault-key") == legacy
        finally:
            sim.stop()
            shutil.rmtree(sim.state, ignore_errors=True)
    assert k > 10 and seen == {"torn", "key"}, seen
