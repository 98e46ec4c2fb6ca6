"""``tpmseal luks enroll --authorized-by``: a LUKS2 tpmseal token sealed to a policy signer.

On LUKS2 images made by the real cryptsetup 2.6, checked with its own
``open --test-passphrase``. The update flow: the vendor signs each release's PCR
values; after a PCR change plus a newly signed policy the volume unlocks with no
reseal; after ``policy revoke-below`` the old signature is refused by the TPM.
Without a signer, ``--pcr-values`` enrols a token for several allowed states.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attacks.bus import assert_no_leak, interposer, names, tpm
from luks_support import make_image, needs_cryptsetup, opens
from test_seal_support import assert_one_line_error, cli, extend
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes import cryptsetup as cs
from tpmseal.recipes import luks
from tpmseal.transport.simulator import Simulator

pytestmark = needs_cryptsetup

PCRS = "sha256:0,4,7"
COUNTER = "0x01500030"


def _ok(argv: list[str]) -> bytes:
    r = cli(argv)
    assert r.rc == 0, r.err
    return r.out


def _sign(key: Path, out: Path, version: int) -> Path:
    _ok(["policy", "sign", "--key", str(key), "--pcrs", PCRS, "--current", "--version",
         str(version), "--nv-index", COUNTER, "--output", str(out)])
    return out


def _counter(sim: Simulator) -> int:
    with Tpm.open(sim.uri) as t:
        return int.from_bytes(t.nv_read(int(COUNTER, 16), 8, int(COUNTER, 16)), "big")


@pytest.fixture
def signed_image(tcg_sim: Simulator, tmp_path: Path) -> tuple[Path, Path]:
    """A LUKS2 image with a tpmseal token sealed to a fresh ECDSA signer (revocable)."""
    img, pw = make_image(tmp_path)
    key = tmp_path / "signer.pem"
    _ok(["policy", "keygen", "--output", str(key)])
    out = _ok(["luks", "enroll", str(img), "--unlock-key-file", str(pw), "--authorized-by",
               str(key.with_suffix(".pub")), "--pcrs", PCRS, "--min-version-nv", COUNTER,
               "--json"])
    assert json.loads(out)["signed"] is True
    return img, key


def test_update_flow_and_revocation(tcg_sim: Simulator, tmp_path: Path,
                                    signed_image: tuple[Path, Path]) -> None:
    img, key = signed_image
    token = cs.header(str(img)).tokens[0]
    blob = luks.blob_of(token, 0)
    assert blob.authorizer is not None and blob.revocation_nv == int(COUNTER, 16)
    assert blob.pcr_values == {}  # the PCR condition lives in the signed policies
    start = _counter(tcg_sim)
    v1 = _sign(key, tmp_path / "v1.json", start)
    assert_one_line_error(cli(["luks", "test", str(img)]), ExitCode.USAGE,
                          "sealed to a policy signer")
    assert _ok(["luks", "test", str(img), "--policy", str(v1)]) == \
        b"token 0 (tpmseal) unlocks keyslot 1\n"
    # the update boots: PCR 7 changes, the old signature no longer covers the state
    extend(tcg_sim.uri, 7)
    assert_one_line_error(cli(["luks", "test", str(img), "--policy", str(v1)]),
                          ExitCode.PCR_MISMATCH, "no signed policy covers")
    # the vendor signs the new state twice: an old (vulnerable) release, then the fix
    (tmp_path / "pol").mkdir()
    old = _sign(key, tmp_path / "pol" / "old.json", start)
    new = _sign(key, tmp_path / "pol" / "new.json", start + 1)
    _ok(["luks", "test", str(img), "--policy", str(old)])  # no reseal needed
    key_out = _ok(["luks", "passphrase", str(img), "--policy", str(tmp_path / "pol")])
    assert opens(img, key_out, 1)
    _ok(["policy", "revoke-below", str(start + 1), "--nv-index", COUNTER])
    assert_one_line_error(cli(["luks", "test", str(img), "--policy", str(old)]),
                          ExitCode.PCR_MISMATCH, "revoked")
    with interposer(tcg_sim) as p:
        r = tpm(p, "luks", "test", str(img), "--policy", str(new))
        assert r.rc == 0, r.err
        # the signed-policy unseal, 10 commands with the revocation check (PolicyNV)
        assert names(p.exchanges) == [
            "StartAuthSession", "Load", "PolicyPCR", "PolicyNV", "LoadExternal",
            "VerifySignature", "FlushContext", "PolicyAuthorize", "Unseal", "FlushContext"]
        assert_no_leak(p.exchanges, key_out)


def test_reseal_keeps_the_signer(tcg_sim: Simulator, tmp_path: Path,
                                 signed_image: tuple[Path, Path]) -> None:
    img, key = signed_image
    pol = _sign(key, tmp_path / "p.json", _counter(tcg_sim))
    before = luks.blob_of(cs.header(str(img)).tokens[0], 0)
    _ok(["luks", "reseal", str(img), "--policy", str(pol)])
    after = luks.blob_of(cs.header(str(img)).tokens[1], 1)
    assert (after.authorizer, after.revocation_nv) == (before.authorizer, before.revocation_nv)
    assert after.private != before.private
    assert _ok(["luks", "test", str(img), "--policy", str(pol)]) == \
        b"token 1 (tpmseal) unlocks keyslot 1\n"


def test_other_signers_policy_is_refused(tcg_sim: Simulator, tmp_path: Path,
                                         signed_image: tuple[Path, Path]) -> None:
    img, _ = signed_image
    other = tmp_path / "other.pem"
    _ok(["policy", "keygen", "--output", str(other)])
    theirs = _sign(other, tmp_path / "theirs.json", _counter(tcg_sim))
    assert_one_line_error(cli(["luks", "test", str(img), "--policy", str(theirs)]),
                          ExitCode.BAD_INPUT, "no signed policy is by the key")


def test_systemd_token_refuses_a_signer(tcg_sim: Simulator, tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    key = tmp_path / "signer.pem"
    _ok(["policy", "keygen", "--output", str(key)])
    assert_one_line_error(cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw),
                               "--token-type", "systemd-tpm2", "--authorized-by",
                               str(key.with_suffix(".pub"))]), ExitCode.USAGE,
                          "apply to tpmseal tokens")


def test_enroll_to_several_states(tcg_sim: Simulator, tmp_path: Path) -> None:
    """PolicyOR: enrolled before the update for today's and the predicted state, the token
    unlocks after it; in a third state it is refused."""
    img, pw = make_image(tmp_path)
    (tmp_path / "now.json").write_bytes(_ok(["pcrs", "show", "--pcrs", PCRS, "--json"]))
    extend(tcg_sim.uri, 7)
    (tmp_path / "next.json").write_bytes(_ok(["pcrs", "show", "--pcrs", PCRS, "--json"]))
    _ok(["luks", "enroll", str(img), "--unlock-key-file", str(pw), "--pcrs", PCRS,
         "--pcr-values", str(tmp_path / "now.json"), "--pcr-values", str(tmp_path / "next.json")])
    assert len(luks.blob_of(cs.header(str(img)).tokens[0], 0).states) == 2
    assert json.loads(_ok(["luks", "list", str(img), "--json"]))["tokens"][0]["states"] == 2
    _ok(["luks", "test", str(img)])
    extend(tcg_sim.uri, 7)
    assert_one_line_error(cli(["luks", "test", str(img)]), ExitCode.PCR_MISMATCH,
                          "none of the 2 states")
