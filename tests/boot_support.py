"""Helpers for the boot tests: run a command inside an unpacked initramfs.

The command runs in a private mount namespace (``unshare -m``) with devtmpfs, proc
and sysfs mounted in the tree — what an initramfs' init mounts first — and chrooted
into it with only the environment given. The TPM is reached over TCP (the sniffer
proxy in front of swtpm), since the simulator's unix socket lives outside the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BOOT = Path(__file__).resolve().parent.parent / "boot"

needs_root_namespaces = pytest.mark.skipif(
    not (shutil.which("unshare") and shutil.which("chroot") and os.geteuid() == 0),
    reason="needs root with unshare and chroot")


def run_in_root(root: Path, argv: list[str], env: dict[str, str],
                timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    for d in ("dev", "proc", "sys"):  # the initramfs' init creates them too
        (root / d).mkdir(exist_ok=True)
    script = (f'mount -t devtmpfs none "{root}/dev" && mount -t proc none "{root}/proc" '
              f'&& mount -t sysfs none "{root}/sys" && exec chroot "{root}" "$@"')
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *argv],
                          env={"PATH": "/sbin:/usr/sbin:/bin:/usr/bin", **env},
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          check=False)
