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
PLUGIN = "/usr/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-systemd-tpm2.so"


def systemd_enroll(sim: Simulator, img: Path, pw: Path, *extra: str,
                   pin: bytes | None = None, pcrs: str = "7") -> None:
    assert CRYPTENROLL is not None
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "warning"}
    args = [CRYPTENROLL, f"--tpm2-device={sim.tools_tcti}", f"--tpm2-pcrs={pcrs}",
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


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("tpm2-blob", ["AAAA", "AAAA"], "several sealed shards"),
    ("tpm2-blob", "seed", "sealed offline")])
def test_unsupported_fields_refused(enrolled: Path, field: str, value: object,
                                    needle: str) -> None:
    """Sharded blobs and blobs sealed offline (an import seed after the public area): one
    precise line, exit 2. (pcrlock tokens: tests/test_luks_systemd_pcrlock.py.)"""
    token = dict(_token(enrolled))
    if value == "seed":  # a TPM2B_ENCRYPTED_SECRET after private ‖ public
        value = base64.b64encode(base64.b64decode(str(token[field])) + b"\x00\x02ab").decode()
    token[field] = value
    assert cryptsetup("token", "import", "--disable-external-tokens", "--json-file=-",
                      "--token-id", "5", "--key-slot", "1", str(enrolled),
                      stdin=json.dumps(token).encode()).returncode == 0
    assert_one_line_error(cli(["luks", "test", str(enrolled), "--token-id", "5"]),
                          ExitCode.USAGE, needle, "not support")


def test_malformed_tokens(enrolled: Path) -> None:
    good = _token(enrolled)
    bads: list[dict[str, object]] = [{"tpm2-blob": "!!"}, {"tpm2-blob": "AAAA"},
                                  {"tpm2-pcrs": "7"}, {"tpm2-policy-hash": "00" * 32},
                                  {"tpm2-pin": "yes"}, {"tpm2_srk": "AAAA"},
                                  {"tpm2_pubkey_pcrs": [11]}, {"tpm2_pubkey": "AAAA"},
                                  {"tpm2_salt": "!!"}]
    for i, bad in enumerate(bads, start=10):
        token = dict(good, **bad)
        # systemd's token plugin would refuse to import these: an attacker with the disk
        # writes the header without it
        assert cryptsetup("token", "import", "--disable-external-tokens", "--json-file=-",
                          "--token-id", str(i),
                          "--key-slot", "1", str(enrolled),
                          stdin=json.dumps(token).encode()).returncode == 0
        assert_one_line_error(cli(["luks", "test", str(enrolled), "--token-id", str(i)]),
                              ExitCode.BAD_INPUT, f"token {i}")


# ------------------------------------------------- tokens tpmseal enrols, systemd unlocks

SYSTEMD_CRYPTSETUP = next((p for p in ("/lib/systemd/systemd-cryptsetup",
                                       "/usr/lib/systemd/systemd-cryptsetup")
                           if os.access(p, os.X_OK)), None)


def systemd_attach(sim: Simulator, img: Path, pin: bytes | None = None) -> str:
    """systemd-cryptsetup's own unlock (its debug log); without device-mapper it stops
    after unsealing, where device-mapper works it activates (closed again here)."""
    assert SYSTEMD_CRYPTSETUP is not None
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "debug"}
    if pin is not None:
        env["PIN"] = pin.decode()
    done = subprocess.run([SYSTEMD_CRYPTSETUP, "attach", "tpmseal-sd", str(img), "-",
                           f"tpm2-device={sim.tools_tcti},headless"], env=env,
                          capture_output=True, timeout=60, check=False)
    flush_leftovers(sim.uri)
    if done.returncode == 0:
        cryptsetup("close", "tpmseal-sd")
    return done.stderr.decode(errors="replace")


def _enroll_systemd(img: Path, pw: Path, *extra: str) -> None:
    r = cli(["luks", "enroll", str(img), "--token-type", "systemd-tpm2", "--pcrs",
             "sha256:7", "--unlock-key-file", str(pw), *extra])
    assert r.rc == 0, r.err
    assert r.out.startswith(b"enrolled keyslot 1 (systemd-tpm2 token 0) sealed to sha256:7")


def test_tpmseal_enrols_what_systemd_unlocks(tcg_sim: Simulator, tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    _enroll_systemd(img, pw)
    token = _token(img)
    assert set(token) == {"type", "keyslots", "tpm2-blob", "tpm2-pcrs", "tpm2-pcr-bank",
                          "tpm2-primary-alg", "tpm2-policy-hash", "tpm2-pin"}
    assert systemd_tpm2.SystemdToken.parse(token, 0).public.object_attributes == 0x12
    assert cli(["luks", "test", str(img)]).rc == 0
    if SYSTEMD_CRYPTSETUP is None:
        pytest.skip("systemd-cryptsetup not installed: checked with tpmseal only")
    log = systemd_attach(tcg_sim, img)
    assert "Completed TPM2 key unsealing" in log, log


def test_systemd_unlocks_a_pin_token_tpmseal_enrolled(tcg_sim: Simulator,
                                                       tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    _enroll_systemd(img, pw, "--pin-file", str(write(tmp_path / "pin", PIN)))
    assert cli(["luks", "test", str(img), "--pin-file", str(tmp_path / "pin")]).rc == 0
    if SYSTEMD_CRYPTSETUP is None:
        pytest.skip("systemd-cryptsetup not installed: checked with tpmseal only")
    assert "HMAC check failed" in systemd_attach(tcg_sim, img, b"1111")
    log = systemd_attach(tcg_sim, img, PIN)
    assert "Completed TPM2 key unsealing" in log, log


def test_systemd_enrolment_bus_shows_no_key(tcg_sim: Simulator, tmp_path: Path) -> None:
    from tpmseal.recipes import systemd_enroll
    from tpmseal.recipes.pcrspec import parse_pcrs

    rec = load(trust_path(), "tcg")
    secret = os.urandom(32)
    with interposer(tcg_sim) as p:
        with Tpm.open(p.uri) as tpm:
            token = systemd_enroll.seal_systemd(tpm, secret, parse_pcrs("sha256:7"), rec, PIN)
        exchanges = p.exchanges
    done = [n for n, e in zip(names(exchanges), exchanges, strict=True)
            if e.response is not None and e.response[6:10] == bytes(4)]  # not TPM_RC_RETRY
    assert done == ["StartAuthSession", "PCR_Read", "CreatePrimary", "Create",
                                "FlushContext"]
    assert_no_leak(exchanges, secret, base64.b64encode(secret), PIN)
    assert token["tpm2-pin"] is True


def test_systemd_enrolment_refuses_two_banks(tcg_sim: Simulator, tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    assert_one_line_error(cli(["luks", "enroll", str(img), "--token-type", "systemd-tpm2",
                               "--pcrs", "sha256:7+sha1:7", "--unlock-key-file", str(pw)]),
                          ExitCode.USAGE, "one bank")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare")
                    or not os.path.exists(PLUGIN),
                    reason="needs root, unshare and cryptsetup's systemd-tpm2 token plugin")
@pytest.mark.parametrize("pin", [None, PIN], ids=["no-pin", "pin"])
def test_cryptsetup_plugin_unlocks_what_tpmseal_enrolled(tcg_sim: Simulator, tmp_path: Path,
                                                         pin: bytes | None) -> None:
    """systemd's own code checks the whole token, the key against the keyslot included;
    after a PCR change it refuses (so it really asked the TPM)."""
    from ptyrelay import PtyRelay
    from tpmrm_relay import run_with_tpmrm
    from tpmseal.transport.base import parse_uri

    img, pw = make_image(tmp_path)
    _enroll_systemd(img, pw, *(["--pin-file", str(write(tmp_path / "pin", pin))] if pin
                               else []))
    argv = ["cryptsetup", "open", "--verbose", "--test-passphrase", "--token-only",
            "--token-type", "systemd-tpm2", str(img)]
    with PtyRelay(parse_uri(tcg_sim.uri)) as relay:
        done = run_with_tpmrm(relay, argv, tmp_path, stdin=pin + b"\n" if pin else b"")
        assert relay.commands > 0
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"Key slot 1 unlocked." in done.stdout + done.stderr
    extend(tcg_sim.uri, 7)
    with PtyRelay(parse_uri(tcg_sim.uri)) as relay:
        done = run_with_tpmrm(relay, argv, tmp_path, stdin=pin + b"\n" if pin else b"")
    assert done.returncode != 0


def test_interposer_substituting_the_primary_gains_nothing(tcg_sim: Simulator,
                                                           enrolled: Path) -> None:
    """The attack on systemd's own unlock: answer CreatePrimary with the attacker's key,
    which systemd then salts its session to. tpmseal salts to the pinned EK, so the
    attacker learns nothing: the unlock either works (the primary only parents the
    object) or, where the parent's Name joins an HMAC (Load in a confirming session),
    is refused as tampering. Never a wrong key, never the key on the bus."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from tpmseal.errors import IntegrityError
    from tpmseal.records import replace
    from tpmseal.sniff.capture.hooks import HookContext, Verdict, parse_response, success_response
    from tpmseal.wire import commands as cmds
    from tpmseal.wire.constants import TPM_CC
    from tpmseal.wire.structures import EccPoint

    n = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    substituted = []

    def swap(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.CreatePrimary or ctx.response is None:
            return None
        assert ctx.tpm_command is not None
        resp, auths = parse_response(ctx.response, ctx.tpm_command)
        assert isinstance(resp, cmds.CreatePrimaryResponse)
        fake = resp.out_public.with_unique(EccPoint(n.x.to_bytes(32, "big"),
                                                    n.y.to_bytes(32, "big")))
        substituted.append(fake)
        return success_response(replace(resp, out_public=fake, name=fake.name()), auths)

    rec = load(trust_path(), "tcg")
    with Tpm.open(tcg_sim.uri) as tpm:  # the right answer, with no one on the bus
        expected = systemd_tpm2.unseal_token(tpm, _token(enrolled), 0, rec, None)
    with interposer(tcg_sim, on_response=swap) as p:
        with Tpm.open(p.uri) as tpm:
            try:
                got: bytes | None = systemd_tpm2.unseal_token(tpm, _token(enrolled), 0, rec,
                                                              None)
            except IntegrityError:
                got = None
        exchanges = p.exchanges
    assert substituted, "the hook never saw CreatePrimary"
    assert got in (expected, None), "a wrong key came out"
    assert_no_leak(exchanges, base64.b64decode(expected), expected)
