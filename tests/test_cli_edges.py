"""Edges a careful user hits: stray options, odd output targets, re-pinning, wrong PINs.

Each case once lost a secret, wrote it where it should not go, or printed a
traceback; each must now fail (or succeed) as documented, without side effects.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from test_seal_support import assert_one_line_error, cli, load_blob, pinned_json, write
from tpmseal.errors import ExitCode
from tpmseal.transport.simulator import Simulator

PASSPHRASE = b"correct horse battery staple\n"


def _seal(tmp_path: Path, secret: bytes, *extra: str) -> Path:
    blob = tmp_path / "blob.json"
    r = cli(["seal", "--input", str(write(tmp_path / "secret", secret)), "--output", str(blob),
             *extra])
    assert r.rc == 0, r.err
    return blob


def test_stray_pin_is_refused_and_reseal_keeps_the_secret(tcg_sim: Simulator,
                                                          tmp_path: Path) -> None:
    """A PIN for a secret sealed without one keyed the response decryption: garbage, exit 0."""
    blob = _seal(tmp_path, PASSPHRASE)
    pin = write(tmp_path / "pin", b"1234\n")
    before = blob.read_bytes()
    r = cli(["unseal", "--input", str(blob), "--pin-file", str(pin)])
    assert_one_line_error(r, ExitCode.USAGE, "has no PIN", "drop --pin-file")
    r = cli(["reseal", "--input", str(blob), "--pin-file", str(pin)])
    assert_one_line_error(r, ExitCode.USAGE, "has no PIN")
    assert blob.read_bytes() == before
    assert cli(["unseal", "--input", str(blob), "--output", "-"]).out == PASSPHRASE


def test_stray_pin_on_nv_is_refused(eve_sim: Simulator, tmp_path: Path) -> None:
    key = os.urandom(32)
    assert cli(["seal", "--profile", "eve", "--nv",
                "--input", str(write(tmp_path / "k", key))]).rc == 0
    pin = write(tmp_path / "pin", b"1234")
    r = cli(["unseal", "--profile", "eve", "--nv", "--pin-file", str(pin)])
    assert_one_line_error(r, ExitCode.USAGE, "has no PIN")
    r = cli(["vault-key", "--profile", "eve", "--pin-file", str(pin)])
    assert_one_line_error(r, ExitCode.USAGE, "has no PIN")
    assert cli(["unseal", "--profile", "eve", "--nv"]).out == key


def test_pin_must_be_a_real_pin(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = write(tmp_path / "s", os.urandom(32))
    for content, needle in ((b"\0\0\0", "empty"), (b"9" * 33, "longer than 32")):
        pin = write(tmp_path / "pin", content)
        r = cli(["seal", "--input", str(secret), "--output", str(tmp_path / "b.json"),
                 "--pin-file", str(pin)])
        assert_one_line_error(r, ExitCode.USAGE, needle)
        assert not (tmp_path / "b.json").exists()


def test_output_into_a_fifo_or_dev_null_is_written_in_place(tcg_sim: Simulator,
                                                            tmp_path: Path) -> None:
    """Replacing a FIFO (or /dev/null) with a regular file would put the key on disk."""
    key = os.urandom(32)
    blob = _seal(tmp_path, key)
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert cli(["unseal", "--input", str(blob), "--output", str(fifo)]).rc == 0
    reader.join(10)
    assert got == [key]
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert cli(["unseal", "--input", str(blob), "--output", "/dev/null"]).rc == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_output_to_a_directory_is_a_usage_error(tcg_sim: Simulator, tmp_path: Path) -> None:
    blob = _seal(tmp_path, os.urandom(32))
    r = cli(["unseal", "--input", str(blob), "--output", str(tmp_path)])
    assert_one_line_error(r, ExitCode.USAGE, "is a directory")


def test_reseal_output_does_not_overwrite_another_blob(tcg_sim: Simulator,
                                                      tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    blob_a, blob_b = _seal(a, os.urandom(32)), _seal(b, os.urandom(32))
    before = blob_b.read_bytes()
    r = cli(["reseal", "--input", str(blob_a), "--output", str(blob_b)])
    assert_one_line_error(r, ExitCode.USAGE, "already holds a sealed secret", "--force")
    assert blob_b.read_bytes() == before
    assert cli(["reseal", "--input", str(blob_a), "--output", str(blob_b), "--force"]).rc == 0


def test_pcrs_with_a_blob_file_is_refused(tcg_sim: Simulator, tmp_path: Path) -> None:
    blob = _seal(tmp_path, os.urandom(32))
    r = cli(["unseal", "--input", str(blob), "--pcrs", "sha256:7"])
    assert_one_line_error(r, ExitCode.USAGE, "--pcrs applies to --nv only")


def test_nv_unseal_without_trust_needs_legacy(eve_sim: Simulator, tmp_path: Path) -> None:
    """EVE's layout names no salt key: without the trust file there is no protected path."""
    key = os.urandom(32)
    assert cli(["seal", "--profile", "eve", "--nv",
                "--input", str(write(tmp_path / "k", key))]).rc == 0
    missing = str(tmp_path / "no-trust.json")
    r = cli(["--trust-file", missing, "unseal", "--profile", "eve", "--nv"])
    assert_one_line_error(r, ExitCode.USAGE, "no pinned endorsement key", "--legacy")
    r = cli(["--trust-file", missing, "unseal", "--profile", "eve", "--nv", "--legacy",
             "--output", "-"])
    assert r.rc == 0 and r.out == key


def test_changing_the_ek_type_needs_repin_and_changes_nothing(tcg_sim: Simulator) -> None:
    with_ecc = "0x81010002"
    r = cli(["provision", "--ek-type", "ecc"])
    assert_one_line_error(r, ExitCode.USAGE, "pinned to the EK at 0x81010001", "--repin")
    probe = json.loads(cli(["probe", "--json"]).out)
    assert probe["keys"]["ek_ecc"]["present"] is False
    assert cli(["provision", "--ek-type", "ecc", "--repin"]).rc == 0
    trust = json.loads((tcg_sim.state / "trust.json").read_text())
    assert pinned_json(trust, "tcg")["ek"]["handle"] == with_ecc


def test_corrupted_trust_file_can_be_repinned(tcg_sim: Simulator) -> None:
    path = tcg_sim.state / "trust.json"
    doc = json.loads(path.read_text())
    pinned_json(doc, "tcg")["ek"]["name"] = "zz"
    path.write_text(json.dumps(doc))
    r = cli(["provision"])
    assert_one_line_error(r, ExitCode.BAD_INPUT, "malformed", "--repin")
    assert cli(["provision", "--repin"]).rc == 0
    assert pinned_json(json.loads(path.read_text()), "tcg")["ek"]["name"] != "zz"


def test_pin_flow_blob_records_the_pin(tcg_sim: Simulator, tmp_path: Path) -> None:
    pin = write(tmp_path / "pin", b"2468\n")
    blob = _seal(tmp_path, os.urandom(32), "--pin-file", str(pin))
    assert load_blob(blob).pin
    r = cli(["unseal", "--input", str(blob), "--output", "-", "--pin-file", str(pin)])
    assert r.rc == 0 and len(r.out) == 32


def test_auto_ek_type_prefers_ecc_on_a_fresh_tpm(blank_sim: Simulator, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """swtpm has NIST P-256: `provision` (auto) pins the ECC EK, seal/unseal salt with it."""
    monkeypatch.setenv("TPMSEAL_TPM", blank_sim.uri)
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(tmp_path / "trust.json"))
    assert cli(["provision"]).rc == 0
    doc = json.loads((tmp_path / "trust.json").read_text())
    assert pinned_json(doc, "tcg")["ek"]["handle"] == "0x81010002"
    assert cli(["provision"]).rc == 0  # idempotent: the pinned ECC EK stays
    key = write(tmp_path / "key", os.urandom(32))
    blob = tmp_path / "b.json"
    assert cli(["seal", "--input", str(key), "--output", str(blob),
                "--allow-unmeasured"]).rc == 0
    r = cli(["unseal", "--input", str(blob), "--output", "-"])
    assert r.rc == 0 and r.out == key.read_bytes()


def test_auto_ek_type_keeps_a_pinned_rsa_ek(tcg_sim: Simulator) -> None:
    assert cli(["provision"]).rc == 0
    trust = json.loads((tcg_sim.state / "trust.json").read_text())
    assert pinned_json(trust, "tcg")["ek"]["handle"] == "0x81010001"
