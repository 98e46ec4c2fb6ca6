"""PCR-selection recovery (EVE's RecoverDiskKeyPolicyPcr), `pcrs recover`, `pcrs show`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from test_seal_support import (
    EVE_PCRS,
    TpmLog,
    assert_one_line_error,
    cli,
    extend,
    read_pcrs,
    secret_bytes,
    write,
)
from tpmseal.recipes.pcrspec import parse_pcrs
from tpmseal.recipes.recovery import find_selection
from tpmseal.recipes.templates import sealed_template
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_ALG

S256 = int(TPM_ALG.SHA256)

# EVE's tpm_test.go vectors (computePolicyPCRAuthDigest)
PCR0 = bytes.fromhex("5619430cb549255eb944f6956c5e7d0c11a47264b946c337ff1b9e81be44307a")
PCR7 = bytes.fromhex("70a6a9ab9369798e862dcc97fa40c14b82da9b6ad55035a7377a09ca8f66517a")
PCR14 = bytes.fromhex("12aeb9ea2640c6ee70637dc73b1a4720546aed216103d5456cbd14438e6ea683")
EVE_VECTORS = {
    (0,): "924ea886222d06270b639b0b1f3a034dba58f7f4bc9d2e110391832d524dcaf1",
    (7,): "883510a0211286f571c65e26e884aa786f3427a1a6009cb67c16be094bdb71d9",
    (0, 7): "8c07b5510a2444e166e3f39706a2156f50e788250dde71f46c50ed1dd4e080a1",
    (0, 7, 14): "1461fd66a64b5bf22ba94477072fb6a3f1635aa7c1447bdda53ff892c50b9d7f",
}


@pytest.mark.parametrize("pcrs", list(EVE_VECTORS), ids=str)
def test_find_selection_eve_vectors(pcrs: tuple[int, ...]) -> None:
    values: dict[tuple[int, int], bytes] = {(S256, 0): PCR0, (S256, 7): PCR7, (S256, 14): PCR14}
    public = sealed_template(bytes.fromhex(EVE_VECTORS[pcrs]))
    found = find_selection(public, values)
    assert found is not None
    sel, pin = found
    assert sel.pairs() == [(S256, i) for i in pcrs] and not pin


# ------------------------------------------------------------------------------ NV


def _forget_records(sim: Simulator) -> None:
    """Drop the trust file's NV policy records, keeping the pins."""
    path = sim.state / "trust.json"
    doc = json.loads(path.read_text())
    doc["profiles"]["eve"].pop("nv_records", None)
    path.write_text(json.dumps(doc))


def test_nv_record_names_the_pcrs(eve_sim: Simulator, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With the trust file's record, `unseal --nv` knows the PCRs: no --pcrs, no search,
    and a failure names the PCRs that changed."""
    key = write(tmp_path / "key", secret_bytes())
    assert cli(["seal", "--profile", "eve", "--nv", "--pcrs", "sha256:0,2,7,9",
                "--input", str(key)]).rc == 0
    log = TpmLog().install(monkeypatch)
    r = cli(["unseal", "--profile", "eve", "--nv"])
    assert (r.rc, r.out) == (0, key.read_bytes()), r.err
    assert "PCR_Read" not in log.names()
    extend(eve_sim.uri, 9)
    assert_one_line_error(cli(["unseal", "--profile", "eve", "--nv"]), 5, "sha256 PCR 9 changed")


def test_nv_subset_recovered_with_default_and_wrong_pcrs(
        eve_sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    key = write(tmp_path / "key", secret_bytes())
    assert cli(["seal", "--profile", "eve", "--nv", "--pcrs", "sha256:0,2,7,9",
                "--input", str(key)]).rc == 0
    _forget_records(eve_sim)  # as for an object EVE sealed: nothing says which PCRs
    caplog.set_level(logging.WARNING, logger="tpmseal")
    # the default list (what EVE would use with its policy file missing)
    r = cli(["unseal", "--profile", "eve", "--nv"])
    assert (r.rc, r.out) == (0, key.read_bytes()), r.err
    assert any("recovered PCRs sha256:0,2,7,9" in m for m in caplog.messages)
    # a wrong explicit list
    r = cli(["unseal", "--profile", "eve", "--nv", "--pcrs", "sha256:0,1"])
    assert (r.rc, r.out) == (0, key.read_bytes()), r.err
    # the right one: no recovery, no PCR_Read at all
    log = TpmLog().install(monkeypatch)
    r = cli(["unseal", "--profile", "eve", "--nv", "--pcrs", "sha256:0,2,7,9"])
    assert r.out == key.read_bytes()
    assert "PCR_Read" not in log.names()
    # recovery disabled: the policy failure is reported
    r = cli(["unseal", "--profile", "eve", "--nv", "--no-recover"])
    assert_one_line_error(r, 5, "PCR policy check failed")


def test_pcrs_recover_nv(eve_sim: Simulator, tmp_path: Path) -> None:
    key = write(tmp_path / "key", secret_bytes())
    assert cli(["seal", "--profile", "eve", "--nv", "--pcrs", "sha256:1,3,4,11,12",
                "--input", str(key)]).rc == 0
    r = cli(["pcrs", "recover", "--profile", "eve", "--nv"])
    assert (r.rc, r.out, r.err) == (0, b"sha256:1,3,4,11,12\n", "")
    r = cli(["pcrs", "recover", "--profile", "eve", "--nv", "--json"])
    assert json.loads(r.out) == {"pcrs": "sha256:1,3,4,11,12", "pin": False}
    # the profile default is found first, without a search
    assert cli(["seal", "--profile", "eve", "--nv", "--force", "--input", str(key)]).rc == 0
    r = cli(["pcrs", "recover", "--profile", "eve", "--nv"])
    assert r.out.decode().strip() == EVE_PCRS
    # once the PCRs themselves changed, nothing matches
    extend(eve_sim.uri, 3)
    r = cli(["pcrs", "recover", "--profile", "eve", "--nv"])
    assert_one_line_error(r, 5, "no selection of PCRs 0-15")


def test_pcrs_recover_with_pin(eve_sim: Simulator, tmp_path: Path) -> None:
    key = write(tmp_path / "key", secret_bytes())
    pin = write(tmp_path / "pin", b"2468\n")
    assert cli(["seal", "--profile", "eve", "--nv", "--pcrs", "sha256:0,4", "--pin-file",
                str(pin), "--input", str(key)]).rc == 0
    r = cli(["pcrs", "recover", "--profile", "eve", "--nv"])
    assert r.out == b"sha256:0,4 (with PIN)\n"
    r = cli(["unseal", "--profile", "eve", "--nv", "--pin-file", str(pin)])
    assert (r.rc, r.out) == (0, key.read_bytes()), r.err


def test_pcrs_recover_blob(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    assert cli(["seal", "--pcrs", "sha256:0,4,5", "--input", str(key), "--output",
                str(blob)]).rc == 0
    r = cli(["pcrs", "recover", "--input", str(blob)])
    assert r.out == b"sha256:0,4,5\n"
    r = cli(["pcrs", "recover", "--input", str(tmp_path / "missing.json")])
    assert_one_line_error(r, 11, "no sealed secret")
    r = cli(["pcrs", "recover", "--nv"])
    assert_one_line_error(r, 2, "has no NV layout")


# --------------------------------------------------------------------------- show


def test_pcrs_show(tcg_sim: Simulator) -> None:
    now = read_pcrs(tcg_sim.uri, S256, range(8))
    r = cli(["pcrs", "show"])
    assert r.rc == 0 and r.err.startswith("(not authenticated: read over the bus without an HMAC")
    lines = r.out.decode().splitlines()
    assert [ln.split()[0] for ln in lines] == [f"sha256:{i}" for i in (0, 1, 2, 3, 4, 6, 7)]
    for ln in lines:
        name, value = ln.split()
        assert bytes.fromhex(value) == now[(S256, int(name.split(":")[1]))]
    r = cli(["pcrs", "show", "--pcrs", "sha256:7,16", "--json"])
    doc = json.loads(r.out)
    assert doc == {"sha256": {"7": now[(S256, 7)].hex(), "16": "00" * 32},
                   "authenticated": False}
    r = cli(["pcrs", "show", "--pcrs", "sha256:7,16", "--json", "--authenticated"])
    assert (r.rc, r.err) == (0, "")
    assert json.loads(r.out) == doc | {"authenticated": True}
    r = cli(["pcrs", "show", "--profile", "eve"])
    assert len(r.out.decode().splitlines()) == len(parse_pcrs(EVE_PCRS).pairs())
    extend(tcg_sim.uri, 7)
    r = cli(["pcrs", "show", "--pcrs", "sha256:7", "--json"])
    assert json.loads(r.out)["sha256"]["7"] != now[(S256, 7)].hex()
