"""Transports: ``send(command bytes) -> response bytes`` and nothing else.

One URI syntax names a TPM everywhere (Python API, ``--tpm``, ``TPMSEAL_TPM``,
``sniff --listen/--upstream``):

=========================  ==============================================
``device:/dev/tpmrm0``     Linux character device (default; also /dev/tpm0)
``unix:/path/tpm.sock``    swtpm data socket (unix domain)
``tcp:127.0.0.1:2321``     swtpm data socket (TCP)
``sim:/path/to/state``     a tpmseal-managed swtpm, started on first use
=========================  ==============================================

tpm2-tools' TCTI strings are accepted as well (:mod:`tpmseal.transport.tcti`):
``swtpm:path=P`` is ``unix:P``, ``swtpm:host=H,port=N`` is ``tcp:H:N``, ``mssim:...``
speaks the Microsoft simulator protocol, bare ``swtpm``/``mssim`` mean localhost:2321.

Where no URI is given, the first set of ``$TPMSEAL_TPM``, ``$TPM2TOOLS_TCTI`` and
``$TCTI`` names the TPM; failing those, ``device:/dev/tpmrm0``.
"""

from __future__ import annotations

import os
from typing import Protocol

from tpmseal.errors import UsageError
from tpmseal.records import record

DEFAULT_URI = "device:/dev/tpmrm0"
DEFAULT_TIMEOUT = 120.0
#: Environment variables naming the TPM when no URI is given, first set wins.
URI_ENV = ("TPMSEAL_TPM", "TPM2TOOLS_TCTI", "TCTI")
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
        if self.scheme == "mssim":
            return f"mssim:host={self.host},port={self.port}"
        return f"{self.scheme}:{self.path}"


def parse_uri(uri: str) -> TpmUri:
    """Parse a TPM URI or TCTI string; raise :class:`UsageError` naming the accepted forms."""
    scheme, sep, rest = uri.partition(":")
    if rest and scheme in ("device", "unix", "sim"):
        return TpmUri(scheme, path=rest)
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if (not host or not port.isascii() or not port.isdigit() or len(port) > 5
                or not 0 < int(port) < 65536):
            raise UsageError(f"bad TCP TPM URI {uri!r}",
                             "use tcp:HOST:PORT, e.g. tcp:127.0.0.1:2321")
        return TpmUri("tcp", host=host.strip("[]"), port=int(port))
    from tpmseal.transport import tcti  # tpm2-tools' forms: kept off the unseal path

    forms = ("use device:/dev/tpmrm0, unix:/path/tpm.sock, tcp:HOST:PORT, sim:STATE_DIR, "
             "or a TCTI such as swtpm:path=SOCKET, swtpm:host=H,port=P or mssim:host=H,port=P")
    name = tcti.tcti_name(scheme)
    if name in tcti.NAMES and not (sep and not rest and name == "device"):
        return tcti.parse(name, rest)
    hint = tcti.unsupported_hint(scheme)
    if hint:
        raise UsageError(f"unsupported TCTI {scheme!r} in {uri!r}", hint)
    if not sep or not rest:
        raise UsageError(f"bad TPM URI {uri!r}", forms)
    raise UsageError(f"unknown TPM URI scheme {scheme!r} in {uri!r}", forms)


def default_uri() -> str:
    """The first of ``$TPMSEAL_TPM``, ``$TPM2TOOLS_TCTI``, ``$TCTI`` set, else the kernel
    resource manager device."""
    for name in URI_ENV:
        value = os.environ.get(name)
        if value:
            return value
    return DEFAULT_URI


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
    parsed = parse_uri(uri or default_uri())
    if parsed.scheme == "device":
        from tpmseal.transport.device import DeviceTransport

        return DeviceTransport(parsed.path, timeout)
    from tpmseal.transport.stream import StreamTransport

    if parsed.scheme == "sim":
        from tpmseal.transport.simulator import Simulator

        sim = Simulator(parsed.path)
        sim.ensure_running()
        return StreamTransport(parse_uri(sim.uri), timeout)
    if parsed.scheme == "mssim":
        from tpmseal.transport.mssim import MssimTransport

        return MssimTransport(parsed, timeout)
    return StreamTransport(parsed, timeout)
