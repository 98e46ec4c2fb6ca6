"""Transports: ``send(command bytes) -> response bytes`` and nothing else.

One URI syntax names a TPM everywhere (Python API, ``--tpm``, ``TPMSEAL_TPM``):

=========================  ==============================================
``device:/dev/tpmrm0``     Linux character device (default; also /dev/tpm0)
``unix:/path/tpm.sock``    swtpm data socket (unix domain)
``tcp:127.0.0.1:2321``     swtpm data socket (TCP)
``sim:/path/to/state``     a tpmseal-managed swtpm, started on first use
=========================  ==============================================
"""

from __future__ import annotations

import os
from typing import Protocol

from tpmseal.errors import UsageError
from tpmseal.records import record

DEFAULT_URI = "device:/dev/tpmrm0"
DEFAULT_TIMEOUT = 120.0
#: the longest $TPMSEAL_TIMEOUT accepted: a day (socket time-outs overflow far beyond)
MAX_TIMEOUT = 86400.0


class Transport(Protocol):
    """Carries one TPM command and returns its complete response."""

    @property
    def uri(self) -> str: ...

    def send(self, command: bytes) -> bytes: ...

    def close(self) -> None: ...


@record
class TpmUri:
    """A parsed TPM URI."""

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.scheme == "tcp":
            return f"tcp:{self.host}:{self.port}"
        return f"{self.scheme}:{self.path}"


def parse_uri(uri: str) -> TpmUri:
    """Parse a TPM URI; raise :class:`UsageError` naming the accepted forms."""
    scheme, sep, rest = uri.partition(":")
    forms = "use device:/dev/tpmrm0, unix:/path/tpm.sock, tcp:HOST:PORT or sim:STATE_DIR"
    if not sep or not rest:
        raise UsageError(f"bad TPM URI {uri!r}", forms)
    if scheme in ("device", "unix", "sim"):
        return TpmUri(scheme, path=rest)
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if (not host or not port.isascii() or not port.isdigit() or len(port) > 5
                or not 0 < int(port) < 65536):
            raise UsageError(f"bad TCP TPM URI {uri!r}",
                             "use tcp:HOST:PORT, e.g. tcp:127.0.0.1:2321")
        return TpmUri("tcp", host=host.strip("[]"), port=int(port))
    raise UsageError(f"unknown TPM URI scheme {scheme!r} in {uri!r}", forms)


def default_uri() -> str:
    """``$TPMSEAL_TPM`` if set, else the kernel resource manager device."""
    return os.environ.get("TPMSEAL_TPM") or DEFAULT_URI


def default_timeout() -> float:
    """``$TPMSEAL_TIMEOUT`` seconds if set, else 120 (RSA key generation is slow on chips)."""
    raw = os.environ.get("TPMSEAL_TIMEOUT")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= MAX_TIMEOUT:  # also false for NaN
        raise UsageError(f"bad TPMSEAL_TIMEOUT {raw[:40]!r}",
                         f"give a number of seconds above 0 and at most {MAX_TIMEOUT:g}")
    return value


def open_transport(uri: str | None = None, timeout: float | None = None) -> Transport:
    """Open the TPM named by *uri* (default: :func:`default_uri`)."""
    timeout = default_timeout() if timeout is None else timeout
    from tpmseal.transport.device import DeviceTransport
    from tpmseal.transport.stream import StreamTransport

    parsed = parse_uri(uri or default_uri())
    if parsed.scheme == "device":
        return DeviceTransport(parsed.path, timeout)
    if parsed.scheme == "sim":
        from tpmseal.transport.simulator import Simulator

        sim = Simulator(parsed.path)
        sim.ensure_running()
        return StreamTransport(parse_uri(sim.uri), timeout)
    return StreamTransport(parsed, timeout)
