"""Attack 22: answer at one pinned TPM's address with another pinned TPM.

One trust file pins two TPMs: the board's (A, at the address the user opens) and a
software simulator (B) whose state directory, and so its EK's private key, the
attacker can read. The interposer on A's bus answers every command with B. A flow
that chose its trust record by the EK Name it reads over the bus would find B's
record, salt to B's EK and seal the secret on B, where the attacker unseals it at
leisure. tpmseal chooses by the address it opened (recipes/trust.py, select): it
salts to A's EK, which B cannot decrypt, and stops before any secret is sent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import tpmseal
from attacks.bus import expect_error, interposer, names, tpm
from conftest import measure_boot
from test_seal_support import cli, write
from tpmseal.client.tpm import Tpm
from tpmseal.errors import EK_MISMATCH, ExitCode
from tpmseal.recipes import sealing, trust
from tpmseal.recipes.trust import TrustRecord
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds

EK = 0x81010001


@pytest.fixture
def two_pinned(tcg_sim: Simulator, blank_sim: Simulator,
               tmp_path: Path) -> Iterator[tuple[Simulator, Simulator, Path]]:
    """(A, B, A's address): A pinned at a socket that the attack later answers with B,
    B (the attacker's simulator) pinned at its own address, in A's trust file."""
    bus = tmp_path / "tpm.sock"
    with interposer(tcg_sim, at=bus) as p:
        assert tpm(p, "provision").rc == 0
    measure_boot(blank_sim)
    # the same kind of EK at the same handle as A's
    assert cli(["--tpm", blank_sim.uri, "provision", "--ek-type", "rsa"]).rc == 0
    assert len(trust.load_all(tcg_sim.state / "trust.json")) == 2
    yield tcg_sim, blank_sim, bus


def naive_record(t: Tpm, path: Path) -> TrustRecord:
    """The weakened selection: the record whose EK Name the bus reports."""
    name = t.run(cmds.ReadPublic(EK)).name
    return next(r for r in trust.load_all(path) if r.ek_name == name)


def test_control_choosing_the_record_by_the_bus_seals_on_the_attackers_tpm(
        two_pinned: tuple[Simulator, Simulator, Path]) -> None:
    a, b, bus = two_pinned
    path = a.state / "trust.json"
    secret = os.urandom(32)
    with interposer(b, at=bus) as p, Tpm.open(p.uri) as t:
        rec = naive_record(t, path)
        assert b.uri in rec.addresses  # the bus chose B's record
        blob = sealing.seal(t, secret, trust=rec)
    # the attacker holds B: its own TPM unseals the victim's secret
    with Tpm.open(b.uri) as t:
        assert sealing.unseal(t, blob, trust=rec) == secret


def test_tpmseal_salts_to_the_tpm_pinned_at_the_address(
        two_pinned: tuple[Simulator, Simulator, Path], tmp_path: Path) -> None:
    a, b, bus = two_pinned
    path = a.state / "trust.json"
    secret = os.urandom(32)
    key, blob, fresh = write(tmp_path / "key", secret), tmp_path / "a.json", tmp_path / "n.json"
    with interposer(a, at=bus) as p:
        assert tpm(p, "seal", "--input", str(key), "--output", str(blob)).rc == 0
    sealed = blob.read_bytes()
    with interposer(b, at=bus) as p:
        for argv in (["seal", "--input", str(key), "--output", str(fresh)],
                     ["reseal", "--input", str(blob)], ["unseal", "--input", str(blob)]):
            r = tpm(p, *argv)
            expect_error(r, ExitCode.INTEGRITY, EK_MISMATCH, str(path), what=argv[0])
            assert r.out == b""
        assert not fresh.exists() and blob.read_bytes() == sealed
        assert not {"Create", "Unseal"} & set(names(p.exchanges))  # the secret never left
        with tpmseal.open_tpm(p.uri) as t, pytest.raises(tpmseal.TrustError,
                                                         match=str(path)):
            tpmseal.seal(t, secret)
        assert "Create" not in names(p.exchanges)
    # without the interposer, the same address is A again
    with interposer(a, at=bus) as p:
        assert tpm(p, "unseal", "--input", str(blob)).out == secret
