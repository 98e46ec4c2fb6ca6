"""The sniffing proxy against a real swtpm: framing, concurrency, control channel, shutdown."""

from __future__ import annotations

import errno
import io
import itertools
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from tpmseal.client.tpm import Tpm
from tpmseal.errors import TransportError, UsageError
from tpmseal.sniff.analysis.leaks import LeakMonitor
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.analysis.render import TextWriter
from tpmseal.sniff.capture.proxy import Proxy, observer_name
from tpmseal.sniff.formats.jsonl import JsonlWriter
from tpmseal.transport.base import open_transport, parse_uri
from tpmseal.transport.simulator import Simulator
from tpmseal.transport.stream import read_frame
from tpmseal.wire.constants import TPM_CC

GET_RANDOM_16 = bytes.fromhex("80010000000c0000017b0010")
PTM_GET_CAPABILITY = 1  # swtpm control channel request (swtpm_ioctl -c)


def _connect(uri: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(parse_uri(uri).path)
    return s


def _sniff_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tpmseal-sniff-")]


def test_records_an_exchange(sniffed: Proxy) -> None:
    with Tpm.open(sniffed.uri) as t:
        got = t.get_random(16)
    [ex] = sniffed.exchanges
    assert ex.name == "GetRandom" and ex.code == TPM_CC.GetRandom
    assert ex.command == GET_RANDOM_16
    assert ex.response is not None and ex.response.endswith(got)
    assert ex.rc == 0 and ex.rc_text == "0x0 TPM_RC_SUCCESS"
    assert ex.tpm_seconds is not None and 0 < ex.tpm_seconds < 1
    assert ex.started <= ex.finished and ex.client >= 1
    assert not ex.interposed and ex.note == ""


def test_client_writing_byte_by_byte(sniffed: Proxy) -> None:
    with _connect(sniffed.uri) as s:
        for b in GET_RANDOM_16 * 2:
            s.send(bytes([b]))
            time.sleep(0.001)  # make each byte its own read on the proxy side
        r1, r2 = read_frame(s, "test"), read_frame(s, "test")
    assert len(r1) == len(r2) == 28
    assert [e.command for e in sniffed.exchanges] == [GET_RANDOM_16] * 2


def test_pipelined_commands_in_one_write(sniffed: Proxy) -> None:
    startup_state = bytes.fromhex("80010000000c000001440001")
    with _connect(sniffed.uri) as s:
        s.sendall(GET_RANDOM_16 + startup_state + GET_RANDOM_16)
        responses = [read_frame(s, "test") for _ in range(3)]
    exs = sniffed.exchanges
    assert [e.name for e in exs] == ["GetRandom", "Startup", "GetRandom"]
    assert [e.response for e in exs] == responses
    assert exs[1].rc_text == "0x100 TPM_RC_INITIALIZE"  # already started
    assert len({e.client for e in exs}) == 1


def test_concurrent_clients_are_serialized(sniffed: Proxy) -> None:
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with Tpm(open_transport(sniffed.uri)) as t:
                for _ in range(10):
                    assert len(t.get_random(16)) == 16
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    exs = sniffed.exchanges
    assert len(exs) == 80 and len({e.client for e in exs}) == 8
    assert [e.index for e in exs] == list(range(80))
    assert all(e.name == "GetRandom" and e.rc == 0 for e in exs)
    for a, b in itertools.pairwise(exs):  # one exchange at a time on the TPM
        assert a.finished <= b.started


def test_stop_closes_everything(sim: Simulator, tmp_path: Path) -> None:
    before = set(threading.enumerate())
    sock = tmp_path / "p.sock"
    p = Proxy(f"unix:{sock}", sim.uri).start()
    idle = _connect(p.uri)  # a client that never sends: stop must not wait for it
    ctrl = _connect(f"unix:{sock}.ctrl")
    with Tpm.open(p.uri) as t:
        t.get_random(4)
    p.stop()
    assert idle.recv(1) == b"" and ctrl.recv(1) == b""
    idle.close()
    ctrl.close()
    assert not sock.exists() and not Path(f"{sock}.ctrl").exists()
    assert not _sniff_threads()
    assert set(threading.enumerate()) <= before
    p.stop()  # idempotent
    with Tpm.open(sim.uri) as t:  # the simulator's data connection was released
        assert len(t.get_random(4)) == 4


def test_control_channel_is_relayed(sniffed: Proxy) -> None:
    assert sniffed.ctrl_uri is not None
    with _connect(sniffed.ctrl_uri) as c:
        c.sendall(struct.pack(">I", PTM_GET_CAPABILITY))
        reply = c.recv(64)
    assert len(reply) == 8 and reply[:4] == bytes(4)  # TPM_SUCCESS + capability bits
    assert sniffed.exchanges == []  # control traffic is not TPM traffic


def test_garbage_closes_that_client_only(sniffed: Proxy) -> None:
    with _connect(sniffed.uri) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(10) == b""
    assert any("not a TPM 2.0 command" in e for e in sniffed.errors)
    with Tpm.open(sniffed.uri) as t:
        assert len(t.get_random(8)) == 8


def test_client_closing_mid_command(sniffed: Proxy) -> None:
    with _connect(sniffed.uri) as s:
        s.sendall(GET_RANDOM_16[:7])
    deadline = time.monotonic() + 5
    while not sniffed.errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sniffed.errors == ["client 1: stream ended inside a command: 7 of 12 bytes received "
                              "(at byte offset 0)"]
    assert sniffed.exchanges == []


def test_tcp_listener_with_control_port(sim: Simulator) -> None:
    with Proxy("tcp:127.0.0.1:0", sim.uri) as p:
        uri = parse_uri(p.uri)
        assert uri.port > 0 and p.ctrl_uri == f"tcp:127.0.0.1:{uri.port + 1}"
        assert p.tools_tcti == f"swtpm:host=127.0.0.1,port={uri.port}"
        with Tpm.open(p.uri) as t:
            t.get_random(8)
        with socket.create_connection(("127.0.0.1", uri.port + 1), timeout=5) as c:
            c.sendall(struct.pack(">I", PTM_GET_CAPABILITY))
            assert c.recv(64)[:4] == bytes(4)
        assert [e.name for e in p.exchanges] == ["GetRandom"]


def test_wait_for_and_clear(sniffed: Proxy) -> None:
    with Tpm.open(sniffed.uri) as t:
        t.get_random(1)
        assert len(sniffed.wait_for(1)) == 1
        sniffed.clear()
        t.get_random(1)
    [ex] = sniffed.wait_for(1)
    assert ex.index == 1  # indices keep counting across clear()
    with pytest.raises(TimeoutError, match="1 of 2 exchanges"):
        sniffed.wait_for(2, timeout=0.05)


def test_upstream_must_be_reachable(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="no TPM socket"):
        Proxy(f"unix:{tmp_path}/p.sock", f"unix:{tmp_path}/missing.sock").start()
    assert not (tmp_path / "p.sock").exists()


def test_listen_path_checks(sim: Simulator, tmp_path: Path) -> None:
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(UsageError, match="exists and is not a socket"):
        Proxy(f"unix:{plain}", sim.uri).start()
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # bound, never listening: a leftover
    with Proxy(f"unix:{stale}", sim.uri) as p, Tpm.open(p.uri) as t:
        t.get_random(1)
        with pytest.raises(UsageError, match="already listens"):
            Proxy(f"unix:{stale}", sim.uri).start()


def test_a_failing_observer_is_removed(sniffed: Proxy) -> None:
    seen: list[int] = []

    def broken(ex: Exchange) -> None:
        raise BrokenPipeError("stdout went away")

    sniffed.observers += [broken, lambda ex: seen.append(ex.index)]
    with Tpm.open(sniffed.uri) as t:
        t.get_random(1)
        t.get_random(1)
    assert seen == [0, 1] and broken not in sniffed.observers
    assert len(sniffed.errors) == 1 and "stdout went away" in sniffed.errors[0]


class _BrokenStdout(io.StringIO):
    name = "<stdout>"

    def write(self, s: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_a_failing_observer_has_a_human_name(sniffed: Proxy, tmp_path: Path) -> None:
    heard: list[str] = []
    sniffed.on_error = heard.append
    sniffed.observers += [TextWriter(_BrokenStdout()), LeakMonitor([b"abcd"])]
    with Tpm.open(sniffed.uri) as t:
        t.get_random(1)
    assert sniffed.errors == heard == [
        "the text output (stdout) failed and was removed: Broken pipe"]
    assert observer_name(LeakMonitor([b"abcd"])) == "the leak scanner"
    jw = JsonlWriter(tmp_path / "c.jsonl")
    assert observer_name(jw) == f"the JSON lines output ({tmp_path / 'c.jsonl'})"
    jw.close()
    assert observer_name(lambda ex: None) == "observer test_a_failing_observer_has_a_human_" \
        "name.<locals>.<lambda>"


def test_stopping_with_a_half_sent_command_says_so(sim: Simulator, tmp_path: Path) -> None:
    p = Proxy(f"unix:{tmp_path}/p.sock", sim.uri).start()
    try:
        s = _connect(p.uri)
        s.sendall(GET_RANDOM_16[:5])
        deadline = time.monotonic() + 5
        while not _sniff_threads_named("client-1") and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # let the proxy read the five bytes
    finally:
        p.stop()
        s.close()
    assert p.errors == ["client 1: the sniffer stopped while the client was still sending a "
                        "command (5 bytes received); it was not forwarded"]


def _sniff_threads_named(suffix: str) -> list[threading.Thread]:
    return [t for t in _sniff_threads() if t.name.endswith(suffix)]


def test_upstream_failures_name_the_upstream_option(tmp_path: Path) -> None:
    with pytest.raises(TransportError) as e:
        Proxy(f"unix:{tmp_path}/p.sock", f"unix:{tmp_path}/missing.sock").start()
    assert "--upstream" in e.value.one_line() and "--tpm" not in e.value.one_line()
    with pytest.raises(TransportError) as e:
        Proxy(f"unix:{tmp_path}/p.sock", f"device:{tmp_path}/tpm0").start()
    assert e.value.hint is not None and "use --upstream sim:DIR" in e.value.hint
    with pytest.raises(UsageError, match="bad --upstream URI"):
        Proxy(f"unix:{tmp_path}/p.sock", "nonsense").start()


def test_tcp_port_65535_leaves_no_control_port(sim: Simulator) -> None:
    with pytest.raises(UsageError, match="leaves no port for its control channel"):
        Proxy("tcp:127.0.0.1:65535", sim.uri)
    with pytest.raises(UsageError, match="leaves no port"):
        Proxy("tcp:127.0.0.1:0", "tcp:127.0.0.1:65535").start()
