"""``tpmseal sniff`` end to end in a subprocess: start, clients, signal, files, exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.sniff.pcapread import read_capture
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG
from tpmseal.wire.structures import DigestValues


def _sniff(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tpmseal.cli.main", "sniff", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_listening(proc: subprocess.Popen[str], sock: Path) -> None:
    deadline = time.monotonic() + 15
    while not Path(f"{sock}.ctrl").exists():
        if proc.poll() is not None:
            raise AssertionError(f"sniff exited early: {proc.communicate()[1]}")
        assert time.monotonic() < deadline, "sniff did not start listening"
        time.sleep(0.02)


def test_sniff_records_and_reports_a_leak(sim: Simulator, tmp_path: Path) -> None:
    sock, jl, pcap = tmp_path / "bus.sock", tmp_path / "c.jsonl", tmp_path / "c.pcap"
    secret = os.urandom(32)
    proc = _sniff("--listen", f"unix:{sock}", "--upstream", sim.uri, "--json", str(jl),
                  "--pcap", str(pcap), "--secret", secret.hex(), "--color", "never")
    try:
        _wait_listening(proc, sock)
        with Tpm.open(f"unix:{sock}") as t:
            t.get_random(8)
            t.run(cmds.PCR_Extend(16, DigestValues(((TPM_ALG.SHA256, secret),))))
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == ExitCode.LEAK_FOUND, err
    assert ">>> Command: GetRandom (tag=0x8001 size=12)" in out
    assert ">>> Command: PCR_Extend" in out and "pcr_handle: 0x00000010 (PCR 16)" in out
    assert "secret visible in plaintext at offset 0x" in out
    assert "LEAK: secret 1 (raw, 32 bytes) in the command of #1 PCR_Extend" in err
    assert err.splitlines()[-1].startswith("tpmseal: error: a secret crossed the bus 1 time(s)")
    assert "Traceback" not in err
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [x["command_name"] for x in lines] == ["GetRandom", "PCR_Extend"]
    assert all(x["rc_name"] == "TPM_RC_SUCCESS" and x["tpm_ms"] > 0 for x in lines)
    assert secret.hex() in lines[1]["command"]["hex"]
    cap = read_capture(pcap.read_bytes())
    assert [e.name for e in cap.exchanges] == ["GetRandom", "PCR_Extend"]
    assert not sock.exists() and not Path(f"{sock}.ctrl").exists()


def test_sniff_quiet_sigterm_exits_zero(sim: Simulator, tmp_path: Path) -> None:
    sock = tmp_path / "bus.sock"
    proc = _sniff("--listen", f"unix:{sock}", "--upstream", sim.uri, "--quiet",
                  "--secret", "00112233445566778899")
    try:
        _wait_listening(proc, sock)
        with Tpm.open(f"unix:{sock}") as t:
            t.get_random(8)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out == ""
    assert err.splitlines()[-1] == "tpmseal: stopped"


def test_sniff_errors_are_one_line(tmp_path: Path) -> None:
    proc = _sniff("--listen", f"unix:{tmp_path}/bus.sock", "--upstream",
                  f"unix:{tmp_path}/nothing.sock")
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == ExitCode.TPM_UNREACHABLE
    assert err.startswith(f"tpmseal: error: no TPM socket at unix:{tmp_path}/nothing.sock")
    assert err.count("\n") == 1
    proc = _sniff("--listen", "unix:/x", "--upstream", "unix:/y", "--secret", "abc")
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == ExitCode.USAGE and "hex digits or @FILE" in err
