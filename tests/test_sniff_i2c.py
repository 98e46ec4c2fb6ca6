"""I2C bus captures (TCG I2C interface) of real swtpm traffic, decoded by the real sigrok-cli.

The encoder (tests/ptp_encoder.py, :class:`I2cHost`) drives the FIFO
protocol over one-byte registers with TPM_LOC_SEL, NACKs while the TPM is
busy, stop+start or repeated-start reads, and an EEPROM on the same bus.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from attacks.bus import expect_ok, interposer, tpm
from ptp_encoder import I2cHost, drive, i2c_lines, i2c_vcd
from tpmseal.cli.main import main
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.sniff.analysis.i2c import I2cEvent, decode_i2c
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.sniff.formats.jsonl import read_jsonl
from tpmseal.sniff.formats.offline import detect_format, load
from tpmseal.transport.simulator import Simulator

needs_sigrok = pytest.mark.skipif(shutil.which("sigrok-cli") is None,
                                  reason="sigrok-cli is not installed (Debian `sigrok-cli`)")
Pairs = list[tuple[bytes, bytes]]


@pytest.fixture
def pairs(tpm: Tpm, bus: CapturingTransport) -> Pairs:
    tpm.get_random(16)
    tpm.get_random(40)
    return [(e.command, e.response) for e in bus.exchanges if e.response is not None]


def _events(pairs: Pairs, **kw: object) -> list[tuple[str, int]]:
    host = I2cHost(**kw)  # type: ignore[arg-type]
    drive(pairs, host, localities=(0, 3), odd_every=2)
    return host.events


@pytest.mark.parametrize("repeated_start", [False, True])
def test_sigrok_i2c_lines_round_trip(pairs: Pairs, repeated_start: bool) -> None:
    data = i2c_lines(_events(pairs * 2, busy_rate=0.3, repeated_start=repeated_start)).encode()
    assert detect_format(data) == "sigrok"
    cap = load(data)
    assert [(e.client, e.command, e.response) for e in cap.exchanges] == [
        (loc, c, r) for loc, (c, r) in zip((0, 3, 0, 3), pairs * 2, strict=True)]
    # three EEPROM reads (a write of its address pointer, then a read)
    assert "6 I2C message(s) to addresses other than the TPM's 0x2e were ignored" in cap.warnings


def test_the_tpm_address_is_found(pairs: Pairs) -> None:
    data = i2c_lines(_events(pairs, address=0x2C)).encode()
    assert [(e.command, e.response) for e in load(data, bus="i2c").exchanges] == pairs


def test_a_nacked_write_byte_is_not_data() -> None:
    cmd = bytes.fromhex("80010000000c0000017b0008")
    ev = [I2cEvent("start"), I2cEvent("address", 0x2E), I2cEvent("ack"), I2cEvent("data", 0x24),
          I2cEvent("ack"), *[e for b in cmd for e in (I2cEvent("data", b), I2cEvent("ack"))],
          I2cEvent("data", 0x99), I2cEvent("nack"), I2cEvent("stop"),
          I2cEvent("start"), I2cEvent("address", 0x2E), I2cEvent("ack"), I2cEvent("data", 0x18),
          I2cEvent("ack"), I2cEvent("data", 0x20), I2cEvent("ack"), I2cEvent("stop")]
    r = decode_i2c(ev)
    assert [(e.command, e.response) for e in r.exchanges] == [(cmd, None)]


def _plain_flow(sim: Simulator, tmp_path: Path) -> tuple[Pairs, bytes]:
    """tpmseal's legacy seal (no parameter encryption) and its unseal: the secret is on the bus."""
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    with interposer(sim) as p:
        assert tpm(p, "seal", "--legacy", "--allow-downgrade", "--input", str(key), "--output",
                   str(blob)).rc == 0
        pairs = [(e.command, e.response) for e in p.exchanges if e.response is not None]
    return pairs, secret


def _sealed_flow(sim: Simulator, tmp_path: Path) -> tuple[Pairs, bytes]:
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    with interposer(sim) as p:
        assert tpm(p, "seal", "--input", str(key), "--output", str(blob)).rc == 0
        expect_ok(tpm(p, "unseal", "--input", str(blob)), secret)
        pairs = [(e.command, e.response) for e in p.exchanges if e.response is not None]
    return pairs, secret


@needs_sigrok
@pytest.mark.parametrize("flow", ["tpmseal", "legacy"])
def test_i2c_waveform_of_real_traffic(tcg_sim: Simulator, tmp_path: Path, flow: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    pairs, secret = (_sealed_flow if flow == "tpmseal" else _plain_flow)(tcg_sim, tmp_path)
    path = tmp_path / "i2c.vcd"
    path.write_bytes(i2c_vcd(_events(pairs, busy_rate=0.1, burst=32)))
    rc = main(["decode", "--json", "--secret", secret.hex(), str(path)])
    out, err = capsys.readouterr()
    got = read_jsonl(out)
    assert [(e.command, e.response) for e in got] == pairs  # the bus was detected from SCL/SDA
    if flow == "tpmseal":
        assert rc == 0 and "LEAK" not in err
    else:
        assert rc == ExitCode.LEAK_FOUND and "LEAK: " in err and "Create" in err
