"""Blobs and NV objects sealed by the tpmseal before the policy value still unseal.

The policy value (recipes/policies.py) replaced ``seal``'s ``states``,
``authorizer`` and ``revocation_nv`` keywords and moved the blob's policy fields
into ``policy_record``. The tpmseal of commit BEFORE (its source taken from this
repository's history) seals on the same swtpm, through its own CLI in a child
process; this tpmseal then unseals each: PolicyPCR, PolicyOR, a revocable signed
policy, a PIN, and a signed object in EVE's NV layout (no record: the old
``--authorized-by`` fallback). Re-serialising an old blob gives the same bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attacks.bus import direct, expect_ok
from tpmseal.recipes.blob import SealedBlob
from tpmseal.transport.simulator import Simulator

#: the last commit before the policy value
BEFORE = "7178692573ad57d9e7895b0095993e3b2c63ff99"
REPO = Path(__file__).resolve().parents[1]
PCRS = "sha256:0,4,7"
COUNTER = "0x01500040"


@pytest.fixture(scope="module")
def old_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source tree of BEFORE, extracted with git (skip if the history is missing)."""
    have = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{BEFORE}^{{commit}}"],
                          capture_output=True, check=False)
    if have.returncode != 0:
        pytest.skip(f"commit {BEFORE[:12]} is not in this clone (shallow?): nothing to "
                    "compare with")
    out = tmp_path_factory.mktemp("old")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "src"


def _old(src: Path, sim: Simulator, *argv: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(src), TPMSEAL_TPM=sim.uri,
               TPMSEAL_TRUST_FILE=str(sim.state / "trust.json"))
    r = subprocess.run([sys.executable, "-m", "tpmseal", *argv], capture_output=True, env=env,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr.decode()


def test_old_blobs_unseal(tcg_sim: Simulator, tmp_path: Path, old_src: Path) -> None:
    secret = os.urandom(32)
    (tmp_path / "key").write_bytes(secret)
    (tmp_path / "pin").write_bytes(b"2468\n")
    (tmp_path / "a.json").write_bytes(direct(tcg_sim, "pcrs", "show", "--pcrs", PCRS,
                                             "--json").out)
    (tmp_path / "b.json").write_text(json.dumps({"sha256": {"0": "11" * 32, "4": "22" * 32,
                                                            "7": "33" * 32}}))
    key = tmp_path / "signer.pem"
    _old(old_src, tcg_sim, "policy", "keygen", "--output", str(key))
    seal = ("seal", "--input", str(tmp_path / "key"), "--pcrs", PCRS, "--output")
    _old(old_src, tcg_sim, *seal, str(tmp_path / "plain.json"))
    _old(old_src, tcg_sim, *seal, str(tmp_path / "pin.json"), "--pin-file", str(tmp_path / "pin"))
    _old(old_src, tcg_sim, *seal, str(tmp_path / "or.json"), "--pcr-values",
         str(tmp_path / "a.json"), "--pcr-values", str(tmp_path / "b.json"))
    _old(old_src, tcg_sim, *seal, str(tmp_path / "signed.json"), "--authorized-by",
         str(key.with_suffix(".pub")), "--min-version-nv", COUNTER)
    _old(old_src, tcg_sim, "policy", "sign", "--key", str(key), "--pcrs", PCRS, "--current",
         "--version", "1000", "--nv-index", COUNTER, "--output", str(tmp_path / "p.json"))
    for name, extra in (("plain", ()), ("pin", ("--pin-file", str(tmp_path / "pin"))),
                        ("or", ()), ("signed", ("--policy", str(tmp_path / "p.json")))):
        blob = tmp_path / f"{name}.json"
        text = blob.read_text()
        assert SealedBlob.from_json(text).to_json() == text, name  # the same bytes
        expect_ok(direct(tcg_sim, "unseal", "--input", str(blob), *extra), secret, what=name)


def test_old_nv_signed_object_unseals_with_the_fallback(eve_sim: Simulator, tmp_path: Path,
                                                        old_src: Path) -> None:
    """An NV object sealed before records: the trust file has its pin but no record, so
    --authorized-by still names the signer; a reseal then records it."""
    secret = os.urandom(32)
    (tmp_path / "key").write_bytes(secret)
    key = tmp_path / "signer.pem"
    pub = str(key.with_suffix(".pub"))
    _old(old_src, eve_sim, "policy", "keygen", "--output", str(key))
    _old(old_src, eve_sim, "seal", "--profile", "eve", "--nv", "--input",
         str(tmp_path / "key"), "--authorized-by", pub, "--pcrs", PCRS)
    assert "nv_records" not in json.loads((eve_sim.state / "trust.json").read_text())[
        "profiles"]["eve"]
    _old(old_src, eve_sim, "policy", "sign", "--key", str(key), "--pcrs", PCRS, "--current",
         "--output", str(tmp_path / "p.json"))
    nv = ("--profile", "eve", "--nv", "--policy", str(tmp_path / "p.json"))
    expect_ok(direct(eve_sim, "unseal", *nv, "--authorized-by", pub), secret)
    r = direct(eve_sim, "reseal", *nv, "--authorized-by", pub)
    assert r.rc == 0, r.err
    expect_ok(direct(eve_sim, "unseal", *nv), secret)  # recorded now
