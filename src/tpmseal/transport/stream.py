"""swtpm's data channel over a unix or TCP stream socket.

Framing: the response is read exactly by the size field of its 10-byte header
(TPM 2.0 Part 1 §18.8), however the bytes arrive. A peer that closes early or
stays silent past the time-out gives a :class:`TransportError`, never a hang.
"""

from __future__ import annotations

import _socket  # the C module under socket.py, whose own imports cost an unseal ~2 ms
import errno
import time

from tpmseal.errors import TransportError
from tpmseal.transport.base import TpmUri

HEADER = 10
MAX_FRAME = 1 << 16


def recv_exact(sock: _socket.socket, n: int, what: str, uri: str, got: int = 0,
               deadline: float | None = None) -> bytes:
    """Read exactly *n* bytes or raise :class:`TransportError`.

    With a *deadline* (``time.monotonic()`` value) the whole read must finish by
    then: a peer trickling one byte at a time cannot stretch the time-out.
    """
    buf = bytearray()
    while len(buf) < n:
        try:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            raise TransportError(f"TPM at {uri} did not answer in time",
                                 "check that the TPM or simulator is alive") from None
        except OSError as e:
            raise TransportError(f"lost the connection to the TPM at {uri}: "
                                 f"{e.strerror or e}") from None
        if not chunk:
            raise TransportError(
                f"TPM at {uri} closed the connection after {got + len(buf)} bytes of a {what}",
                "the simulator may have stopped or another client took over; retry")
        buf += chunk
    return bytes(buf)


def read_frame(sock: _socket.socket, uri: str, what: str = "response",
               deadline: float | None = None) -> bytes:
    """Read one TPM frame (header + body) from *sock*, by *deadline* if given."""
    head = recv_exact(sock, HEADER, what, uri, deadline=deadline)
    size = int.from_bytes(head[2:6], "big")
    if size < HEADER or size > MAX_FRAME:
        raise TransportError(f"TPM at {uri} sent a {what} with impossible size {size}")
    return head + recv_exact(sock, size - HEADER, what, uri, HEADER, deadline)


def _open(uri: TpmUri, timeout: float) -> _socket.socket:
    """Connect, closing the socket again if that fails."""
    if uri.scheme != "unix":
        import socket  # name resolution and address-family fallback: socket.py's

        t = socket.create_connection((uri.host, uri.port), timeout=timeout)
        t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return t
    deadline = time.monotonic() + timeout
    while True:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.connect(uri.path)
        except BlockingIOError:
            # a unix socket whose listen backlog is full answers EAGAIN at once: swtpm
            # serves one connection at a time and accepts the next only once it has
            # noticed that the previous client closed; wait for it, up to the time-out
            s.close()
            if time.monotonic() >= deadline:
                raise TimeoutError from None
            time.sleep(0.005)
            continue
        except BaseException:
            s.close()
            raise
        return s


def connect(uri: TpmUri, timeout: float) -> _socket.socket:
    """Connect to a unix or TCP socket with errors that say what to do."""
    try:
        s = _open(uri, timeout)
    except FileNotFoundError:
        raise TransportError(f"no TPM socket at {uri}",
                             "start one with `tpmseal sim start --state DIR` or fix --tpm"
                             ) from None
    except ConnectionRefusedError:
        raise TransportError(f"nothing listens at {uri}",
                             "start the simulator (`tpmseal sim start`) or fix --tpm") from None
    except PermissionError:
        raise TransportError(f"permission denied connecting to {uri}",
                             "run as a user that may open the socket") from None
    except TimeoutError:
        raise TransportError(f"connecting to {uri} timed out") from None
    except OSError as e:
        if e.errno in (errno.ENOTSOCK, errno.ECONNREFUSED):
            raise TransportError(f"{uri} is not a listening socket",
                                 "point --tpm at swtpm's data socket") from None
        raise TransportError(f"cannot connect to {uri}: {e.strerror or e}") from None
    s.settimeout(timeout)
    return s


class StreamTransport:
    """One connection to an swtpm data socket."""

    def __init__(self, uri: TpmUri, timeout: float):
        self.uri = str(uri)
        self._timeout = timeout
        self._sock = connect(uri, timeout)

    def send(self, command: bytes) -> bytes:
        deadline = time.monotonic() + self._timeout  # one time-out for the whole exchange
        try:
            self._sock.settimeout(self._timeout)
            self._sock.sendall(command)
        except OSError as e:
            raise TransportError(f"lost the connection to the TPM at {self.uri}: "
                                 f"{e.strerror or e}") from None
        return read_frame(self._sock, self.uri, deadline=deadline)

    def close(self) -> None:
        self._sock.close()
