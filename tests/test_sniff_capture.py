"""Captures: pcap written for Wireshark's TPM dissector, read back; JSON lines; raw streams;
``tpmseal decode`` of each format."""

from __future__ import annotations

import io
import json
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tpmseal.cli.main import main
from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, ExitCode
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.sniff.formats.jsonl import JsonlWriter, read_jsonl
from tpmseal.sniff.formats.offline import detect_format, load, read_raw
from tpmseal.sniff.formats.pcap import ACK, LINKTYPE_ETHERNET, PSH, PcapWriter, tcp_ipv4
from tpmseal.sniff.formats.pcapread import read_capture
from tpmseal.transport.base import parse_uri
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_ALG
from tpmseal.wire.structures import PcrSelection, PcrSelectionList

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed "
                                  "(Debian package `tshark`); Wireshark dissector not checked")
GET_RANDOM = bytes.fromhex("80010000000c0000017b0008")
RANDOM_RESPONSE = bytes.fromhex("800100000014000000000008") + b"\xab" * 8


@pytest.fixture
def traffic(sniffed: Proxy) -> list[Exchange]:
    """A few real exchanges from two clients."""
    sel = PcrSelectionList((PcrSelection(TPM_ALG.SHA256, (0, 7)),))
    with Tpm.open(sniffed.uri) as t:
        t.get_random(8)
        t.pcr_read(sel)
    with Tpm.open(sniffed.uri) as t:
        t.test_parms()
    return sniffed.exchanges


def _same(a: list[Exchange], b: list[Exchange]) -> None:
    assert [(e.command, e.response) for e in a] == [(e.command, e.response) for e in b]
    for x, y in zip(a, b, strict=True):
        assert abs(x.started - y.started) < 2e-6 and abs(x.finished - y.finished) < 2e-6


def test_pcap_round_trip(traffic: list[Exchange], tmp_path: Path) -> None:
    f = tmp_path / "c.pcap"
    w = PcapWriter(f)
    for ex in traffic:
        w(ex)
    w.close()
    assert f.stat().st_mode & 0o777 == 0o600  # captures hold key material
    cap = read_capture(f.read_bytes())
    assert cap.warnings == []
    _same(cap.exchanges, traffic)
    assert [e.client for e in cap.exchanges] == [1, 1, 2]


def test_pcap_ethernet_linktype(traffic: list[Exchange]) -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf, linktype=LINKTYPE_ETHERNET, port=2322)
    for ex in traffic:
        w(ex)
    assert struct.unpack("<I", buf.getvalue()[20:24])[0] == LINKTYPE_ETHERNET
    assert read_capture(buf.getvalue()).exchanges == []  # wrong port: nothing
    _same(read_capture(buf.getvalue(), port=2322).exchanges, traffic)


@needs_tshark
def test_tshark_decodes_the_command_names(traffic: list[Exchange], tmp_path: Path) -> None:
    assert TSHARK is not None
    f = tmp_path / "c.pcap"
    w = PcapWriter(f)
    for ex in traffic:
        w(ex)
    w.close()
    out = subprocess.run([TSHARK, "-r", str(f), "-Y", "tpm", "-T", "fields",
                          "-e", "tpm.req.cc", "-e", "tpm.resp.rc", "-e", "_ws.col.Info"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert [int(r[0], 16) for r in rows if r[0]] == [e.code for e in traffic]
    assert [int(r[1], 16) for r in rows if r[1]] == [e.rc for e in traffic]
    info = "\n".join(r[2] for r in rows)
    for name in ("GetRandom", "PCR_Read", "TestParms"):
        assert f"Command TPM2_CC_{name}" in info
    assert "[TPM Response], Response Code TPM2 Success" in info
    # and the pcapng that Wireshark saves it as reads back too
    ng = tmp_path / "c.pcapng"
    subprocess.run([TSHARK, "-r", str(f), "-F", "pcapng", "-w", str(ng)], check=True,
                   capture_output=True, timeout=60)
    assert ng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    _same(read_capture(ng.read_bytes()).exchanges, traffic)


def _pcap(linktype: int, packets: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for i, p in enumerate(packets):
        out += struct.pack("<IIII", 100 + i, 0, len(p), len(p)) + p
    return out


def test_reassembly_of_split_and_retransmitted_segments() -> None:
    lo = bytes([127, 0, 0, 1])

    def seg(src: int, dst: int, seq: int, data: bytes) -> bytes:
        return tcp_ipv4(lo, lo, src, dst, seq, 0, PSH | ACK, data)

    packets = [seg(50000, 2321, 10, GET_RANDOM[:5]),
               seg(50000, 2321, 10, GET_RANDOM[:5]),  # retransmission
               seg(50000, 2321, 15, GET_RANDOM[5:]),
               seg(2321, 50000, 90, RANDOM_RESPONSE[:11]),
               seg(2321, 50000, 95, RANDOM_RESPONSE[5:]),  # overlapping retransmission
               seg(50000, 2321, 22, GET_RANDOM)]  # a second command, never answered
    cap = read_capture(_pcap(101, packets))
    assert [(e.command, e.response) for e in cap.exchanges] == [
        (GET_RANDOM, RANDOM_RESPONSE), (GET_RANDOM, None)]
    assert cap.exchanges[0].started == 102.0 and cap.exchanges[0].finished == 104.0


def test_linux_cooked_ipv6_capture() -> None:
    def v6(sport: int, dport: int, data: bytes) -> bytes:
        tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, PSH | ACK, 65535, 0, 0)
        ip = struct.pack("!IHBB", 6 << 28, len(tcp) + len(data), 6, 64) + bytes(15) + b"\1" \
            + bytes(15) + b"\1"
        return ip + tcp + data

    def sll(ip: bytes) -> bytes:  # LINKTYPE_LINUX_SLL: 16-byte header, protocol last
        return bytes(14) + b"\x86\xdd" + ip

    cap = read_capture(_pcap(113, [sll(v6(40000, 2321, GET_RANDOM)),
                                   sll(v6(2321, 40000, RANDOM_RESPONSE))]))
    assert [(e.command, e.response) for e in cap.exchanges] == [(GET_RANDOM, RANDOM_RESPONSE)]


def test_jsonl_round_trip_keeps_interposition(tmp_path: Path) -> None:
    forged = bytes.fromhex("800100000014000000000008") + b"\xcd" * 8
    exs = [Exchange.passive(0, 1, GET_RANDOM, RANDOM_RESPONSE, 10.0, 10.5, 0.25),
           Exchange(1, 2, GET_RANDOM, forged, 11.0, 11.5, 0.001, GET_RANDOM, RANDOM_RESPONSE,
                    "response rewritten by hook"),
           Exchange(2, 2, GET_RANDOM, None, 12.0, 12.0, None, None, None, "hook never answered")]
    f = tmp_path / "c.jsonl"
    w = JsonlWriter(f)
    w.write_all(exs)
    w.close()
    assert read_jsonl(f.read_text()) == exs
    first = json.loads(f.read_text().splitlines()[0])
    assert first["tpm_ms"] == 250.0 and first["command_name"] == "GetRandom"
    assert first["response"]["params"][0] == {"name": "random_bytes", "type": "TPM2B_DIGEST",
                                              "offset": 10, "encrypted": False,
                                              "value": "ab" * 8}
    with pytest.raises(BadInputError, match="line 2: not JSON"):
        read_jsonl(f.read_text().splitlines()[0] + "\n{oops\n")


def test_raw_streams_and_format_detection() -> None:
    raw = GET_RANDOM + RANDOM_RESPONSE + GET_RANDOM
    cap = read_raw(raw)
    assert [(e.command, e.response) for e in cap.exchanges] == [
        (GET_RANDOM, RANDOM_RESPONSE), (GET_RANDOM, None)]
    assert cap.warnings == ["the stream ends with a command that has no response"]
    assert detect_format(raw) == "raw"
    assert detect_format(b'  {"index": 0}') == "jsonl"
    assert detect_format(struct.pack("<I", 0xA1B2C3D4)) == "pcap"
    assert detect_format(b"\x0a\x0d\x0d\x0a") == "pcap"
    with pytest.raises(BadInputError, match="cannot tell"):
        detect_format(b"hello")
    with pytest.raises(BadInputError, match="raw stream: stream ended inside a frame"):
        load(raw[:-3], "raw")


def _capture_files(traffic: list[Exchange], d: Path) -> dict[str, Path]:
    files = {"jsonl": d / "c.jsonl", "pcap": d / "c.pcap", "raw": d / "c.bin"}
    jw, pw = JsonlWriter(files["jsonl"]), PcapWriter(files["pcap"])
    for ex in traffic:
        jw(ex)
        pw(ex)
    jw.close()
    pw.close()
    files["raw"].write_bytes(b"".join(e.command + (e.response or b"") for e in traffic))
    return files


@pytest.mark.parametrize("fmt", ["jsonl", "pcap", "raw"])
def test_tpmseal_decode_each_format(fmt: str, traffic: list[Exchange], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    f = _capture_files(traffic, tmp_path)[fmt]
    assert main(["decode", str(f)]) == 0
    out = capsys.readouterr().out
    assert out.count(">>> Command: ") == 3 and ">>> Command: PCR_Read" in out
    assert out.count("<<< Response to ") == 3
    assert main(["decode", "--json", "--format", fmt, str(f)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["command_name"] for x in lines] == [e.name for e in traffic]


def test_tpmseal_decode_finds_secrets_and_fails_cleanly(
        traffic: list[Exchange], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _capture_files(traffic, tmp_path)
    random = (traffic[0].response or b"")[12:]
    assert main(["decode", "--color", "never", "--secret", random.hex(),
                 str(files["pcap"])]) == ExitCode.LEAK_FOUND
    cap = capsys.readouterr()
    assert "secret visible in plaintext at offset 0xc" in cap.out
    # each leak once, then a one-line summary that does not repeat it
    assert cap.err.splitlines() == [
        "tpmseal: LEAK: secret 1 (raw, 8 bytes) in the response of #0 GetRandom at offset 0xc",
        "tpmseal: error: a secret crossed the bus 1 time(s); see the LEAK line(s) above"]
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x80\x01garbage")
    assert main(["decode", str(bad)]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("tpmseal: error: raw stream: ") and err.count("\n") == 1
    assert main(["decode", str(tmp_path / "missing")]) == ExitCode.USAGE


DUMPCAP = shutil.which("dumpcap")


@pytest.mark.skipif(DUMPCAP is None, reason="dumpcap is not installed (Debian `tshark`)")
def test_real_loopback_capture(sim: Simulator, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """What dumpcap/tcpdump record while a client talks TCP to the TPM decodes too."""
    assert DUMPCAP is not None
    with Proxy("tcp:127.0.0.1:0", sim.uri) as p:
        port = parse_uri(p.uri).port
        f = tmp_path / "lo.pcapng"
        cap = subprocess.Popen([DUMPCAP, "-i", "lo", "-f", f"tcp port {port}", "-w", str(f)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert cap.stderr is not None
            started = cap.stderr.readline()  # "Capturing on 'Loopback: lo'" once ready
            if "Capturing on" not in started:
                cap.kill()
                pytest.skip(f"dumpcap cannot capture on lo here: {started.strip()}")
            time.sleep(1.0)  # the message comes a little before the filter is live
            with Tpm.open(p.uri) as t:
                t.get_random(8)
                t.test_parms()
            time.sleep(0.3)  # let the last packets reach the capture buffer
        finally:
            cap.send_signal(signal.SIGTERM)
            cap.communicate(timeout=10)
        sent = p.exchanges
    assert main(["decode", "--port", str(port), str(f)]) == 0
    out, err = capsys.readouterr()
    assert ">>> Command: GetRandom" in out and ">>> Command: TestParms" in out, err
    got = load(f.read_bytes(), port=port).exchanges
    assert [(e.command, e.response) for e in got] == [(e.command, e.response) for e in sent]


def test_raw_stream_resynchronises_after_a_mid_stream_start() -> None:
    error = bytes.fromhex("80010000000a00000143")  # TPM_RC_COMMAND_CODE, also SelfTest's code
    cap = read_raw(RANDOM_RESPONSE + error + GET_RANDOM + RANDOM_RESPONSE + GET_RANDOM + error)
    assert [(e.command, e.response) for e in cap.exchanges] == [
        (GET_RANDOM, RANDOM_RESPONSE), (GET_RANDOM, error)]
    assert cap.warnings == ["the stream starts with a response (the capture began mid-stream?); "
                            "2 unpaired response(s) skipped"]
    # a lost response: the next command starts a new exchange
    cap = read_raw(GET_RANDOM + GET_RANDOM + RANDOM_RESPONSE)
    assert [(e.command, e.response) for e in cap.exchanges] == [
        (GET_RANDOM, None), (GET_RANDOM, RANDOM_RESPONSE)]
    assert cap.warnings == ["1 command(s) have no response, the first at byte offset 0"]


def test_decode_of_a_capture_that_began_mid_stream(
        traffic: list[Exchange], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = b"".join(e.command + (e.response or b"") for e in traffic)
    f = tmp_path / "tail.bin"
    f.write_bytes(raw[len(traffic[0].command):])  # the tee started after the first command
    assert main(["decode", "--color", "never", str(f)]) == 0
    out, err = capsys.readouterr()
    assert out.count(">>> Command: ") == len(traffic) - 1
    assert ">>> Command: PCR_Read" in out and "decode error" not in out
    assert err.count("\n") == 1 and "the stream starts with a response" in err
