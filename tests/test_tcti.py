"""tpm2-tools TCTI strings wherever a TPM URI is accepted, against a real swtpm on TCP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import _IGNORE, _short_dir
from test_seal_support import cli, secret_bytes
from tpmseal.client.tpm import Tpm
from tpmseal.errors import UsageError
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.base import default_uri, parse_uri
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_CC

PARSED = [
    ("swtpm", "tcp:localhost:2321"),
    ("swtpm:port=5000", "tcp:localhost:5000"),
    ("swtpm:host=127.0.0.1,port=2400", "tcp:127.0.0.1:2400"),
    ("swtpm:path=/run/tpm.sock", "unix:/run/tpm.sock"),
    ("libtss2-tcti-swtpm.so.0:host=10.0.0.1", "tcp:10.0.0.1:2321"),
    ("mssim", "mssim:host=localhost,port=2321"),
    ("mssim:host=tpm.example,port=9", "mssim:host=tpm.example,port=9"),
    ("device", "device:/dev/tpm0"),
    ("device:/dev/tpmrm0", "device:/dev/tpmrm0"),
    ("tcp:127.0.0.1:2321", "tcp:127.0.0.1:2321"),
]


@pytest.mark.parametrize(("text", "uri"), PARSED)
def test_tcti_strings_parse(text: str, uri: str) -> None:
    assert str(parse_uri(text)) == uri
    assert str(parse_uri(uri)) == uri  # what we print parses back


@pytest.mark.parametrize(("text", "needle"), [
    ("swtpm:bogus=1", "bad swtpm TCTI option"),
    ("swtpm:port=0", "bad swtpm TCTI port"),
    ("swtpm:port=65536", "bad swtpm TCTI port"),
    ("swtpm:port=1,port=2", "given twice"),
    ("swtpm:path=/a,port=3", "both a path and a host/port"),
    ("mssim:path=/a", "bad mssim TCTI option"),
    ("tabrmd", "tpm2-abrmd"),
    ("nope:x", "unknown TPM URI scheme"),
])
def test_bad_tcti_strings(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_uri(text)
    assert needle in e.value.one_line()


def test_environment_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TPMSEAL_TPM", "TPM2TOOLS_TCTI", "TCTI"):
        monkeypatch.delenv(name, raising=False)
    assert default_uri() == "device:/dev/tpmrm0"
    monkeypatch.setenv("TCTI", "mssim")
    assert default_uri() == "mssim"
    monkeypatch.setenv("TPM2TOOLS_TCTI", "swtpm:port=1")
    assert default_uri() == "swtpm:port=1"
    monkeypatch.setenv("TPMSEAL_TPM", "unix:/x")
    assert default_uri() == "unix:/x"
    monkeypatch.setenv("TPMSEAL_TPM", "")  # empty counts as unset
    assert default_uri() == "swtpm:port=1"


# ------------------------------------------------------------- a real swtpm on TCP


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free TCP port pair")


@pytest.fixture
def tcp_swtpm(tcg_template: Path) -> Iterator[tuple[int, Path]]:
    """swtpm serving a measured copy of the tcg template on 127.0.0.1:P (control P+1)."""
    d = _short_dir("tpmseal-tcp-")
    shutil.rmtree(d)
    shutil.copytree(tcg_template, d, ignore=_IGNORE)
    port = _free_port_pair()
    pid = d / "swtpm.pid"
    subprocess.run(["swtpm", "socket", "--tpm2",
                    "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                    "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                    "--tpmstate", f"dir={d}", "--flags", "not-need-init,startup-clear",
                    "--pid", f"file={pid}", "-d"], check=True, timeout=30)
    deadline = time.monotonic() + 10
    while not pid.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        with Tpm.open(f"swtpm:host=127.0.0.1,port={port}") as t:
            measure_boot_tpm(t)
        yield port, d
    finally:
        os.kill(int(pid.read_text()), signal.SIGTERM)
        shutil.rmtree(d, ignore_errors=True)


def measure_boot_tpm(t: Tpm) -> None:
    from tpmseal.wire import commands as cmds
    from tpmseal.wire.constants import HASH_SIZES
    from tpmseal.wire.structures import DigestValues, digest

    for pcr in range(8):
        event = f"boot component {pcr}".encode()
        t.run(cmds.PCR_Extend(pcr, DigestValues(tuple(
            (alg, digest(alg, event)) for alg in HASH_SIZES))))


@pytest.mark.parametrize("scheme", ["swtpm", "mssim"])
def test_tcp_tctis_reach_swtpm(tcp_swtpm: tuple[int, Path], scheme: str) -> None:
    port, _ = tcp_swtpm
    for _ in range(2):  # the mssim session end lets the next client in
        with Tpm.open(f"{scheme}:host=127.0.0.1,port={port}") as t:
            assert len(t.get_random(16)) == 16


def test_cli_seal_unseal_over_tcti_env(tcp_swtpm: tuple[int, Path],
                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port, d = tcp_swtpm
    monkeypatch.delenv("TPMSEAL_TPM", raising=False)
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(d / "trust.json"))
    monkeypatch.setenv("TPM2TOOLS_TCTI", f"swtpm:host=127.0.0.1,port={port}")
    secret = secret_bytes()
    blob = tmp_path / "disk.json"
    r = cli(["seal", "--pcrs", "sha256:0,7", "--output", str(blob)], stdin=secret)
    assert r.rc == 0, r.err
    monkeypatch.setenv("TCTI", "mssim:host=127.0.0.1,port=1")  # TPM2TOOLS_TCTI comes first
    r = cli(["unseal", "--input", str(blob), "--output", "-"])
    assert (r.rc, r.out) == (0, secret), r.err
    r = cli(["--tpm", f"mssim:host=127.0.0.1,port={port}", "unseal", "--input", str(blob),
             "--output", "-"])
    assert (r.rc, r.out) == (0, secret), r.err


def test_swtpm_path_tcti_on_the_command_line(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = secret_bytes()
    blob = tmp_path / "disk.json"
    tcti = f"swtpm:path={tcg_sim.sock}"
    assert cli(["--tpm", tcti, "seal", "--pcrs", "sha256:0", "--output", str(blob)],
               stdin=secret).rc == 0
    r = cli(["--tpm", tcti, "unseal", "--input", str(blob), "--output", "-"])
    assert (r.rc, r.out) == (0, secret), r.err


@pytest.mark.skipif(shutil.which("tpm2_getrandom") is None,
                    reason="tpm2-tools is not installed (Debian `tpm2-tools`)")
def test_sniff_takes_tcti_strings(tcp_swtpm: tuple[int, Path]) -> None:
    port, _ = tcp_swtpm
    d = _short_dir("tpmseal-sniff-")
    try:
        listen = f"swtpm:path={d / 'bus.sock'}"
        with Proxy(listen, f"swtpm:host=127.0.0.1,port={port}") as proxy:
            assert proxy.uri == f"unix:{d / 'bus.sock'}"
            done = subprocess.run(["tpm2_getrandom", "-T", listen, "8", "--hex"],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            assert any(e.code == TPM_CC.GetRandom for e in proxy.exchanges)
        with Proxy(f"unix:{d / 'bus2.sock'}", f"mssim:host=127.0.0.1,port={port}") as proxy:
            with Tpm.open(proxy.uri) as t:
                t.get_random(4)
            assert any(e.code == TPM_CC.GetRandom for e in proxy.exchanges)
    finally:
        shutil.rmtree(d, ignore_errors=True)
