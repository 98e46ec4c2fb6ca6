"""Surprises fixed: seal --legacy downgrade, import test-load, decode of a blob, EOF at the
PIN prompt, the tcg/eve handle conflict."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import sys
import time
from pathlib import Path

import pytest

from test_seal_support import (
    TpmLog,
    assert_one_line_error,
    cli,
    load_blob,
    secret_bytes,
    write,
)
from tpmseal.recipes.blob import LEGACY
from tpmseal.transport.simulator import Simulator


def test_seal_legacy_on_an_aes_tpm_needs_allow_downgrade(tcg_sim: Simulator,
                                                          tmp_path: Path) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    r = cli(["seal", "--legacy", "--input", str(key), "--output", str(blob)])
    assert_one_line_error(r, 2, "--legacy would put the secret on the bus in plaintext",
                          "--allow-downgrade")
    assert not blob.exists()
    r = cli(["seal", "--legacy", "--allow-downgrade", "--input", str(key), "--output",
             str(blob)])
    assert r.rc == 0, r.err
    assert load_blob(blob).sealed_with == LEGACY
    r = cli(["reseal", "--legacy", "--input", str(blob), "--allow-unmeasured"])
    assert_one_line_error(r, 2, "--allow-downgrade")


def _parts(tcg_sim: Simulator, tmp_path: Path) -> tuple[Path, Path, bytes]:
    """seal.pub/seal.priv of an object sealed to sha256:0,7 (via a tpmseal blob)."""
    secret = secret_bytes()
    blob = tmp_path / "orig.json"
    assert cli(["seal", "--pcrs", "sha256:0,7", "--output", str(blob)], stdin=secret).rc == 0
    doc = json.loads(blob.read_text())
    return (write(tmp_path / "seal.pub", base64.b64decode(doc["public"])),
            write(tmp_path / "seal.priv", base64.b64decode(doc["private"])), secret)


def test_import_test_loads_the_object(tcg_sim: Simulator, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pub, priv, secret = _parts(tcg_sim, tmp_path)
    out = tmp_path / "imported.json"
    log = TpmLog().install(monkeypatch)
    r = cli(["import", "--public", str(pub), "--private", str(priv), "--pcrs", "sha256:0,7",
             "--output", str(out), "--json"])
    assert r.rc == 0, r.err
    assert log.names()[:2] == ["Load", "FlushContext"]
    assert json.loads(r.out)["policy_matches"] is True
    assert cli(["unseal", "--input", str(out)]).out == secret
    # a damaged private part: the TPM's integrity check refuses it, and nothing is written
    damaged = bytearray(priv.read_bytes())
    damaged[-1] ^= 1
    write(priv, bytes(damaged))
    bad = tmp_path / "bad.json"
    r = cli(["import", "--public", str(pub), "--private", str(priv), "--pcrs", "sha256:0,7",
             "--output", str(bad)])
    assert_one_line_error(r, 7, "the TPM refuses to load the object", "TPM_RC_INTEGRITY")
    assert not bad.exists()


def test_decode_recognises_a_sealed_blob(tcg_sim: Simulator, tmp_path: Path) -> None:
    blob = tmp_path / "disk.json"
    assert cli(["seal", "--pcrs", "sha256:0", "--output", str(blob)],
               stdin=secret_bytes()).rc == 0
    r = cli(["decode", str(blob)])
    assert r.rc == 0, r.err
    text = r.out.decode()
    assert text.startswith(f"{blob} is a tpmseal sealed blob, not a capture: sealed to "
                           "sha256:0 with aes-128-cfb under parent 0x81000001")
    assert f"tpmseal unseal --input {blob}" in text
    info = json.loads(cli(["decode", "--json", str(blob)]).out)
    assert (info["kind"], info["pcrs"], info["pin"]) == ("sealed-blob", "sha256:0", False)


def _on_a_terminal(argv: list[str], answer: bytes, prompt: bytes) -> tuple[int, str]:
    """Run tpmseal with a pty as controlling terminal; type *answer* after *prompt*."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(sys.executable, [sys.executable, "-m", "tpmseal", *argv])
    out = b""
    deadline = time.monotonic() + 30
    typed = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not typed and prompt in out:
            os.write(fd, answer)
            typed = True
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_eof_at_the_pin_prompt_is_a_usage_error(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = write(tmp_path / "key", secret_bytes())
    rc, shown = _on_a_terminal(["seal", "--pin", "--input", str(key), "--output",
                                str(tmp_path / "b.json")], b"\x04", b"PIN: ")
    assert rc == 2, shown
    assert "tpmseal: error: no PIN entered (end of input at the prompt); type the PIN, or " \
           "pass --pin-file FILE" in shown
    assert "EOFError" not in shown and "Traceback" not in shown


def test_profile_conflict_is_explained(eve_sim: Simulator) -> None:
    """EVE's EK at 0x81000001 cannot be the tcg profile's SRK there."""
    r = cli(["provision", "--profile", "tcg"])
    assert_one_line_error(r, 2, "0x81000001", "the eve profile keeps its EK at 0x81000001, "
                          "where the tcg profile keeps its SRK: one TPM serves only one of "
                          "the two profiles")


def test_decode_recognises_a_policy_or_blob(tcg_sim: Simulator, tmp_path: Path) -> None:
    """A blob sealed to several states is format tpmseal-sealed/2: still a blob to decode."""
    shown = cli(["pcrs", "show", "--pcrs", "sha256:0", "--json"])
    (tmp_path / "a.json").write_bytes(shown.out)
    (tmp_path / "b.json").write_text(json.dumps({"sha256": {"0": "55" * 32}}))
    blob = tmp_path / "disk.json"
    assert cli(["seal", "--pcrs", "sha256:0", "--pcr-values", str(tmp_path / "a.json"),
                "--pcr-values", str(tmp_path / "b.json"), "--output", str(blob)],
               stdin=secret_bytes()).rc == 0
    assert b"tpmseal-sealed/2" in blob.read_bytes()
    r = cli(["decode", "--json", str(blob)])
    assert r.rc == 0, r.err
    assert json.loads(r.out)["kind"] == "sealed-blob"


def test_states_without_pcr_4_seal_and_a_zero_pcr_0_state_is_refused(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    """The unmeasured-boot check looks at the anchors a given state holds (here PCR 0
    only): it once read PCR 4 from states that cannot have it (an internal KeyError)."""
    (tmp_path / "a.json").write_text(json.dumps({"sha256": {"0": "11" * 32}}))
    (tmp_path / "z.json").write_text(json.dumps({"sha256": {"0": "00" * 32}}))
    ok = cli(["seal", "--pcrs", "sha256:0", "--pcr-values", str(tmp_path / "a.json"),
              "--output", str(tmp_path / "a.blob")], stdin=secret_bytes())
    assert ok.rc == 0, ok.err
    r = cli(["seal", "--pcrs", "sha256:0", "--pcr-values", str(tmp_path / "a.json"),
             "--pcr-values", str(tmp_path / "z.json"), "--output", str(tmp_path / "z.blob")],
            stdin=secret_bytes())
    assert_one_line_error(r, 2, "PCR sha256:0 is all zero")
    assert not (tmp_path / "z.blob").exists()
