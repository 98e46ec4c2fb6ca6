"""Attack 9: a working man in the middle — and why it gets nothing from tpmseal.

The interposer (tests/attacks/mitm.py) substitutes its RSA key for the EK in
ReadPublic, unwraps each salt with its private key, re-wraps it to the real EK,
relays, and decrypts every encrypted parameter. Against a flow that trusts
ReadPublic (tpm2-tools' ``--tpmkey-context``) it recovers the secret; against
tpmseal, which salts to the EK pinned at provisioning, it recovers nothing. If
the pinning itself happened under the attacker without ``--ek-ca`` (TOFU), the
attack works — the documented limit — and ``--ek-ca`` refuses that pin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from attacks.bus import (
    assert_no_leak,
    direct,
    expect_error,
    expect_ok,
    interposer,
    tpm,
    unchanged,
)
from attacks.mitm import ManInTheMiddle
from test_seal_support import pinned_json
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes.trust import EK_MISMATCH
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.structures import Public

TOOLS_FLOW = Path(__file__).resolve().parent / "peers" / "tpm2_tools_flow.sh"
EK = 0x81010001
SRK = 0x81000001

needs_tools = pytest.mark.skipif(shutil.which("tpm2_create") is None,
                                 reason="tpm2-tools is not installed (apt-get install tpm2-tools)")


def real_ek(sim: Simulator) -> Public:
    """The EK public, as the attacker can read it at any time (it is public)."""
    with Tpm.open(sim.uri) as t:
        return t.read_public(EK)


def tools_flow(tcti: str, workdir: Path, *steps: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TPM2TOOLS_TCTI=tcti, EK_HANDLE=hex(EK), SRK_HANDLE=hex(SRK),
               WORKDIR=str(workdir))
    return subprocess.run(["bash", str(TOOLS_FLOW), *steps], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@needs_tools
def test_mitm_recovers_the_secret_from_tools_salted_seal(tcg_sim: Simulator,
                                                          tmp_path: Path) -> None:
    """The attack works: tpm2-tools salts to whatever ReadPublic(EK) returned."""
    secret = os.urandom(32)
    (tmp_path / "secret.bin").write_bytes(secret)
    mitm = ManInTheMiddle(real_ek(tcg_sim), EK)
    with interposer(tcg_sim, on_command=mitm.on_command, on_response=mitm.on_response) as p:
        done = tools_flow(p.tools_tcti, tmp_path, "seal")
        assert done.returncode == 0, done.stderr[-800:]
        assert mitm.read_publics_substituted >= 1 and mitm.salts_unwrapped >= 1
        mitm.expect_recovered(secret, "Create")
        assert [r.command for r in mitm.recovered] == ["Create"]
        # the relay is transparent: the tools' unseal (cmp against secret.bin) works
        # through the attacker, who decrypts the Unseal response too
        mitm.recovered.clear()
        done = tools_flow(p.tools_tcti, tmp_path, "unseal")
        assert done.returncode == 0, done.stderr[-800:]
        mitm.expect_recovered(secret, "Unseal")
        assert "Unseal" in [r.command for r in mitm.recovered if r.direction == "response"]
        # a passive sniffer still sees no plaintext: the theft needs the active substitution
        assert_no_leak(p.exchanges, secret)


def test_mitm_recovers_nothing_from_tpmseal(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    trust = tcg_sim.state / "trust.json"
    mitm = ManInTheMiddle(real_ek(tcg_sim), EK)
    with interposer(tcg_sim, on_command=mitm.on_command, on_response=mitm.on_response) as p:
        r = tpm(p, "seal", "--input", str(key), "--output", str(blob))
        assert (r.rc, r.err) == (0, "")
        # seal never asked for the EK, so there was nothing to substitute
        assert mitm.read_publics_substituted == 0
        assert mitm.salts_opaque == 1 and mitm.salts_unwrapped == 0
        assert [r.command for r in mitm.recovered] == ["Create"]  # it tried, with a guess
        expect_ok(tpm(p, "unseal", "--input", str(blob)), secret)
        assert mitm.salts_opaque == 2 and mitm.salts_unwrapped == 0
        assert "Unseal" in [r.command for r in mitm.recovered]
        mitm.expect_nothing(secret)
        assert not any(r.key_known for r in mitm.recovered)
        assert_no_leak(p.exchanges, secret)
    assert pinned_json(json.loads(trust.read_text()), "tcg")["ek"]["name"] == \
        real_ek(tcg_sim).name().hex()


def test_tofu_pin_under_the_mitm_is_the_documented_limit(tcg_sim: Simulator,
                                                         tmp_path: Path) -> None:
    """Provisioned through the attacker without --ek-ca, tpmseal pins the attacker's key."""
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    trust = tmp_path / "trust.json"
    mitm = ManInTheMiddle(real_ek(tcg_sim), EK)
    with interposer(tcg_sim, on_command=mitm.on_command, on_response=mitm.on_response) as p:
        r = tpm(p, "--trust-file", str(trust), "provision")
        assert r.rc == 0, r.err
        pinned = pinned_json(json.loads(trust.read_text()), "tcg")
        assert pinned["ek"]["name"] == mitm.fake_ek.name().hex()
        assert pinned["ek_certificate"] == "not checked"
        r = tpm(p, "--trust-file", str(trust), "seal", "--input", str(key), "--output",
                str(blob))
        assert (r.rc, r.err) == (0, "")
        assert mitm.salts_unwrapped == 1
        mitm.expect_recovered(secret, "Create (TOFU pin)")
        assert_no_leak(p.exchanges, secret)  # still nothing for a passive observer
    # the forged pin is permanent: without the attacker, the TPM cannot decrypt the salt
    r = direct(tcg_sim, "--trust-file", str(trust), "unseal", "--input", str(blob))
    expect_error(r, ExitCode.INTEGRITY, EK_MISMATCH)


def test_ek_ca_refuses_to_pin_the_mitm_key(tcg_sim: Simulator, tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    mitm = ManInTheMiddle(real_ek(tcg_sim), EK)
    watch = unchanged(tcg_sim, trust)
    with interposer(tcg_sim, on_command=mitm.on_command, on_response=mitm.on_response) as p:
        r = tpm(p, "--trust-file", str(trust), "provision", "--ek-ca", str(tcg_sim.ca_dir))
        expect_error(r, ExitCode.INTEGRITY, "the EK certificate is for a different key")
        assert mitm.read_publics_substituted >= 1
    watch.check()
    assert not trust.exists()



@pytest.mark.parametrize("command", [["seal", "--input", "{d}/key", "--output", "{d}/b.json"],
                                     ["unseal", "--input", "{d}/old.json"]],
                         ids=["seal", "unseal"])
def test_ecc_pin_taken_under_a_mitm_gets_the_ek_mismatch_diagnosis(
        tcg_sim: Simulator, tmp_path: Path, command: list[str]) -> None:
    """An ECC salt never fails at StartAuthSession (any point "decrypts"), so a pin of
    the attacker's ECC key shows up at the first HMAC: same diagnosis as RSA's."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from tpmseal.recipes import trust as T
    from tpmseal.records import replace
    from tpmseal.wire.structures import EccPoint

    real_trust = tmp_path / "real.json"
    assert direct(tcg_sim, "--trust-file", str(real_trust), "provision",
                  "--ek-type", "ecc").rc == 0
    (tmp_path / "key").write_bytes(os.urandom(32))
    assert direct(tcg_sim, "--trust-file", str(real_trust), "seal", "--input",
                  str(tmp_path / "key"), "--output", str(tmp_path / "old.json")).rc == 0
    real = T.load(real_trust, "tcg")
    n = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    fake = replace(real.ek_public, unique=EccPoint(n.x.to_bytes(32, "big"),
                                                               n.y.to_bytes(32, "big")))
    forged = tmp_path / "forged.json"
    T.save(forged, replace(real, ek_public=fake, path=None))
    if command[0] == "unseal":  # the blob names the pinned key, as it would after the TOFU pin
        doc = json.loads((tmp_path / "old.json").read_text())
        ek = pinned_json(json.loads(forged.read_text()), "tcg")["ek"]
        doc["salt_key"].update(public=ek["public"], name=ek["name"])
        (tmp_path / "old.json").write_text(json.dumps(doc))
    argv = [a.replace("{d}", str(tmp_path)) for a in command]
    r = direct(tcg_sim, "--trust-file", str(forged), *argv)
    expect_error(r, ExitCode.INTEGRITY, EK_MISMATCH, "first HMAC of the salted session")
    assert not (tmp_path / "b.json").exists()
