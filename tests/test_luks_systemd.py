"""Volumes enrolled by the real systemd-cryptenroll (systemd 252) on swtpm, unlocked by
tpmseal through its EK-salted sessions; cryptsetup 2.6 checks the passphrase.

swtpm has no resource manager and systemd leaves a session loaded per run, so
every systemd step is followed by a flush of what it left.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from attacks.bus import assert_no_leak, interposer, names
from luks_support import cryptsetup, make_image, needs_cryptsetup, opens
from test_seal_support import assert_one_line_error, cli, extend, flush_leftovers, write
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes import cryptsetup as cs
from tpmseal.recipes import systemd_tpm2
from tpmseal.recipes.trust import load, trust_path
from tpmseal.transport.simulator import Simulator

CRYPTENROLL = shutil.which("systemd-cryptenroll")

pytestmark = [needs_cryptsetup, pytest.mark.skipif(
    CRYPTENROLL is None, reason="systemd-cryptenroll not installed (apt-get install systemd)")]

PIN = b"2468"


def systemd_enroll(sim: Simulator, img: Path, pw: Path, *extra: str,
                   pin: bytes | None = None) -> None:
    assert CRYPTENROLL is not None
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "warning"}
    args = [CRYPTENROLL, f"--tpm2-device={sim.tools_tcti}", "--tpm2-pcrs=7",
            f"--unlock-key-file={pw}", *extra]
    if pin is not None:
        env["NEWPIN"] = pin.decode()
        args.append("--tpm2-with-pin=yes")
    done = subprocess.run([*args, str(img)], env=env, capture_output=True, timeout=60,
                          check=False)
    flush_leftovers(sim.uri)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


@pytest.fixture
def enrolled(tcg_sim: Simulator, tmp_path: Path) -> Path:
    img, pw = make_image(tmp_path)
    systemd_enroll(tcg_sim, img, pw)
    return img


def _token(img: Path) -> dict[str, object]:
    return cs.header(str(img)).tokens[0]


def test_token_as_systemd_writes_it(enrolled: Path) -> None:
    token = _token(enrolled)
    assert token["type"] == "systemd-tpm2" and token["keyslots"] == ["1"]
    tok = systemd_tpm2.SystemdToken.parse(token, 0)
    assert tok.primary_alg == "ecc" and not tok.pin
    assert tok.public.object_attributes == 0x12  # fixedTPM|fixedParent


def test_tpmseal_unlocks_a_systemd_volume(enrolled: Path) -> None:
    r = cli(["luks", "test", str(enrolled)])
    assert (r.rc, r.out) == (0, b"token 0 (systemd-tpm2) unlocks keyslot 1\n"), r.err
    listed = cli(["luks", "list", str(enrolled)])
    assert b"token 0: systemd-tpm2 keyslots=1 supported=True, pcrs=sha256:7, pin=False" \
        in listed.out


def test_bus_shows_no_key(tcg_sim: Simulator, enrolled: Path) -> None:
    """Through the sniffer: the unsealed secret and its base64 passphrase never cross."""
    rec = load(trust_path(), "tcg")
    with interposer(tcg_sim) as p:
        with Tpm.open(p.uri) as tpm:
            passphrase = systemd_tpm2.unseal_token(tpm, _token(enrolled), 0, rec, None)
        exchanges = p.exchanges
    assert opens(enrolled, passphrase, 1)  # cryptsetup's verdict, not ours
    assert {"CreatePrimary", "Load", "StartAuthSession", "PolicyPCR", "Unseal"} <= set(
        names(exchanges))
    assert_no_leak(exchanges, base64.b64decode(passphrase))
    assert_no_leak(exchanges, passphrase)


def test_pin(tcg_sim: Simulator, tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    systemd_enroll(tcg_sim, img, pw, pin=PIN)
    assert systemd_tpm2.needs_pin(_token(img), 0)
    assert_one_line_error(cli(["luks", "test", str(img)]), ExitCode.USAGE, "PIN")
    wrong = write(tmp_path / "wrong", b"1357\n")
    assert_one_line_error(cli(["luks", "test", str(img), "--pin-file", str(wrong)]),
                          ExitCode.AUTH_FAILED, "wrong PIN")
    good = write(tmp_path / "pin", PIN + b"\n")
    r = cli(["luks", "test", str(img), "--pin-file", str(good)])
    assert r.rc == 0, r.err


def test_pcr_change(tcg_sim: Simulator, enrolled: Path) -> None:
    extend(tcg_sim.uri, 7)
    assert_one_line_error(cli(["luks", "test", str(enrolled)]), ExitCode.PCR_MISMATCH,
                          "sha256:7 changed")


@pytest.mark.parametrize("field", ["tpm2_srk", "tpm2_salt", "tpm2_pcrlock", "tpm2-pubkey"])
def test_newer_fields_refused(enrolled: Path, field: str) -> None:
    token = dict(_token(enrolled), **{field: "AAAA"})
    assert cryptsetup("token", "import", "--json-file=-", "--token-id", "5", "--key-slot",
                      "1", str(enrolled), stdin=json.dumps(token).encode()).returncode == 0
    assert_one_line_error(cli(["luks", "test", str(enrolled), "--token-id", "5"]),
                          ExitCode.USAGE, repr(field), "not support")


def test_malformed_tokens(enrolled: Path) -> None:
    good = _token(enrolled)
    for i, bad in enumerate([{"tpm2-blob": "!!"}, {"tpm2-blob": "AAAA"},
                             {"tpm2-pcrs": "7"}, {"tpm2-policy-hash": "00" * 32},
                             {"tpm2-pin": "yes"}], start=10):
        token = dict(good, **bad)
        # systemd's token plugin would refuse to import these: an attacker with the disk
        # writes the header without it
        assert cryptsetup("token", "import", "--disable-external-tokens", "--json-file=-",
                          "--token-id", str(i),
                          "--key-slot", "1", str(enrolled),
                          stdin=json.dumps(token).encode()).returncode == 0
        assert_one_line_error(cli(["luks", "test", str(enrolled), "--token-id", str(i)]),
                              ExitCode.BAD_INPUT, f"token {i}")
