"""`tpmseal vault-key --profile eve`: EVE's FetchSealedVaultKey lifecycle."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import start_copy
from test_seal_support import (
    TpmLog,
    assert_one_line_error,
    cli,
    flush_leftovers,
    pinned_json,
    secret_bytes,
    tools,
    tools_flush,
    write,
)
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.stores import nv_public
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_RH

LEGACY_NV, PRIV_NV, PUB_NV = 0x01700000, 0x01800000, 0x01900000


def _defined(sim: Simulator, index: int) -> bool:
    with Tpm.open(sim.uri) as t:
        return nv_public(t, index) is not None


def _write_legacy_key(sim: Simulator, w: Path, key: bytes) -> None:
    """EVE's legacy FetchVaultKey layout, written with tpm2-tools (go-tpm: nameAlg SHA-1)."""
    write(w / "legacy.key", key)
    tools(sim, "tpm2_nvdefine", hex(LEGACY_NV), "-C", "o", "-s", str(len(key)), "-a",
          "ownerread|ownerwrite", "-g", "sha1", cwd=w)
    tools(sim, "tpm2_nvwrite", hex(LEGACY_NV), "-C", "o", "-i", "legacy.key", cwd=w)
    tools_flush(sim)


def test_generated_then_unsealed(eve_sim: Simulator, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tpmseal")
    log = TpmLog().install(monkeypatch)
    first = cli(["vault-key"])
    assert first.rc == 0 and first.err == ""
    assert len(first.out) == 32
    assert any("generated vault key" in m for m in caplog.messages)
    assert "GetRandom" in log.names() and "Create" in log.names()
    assert not any(first.out in c or first.out in r for c, r in log.exchanges())
    assert _defined(eve_sim, PRIV_NV) and _defined(eve_sim, PUB_NV)
    assert not _defined(eve_sim, 0x01800001)  # no staging left behind

    log.clear()
    caplog.clear()
    second = cli(["vault-key"])
    assert (second.rc, second.out) == (0, first.out)
    # the every-boot path: read the pair (sizes from the trust file: no NV_ReadPublic),
    # unseal - one salted session, 7 commands (the legacy key is left alone, as EVE does)
    assert log.names() == ["NV_Read", "NV_Read", "StartAuthSession", "Load", "PolicyPCR",
                           "Unseal", "FlushContext"]
    assert any("vault key unsealed" in m for m in caplog.messages)
    # the same key through plain unseal of EVE's layout
    assert cli(["unseal", "--profile", "eve", "--nv"]).out == first.out
    # --output: mode 0600, same key, nothing on stdout
    out = tmp_path / "vault.key"
    r = cli(["vault-key", "--output", str(out)])
    assert (r.rc, r.out) == (0, b"")
    assert out.read_bytes() == first.out
    assert out.stat().st_mode & 0o777 == 0o600
    assert flush_leftovers(eve_sim.uri) == []


def test_fresh_keys_differ(eve_template: Path) -> None:
    keys = []
    for _ in range(2):
        s = start_copy(eve_template)
        try:
            from conftest import measure_boot

            measure_boot(s)
            r = cli(["--tpm", s.uri, "--trust-file", str(s.state / "trust.json"), "vault-key"])
            assert r.rc == 0, r.err
            keys.append(r.out)
        finally:
            s.stop()
            shutil.rmtree(s.state, ignore_errors=True)
    assert keys[0] != keys[1]


def test_legacy_key_migrated(eve_sim: Simulator, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch,
                             caplog: pytest.LogCaptureFixture) -> None:
    legacy = secret_bytes()
    _write_legacy_key(eve_sim, tmp_path, legacy)
    caplog.set_level(logging.INFO, logger="tpmseal")
    log = TpmLog().install(monkeypatch)
    r = cli(["vault-key"])
    assert (r.rc, r.out) == (0, legacy), r.err
    assert any("migrated vault key" in m for m in caplog.messages)
    # read over an encrypted session: the plaintext key never crossed the bus
    assert not any(legacy in c or legacy in resp for c, resp in log.exchanges())
    # kept, as EVE keeps it: a release from before sealing reads it after a rollback
    assert _defined(eve_sim, LEGACY_NV)
    assert any("keeping the legacy key" in m for m in caplog.messages)
    assert _defined(eve_sim, PRIV_NV) and _defined(eve_sim, PUB_NV)
    assert cli(["vault-key"]).out == legacy
    assert _defined(eve_sim, LEGACY_NV)
    assert cli(["unseal", "--profile", "eve", "--nv"]).out == legacy
    # removed only on request, with a warning about rollback
    caplog.clear()
    r = cli(["vault-key", "--remove-legacy-key"])
    assert (r.rc, r.out) == (0, legacy), r.err
    assert not _defined(eve_sim, LEGACY_NV)
    assert any("rollback to a release from before sealing can no longer open the vault" in m
               for m in caplog.messages)
    assert cli(["vault-key"]).out == legacy


def test_legacy_key_differing_from_sealed_is_kept(eve_sim: Simulator, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    sealed = cli(["vault-key"]).out
    other = secret_bytes()
    _write_legacy_key(eve_sim, tmp_path, other)
    r = cli(["vault-key", "--remove-legacy-key"])
    assert (r.rc, r.out) == (0, sealed)
    assert any("differs from the sealed key" in m for m in caplog.messages)
    assert _defined(eve_sim, LEGACY_NV)
    # the same legacy key next to its sealed copy: kept, unless removal is asked for
    tools(eve_sim, "tpm2_nvundefine", hex(LEGACY_NV), "-C", "o")
    _write_legacy_key(eve_sim, tmp_path, sealed)
    assert cli(["vault-key"]).out == sealed
    assert _defined(eve_sim, LEGACY_NV)
    assert cli(["vault-key", "--remove-legacy-key"]).out == sealed
    assert not _defined(eve_sim, LEGACY_NV)


def test_vault_key_in_a_pipeline(eve_sim: Simulator) -> None:
    """`tpmseal vault-key | consumer` as with `cryptsetup --key-file=-`: raw bytes on stdout."""
    cmd = f"{sys.executable} -m tpmseal.cli.main vault-key | od -An -v -tx1 | tr -d ' \\n'"
    first = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=60, check=True)
    assert first.stderr == b""
    key = bytes.fromhex(first.stdout.decode())
    assert len(key) == 32
    again = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=60, check=True)
    assert bytes.fromhex(again.stdout.decode()) == key


def test_vault_key_after_pcr_change_and_with_custom_pcrs(eve_sim: Simulator) -> None:
    from test_seal_support import extend

    key = cli(["vault-key", "--pcrs", "sha256:0,4,7"]).out
    # a later call with the default list recovers the selection
    assert cli(["vault-key"]).out == key
    extend(eve_sim.uri, 7)
    r = cli(["vault-key"])
    assert_one_line_error(r, 5, "PCR policy check failed")
    assert r.out == b""
    # the legacy path is not tried silently and nothing was re-generated
    assert _defined(eve_sim, PRIV_NV)


@pytest.fixture
def unmeasured_eve(eve_template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    s = start_copy(eve_template)
    monkeypatch.setenv("TPMSEAL_TPM", s.uri)
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(s.state / "trust.json"))
    yield s
    s.stop()
    shutil.rmtree(s.state, ignore_errors=True)


def test_vault_key_refuses_unmeasured(unmeasured_eve: Simulator, tmp_path: Path) -> None:
    r = cli(["vault-key"])
    assert_one_line_error(r, 2, "all zero")
    assert not _defined(unmeasured_eve, PRIV_NV)
    legacy = secret_bytes()
    _write_legacy_key(unmeasured_eve, tmp_path, legacy)
    assert_one_line_error(cli(["vault-key"]), 2, "all zero")
    assert _defined(unmeasured_eve, LEGACY_NV)  # the only copy is not touched
    r = cli(["vault-key", "--allow-unmeasured"])
    assert (r.rc, r.out) == (0, legacy)


def test_pinned_public_areas_are_only_a_hint(eve_sim: Simulator,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The trust file's nv_public (the pair's public areas as the last save left them)
    spares the two NV_ReadPublic. A trust file without it (from before), or with one
    that no longer describes the pair (the index redefined behind tpmseal's back, here
    by editing the sizes), reads the pair the ordinary way, unseals, and records what
    it read, so the next boot is back to two NV_Reads."""
    trust = eve_sim.state / "trust.json"
    log = TpmLog().install(monkeypatch)
    first = cli(["vault-key"])
    assert first.rc == 0, first.err
    hint = pinned_json(json.loads(trust.read_text()), "eve")["nv_public"]
    assert sorted(hint) == ["0x01800000", "0x01900000"]
    ordinary = ["NV_ReadPublic", "NV_ReadPublic", "NV_Read", "NV_Read", "StartAuthSession"]

    def edit(change: Callable[[dict[str, Any]], None]) -> None:
        doc = json.loads(trust.read_text())
        change(pinned_json(doc, "eve"))
        trust.write_text(json.dumps(doc))

    def shrink(rec: dict[str, Any]) -> None:  # dataSize is the last two bytes
        rec["nv_public"] = {i: h[:-4] + f"{int(h[-4:], 16) - 1:04x}"
                            for i, h in rec["nv_public"].items()}

    def grow(rec: dict[str, Any]) -> None:
        rec["nv_public"] = {i: h[:-4] + f"{int(h[-4:], 16) + 7:04x}"
                            for i, h in rec["nv_public"].items()}

    for change, before in ((lambda rec: rec.pop("nv_public"), ordinary),
                           (shrink, ["NV_Read", "NV_Read", *ordinary]),  # a prefix
                           (grow, ["NV_Read", *ordinary])):  # past the end
        edit(change)
        log.clear()
        r = cli(["vault-key"])
        assert (r.rc, r.out) == (0, first.out), r.err
        assert log.names()[:len(before)] == before
        assert pinned_json(json.loads(trust.read_text()), "eve")["nv_public"] == hint
        log.clear()
        assert cli(["vault-key"]).out == first.out
        assert log.names()[:3] == ["NV_Read", "NV_Read", "StartAuthSession"]
    log.clear()  # accepting whatever is stored reads it the same way
    assert cli(["vault-key", "--accept-sealed-object"]).out == first.out
    assert log.names()[:3] == ["NV_Read", "NV_Read", "StartAuthSession"]
    assert pinned_json(json.loads(trust.read_text()), "eve")["nv_public"] == hint


def test_nv_command_counts(eve_sim: Simulator, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """What crash safety needs and no more: one listing instead of a probe per index,
    staging only when a complete pair is replaced, same-size indices rewritten in place."""
    log = TpmLog().install(monkeypatch)
    key = write(tmp_path / "key", secret_bytes())
    define_write = ["NV_DefineSpace", "NV_Write"]

    def run(*argv: str) -> list[str]:
        log.clear()
        r = cli(argv)
        assert r.rc == 0, r.err
        return log.names()

    fresh = run("seal", "--profile", "eve", "--nv", "--input", str(key))
    assert fresh == ["StartAuthSession", "GetCapability", "PCR_Read", "PCR_Read", "Create",
                     *define_write, *define_write]  # 9 (16 before, 7 of them failing)
    replace = run("seal", "--profile", "eve", "--nv", "--input", str(key), "--force")
    assert replace == ["StartAuthSession", "GetCapability", "NV_ReadPublic", "NV_ReadPublic",
                       "PCR_Read", "PCR_Read", "Create", *define_write, *define_write,
                       "NV_Write", "NV_Write", "NV_UndefineSpace", "NV_UndefineSpace"]  # 15
    assert all(_defined(eve_sim, i) == (i in (PRIV_NV, PUB_NV))
               for i in (PRIV_NV, PUB_NV, 0x01800001, 0x01900001))
    with Tpm.open(eve_sim.uri) as t:
        for i in (PRIV_NV, PUB_NV):
            t.run(cmds.NV_UndefineSpace(TPM_RH.OWNER, i))
    generate = run("vault-key")
    # 17, and one NV_Read first: the trust file still describes the pair removed above
    # (a stale hint costs that failed read, then the ordinary reads find no pair)
    assert generate[:3] == ["NV_Read", "NV_ReadPublic", "NV_ReadPublic"]
    assert len(generate) == 18 and generate.count("StartAuthSession") == 2
    assert run("vault-key") == ["NV_Read", "NV_Read", "StartAuthSession", "Load", "PolicyPCR",
                                "Unseal", "FlushContext"]
