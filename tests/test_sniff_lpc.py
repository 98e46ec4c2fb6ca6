"""LPC bus captures: TPM cycles (START 0101b, I/O type) and memory cycles at 0xFED4xxxx.

The encoder's :class:`LpcHost` drives real swtpm frames one byte per cycle,
with long-wait SYNCs, SYNC Error answers and host aborts, both as clocks
(an LPC waveform) and as the annotations of sigrok's lpc decoder with
server/peripheral data rows. Debian 12's sigrok-cli ships the older lpc
decoder, which reads each cycle one clock late: on it, a waveform is refused
with a missing-tool error rather than decoded wrong.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from attacks.bus import interposer, tpm
from ptp_encoder import LpcHost, drive, lpc_lines, lpc_vcd
from tpmseal.cli.main import main
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.sniff.formats.jsonl import read_jsonl
from tpmseal.sniff.formats.logic import decoder_help
from tpmseal.sniff.formats.offline import load
from tpmseal.transport.simulator import Simulator

Pairs = list[tuple[bytes, bytes]]


@pytest.fixture
def pairs(tpm: Tpm, bus: CapturingTransport) -> Pairs:
    tpm.get_random(16)
    tpm.get_random(40)
    return [(e.command, e.response) for e in bus.exchanges if e.response is not None]


def _host(pairs: Pairs, **kw: object) -> LpcHost:
    host = LpcHost(**kw)  # type: ignore[arg-type]
    drive(pairs, host, localities=(0, 4, 1), odd_every=2)
    return host


@pytest.mark.parametrize("memory", [False, True])
def test_lpc_annotations_round_trip(pairs: Pairs, memory: bool) -> None:
    host = _host(pairs * 2, memory=memory, wait_rate=0.3, error_rate=0.05, abort_rate=0.05)
    cap = load(lpc_lines(host.cycles).encode())
    assert [(e.client, e.command, e.response) for e in cap.exchanges] == [
        (loc, c, r) for loc, (c, r) in zip((0, 4, 1, 0), pairs * 2, strict=True)]
    assert sum("commandReady" in w and "aborts a command" in w for w in cap.warnings) == 2


def test_legacy_io_and_other_memory_are_ignored(pairs: Pairs) -> None:
    host = _host(pairs)
    cycles = [(0, 0b0010, 0x0024, 0x80, [0]),          # START 0000: legacy I/O, not a TPM
              (0, 0b0110, 0xFEC00024, 0x80, [0]),      # memory outside 0xFED4xxxx
              *host.cycles]
    cap = load(lpc_lines(cycles).encode(), bus="lpc")
    assert [(e.command, e.response) for e in cap.exchanges] == pairs


@pytest.mark.parametrize("flow", ["tpmseal", "legacy"])
def test_lpc_capture_of_real_traffic(tcg_sim: Simulator, tmp_path: Path, flow: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    legacy = ["--legacy"] if flow == "legacy" else []
    with interposer(tcg_sim) as p:
        assert tpm(p, "seal", *legacy, "--input", str(key), "--output", str(blob),
                   *(["--allow-downgrade"] if legacy else [])).rc == 0
        assert tpm(p, "unseal", "--input", str(blob)).rc == 0
        pairs = [(e.command, e.response) for e in p.exchanges if e.response is not None]
    path = tmp_path / "lpc.txt"
    path.write_text(lpc_lines(_host(pairs, wait_rate=0.2).cycles))
    rc = main(["decode", "--json", "--bus", "lpc", "--secret", secret.hex(), str(path)])
    out, err = capsys.readouterr()
    assert [(e.command, e.response) for e in read_jsonl(out)] == pairs
    if flow == "legacy":
        assert rc == ExitCode.LEAK_FOUND and "LEAK: " in err
    else:
        assert rc == 0 and "LEAK" not in err


@pytest.mark.skipif(shutil.which("sigrok-cli") is None,
                    reason="sigrok-cli is not installed (Debian `sigrok-cli`)")
def test_lpc_waveform_needs_a_working_lpc_decoder(pairs: Pairs, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    host = _host(pairs[:1], wait_rate=0.3)
    path = tmp_path / "lpc.vcd"
    path.write_bytes(lpc_vcd(host.clocks))
    rc = main(["decode", "--json", str(path)])  # LFRAME#, LCLK, LAD0-3: the bus is LPC
    out, err = capsys.readouterr()
    if "peripheral-data" in decoder_help("lpc"):  # a fixed decoder: it must decode
        assert rc == 0 and [(e.command, e.response) for e in read_jsonl(out)] == pairs[:1]
    else:
        assert rc == ExitCode.MISSING_TOOL and out == ""
        assert err.startswith("tpmseal: error: the installed sigrok-cli's lpc decoder "
                              "(libsigrokdecode 0.5.3, as in Debian 12) reads each LPC cycle "
                              "one clock late") and err.count("\n") == 1
