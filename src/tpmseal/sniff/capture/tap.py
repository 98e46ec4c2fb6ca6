"""An in-process tap: a transport wrapper that records exchanges like the proxy does.

Where a test or benchmark drives the :class:`~tpmseal.client.tpm.Tpm` itself,
wrapping its transport is simpler than a proxy socket: the tap records the same
:class:`~tpmseal.sniff.analysis.record.Exchange` objects, so the decoder, the renderer and
the leak scanner work on either.
"""

from __future__ import annotations

import time

from tpmseal.sniff.analysis.record import Exchange
from tpmseal.transport.base import Transport


class CapturingTransport:
    """Wraps a transport; ``exchanges`` lists what passed through it."""

    def __init__(self, inner: Transport):
        self.inner = inner
        self.exchanges: list[Exchange] = []

    @property
    def uri(self) -> str:
        return self.inner.uri

    def send(self, command: bytes) -> bytes:
        t0 = time.time()
        response = self.inner.send(command)
        t1 = time.time()
        self.exchanges.append(
            Exchange.passive(len(self.exchanges), 0, command, response, t0, t1, t1 - t0))
        return response

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:  # never dump captured bytes (test failures print fixtures)
        return f"CapturingTransport({self.inner!r}, <{len(self.exchanges)} exchanges>)"

    def codes(self) -> list[int]:
        return [e.code for e in self.exchanges]

    def clear(self) -> None:
        self.exchanges.clear()
