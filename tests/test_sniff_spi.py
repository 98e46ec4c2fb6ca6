"""SPI bus captures of real swtpm traffic, drawn as waveforms and decoded by the real sigrok-cli.

Traffic: tpmseal's own seal and unseal, tpm2-tools' salted flow
(tests/peers/tpm2_tools_flow.sh), tpm2-tools with no session protection, and
a BitLocker-style unseal (a VMK blob under PolicyPCR, read in plaintext). The
PTP encoder (tests/ptp_encoder.py) turns each into SPI transactions the way
Linux's tpm_tis_spi driver makes them, with wait states, aborted
transactions, commands aborted by commandReady, responseRetry, burst splits,
locality changes, bus noise and a start mid-command; a VCD of it goes through sigrok-cli's spi
decoder and ``tpmseal decode``. Every frame must come back, the leak scanner
must find the plaintext flows' secrets and nothing in tpmseal's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from attacks.bus import expect_ok, interposer, tpm
from ptp_encoder import SpiHost, encode, vcd
from tpmseal.cli.main import main
from tpmseal.errors import ExitCode
from tpmseal.sniff.analysis.ptp import FIFO_REGISTERS
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.sniff.formats.jsonl import read_jsonl
from tpmseal.transport.simulator import Simulator

TOOLS_FLOW = Path(__file__).resolve().parent / "peers" / "tpm2_tools_flow.sh"
SIGROK = shutil.which("sigrok-cli")
needs_sigrok = pytest.mark.skipif(SIGROK is None,
                                  reason="sigrok-cli is not installed (Debian `sigrok-cli`)")
needs_tools = pytest.mark.skipif(shutil.which("tpm2_unseal") is None,
                                 reason="tpm2-tools is not installed (Debian `tpm2-tools`)")
#: BitLocker's VMK blob as sealed in the TPM: a 0x2c-byte structure, version 1, AES-256 key
VMK_HEADER = bytes.fromhex("2c0000000100000003200000")


def _pairs(exchanges: Sequence[Exchange]) -> list[tuple[bytes, bytes]]:
    out = [(e.command, e.response) for e in exchanges if e.response is not None]
    assert len(out) == len(exchanges)
    return [(c, r) for c, r in out if r is not None]


def _mismatches(got: Sequence[Exchange], want: Sequence[tuple[bytes, bytes]]) -> list[int]:
    """Indices where the frames differ (never the bytes: they may be secret)."""
    bad = [i for i, (e, (c, r)) in enumerate(zip(got, want, strict=False))
           if e.command != c or e.response != r]
    return bad if len(got) == len(want) else [*bad, -1]


def _decode(tmp_path: Path, capture: bytes, name: str, secret: bytes,
            capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    path = tmp_path / name
    path.write_bytes(capture)
    rc = main(["decode", "--color", "never", "--secret", secret.hex(), *extra, str(path)])
    out, err = capsys.readouterr()
    return rc, out, err


def _tools(proxy: Proxy, cwd: Path, *argv: str) -> str:
    env = dict(os.environ, TPM2TOOLS_TCTI=proxy.tools_tcti, WORKDIR=str(cwd))
    done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-600:]}")
    return done.stdout


def _tpmseal_flow(sim: Simulator, tmp_path: Path) -> tuple[list[Exchange], bytes]:
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    with interposer(sim) as p:
        assert tpm(p, "seal", "--input", str(key), "--output", str(blob)).rc == 0
        expect_ok(tpm(p, "unseal", "--input", str(blob)), secret)
        return list(p.exchanges), secret


def _tools_salted_flow(sim: Simulator, tmp_path: Path) -> tuple[list[Exchange], bytes]:
    with interposer(sim) as p:
        _tools(p, tmp_path, "bash", str(TOOLS_FLOW), "provision", "seal", "unseal")
        return list(p.exchanges), (tmp_path / "secret.bin").read_bytes()


def _tools_plain_flow(sim: Simulator, tmp_path: Path) -> tuple[list[Exchange], bytes]:
    secret = os.urandom(32)
    (tmp_path / "secret.bin").write_bytes(secret)
    with interposer(sim) as p:
        for argv in (["tpm2_createprimary", "-C", "o", "-c", "prim.ctx"],
                     ["tpm2_flushcontext", "-t"],
                     ["tpm2_create", "-C", "prim.ctx", "-i", "secret.bin", "-u", "s.pub",
                      "-r", "s.priv"],
                     ["tpm2_flushcontext", "-t"],
                     ["tpm2_load", "-C", "prim.ctx", "-u", "s.pub", "-r", "s.priv", "-c",
                      "s.ctx"],
                     ["tpm2_unseal", "-c", "s.ctx", "-o", "out.bin"],
                     ["tpm2_flushcontext", "-t"]):
            _tools(p, tmp_path, *argv)
        assert (tmp_path / "out.bin").read_bytes() == secret
        return list(p.exchanges), secret


def _bitlocker_flow(sim: Simulator, tmp_path: Path) -> tuple[list[Exchange], bytes]:
    """A VMK sealed under PolicyPCR and unsealed through an unsalted policy session."""
    vmk = os.urandom(32)
    (tmp_path / "vmk.bin").write_bytes(VMK_HEADER + vmk)
    with interposer(sim) as p:
        for argv in (["tpm2_createprimary", "-C", "o", "-c", "srk.ctx"],
                     ["tpm2_flushcontext", "-t"],
                     ["tpm2_createpolicy", "--policy-pcr", "-l", "sha256:7,11", "-L",
                      "pcr.policy"],
                     ["tpm2_flushcontext", "-l"],
                     ["tpm2_create", "-C", "srk.ctx", "-L", "pcr.policy", "-a",
                      "fixedtpm|fixedparent|noda", "-i", "vmk.bin", "-u", "v.pub", "-r",
                      "v.priv"],
                     ["tpm2_flushcontext", "-t"],
                     ["tpm2_load", "-C", "srk.ctx", "-u", "v.pub", "-r", "v.priv", "-c",
                      "v.ctx"],
                     ["tpm2_flushcontext", "-t"]):
            _tools(p, tmp_path, *argv)
        sealed_at = len(p.exchanges)
        for argv in (["tpm2_startauthsession", "--policy-session", "-S", "pol.ctx"],
                     ["tpm2_policypcr", "-S", "pol.ctx", "-l", "sha256:7,11"],
                     ["tpm2_unseal", "-c", "v.ctx", "-p", "session:pol.ctx", "-o", "out.bin"],
                     ["tpm2_flushcontext", "pol.ctx"], ["tpm2_flushcontext", "-t"]):
            _tools(p, tmp_path, *argv)
        assert (tmp_path / "out.bin").read_bytes() == VMK_HEADER + vmk
        # the boot-time unseal alone, as a sniffer on a booting laptop sees it
        return list(p.exchanges)[sealed_at:], vmk


def _waveform_round_trip(exchanges: list[Exchange], secret: bytes, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> tuple[int, list[Exchange], str]:
    """Encode with every odd case, start mid-command, draw, ``tpmseal decode --json``: every
    frame after the cut must come back."""
    want = _pairs(exchanges)
    # the analyser starts on the first command's last byte (written alone): that exchange is
    # lost, the rest has every odd case
    first = encode(want[:1])
    go = first.index(next(t for t in first if t.mosi[:5] == b"\x00\xd4\x00\x18\x20"))
    cut = max(i for i, t in enumerate(first[:go])
              if t.mosi[0] == 0 and t.mosi[1] == 0xD4 and t.mosi[3] in FIFO_REGISTERS)
    host = SpiHost(wait_rate=0.25, abort_rate=0.05, dummy=0xFF)
    transactions = first[cut:] + encode(want[1:], host, localities=(0, 2, 4, 0), odd_every=4)
    rc, out, err = _decode(tmp_path, vcd(transactions), "bus.vcd", secret, capsys,
                           "--bus", "spi", "--json")
    got = read_jsonl(out)
    assert _mismatches(got, want[1:]) == []
    assert [e.client for e in got] == [(0, 2, 4, 0)[i % 4] for i in range(len(want) - 1)]
    warnings = [line for line in err.splitlines() if line.startswith("tpmseal: warning: ")]
    assert any("(the capture began mid-command?); skipped" in w for w in warnings)
    assert any("commandReady" in w and "aborts a command" in w for w in warnings)
    assert any("shorter than their header's size" in w for w in warnings)
    return rc, got, err


@needs_sigrok
def test_tpmseal_seal_unseal_over_spi_leaks_nothing(tcg_sim: Simulator, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    exchanges, secret = _tpmseal_flow(tcg_sim, tmp_path)
    rc, got, err = _waveform_round_trip(exchanges, secret, tmp_path, capsys)
    assert rc == 0 and "LEAK" not in err
    assert {"Unseal", "StartAuthSession", "Create"} <= {e.name for e in got}


@needs_sigrok
@needs_tools
def test_tpm2_tools_salted_flow_over_spi_leaks_nothing(sim: Simulator, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    exchanges, secret = _tools_salted_flow(sim, tmp_path)
    rc, got, err = _waveform_round_trip(exchanges, secret, tmp_path, capsys)
    assert rc == 0 and "LEAK" not in err and "Unseal" in {e.name for e in got}


@needs_sigrok
@needs_tools
def test_tpm2_tools_plaintext_flow_over_spi_leaks(sim: Simulator, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    exchanges, secret = _tools_plain_flow(sim, tmp_path)
    rc, _, err = _waveform_round_trip(exchanges, secret, tmp_path, capsys)
    assert rc == ExitCode.LEAK_FOUND
    leaks = [line for line in err.splitlines() if line.startswith("tpmseal: LEAK: ")]
    assert any("Create" in line and "command" in line for line in leaks)
    assert any("Unseal" in line and "response" in line for line in leaks)


@needs_sigrok
@needs_tools
def test_bitlocker_style_unseal_over_spi_leaks_the_vmk(sim: Simulator, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    exchanges, vmk = _bitlocker_flow(sim, tmp_path)
    rc, got, err = _waveform_round_trip(exchanges, vmk, tmp_path, capsys)
    assert rc == ExitCode.LEAK_FOUND
    [leak] = [line for line in err.splitlines() if line.startswith("tpmseal: LEAK: ")]
    assert "Unseal" in leak and "response" in leak
    assert {"PolicyPCR", "Unseal"} <= {e.name for e in got}
