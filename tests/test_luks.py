"""``tpmseal luks``: tpmseal tokens on LUKS2 images made by the real cryptsetup 2.6.

Containers have no device-mapper, so the key is checked with cryptsetup's own
``open --test-passphrase``; a real ``open`` runs only where /dev/mapper works.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from luks_support import HAS_DM, PASSPHRASE, cryptsetup, make_image, needs_cryptsetup, opens
from test_seal_support import assert_one_line_error, cli, extend, write
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes import cryptsetup as cs
from tpmseal.recipes import luks
from tpmseal.recipes.trust import load, trust_path
from tpmseal.transport.simulator import Simulator

pytestmark = needs_cryptsetup


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, Path]:
    return make_image(tmp_path)


def _enroll(img: Path, pw: Path, *extra: str) -> None:
    r = cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw), *extra])
    assert r.rc == 0, r.err
    assert b"enrolled keyslot 1 (token 0)" in r.out


def test_enroll_test_list(tcg_sim: Simulator, image: tuple[Path, Path]) -> None:
    img, pw = image
    _enroll(img, pw, "--pcrs", "sha256:0,7")
    token = cs.header(str(img)).tokens[0]
    assert token["type"] == "tpmseal" and token["keyslots"] == ["1"]
    blob = luks.blob_of(token, 0)
    assert blob.sealed_with == "aes-128-cfb"
    assert "private" in token[luks.BLOB_FIELD]
    r = cli(["luks", "test", str(img)])
    assert (r.rc, r.out) == (0, b"token 0 (tpmseal) unlocks keyslot 1\n"), r.err
    r = cli(["luks", "list", str(img), "--json"])
    doc = json.loads(r.out)
    assert doc["keyslots"] == [0, 1]
    assert doc["tokens"][0]["type"] == "tpmseal" and doc["tokens"][0]["pcrs"] == "sha256:0,7"
    assert opens(img, PASSPHRASE, 0)  # the old passphrase still works


def test_unsealed_key_opens_its_keyslot_only(tcg_sim: Simulator,
                                             image: tuple[Path, Path]) -> None:
    img, pw = image
    _enroll(img, pw)
    rec = load(trust_path(), "tcg")
    with Tpm.open(tcg_sim.uri) as tpm:
        key = luks.unseal_token(tpm, cs.header(str(img)).tokens[0], 0, rec, None)
    assert len(key) == 32
    assert opens(img, key, 1) and not opens(img, key, 0)


def test_pcr_change_then_reseal(tcg_sim: Simulator, image: tuple[Path, Path]) -> None:
    img, pw = image
    _enroll(img, pw, "--pcrs", "sha256:0,7")
    extend(tcg_sim.uri, 7)
    assert_one_line_error(cli(["luks", "test", str(img)]), ExitCode.PCR_MISMATCH, "PCR 7")
    r = cli(["luks", "reseal", str(img), "--pcrs", "sha256:0,4"])
    assert r.rc == 5, r.err  # reseal needs the old policy to hold
    # back to a state where the old policy holds: a fresh image sealed to 0,4 only
    img2, pw2 = make_image(img.parent, "two.img")
    _enroll(img2, pw2, "--pcrs", "sha256:0,4")
    r = cli(["luks", "reseal", str(img2), "--pcrs", "sha256:0,4,7"])
    assert r.rc == 0, r.err
    assert b"token 1" in r.out
    tokens = cs.header(str(img2)).tokens
    assert list(tokens) == [1] and tokens[1]["keyslots"] == ["1"]
    assert cli(["luks", "test", str(img2)]).rc == 0
    extend(tcg_sim.uri, 7)
    assert cli(["luks", "test", str(img2)]).rc == ExitCode.PCR_MISMATCH


def test_pin(tcg_sim: Simulator, image: tuple[Path, Path], tmp_path: Path) -> None:
    img, pw = image
    pin = write(tmp_path / "pin", b"1234\n")
    _enroll(img, pw, "--pin-file", str(pin))
    assert_one_line_error(cli(["luks", "test", str(img)]), ExitCode.USAGE, "PIN")
    wrong = write(tmp_path / "wrong", b"4321")
    assert_one_line_error(cli(["luks", "test", str(img), "--pin-file", str(wrong)]),
                          ExitCode.AUTH_FAILED, "wrong PIN")
    assert cli(["luks", "test", str(img), "--pin-file", str(pin)]).rc == 0


def test_remove_refuses_last_keyslot(tcg_sim: Simulator, image: tuple[Path, Path]) -> None:
    img, pw = image
    _enroll(img, pw)
    assert cryptsetup("luksKillSlot", "--batch-mode", str(img), "0").returncode == 0
    assert_one_line_error(cli(["luks", "remove", str(img), "--token-id", "0"]), ExitCode.USAGE,
                          "last one")
    assert cs.header(str(img)).keyslots == {1}


def test_remove(tcg_sim: Simulator, image: tuple[Path, Path]) -> None:
    img, pw = image
    _enroll(img, pw)
    r = cli(["luks", "remove", str(img), "--token-id", "0"])
    assert (r.rc, r.out) == (0, b"removed token 0 and keyslot 1\n"), r.err
    hdr = cs.header(str(img))
    assert hdr.keyslots == {0} and not hdr.tokens
    assert_one_line_error(cli(["luks", "test", str(img)]), ExitCode.NOT_FOUND, "no TPM token")
    assert_one_line_error(cli(["luks", "remove", str(img), "--token-id", "0"]),
                          ExitCode.NOT_FOUND)


def test_errors(tcg_sim: Simulator, image: tuple[Path, Path], tmp_path: Path) -> None:
    img, pw = image
    bad = write(tmp_path / "bad", b"not the passphrase")
    assert_one_line_error(cli(["luks", "enroll", str(img), "--unlock-key-file", str(bad)]),
                          ExitCode.AUTH_FAILED, "passphrase")
    assert cs.header(str(img)).keyslots == {0} and not cs.header(str(img)).tokens
    assert_one_line_error(cli(["luks", "enroll", str(img)]), ExitCode.USAGE,
                          "--unlock-key-file")
    assert_one_line_error(cli(["luks", "test", str(pw)]), ExitCode.USAGE, "not a LUKS2")
    assert_one_line_error(cli(["luks", "passphrase", str(tmp_path / "gone.img")]),
                          ExitCode.USAGE, "gone.img does not exist")
    assert_one_line_error(cli(["luks", "test", str(img)]), ExitCode.NOT_FOUND)


def test_a_cryptsetup_that_cannot_start_is_one_line(tcg_sim: Simulator,
                                                     image: tuple[Path, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """posix_spawn failing (here ENOEXEC: an executable file that is no program; EAGAIN at
    the process limit likewise) names the program in one line, not as an internal error."""
    img, _ = image
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "cryptsetup"
    fake.write_bytes(b"\0not a program")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    for argv in (["luks", "list", str(img)], ["luks", "test", str(img)]):
        assert_one_line_error(cli(argv), ExitCode.MISSING_TOOL, f"cannot run {fake}",
                              "cryptsetup --version")


def test_corrupt_token_is_reported(tcg_sim: Simulator, image: tuple[Path, Path]) -> None:
    img, _ = image
    r = cryptsetup("token", "import", "--json-file=-", "--key-slot", "0", str(img),
                   stdin=b'{"type":"tpmseal","keyslots":[],"tpmseal-blob":{"format":1}}')
    assert r.returncode == 0, r.stderr
    assert_one_line_error(cli(["luks", "test", str(img)]), ExitCode.BAD_INPUT, "token 0")
    listed = cli(["luks", "list", str(img)])
    assert listed.rc == 0 and b"token 0: tpmseal keyslots=0" in listed.out
    assert b"error=" in listed.out


def test_key_never_in_argv(tcg_sim: Simulator, image: tuple[Path, Path],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cryptsetup run gets keys on stdin or /dev/fd pipes; none in its argv."""
    seen: list[list[str]] = []
    real = os.posix_spawn

    def spy(path: str, argv: list[str], env: Any, **kw: Any) -> int:
        seen.append(list(argv))
        return real(path, argv, env, **kw)

    monkeypatch.setattr(os, "posix_spawn", spy)
    img, pw = image
    _enroll(img, pw)
    assert cli(["luks", "test", str(img)]).rc == 0
    rec = load(trust_path(), "tcg")
    with Tpm.open(tcg_sim.uri) as tpm:
        key = luks.unseal_token(tpm, cs.header(str(img)).tokens[0], 0, rec, None)
    words = [w for argv in seen for w in argv]
    assert any(w.startswith("/dev/fd/") for w in words)
    assert not any(key.hex() in w or key in w.encode(errors="surrogateescape") for w in words)


@pytest.mark.skipif(not HAS_DM, reason="no device-mapper (/dev/mapper/control) in this "
                                       "container: a real open needs it")
def test_real_open(tcg_sim: Simulator, image: tuple[Path, Path]) -> None:
    img, pw = image
    _enroll(img, pw)
    r = cli(["luks", "unlock", str(img), "tpmseal-test"])
    try:
        assert r.rc == 0, r.err
        assert Path("/dev/mapper/tpmseal-test").exists()
    finally:
        cryptsetup("close", "tpmseal-test")


def test_passphrase_for_keyscripts(tcg_sim: Simulator, image: tuple[Path, Path]) -> None:
    img, pw = image
    _enroll(img, pw)
    r = cli(["luks", "passphrase", str(img)])
    assert r.rc == 0 and len(r.out) == 32, r.err
    assert opens(img, r.out, 1)


def test_a_malformed_token_does_not_stop_a_good_one(tcg_sim: Simulator,
                                                    image: tuple[Path, Path]) -> None:
    img, pw = image
    r = cryptsetup("token", "import", "--json-file=-", "--token-id", "0", "--key-slot", "0",
                   str(img), stdin=b'{"type":"tpmseal","keyslots":[],"tpmseal-blob":{}}')
    assert r.returncode == 0, r.stderr
    r2 = cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw)])
    assert r2.rc == 0, r2.err
    r3 = cli(["luks", "test", str(img)])
    assert (r3.rc, r3.out) == (0, b"token 1 (tpmseal) unlocks keyslot 1\n"), r3.err


@pytest.mark.parametrize("name", ["vol{1}.img", "a}b{.img", "key{0}.img"])
def test_braces_in_a_device_path(tcg_sim: Simulator, tmp_path: Path, name: str) -> None:
    """Only the argument naming a pipe is replaced by its /dev/fd path: the device path
    was run through str.format with the rest (an image named vol{1}.img was an internal
    error, key{0}.img gave luksAddKey the key's pipe as part of the device path)."""
    img, pw = make_image(tmp_path, name)
    _enroll(img, pw)
    r = cli(["luks", "list", str(img)])
    assert r.rc == 0 and b"token 0: tpmseal keyslots=1" in r.out, r.err
    r = cli(["luks", "test", str(img)])
    assert (r.rc, r.out) == (0, b"token 0 (tpmseal) unlocks keyslot 1\n"), r.err


def test_a_parent_ignoring_sigchld(tcg_sim: Simulator, image: tuple[Path, Path]) -> None:
    """Run from a parent that ignores SIGCHLD (inherited across exec), `luks test` still
    learns cryptsetup's verdicts: the right key accepted, a wrong one refused (the
    subprocess version took every exit for 0; spawn said 'cannot run cryptsetup')."""
    import signal
    import subprocess
    import sys

    img, pw = image
    _enroll(img, pw)

    def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "tpmseal.cli.main", *argv], capture_output=True,
            timeout=60, check=False,
            preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))

    r = run("luks", "test", str(img))
    assert (r.returncode, r.stdout) == (0, b"token 0 (tpmseal) unlocks keyslot 1\n"), r.stderr
    token = cs.header(str(img)).tokens[0]
    cs.remove_token(str(img), 0)
    # now for keyslot 0 only, which its key does not open
    cs.import_token(str(img), 0, {**token, "keyslots": []}, 0)
    r = run("luks", "test", str(img))
    assert r.returncode == int(ExitCode.AUTH_FAILED), r.stderr
    assert b"opens none of its keyslots" in r.stderr
