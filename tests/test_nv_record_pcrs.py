"""Named PCRs and signers against the trust file's record of an NV object.

An object tpmseal sealed into EVE's layout has a policy record in the trust file
(``nv_records``), which says which PCRs (or signer) it is sealed to. PCRs a user
names (`unseal --nv --pcrs`, `reseal --nv --old-pcrs`, `vault-key --pcrs`) are
honoured when they are the record's, in any order; other ones are refused with exit
2 naming both lists, before any session starts, with NV and the trust file
untouched and no secret printed, instead of being silently replaced by the record's
(recipes/stores.py, NvStore.candidates). So is a signer `--authorized-by` names
that the record does not (recipes/lifecycle.py, _with_signer).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tpmseal
from test_seal_support import (
    CliResult,
    TpmLog,
    assert_one_line_error,
    cli,
    secret_bytes,
    write,
)
from tpmseal.client.tpm import Tpm
from tpmseal.transport.simulator import Simulator

SEALED = "sha256:0,2,7,9"
OTHER = "sha256:0,1"
PAIR = (0x01800000, 0x01900000)
NV = ["--profile", "eve", "--nv"]


def _state(sim: Simulator) -> tuple[bytes, ...]:
    """The main NV pair's contents and the trust file's bytes."""
    with Tpm.open(sim.uri) as t:
        pair = tuple(t.nv_read(i, t.nv_read_public(i).data_size) for i in PAIR)
    return (*pair, (sim.state / "trust.json").read_bytes())


def _refused(r: CliResult, key: bytes, option: str, asked: str, recorded: str) -> None:
    assert_one_line_error(r, 2, f"{option} {asked} is not what NV object", recorded,
                          "nothing was changed", f"drop {option}")
    assert r.out == b"" and key.hex() not in r.err


def test_unseal_and_reseal_refuse_pcrs_the_record_does_not_give(
        eve_sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = write(tmp_path / "key", secret_bytes())
    assert cli(["seal", *NV, "--pcrs", SEALED, "--input", str(key)]).rc == 0
    before = _state(eve_sim)
    log = TpmLog().install(monkeypatch)
    r = cli(["unseal", *NV, "--pcrs", OTHER])
    _refused(r, key.read_bytes(), "--pcrs", OTHER, SEALED)
    assert f"`tpmseal reseal --nv --profile eve --pcrs {OTHER}`" in r.err
    r = cli(["reseal", *NV, "--old-pcrs", OTHER, "--pcrs", "sha256:0,7"])
    _refused(r, key.read_bytes(), "--old-pcrs", OTHER, SEALED)
    assert "StartAuthSession" not in log.names()  # refused on reading the pair
    assert _state(eve_sim) == before

    # the record's PCRs, in another order: honoured silently, no recovery search
    log.clear()
    r = cli(["unseal", *NV, "--pcrs", "sha256:9,7,2,0"])
    assert (r.rc, r.out, r.err) == (0, key.read_bytes(), "")
    assert "PCR_Read" not in log.names()
    r = cli(["reseal", *NV, "--old-pcrs", SEALED, "--pcrs", "sha256:0,7"])
    assert r.rc == 0, r.err
    # the record moved with the secret
    assert cli(["unseal", *NV, "--pcrs", "sha256:0,7"]).out == key.read_bytes()
    _refused(cli(["unseal", *NV, "--pcrs", SEALED]), key.read_bytes(), "--pcrs", SEALED,
             "sha256:0,7")
    assert cli(["unseal", *NV]).out == key.read_bytes()  # no --pcrs: the record's


def test_vault_key_refuses_pcrs_the_record_does_not_give(eve_sim: Simulator) -> None:
    key = cli(["vault-key", "--pcrs", "sha256:0,4,7"]).out
    assert len(key) == 32
    before = _state(eve_sim)
    _refused(cli(["vault-key", "--pcrs", "sha256:0,4"]), key, "--pcrs", "sha256:0,4",
             "sha256:0,4,7")
    assert _state(eve_sim) == before
    assert cli(["vault-key", "--pcrs", "sha256:7,4,0"]).out == key
    assert cli(["vault-key"]).out == key


def test_api_refuses_pcrs_the_record_does_not_give(eve_sim: Simulator) -> None:
    key = secret_bytes()
    with tpmseal.open_tpm() as tpm:
        tpmseal.seal(tpm, key, pcrs=SEALED, nv=True, profile="eve")
        with pytest.raises(tpmseal.UsageError) as e:
            tpmseal.unseal(tpm, "nv", profile="eve", pcrs=OTHER)
        assert e.value.exit_code == 2 and SEALED in e.value.message
        with pytest.raises(tpmseal.UsageError) as e:
            tpmseal.reseal(tpm, "nv", profile="eve", old_pcrs=OTHER, pcrs="sha256:0,7")
        assert "drop --old-pcrs" in e.value.one_line()
        assert tpmseal.unseal(tpm, "nv", profile="eve", pcrs=SEALED) == key


def test_unseal_refuses_a_signer_the_record_does_not_name(eve_sim: Simulator,
                                                         tmp_path: Path) -> None:
    pubs = {}
    for name in ("signer", "other"):
        pem = tmp_path / f"{name}.pem"
        assert cli(["policy", "keygen", "--output", str(pem)]).rc == 0
        pubs[name] = str(pem.with_suffix(".pub"))
    key = write(tmp_path / "key", secret_bytes())
    assert cli(["seal", *NV, "--pcrs", SEALED, "--input", str(key),
                "--authorized-by", pubs["signer"]]).rc == 0
    policy = tmp_path / "p.json"
    assert cli(["policy", "sign", "--key", str(tmp_path / "signer.pem"), "--pcrs", SEALED,
                "--current", "--output", str(policy)]).rc == 0
    before = _state(eve_sim)
    unseal = ["unseal", *NV, "--policy", str(policy)]
    r = cli([*unseal, "--authorized-by", pubs["other"]])
    assert_one_line_error(r, 2, "--authorized-by names signer", "says it is sealed to signer",
                          "nothing was changed", "drop --authorized-by")
    assert r.out == b"" and key.read_bytes().hex() not in r.err
    assert _state(eve_sim) == before
    assert cli([*unseal, "--authorized-by", pubs["signer"]]).out == key.read_bytes()
    assert cli(unseal).out == key.read_bytes()

    # a record of a plain PCR policy: a signer named for it is refused too
    assert cli(["seal", *NV, "--force", "--pcrs", SEALED, "--input", str(key)]).rc == 0
    r = cli(["unseal", *NV, "--authorized-by", pubs["signer"]])
    assert_one_line_error(r, 2, "sealed to PCR values, not a signer")
    assert r.out == b""
