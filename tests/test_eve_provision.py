"""Provisioning next to LF Edge EVE's real code (its driver, see tests/eve_support.py).

EVE's ``CreateKey`` calls CreatePrimary under TPM_RH_OWNER whatever hierarchy it
is given, so its 0x81000001 is the TCG EK template under the owner hierarchy.
``tpmseal provision --profile eve`` must create exactly those keys, so that
EVE re-creating them (tpmmgr's createOtherKeys(true), when the device
certificate is made) changes nothing, in either order; keys laid out as EVE's
CI does (tests/tpm/prep-and-test.sh) are accepted as salt key and SRK; and with
``--ek-ca`` the certified EK salts while the sealed object stays under EVE's SRK.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import measure_boot
from eve_support import EvePeer, eve_for, evepeer_binary
from test_seal_support import assert_one_line_error, cli, pinned_json
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes.hierarchy import hierarchy_of
from tpmseal.recipes.templates import EK_POLICY_A, EK_RSA_TEMPLATE, SRK_RSA_TEMPLATE
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_RH, TPMA_OBJECT
from tpmseal.wire.structures import Public, SensitiveCreate

__all__ = ["evepeer_binary"]  # the fixture, imported for pytest

EVE_EK, EVE_SRK, TCG_EK = 0x81000001, 0x81000002, 0x81010001


@pytest.fixture
def eve(evepeer_binary: Path, blank_sim: Simulator, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> EvePeer:
    """EVE's code on a factory-fresh TPM after a measured boot; the CLI points at it."""
    measure_boot(blank_sim)
    monkeypatch.setenv("TPMSEAL_TPM", blank_sim.uri)
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(tmp_path / "trust.json"))
    return eve_for(evepeer_binary, blank_sim, tmp_path / "eve")


@pytest.fixture
def eve_certified(evepeer_binary: Path, sim: Simulator, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> EvePeer:
    """Like ``eve`` on a TPM with a certified EK (swtpm_setup's, from a private CA)."""
    measure_boot(sim)
    monkeypatch.setenv("TPMSEAL_TPM", sim.uri)
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(tmp_path / "trust.json"))
    return eve_for(evepeer_binary, sim, tmp_path / "eve")


def names(sim: Simulator, *handles: int) -> list[bytes]:
    with Tpm.open(sim.uri) as t:
        return [t.read_public(h).name() for h in handles]


def hierarchy(sim: Simulator, handle: int) -> int | None:
    with Tpm.open(sim.uri) as t:
        return hierarchy_of(t, handle)


def round_trips(eve: EvePeer, tmp_path: Path) -> None:
    """EVE's encrypted seal -> tpmseal unseal, and tpmseal seal -> EVE's unseal."""
    theirs, ours = os.urandom(32), os.urandom(32)
    eve.put("seal-enc", theirs)
    # EVE re-sealed: an object tpmseal did not seal is accepted only when told so
    r = cli(["unseal", "--profile", "eve", "--nv", "--accept-sealed-object"])
    assert (r.rc, r.out) == (0, theirs), r.err
    key = tmp_path / "ours"
    key.write_bytes(ours)
    r = cli(["seal", "--profile", "eve", "--nv", "--input", str(key), "--force"])
    assert r.rc == 0, r.err
    assert eve.get("unseal-enc") == ours


def test_tpmseal_first_then_eve_recreates_the_same_keys(eve: EvePeer, tmp_path: Path) -> None:
    r = cli(["provision", "--profile", "eve", "--json"])
    assert r.rc == 0, r.err
    info = json.loads(r.out)
    assert info["ek"]["created"] and info["srk"]["created"]
    pinned = names(eve.sim, EVE_EK, EVE_SRK)
    assert hierarchy(eve.sim, EVE_EK) == TPM_RH.OWNER  # where EVE's CreateKey puts it
    eve.run("provision-all")  # createOtherKeys(true): EVE re-creates every key
    assert names(eve.sim, EVE_EK, EVE_SRK) == pinned
    round_trips(eve, tmp_path)


def test_eve_first_then_tpmseal_recognises_its_keys(eve: EvePeer, tmp_path: Path) -> None:
    eve.run("provision")
    before = names(eve.sim, EVE_EK, EVE_SRK)
    r = cli(["provision", "--profile", "eve", "--json"])
    assert r.rc == 0, r.err
    info = json.loads(r.out)
    assert not info["ek"]["created"] and not info["srk"]["created"]
    assert [bytes.fromhex(info[k]["name"]) for k in ("ek", "srk")] == before
    round_trips(eve, tmp_path)
    eve.run("provision-all")
    assert names(eve.sim, EVE_EK, EVE_SRK) == before
    round_trips(eve, tmp_path)


def _eve_ci_layout(sim: Simulator) -> None:
    """The keys of lf-edge/eve tests/tpm/prep-and-test.sh: the EK template with
    userWithAuth instead of adminWithPolicy under the endorsement hierarchy, and an
    SRK without noDA."""
    a = TPMA_OBJECT
    ek = Public(EK_RSA_TEMPLATE.type, EK_RSA_TEMPLATE.name_alg,
                a.fixedTPM | a.fixedParent | a.sensitiveDataOrigin | a.userWithAuth
                | a.restricted | a.decrypt, EK_POLICY_A, EK_RSA_TEMPLATE.parameters,
                bytes(256))
    srk = Public(SRK_RSA_TEMPLATE.type, SRK_RSA_TEMPLATE.name_alg,
                 SRK_RSA_TEMPLATE.object_attributes & ~a.noDA, b"",
                 SRK_RSA_TEMPLATE.parameters, bytes(256))
    with Tpm.open(sim.uri) as t:
        for hier, tmpl, handle in ((TPM_RH.ENDORSEMENT, ek, EVE_EK),
                                   (TPM_RH.OWNER, srk, EVE_SRK)):
            r = t.run(cmds.CreatePrimary(hier, SensitiveCreate(), tmpl))
            with t.scoped(r.object_handle):
                t.run(cmds.EvictControl(TPM_RH.OWNER, r.object_handle, handle))


def test_eves_ci_layout_is_accepted_as_salt_key(eve: EvePeer, tmp_path: Path) -> None:
    _eve_ci_layout(eve.sim)
    before = names(eve.sim, EVE_EK, EVE_SRK)
    r = cli(["provision", "--profile", "eve", "--json"])
    assert r.rc == 0, r.err
    info = json.loads(r.out)
    assert [bytes.fromhex(info[k]["name"]) for k in ("ek", "srk")] == before
    round_trips(eve, tmp_path)


def test_a_key_that_cannot_salt_is_refused(eve: EvePeer) -> None:
    sign_only = Public(SRK_RSA_TEMPLATE.type, SRK_RSA_TEMPLATE.name_alg,
                       (SRK_RSA_TEMPLATE.object_attributes & ~TPMA_OBJECT.decrypt
                        & ~TPMA_OBJECT.restricted) | TPMA_OBJECT.sign, b"",
                       SRK_RSA_TEMPLATE.parameters.__class__(), bytes(256))
    with Tpm.open(eve.sim.uri) as t:
        r = t.run(cmds.CreatePrimary(TPM_RH.OWNER, SensitiveCreate(), sign_only))
        with t.scoped(r.object_handle):
            t.run(cmds.EvictControl(TPM_RH.OWNER, r.object_handle, EVE_EK))
    assert_one_line_error(cli(["provision", "--profile", "eve"]), ExitCode.USAGE,
                          "0x81000001", "cannot serve as", "evict")


def test_certified_salting_on_an_eve_device(eve_certified: EvePeer, tmp_path: Path) -> None:
    eve = eve_certified
    eve.run("provision")  # EVE's owner-hierarchy key at 0x81000001
    ca = str(eve.sim.ca_dir)
    # the owner-hierarchy key is explained as exactly that, never as an interposer
    r = cli(["provision", "--profile", "eve"])
    assert r.rc == 0, r.err
    assert_one_line_error(cli(["seal", "--profile", "eve", "--nv", "--ek-ca", ca, "--input",
                               "-"], stdin=b"k" * 32),
                          ExitCode.USAGE, "0x81000001", "owner hierarchy", "--ek-ca")
    r = cli(["provision", "--profile", "eve", "--ek-ca", ca, "--json"])
    assert_one_line_error(r, ExitCode.USAGE, "pinned to the EK at 0x81000001", "--repin")
    r = cli(["provision", "--profile", "eve", "--ek-ca", ca, "--repin", "--json"])
    assert r.rc == 0, r.err
    info = json.loads(r.out)
    assert info["ek"]["handle"] == f"{EVE_EK:#010x}"
    assert info["salt"]["handle"] == f"{TCG_EK:#010x}"
    assert info["ek_certificate"].startswith("verified")
    trust = pinned_json(json.loads((tmp_path / "trust.json").read_text()), "eve")
    assert trust["ek"]["handle"] == f"{TCG_EK:#010x}"
    assert trust["srk"]["handle"] == f"{EVE_SRK:#010x}"
    assert hierarchy(eve.sim, TCG_EK) == TPM_RH.ENDORSEMENT
    round_trips(eve, tmp_path)
    # and once more: idempotent, and seal --ek-ca checks the certified salt key
    assert cli(["provision", "--profile", "eve", "--ek-ca", ca]).rc == 0
    r = cli(["seal", "--profile", "eve", "--nv", "--ek-ca", ca, "--force", "--input", "-"],
            stdin=b"k" * 32)
    assert r.rc == 0, r.err
    assert eve.get("unseal-enc") == b"k" * 32


def test_an_ecc_key_at_eves_handle_needs_ek_ca(blank_sim: Simulator,
                                               monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """EVE's tpmmgr re-creates an RSA key at 0x81000001: an ECC one there would not last."""
    monkeypatch.setenv("TPMSEAL_TPM", blank_sim.uri)
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(tmp_path / "trust.json"))
    assert_one_line_error(cli(["provision", "--profile", "eve", "--ek-type", "ecc"]),
                          ExitCode.USAGE, "RSA key at 0x81000001", "--ek-ca")
    assert not (tmp_path / "trust.json").exists()


def test_an_endorsement_ek_at_eves_handle_is_kept_with_a_warning(
        eve: EvePeer, caplog: pytest.LogCaptureFixture) -> None:
    """What tpmseal provisioned before it knew EVE's hierarchy: still pinned as it is, but
    EVE re-creating its keys would replace it, and provisioning says so."""
    with Tpm.open(eve.sim.uri) as t:
        r = t.run(cmds.CreatePrimary(TPM_RH.ENDORSEMENT, SensitiveCreate(), EK_RSA_TEMPLATE))
        with t.scoped(r.object_handle):
            t.run(cmds.EvictControl(TPM_RH.OWNER, r.object_handle, EVE_EK))
    assert cli(["provision", "--profile", "eve"]).rc == 0
    assert any("under the endorsement hierarchy" in m and "owner one" in m and "--repin" in m
               for m in caplog.messages)


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "re-created"])
def test_certified_salting_straight_away(eve_certified: EvePeer, tmp_path: Path,
                                         persistent: bool) -> None:
    """An EVE device with a certified EK, provisioned with --ek-ca at once: the certified
    EK is used where it is persistent, else re-created from its template (endorsement
    hierarchy), matched to the NV certificate and persisted at the TCG handle."""
    eve = eve_certified
    eve.run("provision")
    with Tpm.open(eve.sim.uri) as t:
        present = hierarchy_of(t, TCG_EK) is not None
        if present and not persistent:
            t.run(cmds.EvictControl(TPM_RH.OWNER, TCG_EK, TCG_EK))
    r = cli(["provision", "--profile", "eve", "--ek-ca", str(eve.sim.ca_dir), "--json"])
    assert r.rc == 0, r.err
    info = json.loads(r.out)
    assert info["salt"]["handle"] == f"{TCG_EK:#010x}"
    assert info["salt"]["created"] == (not persistent or not present)
    assert not info["ek"]["created"] and not info["srk"]["created"]  # EVE's, kept
    assert hierarchy(eve.sim, TCG_EK) == TPM_RH.ENDORSEMENT
    assert hierarchy(eve.sim, EVE_EK) == TPM_RH.OWNER
    round_trips(eve, tmp_path)
    eve.run("provision-all")  # EVE re-creating its keys leaves the certified EK alone
    round_trips(eve, tmp_path)
