"""``tpmseal sniff`` end to end in a subprocess: start, clients, signal, files, exit code."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tpmseal.cli.main import main
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.sniff.analysis.render import color_enabled
from tpmseal.sniff.formats.pcapread import read_capture
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_CC, TPM_RH, TPMA_SESSION
from tpmseal.wire.frames import AuthCommand, AuthResponse, build_command, build_response
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
    assert err.count(secret.hex()) == 0 and err.count("PCR_Extend") == 1  # said once
    assert err.splitlines()[-1] == ("tpmseal: error: a secret crossed the bus 1 time(s); see "
                                    "the LEAK line(s) above")
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
    assert err.splitlines()[-1] == ("tpmseal: stopped: 1 exchange(s), 0 leak(s) of the secret "
                                    "found")


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


def test_sniff_warnings_are_printed_once(sim: Simulator, tmp_path: Path) -> None:
    sock = tmp_path / "bus.sock"
    proc = _sniff("--listen", f"unix:{sock}", "--upstream", sim.uri, "--quiet")
    try:
        _wait_listening(proc, sock)
        with socket.socket(socket.AF_UNIX) as bad:
            bad.connect(str(sock))
            bad.sendall(b"GET / HTTP/1.0\r\n\r\n")
            bad.recv(10)  # the proxy closes it
        half = socket.socket(socket.AF_UNIX)
        half.connect(str(sock))
        half.sendall(bytes.fromhex("80010000000c")[:5])  # a command cut short by Ctrl-C
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
        half.close()
    assert proc.returncode == 0, err
    lines = err.splitlines()
    assert sum("not a TPM 2.0 command" in line for line in lines) == 1
    assert sum("client 2: the sniffer stopped while the client was still sending a command "
               "(5 bytes received)" in line for line in lines) == 1
    assert "stream ended inside" not in err
    assert lines[-1] == "tpmseal: stopped: 0 exchange(s), no --secret to look for"


def test_sniff_usage_errors_name_sniff_options(tmp_path: Path) -> None:
    proc = _sniff("--listen", "tcp:127.0.0.1:65535", "--upstream", "unix:/nonexistent")
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == ExitCode.USAGE, err
    assert err.startswith("tpmseal: error: tcp:127.0.0.1:65535 leaves no port for its control "
                          "channel") and err.count("\n") == 1
    proc = _sniff("--listen", f"unix:{tmp_path}/bus.sock", "--upstream",
                  f"unix:{tmp_path}/nothing.sock")
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == ExitCode.TPM_UNREACHABLE
    assert "fix --upstream" in err and "--tpm" not in err


def test_decode_secret_from_a_pin_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    pin = tmp_path / "pin"
    pin.write_text("hunter22\n")
    pw = AuthCommand(TPM_RH.RS_PW, b"", TPMA_SESSION.continueSession, b"")
    cmd = build_command(TPM_CC.HierarchyChangeAuth, [TPM_RH.OWNER], [pw], b"\x00\x08hunter22")
    resp = build_response(0, [], b"", [AuthResponse(b"", 1, b"")])
    cap = tmp_path / "c.bin"
    cap.write_bytes(resp + cmd + resp)  # the tee started one response late
    assert main(["decode", "--color", "never", "--secret", f"@{pin}", str(cap)]) == \
        ExitCode.LEAK_FOUND
    out, err = capsys.readouterr()
    assert "parameter 1 (TPM2B): 8 bytes: " in out and "decode error" not in out
    assert err.count("LEAK: ") == 1 and "in the command of #0 HierarchyChangeAuth" in err


def test_color_helper_honours_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert color_enabled("auto", Tty()) and not color_enabled("auto", io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not color_enabled("auto", Tty())
    assert color_enabled("always", Tty()) and not color_enabled("never", Tty())
    monkeypatch.setenv("NO_COLOR", "")
    assert color_enabled("auto", Tty())
