"""A stand-in for /dev/tpmrm0: a pseudo-terminal relaying whole commands to an swtpm.

The machine running the suite has no TPM device, so the ``device:`` transport is
exercised through a pty in raw mode (no echo, no line editing: bytes pass as
written). The relay reads a whole command from the pty's master side (framed by
the size in its header, TPM 2.0 Part 1 §18.8), sends it to swtpm's data socket,
and writes the whole response back in one write, so the client's single read()
sees one response, as the kernel driver gives it (drivers/char/tpm/tpm-dev-common.c).
That holds for responses up to the line discipline's 4096-byte buffer, which is also
swtpm's TPM_PT_MAX_RESPONSE_SIZE.

Like the kernel resource manager (drivers/char/tpm/tpm2-space.c), it flushes what
a client left behind when the client closes the device: every transient object and
every loaded or saved session on the TPM. The relay is swtpm's only client, so
"everything on the TPM" is "everything this client left". It does not virtualise
handles as the kernel does: the client sees the TPM's own handle numbers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
import tty

from tpmseal.client.tpm import Tpm
from tpmseal.transport.base import TpmUri
from tpmseal.transport.stream import StreamTransport
from tpmseal.wire import commands as cmds

_FLUSHED_RANGES = (0x80000000, 0x02000000, 0x03000000)  # transients, loaded/saved sessions


class _Kept:
    """The relay's swtpm connection, lent to a Tpm that must not close it."""

    def __init__(self, inner: StreamTransport):
        self.inner = inner
        self.uri = inner.uri

    def send(self, command: bytes) -> bytes:
        return self.inner.send(command)

    def close(self) -> None:
        pass


class PtyRelay:
    """A pty whose slave path (``.path``) behaves like /dev/tpmrm0 in front of *upstream*."""

    def __init__(self, upstream: TpmUri):
        self._upstream = StreamTransport(upstream, 30.0)
        self._master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)  # from now on, a read on the master fails with EIO until a client opens
        self.commands = 0
        self.flushed: list[int] = []
        self.events: list[str] = []  # what happened, for failure messages
        self._dirty = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pty-relay", daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"device:{self.path}"

    @property
    def pts(self) -> str:
        """The pty's path, to bind-mount on /dev/tpmrm0 (tests/tpmrm_relay.py)."""
        return self.path

    def __enter__(self) -> PtyRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 65536)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                if buf:
                    self.events.append(f"client closed mid-command ({len(buf)} bytes)")
                buf = b""
                self._client_closed()
                self._stop.wait(0.01)  # no client has the slave open
                continue
            buf += chunk
            while len(buf) >= 10 and len(buf) >= int.from_bytes(buf[2:6], "big"):
                size = int.from_bytes(buf[2:6], "big")
                command, buf = buf[:size], buf[size:]
                self.commands += 1
                self.events.append(f"command {command[6:10].hex()}")
                self._dirty = True
                os.write(self._master, self._upstream.send(command))

    def _client_closed(self) -> None:
        """Flush what the client that just closed left on the TPM, as the kernel RM does."""
        if not self._dirty:
            return
        tpm = Tpm(_Kept(self._upstream))
        for first in _FLUSHED_RANGES:
            found = tpm.handles(first)
            self.events.append(f"client closed; {first:#x}: {[hex(h) for h in found]}")
            for handle in found:
                tpm.run(cmds.FlushContext(handle))
                self.flushed.append(handle)
        self._dirty = False  # only now: wait_idle() returns once the flushing is done

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until the relay has seen the last client close and has flushed after it."""
        deadline = time.monotonic() + timeout
        while self._dirty:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the pty relay did not see the client close: {self.events}")
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            os.close(self._master)
        self._upstream.close()
