"""A stand-in for /dev/tpmrm0 for peers that only open the kernel's device.

cryptsetup's systemd-tpm2 token plugin (systemd 252) ignores SYSTEMD_TPM2_DEVICE and
the TCTI variables: it looks for /sys/class/tpmrm and opens /dev/tpmrm0. So a pty
stands in for the device: the relay reads whole commands from the pty's master (the
size field in the header), passes each to swtpm and writes the response back, as
the kernel's resource manager does; :meth:`PtyRelay.flush` then flushes what the
client left loaded. The peer runs in a private mount namespace where /dev is a
tmpfs of links to the real nodes plus the pty bound on /dev/tpmrm0, and /sys/class
a tmpfs holding tpmrm/tpmrm0: nothing changes outside that namespace.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import threading
import tty
from collections.abc import Sequence
from pathlib import Path

from test_seal_support import _leftovers
from tpmseal.client.tpm import Tpm
from tpmseal.transport.base import open_transport
from tpmseal.wire import commands as cmds

_DEV_NODES = ("null", "zero", "urandom", "random", "full", "tty", "pts", "ptmx")


class PtyRelay:
    """Relays whole TPM commands between a pty and a simulator. Use as a context manager."""

    def __init__(self, uri: str):
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.pts = os.ttyname(self._slave)
        self.tpm = Tpm(open_transport(uri))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.commands = 0

    def __enter__(self) -> PtyRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.tpm.close()
        os.close(self.master)
        os.close(self._slave)

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            buf += os.read(self.master, 65536)
            while len(buf) >= 10:
                size = struct.unpack(">I", buf[2:6])[0]
                if len(buf) < size:
                    break
                command, buf = buf[:size], buf[size:]
                with self._lock:
                    response = self.tpm.transport.send(command)
                    self.commands += 1
                os.write(self.master, response)

    def flush(self) -> list[int]:
        """Flush what the last client left, as the kernel does when it closes the device."""
        with self._lock:
            left = _leftovers(self.tpm)
            for h in left:
                self.tpm.run(cmds.FlushContext(h))
        return left


def run_with_tpmrm(relay: PtyRelay, argv: Sequence[str], tmp: Path,
                   stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run *argv* where /dev/tpmrm0 is the relay's pty and /sys/class/tpmrm lists it."""
    old = tmp / "olddev"
    old.mkdir(exist_ok=True)
    links = " && ".join(f"ln -s {old}/{n} /dev/{n}" for n in _DEV_NODES)
    script = (f"mount --rbind /dev {old} && mount -t tmpfs none /dev && {links} "
              f"&& touch /dev/tpmrm0 && mount --bind {old}{relay.pts[len('/dev'):]} /dev/tpmrm0 "
              "&& mount -t tmpfs none /sys/class && mkdir -p /sys/class/tpmrm/tpmrm0 "
              '&& exec "$@"')
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *argv], input=stdin,
                          capture_output=True, timeout=60, check=False)
    relay.flush()
    return done
