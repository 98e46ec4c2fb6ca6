"""Transports fail with clear TransportErrors, never hang; URIs parse per one table.

Misbehaving peers are tiny servers in a thread (unix and TCP): one that closes
in the middle of the header or the body, one that never answers (with a short
time-out), one that sends an impossible size. Permission checks run in a forked
child that drops root, since root bypasses them.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tpmseal.errors import ExitCode, TransportError, UsageError
from tpmseal.transport.base import DEFAULT_URI, TpmUri, default_uri, open_transport, parse_uri
from tpmseal.transport.device import DeviceTransport
from tpmseal.transport.simulator import Simulator
from tpmseal.transport.stream import StreamTransport

GET_RANDOM = bytes.fromhex("80010000000c0000017b0008")
OK_RESPONSE = bytes.fromhex("80010000001400000000" "0008" "0102030405060708")

# ---------------------------------------------------------------------- URIs


@pytest.mark.parametrize(("uri", "parsed"), [
    ("device:/dev/tpmrm0", TpmUri("device", path="/dev/tpmrm0")),
    ("device:/dev/tpm0", TpmUri("device", path="/dev/tpm0")),
    ("unix:/run/swtpm/tpm.sock", TpmUri("unix", path="/run/swtpm/tpm.sock")),
    ("unix:relative/tpm.sock", TpmUri("unix", path="relative/tpm.sock")),
    ("unix:/a:b/tpm.sock", TpmUri("unix", path="/a:b/tpm.sock")),
    ("tcp:127.0.0.1:2321", TpmUri("tcp", host="127.0.0.1", port=2321)),
    ("tcp:localhost:1", TpmUri("tcp", host="localhost", port=1)),
    ("tcp:[::1]:2321", TpmUri("tcp", host="::1", port=2321)),
    ("tcp:tpm.example:65535", TpmUri("tcp", host="tpm.example", port=65535)),
    ("sim:/tmp/state", TpmUri("sim", path="/tmp/state")),
])
def test_parse_uri(uri: str, parsed: TpmUri) -> None:
    assert parse_uri(uri) == parsed
    if parsed.scheme != "tcp" or ":" not in parsed.host:
        assert str(parsed) == uri


@pytest.mark.parametrize(("uri", "words"), [
    ("", "bad TPM URI"),
    ("/dev/tpmrm0", "bad TPM URI"),
    ("device:", "bad TPM URI"),
    ("unix:", "bad TPM URI"),
    ("tcp:127.0.0.1", "bad TCP"),
    ("tcp:127.0.0.1:", "bad TCP"),
    ("tcp::2321", "bad TCP"),
    ("tcp:host:0", "bad TCP"),
    ("tcp:host:65536", "bad TCP"),
    ("tcp:host:port", "bad TCP"),
    ("tcp:host:-1", "bad TCP"),
    ("http://tpm", "unknown TPM URI scheme"),
    ("mssim:127.0.0.1:2321", "bad mssim TCTI option"),
])
def test_parse_uri_rejects(uri: str, words: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_uri(uri)
    assert words in e.value.message
    assert e.value.hint and ("tcp:" in e.value.hint)
    assert e.value.exit_code == ExitCode.USAGE


def test_default_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TPMSEAL_TPM", raising=False)
    assert default_uri() == DEFAULT_URI == "device:/dev/tpmrm0"
    monkeypatch.setenv("TPMSEAL_TPM", "tcp:127.0.0.1:2321")
    assert default_uri() == "tcp:127.0.0.1:2321"
    monkeypatch.setenv("TPMSEAL_TPM", "")
    assert default_uri() == DEFAULT_URI


def test_open_transport_uses_environment(monkeypatch: pytest.MonkeyPatch,
                                         sim: Simulator) -> None:
    monkeypatch.setenv("TPMSEAL_TPM", sim.uri)
    t = open_transport()
    try:
        assert t.uri == sim.uri
        assert t.send(GET_RANDOM)[6:10] == b"\0\0\0\0"
    finally:
        t.close()


def test_sim_uri_reaches_running_simulator(sim: Simulator) -> None:
    t = open_transport(f"sim:{sim.state}")
    try:
        assert t.send(GET_RANDOM)[6:10] == b"\0\0\0\0"
    finally:
        t.close()


# -------------------------------------------------------------- nothing there


def _error(uri: str, timeout: float = 2.0) -> TransportError:
    t0 = time.monotonic()
    with pytest.raises(TransportError) as e:
        open_transport(uri, timeout=timeout).send(GET_RANDOM)
    assert time.monotonic() - t0 < timeout + 1.0
    assert e.value.exit_code == ExitCode.TPM_UNREACHABLE
    assert "\n" not in e.value.one_line()
    return e.value


def test_unix_path_missing(tmp_path: Path) -> None:
    e = _error(f"unix:{tmp_path}/nope.sock")
    assert "no TPM socket at" in e.message and "nope.sock" in e.message
    assert e.hint and "tpmseal sim start" in e.hint


def test_unix_socket_file_without_listener(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))  # the file exists, nobody listens
    s.close()
    assert stat.S_ISSOCK(path.stat().st_mode)
    e = _error(f"unix:{path}")
    assert "nothing listens at" in e.message
    assert e.hint and "sim" in e.hint


@pytest.mark.parametrize("kind", ["regular-file", "directory"])
def test_unix_path_is_not_a_socket(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "thing"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"not a socket")
    e = _error(f"unix:{path}")
    assert str(path) in e.message
    assert any(w in e.message for w in ("nothing listens", "not a listening socket",
                                        "cannot connect"))


def test_unix_path_too_long(tmp_path: Path) -> None:
    e = _error("unix:/" + "x" * 200)
    assert e.message.endswith("AF_UNIX path too long")


def test_tcp_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # a port that was free a moment ago; nobody listens
    e = _error(f"tcp:127.0.0.1:{port}")
    assert "nothing listens at tcp:127.0.0.1:" in e.message


def test_device_missing() -> None:
    e = _error("device:/nonexistent")
    assert e.message == "no TPM device at /nonexistent"
    assert e.hint and "sim" in e.hint


def test_device_is_a_directory(tmp_path: Path) -> None:
    e = _error(f"device:{tmp_path}")
    assert "cannot open" in e.message and str(tmp_path) in e.message


# ---------------------------------------------------------- permission denied


def _as_nobody(action: Callable[[], object]) -> str:
    """Run *action* in a forked child without root; return what it raised."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                action()
                msg = "no error"
            except TransportError as e:
                msg = f"TransportError|{e.message}|{e.hint}"
            except BaseException as e:
                msg = f"{type(e).__name__}|{e}"
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_unix_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "private.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    try:
        os.chmod(tmp_path, 0o755)
        os.chmod(path, 0o600)
        got = _as_nobody(lambda: open_transport(f"unix:{path}", timeout=1))
    finally:
        srv.close()
    kind, message, hint = got.split("|")
    assert kind == "TransportError"
    assert message == f"permission denied connecting to unix:{path}"
    assert "user" in hint


def test_device_permission_denied(tmp_path: Path) -> None:
    dev = tmp_path / "tpm0"
    dev.write_bytes(b"")
    os.chmod(tmp_path, 0o755)
    os.chmod(dev, 0o600)
    got = _as_nobody(lambda: DeviceTransport(str(dev), 1))
    kind, message, hint = got.split("|")
    assert kind == "TransportError"
    assert message == f"permission denied opening {dev}"
    assert "tss" in hint


# ------------------------------------------------------------- device transport


def test_device_transport_frames_and_timeout(tmp_path: Path) -> None:
    """A FIFO stands in for the character device: whatever is written comes back."""
    fifo = tmp_path / "tpm0"
    os.mkfifo(fifo)
    t = DeviceTransport(str(fifo), 0.2)
    try:
        assert t.uri == f"device:{fifo}"
        assert t.send(GET_RANDOM) == GET_RANDOM  # one write, one whole read
        lying = GET_RANDOM[:2] + (40).to_bytes(4, "big") + GET_RANDOM[6:]
        with pytest.raises(TransportError, match="truncated response"):
            t.send(lying)
        t0 = time.monotonic()
        with pytest.raises(TransportError, match=r"did not answer in 0\.2s"):
            t.send(b"")  # nothing becomes readable
        assert time.monotonic() - t0 < 1.5
    finally:
        t.close()


# ------------------------------------------------------------ misbehaving peers


class Peer:
    """A one-connection server that reads a command and then misbehaves."""

    def __init__(self, family: int, address: str | tuple[str, int], behaviour: str) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(1)
        self.behaviour = behaviour
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            if self.behaviour == "close-at-once":
                return
            conn.recv(4096)
            if self.behaviour == "mid-header":
                conn.sendall(OK_RESPONSE[:5])
            elif self.behaviour == "mid-body":
                conn.sendall(OK_RESPONSE[:13])
            elif self.behaviour == "dribble":  # byte by byte, then the next command too
                for b in OK_RESPONSE:
                    conn.sendall(bytes([b]))
                    time.sleep(0.001)
                conn.recv(4096)
                conn.sendall(OK_RESPONSE)
                self.release.wait(5)
            elif self.behaviour == "tiny-size":
                conn.sendall(OK_RESPONSE[:2] + (6).to_bytes(4, "big") + OK_RESPONSE[6:])
            elif self.behaviour == "huge-size":
                conn.sendall(OK_RESPONSE[:2] + (1 << 20).to_bytes(4, "big") + OK_RESPONSE[6:])
            elif self.behaviour == "silent":
                self.release.wait(5)

    def close(self) -> None:
        self.release.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(params=["unix", "tcp"])
def make_peer(request: pytest.FixtureRequest,
              tmp_path: Path) -> Iterator[Callable[[str], tuple[Peer, str]]]:
    peers: list[Peer] = []

    def make(behaviour: str) -> tuple[Peer, str]:
        if request.param == "unix":
            path = str(tmp_path / f"p{len(peers)}.sock")
            peer = Peer(socket.AF_UNIX, path, behaviour)
            uri = f"unix:{path}"
        else:
            peer = Peer(socket.AF_INET, ("127.0.0.1", 0), behaviour)
            uri = f"tcp:127.0.0.1:{peer.sock.getsockname()[1]}"
        peers.append(peer)
        return peer, uri

    yield make
    for p in peers:
        p.close()


@pytest.mark.parametrize(("behaviour", "words"), [
    ("close-at-once", "the connection"),  # reset (unread command) or closed after 0 bytes
    ("mid-header", "closed the connection after 5 bytes of a response"),
    ("mid-body", "closed the connection after 13 bytes of a response"),
    ("tiny-size", "impossible size 6"),
    ("huge-size", "impossible size 1048576"),
    ("silent", "did not answer in time"),
])
def test_misbehaving_peer(make_peer: Callable[[str], tuple[Peer, str]], behaviour: str,
                          words: str) -> None:
    _, uri = make_peer(behaviour)
    t = open_transport(uri, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(TransportError) as e:
        t.send(GET_RANDOM)
    assert time.monotonic() - t0 < 2.0
    assert words in e.value.message and uri in e.value.message
    t.close()


def test_response_read_exactly_by_size(make_peer: Callable[[str], tuple[Peer, str]]) -> None:
    """A response arriving in 1-byte pieces is reassembled; the next one is not mixed in."""
    _, uri = make_peer("dribble")
    t = open_transport(uri, timeout=2)
    try:
        assert t.send(GET_RANDOM) == OK_RESPONSE
        assert t.send(GET_RANDOM) == OK_RESPONSE
    finally:
        t.close()


def test_send_after_peer_went_away(sim: Simulator) -> None:
    t = StreamTransport(parse_uri(sim.uri), 2)
    assert t.send(GET_RANDOM)[6:10] == b"\0\0\0\0"
    sim.stop()
    with pytest.raises(TransportError) as e:
        for _ in range(3):  # the first write may still land in the socket buffer
            t.send(GET_RANDOM)
    assert sim.uri in e.value.message
    t.close()


def _full_backlog(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A listening unix socket at *path* whose backlog is full: the next connect gets
    EAGAIN at once, as from an swtpm still busy with its previous client."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(0)
    held = []
    for _ in range(4):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(path)
        except BlockingIOError:
            c.close()
            break
        held.append(c)
    return server, held


def test_a_full_listen_backlog_is_waited_for_not_an_error(tmp_path: Path) -> None:
    """The transport waits for a full backlog within the time-out."""
    server, held = _full_backlog(str(tmp_path / "busy.sock"))

    def drain() -> None:
        time.sleep(0.2)
        for c in held:
            c.close()
        for _ in held:
            server.accept()[0].close()

    t = threading.Thread(target=drain)
    t.start()
    try:
        StreamTransport(TpmUri("unix", path=str(tmp_path / "busy.sock")), timeout=5).close()
    finally:
        t.join()
        server.close()


def test_a_backlog_that_stays_full_times_out(tmp_path: Path) -> None:
    server, held = _full_backlog(str(tmp_path / "stuck.sock"))
    try:
        with pytest.raises(TransportError, match="timed out"):
            StreamTransport(TpmUri("unix", path=str(tmp_path / "stuck.sock")), timeout=0.3)
    finally:
        for c in held:
            c.close()
        server.close()
