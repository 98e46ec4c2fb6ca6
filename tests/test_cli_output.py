"""Output: --json on every command that prints, -v logging the flow, sim saying what it did."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from test_cli import COMMANDS
from test_seal_support import assert_one_line_error, cli, cli_subprocess, secret_bytes, write
from tpmseal.cli.main import build_parser
from tpmseal.transport.simulator import Simulator

#: commands whose stdout is not a report: a live dump (sniff --json FILE writes JSON lines),
#: the demonstration, and group commands.
NO_REPORT = {("sniff",), ("demo",), ("sim",), ("pcrs",), ("luks",), ("luks", "unlock"),
             ("policy",), ()}
SEAL_KEYS = {"command", "store", "nv", "profile", "pcrs", "sealed_with", "pin", "check_value",
             "object_name"}


def _options(path: tuple[str, ...]) -> set[str]:
    parser: argparse.ArgumentParser = build_parser()
    for word in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return {o for a in parser._actions for o in a.option_strings}


@pytest.mark.parametrize("path", [p for p in COMMANDS if p not in NO_REPORT],
                         ids=" ".join)
def test_every_reporting_command_has_json(path: tuple[str, ...]) -> None:
    assert "--json" in _options(path)


def test_seal_unseal_reseal_json(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = secret_bytes()
    blob = tmp_path / "disk.json"
    r = cli(["seal", "--pcrs", "sha256:0,7", "--output", str(blob), "--json"], stdin=secret)
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    assert set(doc) == SEAL_KEYS | {"bytes"}
    assert doc["command"] == "seal" and doc["store"] == str(blob) and doc["nv"] is False
    assert (doc["pcrs"], doc["sealed_with"], doc["bytes"]) == ("sha256:0,7", "aes-128-cfb", 32)
    assert secret.hex() not in r.out.decode()

    assert_one_line_error(cli(["unseal", "--input", str(blob), "--json"]), 2, "--output FILE")
    out = tmp_path / "key"
    r = cli(["unseal", "--input", str(blob), "--output", str(out), "--json"])
    assert r.rc == 0, r.err
    assert json.loads(r.out) == {"command": "unseal", "store": str(blob), "nv": False,
                                 "profile": "tcg", "output": str(out), "bytes": 32}
    assert out.read_bytes() == secret

    r = cli(["reseal", "--input", str(blob), "--pcrs", "sha256:0", "--json"])
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    assert set(doc) == SEAL_KEYS and (doc["command"], doc["pcrs"]) == ("reseal", "sha256:0")


def test_vault_key_json(eve_sim: Simulator, tmp_path: Path) -> None:
    out = tmp_path / "vault.key"
    assert_one_line_error(cli(["vault-key", "--json"]), 2, "--output FILE")
    r = cli(["vault-key", "--output", str(out), "--json"])
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    assert doc == {"command": "vault-key", "action": "generated",
                   "store": "NV 0x1800000/0x1900000", "profile": "eve", "output": str(out),
                   "bytes": 32}
    r = cli(["vault-key", "--output", str(out), "--json"])
    assert json.loads(r.out)["action"] == "unsealed"
    assert out.read_bytes().hex() not in r.out.decode()


def test_verbose_logs_the_flow_never_the_secret(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = secret_bytes()
    blob = tmp_path / "disk.json"
    key = write(tmp_path / "key", secret)
    r = cli_subprocess(["-v", "seal", "--input", str(key), "--output", str(blob)])
    assert r.rc == 0, r.err
    r = cli_subprocess(["-v", "unseal", "--input", str(blob)])
    assert (r.rc, r.out) == (0, secret), r.err
    lines = r.err_lines
    names = [line.split()[2].rstrip(":") for line in lines if line.startswith("tpmseal: TPM ")]
    assert {"StartAuthSession", "Load", "PolicyPCR", "Unseal", "FlushContext"} <= set(names)
    assert any(f"{len(names)} TPM command(s)" in line for line in lines)
    assert any(f"unsealed 32 bytes from {blob}" in line for line in lines)
    assert secret.hex() not in r.err and secret.hex().upper() not in r.err


def test_sim_says_what_it_started_and_stopped(tmp_path: Path) -> None:
    state = tmp_path / "s"
    r = cli_subprocess(["sim", "start", "--state", str(state)])
    try:
        assert r.rc == 0, r.err
        assert r.out.decode() == f"unix:{state}/tpm.sock\n"
        assert r.err.startswith("tpmseal: started swtpm (pid ")
        assert f"tpmseal sim stop --state {state}" in r.err
        r = cli(["sim", "start", "--state", str(state), "--json"])
        doc = json.loads(r.out)
        assert doc["started"] is False and doc["tools_tcti"] == f"swtpm:path={state}/tpm.sock"
    finally:
        r = cli(["sim", "stop", "--state", str(state)])
    assert r.rc == 0 and r.out.decode().startswith("stopped swtpm (pid ")
    assert_one_line_error(cli(["sim", "stop", "--state", str(state)]), 11, "no simulator")


def test_sim_uri_says_it_started_swtpm(tmp_path: Path) -> None:
    state = tmp_path / "s"
    try:
        r = cli_subprocess(["--tpm", f"sim:{state}", "pcrs", "show", "--json"])
        assert r.rc == 0, r.err
        assert "sha256" in json.loads(r.out)
        assert r.err.startswith("tpmseal: started swtpm (pid ")
        assert f"stop it with `tpmseal sim stop --state {state}`" in r.err
        r = cli_subprocess(["--tpm", f"sim:{state}", "pcrs", "show"])
        assert r.rc == 0 and "started swtpm" not in r.err  # already running: nothing to say
    finally:
        Simulator(state).stop()


def test_sniff_says_it_started_a_sim_upstream(tmp_path: Path) -> None:
    import signal

    from test_sniff_cli import _sniff, _wait_listening

    state, sock = tmp_path / "s", tmp_path / "bus.sock"
    proc = _sniff("--listen", f"unix:{sock}", "--upstream", f"sim:{state}", "--quiet")
    try:
        _wait_listening(proc, sock)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        Simulator(state).stop()
    assert proc.returncode == 0, err
    assert f"tpmseal: started swtpm for sim:{state}; it keeps running: stop it with " \
           f"`tpmseal sim stop --state {state}`" in err.splitlines()
    assert err.splitlines()[-1] == "tpmseal: stopped: 0 exchange(s), no --secret to look for"


def test_luks_json(tcg_sim: Simulator, tmp_path: Path) -> None:
    from luks_support import needs_cryptsetup

    if needs_cryptsetup.args[0]:
        pytest.skip(needs_cryptsetup.kwargs["reason"])
    from luks_support import make_image

    img, pw = make_image(tmp_path)
    r = cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw), "--pcrs", "sha256:0,7",
             "--json"])
    assert r.rc == 0, r.err
    assert json.loads(r.out) == {"command": "luks enroll", "device": str(img),
                                 "token_type": "tpmseal", "token_id": 0, "keyslot": 1,
                                 "pcrs": "sha256:0,7", "pin": False, "signed": False}
    r = cli(["luks", "test", str(img), "--json"])
    assert json.loads(r.out) == {"command": "luks test", "device": str(img), "token_id": 0,
                                 "token_type": "tpmseal", "keyslot": 1}
    assert_one_line_error(cli(["luks", "passphrase", str(img), "--json"]), 2, "--output FILE")
    out = tmp_path / "pass"
    r = cli(["luks", "passphrase", str(img), "--json", "--output", str(out)])
    assert json.loads(r.out)["keyslot"] == 1 and out.read_bytes().hex() not in r.out.decode()
    r = cli(["luks", "reseal", str(img), "--pcrs", "sha256:0", "--json"])
    doc = json.loads(r.out)
    assert (doc["command"], doc["pcrs"], doc["keyslot"]) == ("luks reseal", "sha256:0", 1)
    r = cli(["luks", "remove", str(img), "--token-id", str(doc["token_id"]), "--json"])
    assert json.loads(r.out) == {"command": "luks remove", "device": str(img),
                                 "token_id": doc["token_id"], "keyslots_removed": [1]}
