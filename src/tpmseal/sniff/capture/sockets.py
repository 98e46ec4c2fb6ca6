"""Socket plumbing for the proxy: listeners, the upstream TPM, the control channel.

swtpm serves two sockets: the *data* channel carrying raw TPM
commands and responses, and the *control* channel (``<path>.ctrl`` for unix
sockets, port + 1 for TCP) on which tpm2-tss' ``swtpm`` TCTI sends swtpm ioctl
requests such as set-locality. The proxy frames and records the data channel;
the control channel is not TPM traffic and is relayed byte for byte.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import select
import socket
import stat
import threading
from pathlib import Path

from tpmseal.errors import TransportError, UsageError
from tpmseal.transport.base import TpmUri, Transport, open_transport, parse_uri
from tpmseal.transport.stream import connect, read_frame


def ctrl_uri(uri: TpmUri) -> TpmUri | None:
    """The swtpm control channel that goes with a data channel URI (None for devices)."""
    if uri.scheme == "unix":
        return TpmUri("unix", path=uri.path + ".ctrl")
    if uri.scheme == "tcp":
        if uri.port >= 65535:
            raise UsageError(f"{uri} leaves no port for its control channel (the next port, "
                             f"{uri.port + 1}, does not exist)",
                             "choose a TCP port below 65535")
        return TpmUri("tcp", host=uri.host, port=uri.port + 1)
    return None


def parse_listen(uri: str) -> TpmUri:
    """Parse a listen URI; unlike a TPM URI, ``tcp:HOST:0`` asks for a free port."""
    scheme, _, rest = uri.partition(":")
    host, _, port = rest.rpartition(":")
    if scheme == "tcp" and port == "0" and host:
        return TpmUri("tcp", host=host.strip("[]"), port=0)
    return parse_uri(uri)


def resolve_upstream(uri: str) -> TpmUri:
    """Parse an upstream URI; a ``sim:DIR`` simulator is started and named by its socket."""
    parsed = parse_uri(uri)
    if parsed.scheme == "sim":
        from tpmseal.transport.simulator import Simulator

        return parse_uri(Simulator(parsed.path).ensure_running())
    return parsed


def _remove_stale_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UsageError(f"{path} exists and is not a socket", "choose another --listen path")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: a leftover of a previous run
            return
    raise UsageError(f"something already listens on {path}", "stop it or choose another path")


def listen(uri: TpmUri) -> socket.socket:
    """A listening socket for a ``unix:`` or ``tcp:`` URI."""
    if uri.scheme == "unix":
        _remove_stale_socket(uri.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(uri.path)
        except OSError as e:
            s.close()
            raise UsageError(f"cannot listen on unix:{uri.path}: {e.strerror}",
                             hint="choose a writable path for the socket") from None
    elif uri.scheme == "tcp":
        family = socket.AF_INET6 if ":" in uri.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((uri.host, uri.port))
        except OSError as e:
            s.close()
            if e.errno == errno.EADDRINUSE:
                raise UsageError(f"{uri} is already in use", "choose another port") from None
            raise UsageError(f"cannot listen on {uri}: {e.strerror}",
                             hint="choose a free port or another address") from None
    else:
        raise UsageError(f"cannot listen on {uri}", "listen on unix:PATH or tcp:HOST:PORT")
    s.listen(64)
    return s


def bound_uri(sock: socket.socket, requested: TpmUri) -> TpmUri:
    """The URI a listening socket actually has (resolves TCP port 0)."""
    if requested.scheme == "tcp":
        return TpmUri("tcp", host=requested.host, port=int(sock.getsockname()[1]))
    return requested


def unlink_socket(uri: TpmUri) -> None:
    if uri.scheme == "unix":
        with contextlib.suppress(OSError):
            Path(uri.path).unlink()


class Upstream:
    """One connection to the TPM, opened on demand and reopened after a failure."""

    def __init__(self, uri: TpmUri, timeout: float):
        self.uri = uri
        self.timeout = timeout
        self._sock: _socket.socket | None = None  # transport/stream.py's kind
        self._transport: Transport | None = None

    def open(self) -> None:
        if self._sock is not None or self._transport is not None:
            return
        if self.uri.scheme in ("unix", "tcp"):
            self._sock = connect(self.uri, self.timeout)
        else:
            self._transport = open_transport(str(self.uri), self.timeout)

    def exchange(self, command: bytes) -> bytes:
        """Send one command, return its complete response; :class:`TransportError` on failure."""
        self.open()
        try:
            if self._transport is not None:
                return self._transport.send(command)
            assert self._sock is not None
            try:
                self._sock.sendall(command)
            except OSError as e:
                raise TransportError(f"lost the connection to the TPM at {self.uri}: "
                                     f"{e.strerror or e}") from None
            return read_frame(self._sock, str(self.uri))
        except TransportError:
            self.close()
            raise

    def abort(self) -> None:
        """Wake a thread blocked on the TPM (used when the proxy stops)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def relay(a: _socket.socket, b: _socket.socket, wake: _socket.socket) -> None:
    """Copy bytes both ways between *a* and *b* until either side closes or *wake* fires."""
    peers = {a: b, b: a}
    while True:
        ready, _, _ = select.select([a, b, wake], [], [])
        if wake in ready:
            return
        for src in ready:
            try:
                data = src.recv(65536)
                if not data:
                    return
                peers[src].sendall(data)
            except OSError:
                return


def drain(conn: socket.socket, stopping: threading.Event) -> None:
    """Swallow whatever a client still sends until it closes or *stopping* is set."""
    while not stopping.is_set():
        try:
            if not conn.recv(65536):
                return
        except TimeoutError:
            continue
        except OSError:
            return
