"""PCR policy enforcement: a changed PCR is named (exit 5); unmeasured boots are refused."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import start_copy
from test_seal_support import (
    assert_one_line_error,
    cli,
    extend,
    flush_leftovers,
    secret_bytes,
    write,
)
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode, PolicyMismatchError, UsageError
from tpmseal.recipes import sealing, trust
from tpmseal.recipes.policies import pcr_policy
from tpmseal.transport.simulator import Simulator


@pytest.mark.parametrize("legacy", [False, True], ids=["encrypted", "legacy"])
def test_extend_names_the_changed_pcr(tcg_sim: Simulator, tmp_path: Path, legacy: bool) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    flags = ["--legacy", "--allow-downgrade"] if legacy else []
    assert cli(["seal", *flags, "--input", str(key), "--output", str(blob)]).rc == 0
    extend(tcg_sim.uri, 5)  # not in the default selection: no effect
    assert cli(["unseal", *flags, "--input", str(blob)]).out == key.read_bytes()
    extend(tcg_sim.uri, 7)
    r = cli(["unseal", *flags, "--input", str(blob)])
    assert r.rc == ExitCode.PCR_MISMATCH
    assert r.out == b""
    assert_one_line_error(r, 5, "PCR policy check failed: sha256 PCR 7 changed since sealing")
    extend(tcg_sim.uri, 2)
    r = cli(["unseal", *flags, "--input", str(blob)])
    assert_one_line_error(r, 5, "sha256 PCR 2, 7 changed")
    assert flush_leftovers(tcg_sim.uri) == []


def test_extend_api_reports_changed(tcg_sim: Simulator) -> None:
    rec = trust.load(tcg_sim.state / "trust.json", "tcg")
    with Tpm.open(tcg_sim.uri) as t:
        blob = sealing.seal(t, secret_bytes(), pcr_policy("sha256:0,4,6,7,14"), trust=rec)
    extend(tcg_sim.uri, 14)
    extend(tcg_sim.uri, 6)
    with Tpm.open(tcg_sim.uri) as t, pytest.raises(PolicyMismatchError) as e:
        sealing.unseal(t, blob, trust=rec)
    assert e.value.changed == {"sha256": [6, 14]}
    assert e.value.exit_code == ExitCode.PCR_MISMATCH


def test_extend_nv_without_metadata(eve_sim: Simulator, tmp_path: Path) -> None:
    """EVE's layout stores no PCR values: the mismatch is reported without names."""
    key = write(tmp_path / "key", secret_bytes())
    assert cli(["seal", "--profile", "eve", "--nv", "--input", str(key)]).rc == 0
    extend(eve_sim.uri, 8)
    r = cli(["unseal", "--profile", "eve", "--nv"])
    assert_one_line_error(r, 5, "PCR policy check failed")
    assert flush_leftovers(eve_sim.uri) == []


# ----------------------------------------------------------------------- unmeasured


@pytest.fixture
def unmeasured_sim(tcg_template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    """The tcg TPM right after power-on, before any boot measurement: PCRs are zero."""
    s = start_copy(tcg_template)
    monkeypatch.setenv("TPMSEAL_TPM", s.uri)
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(s.state / "trust.json"))
    yield s
    s.stop()
    shutil.rmtree(s.state, ignore_errors=True)


@pytest.mark.parametrize("legacy", [False, True], ids=["encrypted", "legacy"])
def test_refuse_unmeasured(unmeasured_sim: Simulator, tmp_path: Path, legacy: bool) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    flags = ["--legacy", "--allow-downgrade"] if legacy else []
    r = cli(["seal", *flags, "--input", str(key), "--output", str(blob)])
    assert_one_line_error(r, 2, "PCR sha256:0, sha256:4 is all zero", "TPM Carte Blanche",
                          "--allow-unmeasured")
    assert not blob.exists()
    # the anchors are checked even when the selection leaves them out
    r = cli(["seal", *flags, "--pcrs", "sha256:7", "--input", str(key), "--output", str(blob)])
    assert_one_line_error(r, 2, "all zero")
    extend(unmeasured_sim.uri, 0)
    r = cli(["seal", *flags, "--input", str(key), "--output", str(blob)])
    assert_one_line_error(r, 2, "PCR sha256:4 is all zero")
    r = cli(["seal", *flags, "--allow-unmeasured", "--input", str(key), "--output", str(blob)])
    assert r.rc == 0, r.err
    assert cli(["unseal", "--input", str(blob)]).out == key.read_bytes()


def test_refuse_unmeasured_api_and_nv(unmeasured_sim: Simulator, tmp_path: Path) -> None:
    rec = trust.load(unmeasured_sim.state / "trust.json", "tcg")
    with Tpm.open(unmeasured_sim.uri) as t, pytest.raises(UsageError, match="all zero"):
        sealing.seal(t, secret_bytes(), trust=rec)
    key = write(tmp_path / "key", secret_bytes())
    r = cli(["vault-key", "--profile", "tcg"])
    assert_one_line_error(r, 11, "keeps no vault key in NV")
    r = cli(["seal", "--input", str(key), "--output", str(tmp_path / "b.json"),
             "--pcrs", "sha256:16"])
    assert_one_line_error(r, 2, "all zero")
