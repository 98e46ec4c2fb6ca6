"""Boot integration for real: mkinitramfs (initramfs-tools) builds an initramfs with
tpmseal's hook, the test unpacks it and runs the crypttab keyscript inside it (chroot,
empty environment: :func:`boot_support.run_in_root`) against swtpm, reached as the
default /dev/tpmrm0 (a pty relay, :mod:`tpmrm_relay`); the passphrase that comes out
opens the LUKS2 image (cryptsetup's verdict) and is not on the bus.

mkinitramfs wants /boot/config-VERSION; it runs in a private mount namespace with a
tmpfs on /boot holding a one-line config, so nothing on the machine changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attacks.bus import assert_no_leak
from boot_support import (
    BOOT,
    Hostile,
    assert_compiled,
    bytecode,
    needs_root_namespaces,
    run_in_root,
)
from luks_support import make_image, needs_cryptsetup, opens
from ptyrelay import PtyRelay
from test_seal_support import cli
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.base import parse_uri
from tpmseal.transport.simulator import Simulator

VERSION = "0.0.0-tpmseal-test"

pytestmark = [needs_cryptsetup, needs_root_namespaces, pytest.mark.skipif(
    not (shutil.which("mkinitramfs") and shutil.which("unmkinitramfs")),
    reason="initramfs-tools not installed (apt-get install initramfs-tools "
           "cryptsetup-initramfs)")]


def build_initramfs(tmp: Path, trust: Path) -> Path:
    conf = tmp / "conf"
    (conf / "hooks").mkdir(parents=True)
    shutil.copy(BOOT / "initramfs-tools" / "hooks" / "tpmseal", conf / "hooks" / "tpmseal")
    (conf / "initramfs.conf").write_text("MODULES=list\nBUSYBOX=auto\nCOMPRESS=gzip\n")
    (conf / "tpmseal.conf").write_text(
        f"TPMSEAL_PYTHON={sys.executable}\nTPMSEAL_LIB={BOOT}\nTPMSEAL_TRUST_FILE={trust}\n")
    out = tmp / "initrd.img"
    script = (f"mount -t tmpfs none /boot && echo CONFIG_RD_GZIP=y > /boot/config-{VERSION} "
              f'&& mkinitramfs -d "{conf}" -o "{out}" {VERSION}')
    hostile = Hostile(tmp)  # every build: a planted compileall.py, a pycache prefix
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          cwd=hostile.cwd, env=hostile.env(dict(os.environ)), timeout=300,
                          check=False)
    if done.returncode != 0 and b"unshare failed" in done.stderr:
        pytest.skip("no mount namespaces here (unshare -m failed)")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    hostile.check()
    root = tmp / "root"
    done = subprocess.run(["unmkinitramfs", str(out), str(root)], capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return root / "main" if (root / "main").is_dir() else root


def test_keyscript_inside_the_initramfs(tcg_sim: Simulator, tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    assert cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw)]).rc == 0
    root = build_initramfs(tmp_path, tcg_sim.state / "trust.json")
    for path in ("usr/lib/tpmseal/tpmseal", "usr/lib/tpmseal/keyscript", "sbin/cryptsetup",
                 str(tcg_sim.state / "trust.json").lstrip("/")):
        assert (root / path).exists(), path
    shutil.copy(img, root / "luks.img")
    compiled = assert_compiled(root)
    # /dev/tpmrm0 in the tree is a pty relayed to swtpm through the sniffer: the keyscript
    # uses tpmseal's default device with nothing configured
    with Proxy(f"unix:{tmp_path / 'bus.sock'}", tcg_sim.uri) as proxy, \
            PtyRelay(parse_uri(proxy.uri)) as relay:
        env = {"CRYPTTAB_SOURCE": "/luks.img", "CRYPTTAB_NAME": "data", "CRYPTTAB_TRIED": "0"}
        done = run_in_root(root, ["/bin/sh", "/usr/lib/tpmseal/keyscript"], env,
                           tpmrm=relay.pts)
        exchanges = proxy.exchanges
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert bytecode(root) == compiled, "the unlock compiled modules the hook did not"
    assert opens(img, done.stdout, 1), "the keyscript's output does not open the keyslot"
    assert_no_leak(exchanges, done.stdout)
