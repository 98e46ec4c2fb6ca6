"""Run a peer that only opens the kernel's device, with /dev/tpmrm0 a relay's pty.

cryptsetup's systemd-tpm2 token plugin (systemd 252) ignores SYSTEMD_TPM2_DEVICE and
the TCTI variables: it looks for /sys/class/tpmrm and opens /dev/tpmrm0. So the pty of
a :class:`~ptyrelay.PtyRelay` (whole commands to swtpm, and what a client leaves loaded
flushed when it closes, as the kernel's resource manager does) stands in for the
device. The peer runs in a private mount namespace where /dev is a tmpfs of links to
the real nodes plus the pty bound on /dev/tpmrm0, and /sys/class a tmpfs holding
tpmrm/tpmrm0: nothing changes outside that namespace.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from ptyrelay import PtyRelay

_DEV_NODES = ("null", "zero", "urandom", "random", "full", "tty", "pts", "ptmx")


def run_with_tpmrm(relay: PtyRelay, argv: Sequence[str], tmp: Path, stdin: bytes = b"",
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run *argv* where /dev/tpmrm0 is the relay's pty and /sys/class/tpmrm lists it."""
    old = tmp / "olddev"
    old.mkdir(exist_ok=True)
    links = " && ".join(f"ln -s {old}/{n} /dev/{n}" for n in _DEV_NODES)
    script = (f"mount --rbind /dev {old} && mount -t tmpfs none /dev && {links} "
              f"&& touch /dev/tpmrm0 && mount --bind {old}{relay.pts[len('/dev'):]} /dev/tpmrm0 "
              "&& mount -t tmpfs none /sys/class && mkdir -p /sys/class/tpmrm/tpmrm0 "
              '&& exec "$@"')
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *argv], input=stdin,
                          capture_output=True, timeout=60, check=False, env=env)
    relay.wait_idle()  # the peer closed the device: the relay flushed what it left
    return done
