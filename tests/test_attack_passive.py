"""Attack 1: a passive bus sniffer records seal, unseal and vault-key.

Every exchange on the bus is scanned for the secret in raw, hex (both cases)
and base64 (standard and URL-safe, every alignment) spellings. A legacy seal is
the positive control: the same scan does find the secret there.
"""

from __future__ import annotations

import os
from pathlib import Path

from attacks.bus import assert_no_leak, expect_ok, interposer, names, tpm
from tpmseal.sniff.analysis.leaks import scan
from tpmseal.transport.simulator import Simulator


def test_passive_capture_of_seal_and_unseal_blob(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    with interposer(tcg_sim) as p:
        assert tpm(p, "seal", "--input", str(key), "--output", str(blob)).rc == 0
        seal_names = names(p.exchanges)
        expect_ok(tpm(p, "unseal", "--input", str(blob)), secret)
        assert "Create" in seal_names and "Unseal" in names(p.exchanges)
        assert_no_leak(p.exchanges, secret)


def test_passive_capture_of_seal_and_unseal_nv(eve_sim: Simulator, tmp_path: Path) -> None:
    secret = os.urandom(32)
    key = tmp_path / "key"
    key.write_bytes(secret)
    with interposer(eve_sim) as p:
        assert tpm(p, "seal", "--profile", "eve", "--nv", "--input", str(key)).rc == 0
        expect_ok(tpm(p, "unseal", "--profile", "eve", "--nv"), secret)
        assert {"Create", "NV_Write", "NV_Read", "Unseal"} <= set(names(p.exchanges))
        assert_no_leak(p.exchanges, secret)


def test_passive_capture_of_vault_key(eve_sim: Simulator) -> None:
    """Generate-and-seal, then the every-boot unseal: the printed key never crosses the bus."""
    with interposer(eve_sim) as p:
        first = tpm(p, "vault-key")
        expect_ok(first, size=32)
        expect_ok(tpm(p, "vault-key"), first.out)
        assert {"GetRandom", "Create", "Unseal"} <= set(names(p.exchanges))
        assert_no_leak(p.exchanges, first.out)


def test_passive_capture_of_a_migrated_legacy_vault_key(eve_sim: Simulator) -> None:
    """EVE's legacy plaintext key in NV 0x01700000 is read over an encrypted session."""
    from tpmseal.client.tpm import Tpm
    from tpmseal.recipes.stores import nv_define_write

    legacy = os.urandom(32)
    with Tpm.open(eve_sim.uri) as t:
        nv_define_write(t, 0x01700000, legacy)
    with interposer(eve_sim) as p:
        expect_ok(tpm(p, "vault-key"), legacy)
        assert "NV_Read" in names(p.exchanges)
        assert_no_leak(p.exchanges, legacy)


def test_control_the_scanner_sees_a_legacy_seal(tcg_sim: Simulator, tmp_path: Path) -> None:
    """Positive control: without parameter encryption the same scan finds the secret."""
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    with interposer(tcg_sim) as p:
        assert tpm(p, "seal", "--legacy", "--allow-downgrade", "--input", str(key),
                   "--output", str(blob)).rc == 0
        leaks = scan(p.exchanges, [secret])
    assert [(leak.command, leak.direction, leak.encoding) for leak in leaks] == \
        [("Create", "command", "raw")]
