"""A transport wrapper that records every command/response pair.

The in-process counterpart of the sniffer proxy: tests and benchmarks use it to
count TPM commands and to assert on the exact bytes that crossed the bus.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tpmseal.transport.base import Transport


@dataclass(frozen=True)
class Exchange:
    """One command and its response, with when they happened."""

    command: bytes
    response: bytes
    started: float
    finished: float

    @property
    def code(self) -> int:
        return int.from_bytes(self.command[6:10], "big")

    def __repr__(self) -> str:  # the bytes may carry secrets (e.g. a password-session Create)
        return (f"Exchange(code={self.code:#x}, command=<{len(self.command)} bytes>, "
                f"response=<{len(self.response)} bytes>, rc={self.rc:#x})")

    @property
    def rc(self) -> int:
        return int.from_bytes(self.response[6:10], "big")


@dataclass
class CapturingTransport:
    """Wraps a transport; ``exchanges`` lists what passed through it."""

    inner: Transport
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return self.inner.uri

    def send(self, command: bytes) -> bytes:
        t0 = time.monotonic()
        response = self.inner.send(command)
        self.exchanges.append(Exchange(command, response, t0, time.monotonic()))
        return response

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:  # never dump captured bytes (test failures print fixtures)
        return f"CapturingTransport({self.inner!r}, <{len(self.exchanges)} exchanges>)"

    def codes(self) -> list[int]:
        return [e.code for e in self.exchanges]

    def clear(self) -> None:
        self.exchanges.clear()
