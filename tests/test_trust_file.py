"""Per-TPM trust records (recipes/trust.py): several TPMs in one trust file, records
from before addresses read and completed, errors naming the file, a provision that
refuses creating nothing (counted as persistent handles on the swtpm, before and
after), and the tpmseal before per-TPM records still reading a one-TPM file."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

import tpmseal
from attacks.bus import interposer, names, tpm
from attacks.certs import own_ca
from conftest import measure_boot
from test_seal_support import assert_one_line_error, cli, leftover_handles, pinned_json, write
from tpmseal.client.tpm import Tpm
from tpmseal.errors import EK_MISMATCH, ExitCode
from tpmseal.recipes import trust
from tpmseal.sniff.capture.hooks import HookContext, Respond, Verdict, error_response
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_CC

PERSISTENT = 0x81000000
RC_SYMMETRIC_P1 = 0x1D6  # TestParms: parameter 1 unsupported
RC_SYMMETRIC_P4 = 0x4D6  # StartAuthSession: parameter 4 (symmetric) unsupported


def persistent(sim: Simulator) -> list[int]:
    """The persistent handles on *sim* (GetCapability HANDLES)."""
    with Tpm.open(sim.uri) as t:
        return t.handles(PERSISTENT)


def seal(tmp_path: Path, secret: bytes, name: str, *argv: str) -> Path:
    key, blob = write(tmp_path / f"{name}.key", secret), tmp_path / f"{name}.json"
    r = cli([*argv, "seal", "--input", str(key), "--output", str(blob)])
    assert r.rc == 0, r.err
    return blob


def unseal(blob: Path, *argv: str) -> bytes:
    r = cli([*argv, "unseal", "--input", str(blob)])
    assert r.rc == 0, r.err
    return r.out


@pytest.mark.parametrize(("uri", "canonical"), [
    ("sim:/run/tpm", "unix:/run/tpm/tpm.sock"),
    ("unix:/run/tpm/../tpm/tpm.sock", "unix:/run/tpm/tpm.sock"),
    ("swtpm:path=/run/tpm/tpm.sock", "unix:/run/tpm/tpm.sock"),
    ("mssim:host=localhost,port=2321", "tcp:localhost:2321"),
    ("swtpm:host=localhost,port=2321", "tcp:localhost:2321"),
    ("device:/dev/tpmrm0", "device:/dev/tpmrm0"),
    ("device:/dev/tpm0", "device:/dev/tpmrm0"),
    ("device", "device:/dev/tpmrm0"),
    ("device:/dev/tpm", "device:/dev/tpm"),
    ("nonsense", "nonsense"),
])
def test_addresses_are_compared_in_canonical_form(uri: str, canonical: str) -> None:
    assert trust.address(uri) == canonical


def test_two_tpms_share_one_trust_file(tcg_sim: Simulator, blank_sim: Simulator,
                                       tmp_path: Path) -> None:
    path = tcg_sim.state / "trust.json"
    measure_boot(blank_sim)
    other = ["--tpm", f"sim:{blank_sim.state}"]  # the same address as unix:STATE/tpm.sock
    r = cli([*other, "provision", "--json"])
    assert r.rc == 0, r.err
    assert json.loads(r.out)["address"] == blank_sim.uri
    records = trust.load_all(path)
    assert len(records) == 2 and sorted(a for r in records for a in r.addresses) == sorted(
        [tcg_sim.uri, blank_sim.uri])
    mine, theirs = os.urandom(32), os.urandom(32)
    a_blob, b_blob = seal(tmp_path, mine, "a"), seal(tmp_path, theirs, "b", *other)
    assert unseal(a_blob) == mine and unseal(b_blob, *other) == theirs
    # a blob on the other pinned TPM: the files say so, naming the trust file
    r = cli([*other, "unseal", "--input", str(a_blob)])
    assert_one_line_error(r, ExitCode.BAD_INPUT, "sealed on the TPM pinned as", str(path),
                          blank_sim.uri)
    # the library picks records the same way
    with tpmseal.open_tpm(blank_sim.uri) as t:
        assert tpmseal.unseal(t, b_blob) == theirs
        with pytest.raises(tpmseal.BadInputError, match="sealed on the TPM pinned as"):
            tpmseal.unseal(t, a_blob)
    with interposer(tcg_sim) as p:  # an address pinned for neither
        r = tpm(p, "seal", "--input", str(tmp_path / "a.key"), "--output",
                str(tmp_path / "c.json"))
        assert_one_line_error(r, ExitCode.USAGE, "pins 2 TPMs for profile tcg", str(path),
                              tcg_sim.uri, blank_sim.uri, "--tpm")
        # a blob file names its salt key: unseal needs no address
        assert tpm(p, "unseal", "--input", str(a_blob)).out == mine
        with tpmseal.open_tpm(p.uri) as t:  # the library: the same choice
            with pytest.raises(tpmseal.UsageError, match="pins 2 TPMs"):
                tpmseal.seal(t, mine)
            assert tpmseal.unseal(t, a_blob) == mine


def _as_format_1(path: Path) -> None:
    rec = pinned_json(json.loads(path.read_text()))
    del rec["addresses"]
    path.write_text(json.dumps({"format": "tpmseal-trust/1", "profiles": {"tcg": rec}}))


def test_records_without_addresses_are_read_and_completed(tcg_sim: Simulator,
                                                           blank_sim: Simulator,
                                                           tmp_path: Path) -> None:
    path = tcg_sim.state / "trust.json"
    _as_format_1(path)
    old = path.read_bytes()
    secret = os.urandom(32)
    blob = seal(tmp_path, secret, "a")
    assert unseal(blob) == secret and path.read_bytes() == old  # read, not rewritten
    # a record without an address may be at any address: a second TPM is refused
    # until the first one's address is known, and nothing is created on it
    other = ["--tpm", blank_sim.uri]
    r = cli([*other, "provision"])
    assert_one_line_error(r, ExitCode.INTEGRITY, EK_MISMATCH, str(path), "without an address",
                          "--repin", "first run `tpmseal provision` on the pinned one")
    assert persistent(blank_sim) == [] and path.read_bytes() == old
    assert cli(["provision"]).rc == 0  # the pinned TPM: its address is recorded
    doc = json.loads(path.read_text())
    assert doc["format"] == "tpmseal-trust/1"  # one TPM: still readable by older tpmseal
    assert pinned_json(doc)["addresses"] == [tcg_sim.uri]
    assert cli([*other, "provision"]).rc == 0
    doc = json.loads(path.read_text())
    assert doc["format"] == "tpmseal-trust/2" and len(doc["tpms"]) == 2
    assert unseal(blob) == secret


def test_repin_replaces_the_record_at_that_address(tcg_sim: Simulator, blank_sim: Simulator,
                                                   tmp_path: Path) -> None:
    """A replaced board: the new TPM answers at the pinned address."""
    path, bus = tcg_sim.state / "trust.json", tmp_path / "tpm.sock"
    with interposer(tcg_sim, at=bus) as p:
        assert tpm(p, "provision").rc == 0
    before = persistent(blank_sim)
    with interposer(blank_sim, at=bus) as p:
        r = tpm(p, "provision")
        assert_one_line_error(r, ExitCode.INTEGRITY, EK_MISMATCH, str(path), f"unix:{bus}",
                              "nothing was created", "--repin")
        assert persistent_via(p) == before
        assert tpm(p, "provision", "--repin").rc == 0
    records = trust.load_all(path)
    assert len(records) == 1 and records[0].addresses == (f"unix:{bus}",)


def persistent_via(p: Proxy) -> list[int]:
    with Tpm.open(p.uri) as t:
        return t.handles(PERSISTENT)


def test_trust_problems_name_the_file(tcg_sim: Simulator, tmp_path: Path) -> None:
    path = tcg_sim.state / "trust.json"
    blob = seal(tmp_path, os.urandom(32), "a")
    missing = tmp_path / "none.json"
    r = cli(["--trust-file", str(missing), "seal", "--input", str(tmp_path / "a.key"),
             "--output", str(tmp_path / "b.json")])
    assert_one_line_error(r, ExitCode.NOT_FOUND, "no trusted endorsement key", str(missing))
    bad = write(tmp_path / "bad.json", b'{"format": "tpmseal-trust/2", "tpms": []}')
    r = cli(["--trust-file", str(bad), "unseal", "--input", str(blob)])
    assert_one_line_error(r, ExitCode.BAD_INPUT, f"trust file {bad}")
    unreadable = tmp_path / "dir.json"
    unreadable.mkdir()
    r = cli(["--trust-file", str(unreadable), "unseal", "--input", str(blob)])
    assert_one_line_error(r, ExitCode.USAGE, str(unreadable))
    # the wrong TPM's record (another EK at the pinned handle): the salt does not decrypt
    doc = json.loads(path.read_text())
    with Tpm.open(tcg_sim.uri) as t:
        srk = t.run(cmds.ReadPublic(0x81000001))
    rec = pinned_json(doc)
    rec["ek"]["public"] = base64.b64encode(srk.out_public.sized()).decode()
    rec["ek"]["name"] = srk.name.hex()
    wrong = write(tmp_path / "wrong.json", json.dumps(doc).encode())
    r = cli(["--trust-file", str(wrong), "seal", "--input", str(tmp_path / "a.key"),
             "--output", str(tmp_path / "c.json")])
    assert_one_line_error(r, ExitCode.INTEGRITY, EK_MISMATCH, str(wrong))


# ------------------------------------------------------ provision creates nothing when it refuses


def _forge(*codes: tuple[int, int]) -> Callable[[HookContext], Verdict]:
    forged = dict(codes)

    def hook(ctx: HookContext) -> Verdict:
        rc = forged.get(ctx.code)
        return None if rc is None else Respond(error_response(rc))
    return hook


@pytest.mark.parametrize("reason", ["ek-mismatch", "profile-conflict", "no-aes", "forged-aes",
                                    "corrupt-trust-file", "ek-certificate"])
def test_a_refused_provision_creates_nothing(reason: str, request: pytest.FixtureRequest,
                                             tmp_path: Path) -> None:
    path, bus = tmp_path / "trust.json", tmp_path / "tpm.sock"
    hook = None
    argv: list[str] = []
    if reason == "profile-conflict":  # tcg's SRK handle holds EVE's EK
        target: Simulator = request.getfixturevalue("eve_sim")
        argv, code, needle = ["--profile", "tcg"], ExitCode.USAGE, "cannot serve as the storage"
    elif reason == "ek-certificate":  # swtpm_setup's certified EKs, checked against another CA
        target = request.getfixturevalue("sim")
        ca = tmp_path / "ca.pem"
        ca.write_bytes(own_ca(x509.Name([]))[1])
        argv, code, needle = ["--ek-ca", str(ca)], ExitCode.INTEGRITY, "CA bundle"
    else:
        target = request.getfixturevalue("blank_sim")
        code, needle = {
            "ek-mismatch": (ExitCode.INTEGRITY, EK_MISMATCH),
            "no-aes": (ExitCode.USAGE, "no AES-128-CFB"),
            "forged-aes": (ExitCode.INTEGRITY, "forged response"),
            "corrupt-trust-file": (ExitCode.BAD_INPUT, "is not a JSON object"),
        }[reason]
        if reason == "ek-mismatch":  # this address is pinned to another TPM
            pinned = request.getfixturevalue("tcg_sim")
            with interposer(pinned, at=bus) as p:
                assert tpm(p, "--trust-file", str(path), "provision").rc == 0
        elif reason == "corrupt-trust-file":
            write(path, b'{"format": "tpmseal-trust/2", "tpms": {"00": 1}}')
        elif reason == "no-aes":
            hook = _forge((TPM_CC.TestParms, RC_SYMMETRIC_P1),
                          (TPM_CC.StartAuthSession, RC_SYMMETRIC_P4))
        else:
            hook = _forge((TPM_CC.TestParms, RC_SYMMETRIC_P1))
    before = persistent(target)
    old = path.read_bytes() if path.exists() else None
    with interposer(target, at=bus, on_command=hook) as p:
        r = tpm(p, "--trust-file", str(path), "provision", *argv)
        assert_one_line_error(r, code, needle)
        sent = names(p.exchanges)
        assert "EvictControl" not in sent
        # at most the salt key, as a transient object (its public area is what is checked)
        assert sent.count("CreatePrimary") <= 1
    assert persistent(target) == before
    assert leftover_handles(target.uri) == []  # the transient copy was flushed
    assert (path.read_bytes() if path.exists() else None) == old


# ------------------------------------------------------------------------ rollback

#: the last commit before per-TPM trust records
BEFORE = "7178692573ad57d9e7895b0095993e3b2c63ff99"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def old_tpmseal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source tree of BEFORE (skip if this clone lacks the history)."""
    have = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{BEFORE}^{{commit}}"],
                          capture_output=True, check=False)
    if have.returncode != 0:
        pytest.skip(f"commit {BEFORE[:12]} is not in this clone (shallow?)")
    out = tmp_path_factory.mktemp("before-trust-2")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "src"


def test_an_older_tpmseal_reads_one_tpm_files_and_refuses_two(
        tcg_sim: Simulator, blank_sim: Simulator, tmp_path: Path, old_tpmseal: Path) -> None:
    blob = seal(tmp_path, os.urandom(32), "a")

    def old(*argv: str) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, PYTHONPATH=str(old_tpmseal), TPMSEAL_TPM=tcg_sim.uri)
        return subprocess.run([sys.executable, "-m", "tpmseal", *argv], capture_output=True,
                              env=env, timeout=120, check=False)

    assert cli(["provision"]).rc == 0  # written by this tpmseal, with the address
    r = old("unseal", "--input", str(blob), "--output", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    measure_boot(blank_sim)
    assert cli(["--tpm", blank_sim.uri, "provision"]).rc == 0  # a second TPM: format 2
    r = old("unseal", "--input", str(blob))
    assert r.returncode == ExitCode.BAD_INPUT and b"unknown format" in r.stderr, r.stderr
