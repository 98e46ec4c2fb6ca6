"""SPI capture inputs and the PTP FIFO reassembler's edge cases, on real swtpm frames.

Each input form ``tpmseal decode`` reads (sigrok-cli annotation lines and JSON
trace, Saleae Logic 2 CSV, VCD in both layouts, sigrok .sr) and each bus
oddity the issue lists: header size bits 5:0, wait states where only bit 0
counts, responseRetry, commandReady aborts, all five localities, dummy MOSI
bytes, foreign devices, a capture that starts mid-command. Hostile input
raises only tpmseal's typed errors.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from ptp_encoder import (
    FIFO,
    STS,
    I2cHost,
    LpcHost,
    SpiHost,
    drive,
    encode,
    i2c_lines,
    lpc_lines,
    saleae_csv,
    sigrok_lines,
    vcd,
)
from tpmseal.cli.main import main
from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, ExitCode, TpmsealError
from tpmseal.session.auth import AuthSession
from tpmseal.sniff.analysis.leaks import scan
from tpmseal.sniff.analysis.ptp import FIFO_REGISTERS, reassemble
from tpmseal.sniff.analysis.registers import Access
from tpmseal.sniff.analysis.spi import SpiTransaction, decode_spi
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.sniff.formats.buses import detect_bus_format, load_bus
from tpmseal.sniff.formats.logic import detect_bus, map_channels, vcd_channels
from tpmseal.sniff.formats.offline import detect_format, load
from tpmseal.sniff.formats.pcapread import read_capture
from tpmseal.wire.constants import TPM_ALG, TPM_CC, TPMA_SESSION
from tpmseal.wire.structures import PcrSelection, PcrSelectionList

SIGROK = shutil.which("sigrok-cli")
needs_sigrok = pytest.mark.skipif(SIGROK is None,
                                  reason="sigrok-cli is not installed (Debian `sigrok-cli`)")
Pairs = list[tuple[bytes, bytes]]


@pytest.fixture
def pairs(tpm: Tpm, bus: CapturingTransport) -> Pairs:
    """Real frames: short and long responses (PCR_Read of 8 SHA-256 PCRs is > 64 bytes)."""
    tpm.get_random(16)
    tpm.pcr_read(PcrSelectionList((PcrSelection(TPM_ALG.SHA256, tuple(range(8))),)))
    tpm.get_random(48)
    out = [(e.command, e.response) for e in bus.exchanges]
    return [(c, r) for c, r in out if r is not None]


def _frames(exchanges: list) -> Pairs:  # type: ignore[type-arg]
    return [(e.command, e.response) for e in exchanges]


def test_linux_bursts_and_odd_cases_round_trip(pairs: Pairs) -> None:
    host = SpiHost(burst=32, wait_rate=0.5, abort_rate=0.2)
    r = decode_spi(encode(pairs * 3, host, localities=(0, 1, 2, 3, 4), odd_every=2))
    assert _frames(r.exchanges) == pairs * 3
    assert [e.client for e in r.exchanges] == [i % 5 for i in range(9)]


@pytest.mark.parametrize("burst", [1, 33, 64])
def test_size_is_bits_5_to_0(pairs: Pairs, burst: int) -> None:
    """A 33..64-byte transfer has bit 5 set in its size: masking with 0x1F loses it."""
    r = decode_spi(encode(pairs, SpiHost(burst=burst)))
    assert _frames(r.exchanges) == pairs and r.warnings == [
        "1 SPI transaction(s) outside the TPM's address window 0xD4xxxx (another device?) "
        "were ignored"]


def test_wait_states_only_bit_0_counts(pairs: Pairs) -> None:
    cmd, rsp = pairs[0]
    host = SpiHost()
    host.exchange(cmd, rsp)
    waited = []
    for t in host.out:
        if t.mosi[1] != 0xD4:
            waited.append(t)
            continue
        # 0xFE and 0x80 have bit 0 clear (wait on), 0x03 has it set (go on)
        miso = t.miso[:3] + b"\xfe\x80\xfe\x03" + t.miso[4:]
        mosi = t.mosi[:4] + b"\xff\xff\xff" + t.mosi[4:]
        waited.append(SpiTransaction(mosi, miso))
    assert _frames(decode_spi(waited).exchanges) == [(cmd, rsp)]


@pytest.mark.parametrize("dummy", [0x00, 0xFF])
def test_dummy_mosi_bytes_during_reads_are_ignored(pairs: Pairs, dummy: int) -> None:
    assert _frames(decode_spi(encode(pairs, SpiHost(dummy=dummy))).exchanges) == pairs


def test_capture_starting_mid_command_skips_the_fragment(pairs: Pairs) -> None:
    transactions = encode(pairs, SpiHost(burst=8))
    go = next(i for i, t in enumerate(transactions)
              if t.mosi[1] == 0xD4 and t.mosi[3] == STS and t.mosi[4:5] == b"\x20")
    fifo_writes = [i for i, t in enumerate(transactions[:go])
                   if t.mosi[0] & 0x80 == 0 and t.mosi[3] in FIFO_REGISTERS]
    assert len(fifo_writes) == 3  # 8 bytes, 3 bytes, the last byte alone
    r = decode_spi(transactions[fifo_writes[1]:])  # the first command's header is lost
    assert _frames(r.exchanges) == pairs[1:]
    assert any("do not start with a TPM header (the capture began mid-command?)" in w
               for w in r.warnings)
    assert any("response bytes" in w and "follow no command" in w for w in r.warnings)


def test_capture_starting_mid_response_skips_it(pairs: Pairs) -> None:
    transactions = encode(pairs, SpiHost(burst=8))
    go = next(i for i, t in enumerate(transactions)
              if t.mosi[1] == 0xD4 and t.mosi[3] == STS and t.mosi[4:5] == b"\x20")
    r = decode_spi(transactions[go + 1:])
    assert _frames(r.exchanges) == pairs[1:]


def test_response_retry_and_command_ready() -> None:
    cmd = bytes.fromhex("80010000000c0000017b0008")
    rsp = bytes.fromhex("800100000014000000000008") + bytes(range(8))
    w = [Access(0, FIFO, True, cmd), Access(0, STS, True, b"\x20"),
         Access(0, FIFO, False, rsp[:10]), Access(0, STS, True, b"\x02"),  # responseRetry
         Access(0, FIFO, False, rsp[:4]), Access(0, FIFO, False, rsp[4:] + b"\xff\xff"),
         Access(0, STS, True, b"\x40"),
         Access(1, FIFO, True, cmd[:5]), Access(1, STS, True, b"\x40"),   # abort
         Access(1, FIFO, True, cmd), Access(1, STS, True, b"\x20"),
         Access(1, FIFO, False, rsp[:10]), Access(1, STS, True, b"\x40")]  # abandoned
    r = reassemble(w)
    assert [(e.client, e.command, e.response) for e in r.exchanges] == [
        (0, cmd, rsp), (1, cmd, None)]
    assert r.warnings == [
        "locality 1: commandReady  aborts a command of 5 bytes before tpmGo",
        "locality 1: commandReady  aborts the response before it was read whole"]


def test_wrong_size_command_is_skipped() -> None:
    cmd = bytes.fromhex("80010000000c0000017b0008")
    r = reassemble([Access(2, FIFO, True, cmd + b"\x00", 1.5, "at line 7"),
                    Access(2, STS, True, b"\x20", 1.6, "at line 8")])
    assert r.exchanges == [] and r.warnings == [
        "locality 2: the command ended by tpmGo at line 8 has 13 bytes, its header says 12; "
        "skipped"]


def test_sigrok_lines_and_saleae_csv_are_detected(pairs: Pairs, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    transactions = encode(pairs, SpiHost(wait_rate=0.3))
    for name, text in (("spi.txt", sigrok_lines(transactions)),
                       ("spi.csv", saleae_csv(transactions))):
        data = text.encode()
        assert detect_format(data) == ("sigrok" if name.endswith("txt") else "saleae-csv")
        assert _frames(load(data).exchanges) == pairs
        (tmp_path / name).write_bytes(data)
        assert main(["decode", "--color", "never", str(tmp_path / name)]) == 0
        out, _ = capsys.readouterr()
        assert out.count("=== #") == 3 and "PCR_Read" in out and "client 0" in out


def test_sigrok_lines_with_sample_numbers() -> None:
    lines = sigrok_lines(encode([(bytes.fromhex("80010000000c0000017b0008"),
                                  bytes.fromhex("800100000014000000000008") + bytes(8))]))
    numbered = "".join(f"{i * 10}-{i * 10 + 9} {line}\n"
                       for i, line in enumerate(lines.splitlines()))
    assert len(load_bus(numbered.encode(), "sigrok").exchanges) == 1


@needs_sigrok
@pytest.mark.parametrize("layout", ["lines", "one-line", "sr", "jsontrace"])
def test_real_sigrok_cli_reads_the_waveform(pairs: Pairs, tmp_path: Path, layout: str) -> None:
    wave = vcd(encode(pairs, SpiHost(wait_rate=0.3)), names=("SCLK", "SS", "MOSI", "MISO"),
               one_line=layout == "one-line")
    data = wave
    if layout in ("sr", "jsontrace"):
        (tmp_path / "w.vcd").write_bytes(wave)
        argv = [str(SIGROK), "-I", "vcd", "-i", str(tmp_path / "w.vcd")]
        if layout == "sr":
            argv += ["-O", "srzip", "-o", str(tmp_path / "w.sr")]
        else:
            argv += ["-P", "spi:clk=SCLK:mosi=MOSI:miso=MISO:cs=SS", "-A",
                     "spi=mosi-transfer:miso-transfer", "--protocol-decoder-jsontrace"]
        done = subprocess.run(argv, capture_output=True, timeout=120, check=True)
        data = (tmp_path / "w.sr").read_bytes() if layout == "sr" else done.stdout
    fmt = {"lines": "vcd", "one-line": "vcd", "sr": "sr", "jsontrace": "sigrok-json"}[layout]
    assert detect_format(data) == fmt
    cap = load(data)
    assert _frames(cap.exchanges) == pairs
    if layout == "jsontrace":  # the trace carries time: microseconds into the capture
        assert 0 < cap.exchanges[0].started < cap.exchanges[1].started < 1


@needs_sigrok
def test_channels_override(pairs: Pairs, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    wave = vcd(encode(pairs[:1]), names=("D0", "D1", "D2", "D3"))
    path = tmp_path / "d.vcd"
    path.write_bytes(wave)
    assert main(["decode", str(path)]) == ExitCode.BAD_INPUT
    _, err = capsys.readouterr()
    assert err.startswith("tpmseal: error: the capture's channels (D0, D1, D2, D3) fit no bus")
    assert main(["decode", "--json", "--bus", "spi", "--channels",
                 "clk=D0,cs=D1,mosi=D2,miso=D3", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert out.count("\n") == 1 and '"command_name":"GetRandom"' in out


def test_missing_sigrok_cli_is_a_missing_tool(pairs: Pairs, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.vcd"
    path.write_bytes(vcd(encode(pairs[:1])))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["decode", str(path)]) == ExitCode.MISSING_TOOL
    _, err = capsys.readouterr()
    assert err.startswith("tpmseal: error: sigrok-cli is not installed") and err.count("\n") == 1


def test_bus_applies_to_bus_captures_only(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "raw"
    path.write_bytes(bytes.fromhex("80010000000c0000017b0008"))
    assert main(["decode", "--bus", "spi", str(path)]) == ExitCode.USAGE
    _, err = capsys.readouterr()
    assert "--bus applies to logic-analyser captures, not raw" in err


def test_vcd_header_is_tokenised() -> None:
    one_line = b"$timescale 1ns $end $scope module m $end $var wire 1 ! SCK $end " \
               b"$var wire 8 # bus $end $var wire 1 $ CS# [0] $end $upscope $end " \
               b"$enddefinitions $end #0 0! 1$"
    assert vcd_channels(one_line) == ["SCK", "CS#"]
    assert detect_bus_format(one_line) == "vcd"


@pytest.mark.parametrize("fmt", ["sigrok", "sigrok-json", "saleae-csv"])
def test_hostile_decoder_output_raises_only_typed_errors(pairs: Pairs, fmt: str) -> None:
    transactions = encode(pairs[:2], SpiHost(wait_rate=0.3))
    text = {"sigrok": sigrok_lines(transactions), "saleae-csv": saleae_csv(transactions),
            "sigrok-json": '{"traceEvents": [' + ",".join(
                f'{{"ph": "B", "ts": {i}, "pid": "spi-1", "tid": "{side} transfer", '
                f'"name": "{data.hex(" ")}"}}'
                for i, t in enumerate(transactions)
                for side, data in (("MISO", t.miso), ("MOSI", t.mosi))) + "]}"}[fmt]
    data = text.encode()
    assert _frames(load_bus(data, fmt).exchanges) == pairs[:2]
    rng = random.Random(16)
    for _ in range(300):
        b = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            i = rng.randrange(len(b))
            op = rng.randrange(3)
            if op == 0:
                b[i] = rng.choice(b"0123456789abcdefABCDEF ,:\n\"{}[]-x")
            elif op == 1:
                del b[i : i + rng.randrange(1, 40)]
            else:
                b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
        with contextlib.suppress(TpmsealError):  # anything else fails the test
            load_bus(bytes(b), fmt)


def test_hostile_transactions_never_crash() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randrange(0, 12)
        mosi = bytes([rng.randrange(256), 0xD4, rng.randrange(0x50), rng.choice((0x18, 0x24))]
                     + [rng.randrange(256) for _ in range(n)])
        miso = bytes(rng.randrange(256) for _ in range(len(mosi)))
        decode_spi([SpiTransaction(mosi, miso)] * rng.randrange(1, 4))


def test_empty_jsontrace_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="no traceEvents list"):
        load_bus(b'{"traceEvents": 5}', "sigrok-json")


def test_sessions_are_followed_through_a_bus_capture(tpm: Tpm, bus: CapturingTransport,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An unsalted, unbound session's "encrypted" GetRandom is read off the SPI capture."""
    # a careless TSS: no refusal to encrypt under a key from public nonces, confirmed or not
    monkeypatch.setattr(AuthSession, "check_can_encrypt", lambda self: None)
    monkeypatch.setattr(AuthSession, "check_can_encrypt_response", lambda self: None,
                        raising=False)
    s = tpm.start_session(attributes=TPMA_SESSION.continueSession | TPMA_SESSION.encrypt)
    random_bytes = tpm.get_random(16, s)
    pairs = [(e.command, e.response) for e in bus.exchanges if e.response is not None]
    cap = load(sigrok_lines(encode(pairs, SpiHost(wait_rate=0.3))).encode(), bus="spi")
    rand = [e for e in cap.exchanges if e.code == TPM_CC.GetRandom][-1]
    assert rand.deciphering is not None and rand.deciphering.response is not None
    assert rand.deciphering.response.plaintext == random_bytes
    assert [(lk.command, lk.direction) for lk in scan(cap.exchanges, [random_bytes])] == [
        ("GetRandom", "response (decrypted with a key derivable from the bus)")]


@pytest.mark.parametrize("bus_name", ["i2c", "lpc"])
def test_hostile_i2c_and_lpc_output_raises_only_typed_errors(pairs: Pairs,
                                                             bus_name: str) -> None:
    if bus_name == "i2c":
        i2c = I2cHost(busy_rate=0.2)
        drive(pairs[:1], i2c)
        text = i2c_lines(i2c.events)
    else:
        lpc = LpcHost(wait_rate=0.2, error_rate=0.1, abort_rate=0.1)
        drive(pairs[:1], lpc)
        text = lpc_lines(lpc.cycles)
    assert _frames(load_bus(text.encode(), "sigrok").exchanges) == pairs[:1]
    rng = random.Random(99)
    lines = text.splitlines()
    for _ in range(200):
        mutated = list(lines)
        for _ in range(rng.randrange(1, 10)):
            i = rng.randrange(len(mutated))
            op = rng.randrange(3)
            if op == 0:
                del mutated[i]
            elif op == 1:
                mutated.insert(i, mutated[rng.randrange(len(mutated))])
            else:
                line = mutated[i]
                j = rng.randrange(len(line))
                mutated[i] = line[:j] + rng.choice("0123456789abcdefF :x") + line[j + 1:]
        with contextlib.suppress(TpmsealError):
            load_bus("\n".join(mutated).encode(), "sigrok")


def test_hostile_vcd_headers_raise_only_typed_errors() -> None:
    header = vcd(encode([(bytes.fromhex("80010000000c0000017b0008"),
                          bytes.fromhex("800100000014000000000008") + bytes(8))]))[:400]
    rng = random.Random(5)
    for _ in range(300):
        b = bytearray(header)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.choice(b"$ \n#!01abendvar")
        with contextlib.suppress(TpmsealError):
            vcd_channels(bytes(b))


def test_decode_writes_a_pcap_of_a_bus_capture(pairs: Pairs, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "spi.txt", tmp_path / "spi.pcap"
    path.write_text(sigrok_lines(encode(pairs, localities=(0, 2))))
    assert main(["decode", "--json", "--pcap", str(out), str(path)]) == 0
    capsys.readouterr()
    assert out.stat().st_mode & 0o777 == 0o600
    cap = read_capture(out.read_bytes())  # one TCP flow per locality, read flow by flow
    assert sorted((e.command, e.response) for e in cap.exchanges) == sorted(pairs)


@pytest.mark.parametrize(("names", "bus"), [
    (["SPI_CLK", "spi_cs_n", "TPM_MOSI", "miso"], "spi"),
    (["SCLK", "SS#", "COPI", "CIPO"], "spi"),
    (["LCLK", "LFRAME#", "LAD[0]", "LAD[1]", "LAD[2]", "LAD[3]"], "lpc"),
    (["I2C_SCL", "I2C_SDA"], "i2c"),
])
def test_usual_channel_names(names: list[str], bus: str) -> None:
    assert detect_bus(names, {}) == bus
    mapped = map_channels(bus, names, {})
    assert mapped is not None and sorted(mapped.values()) == sorted(names)


def test_a_capture_without_tpm_traffic_says_so(pairs: Pairs) -> None:
    lines = sigrok_lines(encode(pairs)).encode()
    cap = load_bus(lines, "sigrok", bus="i2c")  # SPI lines read as I2C: nothing
    assert cap.exchanges == [] and cap.warnings[-1].startswith("no TPM command was found")


def test_response_retry_after_the_whole_response_is_quiet() -> None:
    cmd = bytes.fromhex("80010000000c0000017b0008")
    rsp = bytes.fromhex("800100000014000000000008") + bytes(range(8))
    r = reassemble([Access(0, FIFO, True, cmd), Access(0, STS, True, b"\x20"),
                    Access(0, FIFO, False, rsp), Access(0, STS, True, b"\x02"),
                    Access(0, FIFO, False, rsp), Access(0, STS, True, b"\x40")])
    assert [(e.command, e.response) for e in r.exchanges] == [(cmd, rsp)]
    assert r.warnings == []


def _interleaved(transactions: list[SpiTransaction]) -> bytes:
    """What ``sigrok-cli -B spi`` writes: a MISO then a MOSI byte per word."""
    return bytes(b for t in transactions for pair in zip(t.miso, t.mosi, strict=True)
                 for b in pair)


def test_sigrok_binary_output_is_split_by_its_headers(pairs: Pairs, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    transactions = encode(pairs * 2, SpiHost(wait_rate=0.4), localities=(0, 3), odd_every=2)
    data = _interleaved(transactions)
    cap = load(data, "sigrok-bin")
    assert _frames(cap.exchanges) == pairs * 2
    # the SPI flash read of the noise is not a TPM header: skipped, said once
    assert any("start no TPM transaction and were skipped" in w for w in cap.warnings)
    path = tmp_path / "spi.bin"
    path.write_bytes(data[:-4])  # cut inside the last transaction (its commandReady)
    assert main(["decode", "--json", "--format", "sigrok-bin", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "the SPI stream ends inside a transaction" in err and out.count("\n") == 6
    with pytest.raises(BadInputError, match="odd length"):
        load(data[:-1], "sigrok-bin")


@needs_sigrok
def test_real_sigrok_binary_output(pairs: Pairs, tmp_path: Path) -> None:
    (tmp_path / "w.vcd").write_bytes(vcd(encode(pairs, SpiHost(wait_rate=0.3))))
    done = subprocess.run([str(SIGROK), "-I", "vcd", "-i", str(tmp_path / "w.vcd"), "-P",
                           "spi:clk=SCK:mosi=MOSI:miso=MISO:cs=CS#", "-B", "spi"],
                          capture_output=True, timeout=120, check=True)
    assert _frames(load(done.stdout, "sigrok-bin").exchanges) == pairs


def test_hostile_binary_streams_never_crash() -> None:
    rng = random.Random(3)
    for _ in range(300):
        data = bytes(rng.choice((0x00, 0xD4, 0x01, 0x24, 0x18, 0x80, 0xFF, rng.randrange(256)))
                     for _ in range(2 * rng.randrange(0, 200)))
        load_bus(data, "sigrok-bin")

