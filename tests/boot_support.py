"""Helpers for the boot tests: run a command inside an unpacked initramfs.

The command runs in a private mount namespace (``unshare -m``), chrooted into the
tree with only the environment given, after what an initramfs' init sets up first:
a /dev (here a tmpfs with the few device nodes bound in: null, zero, random,
urandom, full, tty — and, given a :class:`~ptyrelay.PtyRelay`, its pty as
/dev/tpmrm0, so tpmseal's default ``device:/dev/tpmrm0`` reaches swtpm), proc and
sysfs. Nothing outside the namespace changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BOOT = Path(__file__).resolve().parent.parent / "boot"

needs_root_namespaces = pytest.mark.skipif(
    not (shutil.which("unshare") and shutil.which("chroot") and os.geteuid() == 0),
    reason="needs root with unshare and chroot")


_NODES = ("null", "zero", "random", "urandom", "full", "tty")


def run_in_root(root: Path, argv: list[str], env: dict[str, str], timeout: float = 60,
                tpmrm: str | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run *argv* chrooted into *root*; *tpmrm*: a pty to bind as /dev/tpmrm0."""
    for d in ("dev", "proc", "sys"):  # the initramfs' init creates them too
        (root / d).mkdir(exist_ok=True)
    binds = [(f"/dev/{n}", n) for n in _NODES] + ([(tpmrm, "tpmrm0")] if tpmrm else [])
    dev = " && ".join(f'touch "{root}/dev/{name}" && mount --bind {src} "{root}/dev/{name}"'
                      for src, name in binds)
    script = (f'mount -t tmpfs none "{root}/dev" && {dev} && mount -t proc none "{root}/proc" '
              f'&& mount -t sysfs none "{root}/sys" && exec chroot "{root}" "$@"')
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *argv],
                          env={"PATH": "/sbin:/usr/sbin:/bin:/usr/bin", **env},
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          check=False)


def bytecode(root: Path) -> set[Path]:
    """The compiled modules in the tree. Python writes a .pyc for each module it had to
    compile from source (the tree is writable, like an initramfs' rootfs), so the set is
    unchanged by a run only if the hook compiled every module the run imports."""
    return set(root.rglob("__pycache__/*.pyc"))


def assert_compiled(root: Path) -> set[Path]:
    """Every tpmseal module in the tree has its hash-based .pyc (PEP 552), unchecked."""
    sources = [p for p in root.rglob("tpmseal/**/*.py") if "__pycache__" not in p.parts]
    assert sources, "no tpmseal modules in the tree"
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.{sys.implementation.cache_tag}.pyc"
        assert pyc.is_file(), f"{source.relative_to(root)} has no bytecode"
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        assert flags == 0b01, f"{pyc.relative_to(root)}: not unchecked hash-based ({flags})"
    return bytecode(root)


class Hostile:
    """Where an administrator may build an initramfs from (``sudo update-initramfs -u`` in
    a user's home directory): a working directory holding a ``compileall.py`` another user
    planted, and an environment whose ``PYTHONPYCACHEPREFIX`` sends bytecode elsewhere. A
    hook must neither run the one (as root) nor write into the other."""

    def __init__(self, tmp: Path) -> None:
        self.cwd, self.prefix = tmp / "hostile-cwd", tmp / "pycache-prefix"
        self.cwd.mkdir()
        self.prefix.mkdir()
        self.marker = tmp / "planted-module-ran"
        (self.cwd / "compileall.py").write_text(
            f"open({str(self.marker)!r}, 'w').close()\n")

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "PYTHONPYCACHEPREFIX": str(self.prefix)}

    def check(self) -> None:
        """After the build: nothing planted ran, and no module of the image (whose build
        tree is gone by now) has its bytecode under the prefix; the host's own modules,
        which the hook's Python imports, may."""
        assert not self.marker.exists(), "the hook ran compileall.py from its working directory"
        tag = f".{sys.implementation.cache_tag}.pyc"
        image = [pyc for pyc in self.prefix.rglob(f"*{tag}")
                 if not (Path("/") / pyc.relative_to(self.prefix)).with_name(
                     pyc.name.removesuffix(tag) + ".py").exists()]
        assert not image, f"the hook wrote the image's bytecode outside it: {image[:3]}"
