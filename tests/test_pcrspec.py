"""PCR spec parser table, multi-bank sealing, banks the TPM has not allocated."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import measure_boot, start_copy
from test_seal_support import assert_one_line_error, cli, extend, secret_bytes, write
from tpmseal.client.tpm import Tpm
from tpmseal.errors import UsageError
from tpmseal.recipes import sealing, trust
from tpmseal.recipes.pcrspec import format_pcrs, from_dict, parse_pcrs, to_dict
from tpmseal.recipes.policies import pcr_policy
from tpmseal.recipes.profiles import get_profile
from tpmseal.recipes.provision import provision
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_ALG
from tpmseal.wire.structures import PcrSelection, PcrSelectionList

S256, S384, S1, S512 = TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA1, TPM_ALG.SHA512


def _sel(*parts: tuple[int, tuple[int, ...]]) -> PcrSelectionList:
    return PcrSelectionList(tuple(PcrSelection(b, ix) for b, ix in parts))


VALID = [
    ("sha256:0,1,2,3,4,6,7", _sel((S256, (0, 1, 2, 3, 4, 6, 7))), "sha256:0,1,2,3,4,6,7"),
    ("sha256:0", _sel((S256, (0,))), "sha256:0"),
    ("sha256:23", _sel((S256, (23,))), "sha256:23"),
    ("sha256:7,0", _sel((S256, (0, 7))), "sha256:0,7"),
    ("SHA256: 0, 7", _sel((S256, (0, 7))), "sha256:0,7"),
    ("sha384:0,7", _sel((S384, (0, 7))), "sha384:0,7"),
    ("sha1:0", _sel((S1, (0,))), "sha1:0"),
    ("sha512:4", _sel((S512, (4,))), "sha512:4"),
    ("sha256:0,7+sha384:0", _sel((S256, (0, 7)), (S384, (0,))), "sha256:0,7+sha384:0"),
    # bank order is kept: it is part of the PolicyPCR digest
    ("sha384:0+sha256:0,7", _sel((S384, (0,)), (S256, (0, 7))), "sha384:0+sha256:0,7"),
    ("sha256:" + ",".join(map(str, range(24))), _sel((S256, tuple(range(24)))),
     "sha256:" + ",".join(map(str, range(24)))),
]

INVALID = [
    ("", "does not start with a bank"),
    ("0,1,2", "does not start with a bank"),
    ("sha256", "does not start with a bank"),
    ("md5:0", "does not start with a bank"),
    ("sm3_256:0", "does not start with a bank"),
    ("sha256:", "is not a PCR index"),
    ("sha256:0,,1", "is not a PCR index"),
    ("sha256:-1", "is not a PCR index"),
    ("sha256:0-7", "is not a PCR index"),
    ("sha256:x", "is not a PCR index"),
    ("sha256:\u00b2", "is not a PCR index"),  # superscript two: isdigit() but not int()
    ("sha256:24", "outside 0-23"),
    ("sha256:100", "outside 0-23"),
    ("sha256:" + "9" * 5000, "outside 0-23"),  # int() raised ValueError (an untyped error)
    ("sha256:1,1", "listed twice"),
    ("sha256:0,7,07", "listed twice"),
    ("sha256:0+sha256:1", "appears twice"),
    ("sha256:0+", "does not start with a bank"),
]


@pytest.mark.parametrize(("spec", "sel", "canonical"), VALID, ids=[v[0] for v in VALID])
def test_parse_valid(spec: str, sel: PcrSelectionList, canonical: str) -> None:
    got = parse_pcrs(spec)
    assert got == sel
    assert format_pcrs(got) == canonical
    assert parse_pcrs(format_pcrs(got)) == got
    assert from_dict(json.loads(json.dumps(to_dict(got)))) == got


@pytest.mark.parametrize(("spec", "why"), INVALID, ids=[repr(v[0])[:40] for v in INVALID])
def test_parse_invalid(spec: str, why: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_pcrs(spec)
    assert why in e.value.message
    assert "\n" not in e.value.one_line()


def test_cli_bad_spec_is_a_usage_error(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = write(tmp_path / "key", secret_bytes())
    r = cli(["seal", "--pcrs", "sha256:0,24", "--input", str(key), "--output",
             str(tmp_path / "b.json")])
    assert_one_line_error(r, 2, "outside 0-23")
    assert r.err.startswith("tpmseal seal: error: argument --pcrs")
    assert not (tmp_path / "b.json").exists()


def test_bank_not_allocated(tcg_sim: Simulator, tmp_path: Path) -> None:
    """The fixture TPMs (swtpm_setup active_pcr_banks = sha256) have no sha384 bank."""
    key = write(tmp_path / "key", secret_bytes())
    r = cli(["seal", "--pcrs", "sha256:0,7+sha384:0", "--input", str(key), "--output",
             str(tmp_path / "b.json")])
    assert_one_line_error(r, 2, "bank allocated")
    r = cli(["pcrs", "show", "--pcrs", "sha1:0"])
    assert_one_line_error(r, 2, "bank allocated")


# ------------------------------------------------------------------ multi-bank TPM


@pytest.fixture(scope="module")
def all_banks_template() -> Iterator[Path]:
    """A factory-fresh swtpm (sha1/256/384/512 all allocated) provisioned for tcg."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="tpmseal-banks-", dir="/tmp"))
    s = Simulator(d)
    s.start()
    try:
        with Tpm.open(s.uri) as t:
            provision(t, get_profile("tcg"), ek_type="rsa", trust_file=d / "trust.json")
    finally:
        s.stop()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def banks_sim(all_banks_template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    s = start_copy(all_banks_template)
    measure_boot(s)
    monkeypatch.setenv("TPMSEAL_TPM", s.uri)
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(s.state / "trust.json"))
    yield s
    s.stop()
    shutil.rmtree(s.state, ignore_errors=True)


def test_seal_to_two_banks(banks_sim: Simulator, tmp_path: Path) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    r = cli(["seal", "--pcrs", "sha256:0,7+sha384:0", "--input", str(key), "--output", str(blob)])
    assert r.rc == 0, r.err
    doc = json.loads(blob.read_text())
    assert doc["pcrs"] == {"sha256": [0, 7], "sha384": [0]}
    assert set(doc["pcr_values"]) == {"sha256", "sha384"}
    assert len(bytes.fromhex(doc["pcr_values"]["sha384"]["0"])) == 48
    assert cli(["unseal", "--input", str(blob)]).out == key.read_bytes()
    # a change in the second bank alone is caught and named
    extend(banks_sim.uri, 0, bank="sha384")
    r = cli(["unseal", "--input", str(blob)])
    assert_one_line_error(r, 5, "sha384 PCR 0 changed")


def test_seal_two_banks_api_policy_matches_tpm(banks_sim: Simulator) -> None:
    """The software digest over a two-bank selection equals what the TPM enforces,
    in either bank order."""
    rec = trust.load(banks_sim.state / "trust.json", "tcg")
    secret = secret_bytes()
    with Tpm.open(banks_sim.uri) as t:
        for spec in ("sha384:0,4+sha256:0,7", "sha1:0,4+sha512:2+sha256:0,1,2,3,4,5,6,7,8"):
            blob = sealing.seal(t, secret, pcr_policy(spec), trust=rec)
            assert sealing.unseal(t, blob, trust=rec) == secret
            assert sealing.unseal(t, blob, trust=rec, legacy=True, allow_downgrade=True) == secret


def test_unmeasured_anchor_in_second_bank(all_banks_template: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Anchors are checked in every bank sealed to: sha256 measured, sha384 not."""
    s = start_copy(all_banks_template)
    try:
        for pcr in (0, 4):
            extend(s.uri, pcr, b"firmware", bank="sha256")
        monkeypatch.setenv("TPMSEAL_TPM", s.uri)
        monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(s.state / "trust.json"))
        key = write(tmp_path / "key", secret_bytes())
        r = cli(["seal", "--pcrs", "sha256:0,7+sha384:7", "--input", str(key), "--output",
                 str(tmp_path / "b.json")])
        assert_one_line_error(r, 2, "PCR sha384:0, sha384:4 is all zero", "--allow-unmeasured")
        assert cli(["seal", "--pcrs", "sha256:0,7", "--input", str(key), "--output",
                    str(tmp_path / "b.json")]).rc == 0
    finally:
        s.stop()
        shutil.rmtree(s.state, ignore_errors=True)
