"""dracut for real: dracut 059 builds an initramfs with the 90tpmseal module (and
dracut's systemd module), the test unpacks it, runs ``tpmseal luks passphrase`` through
the module's wrapper inside it (chroot, empty environment) against swtpm as the
default /dev/tpmrm0 (a pty relay) — a
systemd-tpm2 token tpmseal enrolled — and checks the passphrase with cryptsetup; the
tpmseal-unlock@.service it enables passes ``systemd-analyze verify`` inside the tree.

The module is used from the repository through a private dracut base directory (links
to /usr/lib/dracut plus the module), so nothing on the machine changes.
"""

from __future__ import annotations

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

DRACUT_BASE = Path("/usr/lib/dracut")

pytestmark = [needs_cryptsetup, needs_root_namespaces, pytest.mark.skipif(
    not (shutil.which("dracut") and (DRACUT_BASE / "modules.d").is_dir()),
    reason="dracut not installed (apt-get install dracut-core)")]


def build_dracut(tmp: Path, trust: Path, volumes: Path) -> Path:
    base = tmp / "dracut"
    (base / "modules.d").mkdir(parents=True)
    for entry in DRACUT_BASE.iterdir():
        if entry.name != "modules.d":
            (base / entry.name).symlink_to(entry)
    for module in (DRACUT_BASE / "modules.d").iterdir():
        (base / "modules.d" / module.name).symlink_to(module)
    (base / "modules.d" / "90tpmseal").symlink_to(BOOT / "dracut" / "90tpmseal")
    conf, confdir = tmp / "dracut.conf", tmp / "dracut.conf.d"
    confdir.mkdir()
    conf.write_text(f"TPMSEAL_PYTHON={sys.executable}\nTPMSEAL_LIB={BOOT}\n"
                    f"TPMSEAL_TRUST_FILE={trust}\nTPMSEAL_VOLUMES={volumes}\n")
    out = tmp / "initrd.img"
    hostile = Hostile(tmp)  # every build: a planted compileall.py, a pycache prefix
    done = subprocess.run(
        ["dracut", "--no-kernel", "--force", "--no-hostonly", "--no-compress", "--conf",
         str(conf), "--confdir", str(confdir), "--modules", "base systemd tpmseal", str(out)],
        env=hostile.env({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "dracutbasedir": str(base)}),
        cwd=hostile.cwd, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    hostile.check()
    root = tmp / "root"
    root.mkdir()
    with open(out, "rb") as f:
        done = subprocess.run(["cpio", "-id", "--quiet"], stdin=f, cwd=root,
                              capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return root


def test_dracut_initramfs_unlocks(tcg_sim: Simulator, tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    r = cli(["luks", "enroll", str(img), "--token-type", "systemd-tpm2", "--pcrs", "sha256:7",
             "--unlock-key-file", str(pw)])
    assert r.rc == 0, r.err
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    (volumes / "data.conf").write_text("DEVICE=/luks.img\n")
    root = build_dracut(tmp_path, tcg_sim.state / "trust.json", volumes)
    unit = "usr/lib/systemd/system"
    for path in ("usr/lib/tpmseal/tpmseal", "usr/lib/tpmseal/tpmseal-unlock",
                 "usr/lib/tpmseal/keyscript", f"{unit}/tpmseal-unlock@.service",
                 f"{unit}/cryptsetup.target.wants/tpmseal-unlock@data.service",
                 "etc/tpmseal/volumes/data.conf", str(tcg_sim.state / "trust.json")[1:]):
        assert (root / path).exists(), path
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                             "tpmseal-unlock@data.service"], capture_output=True, timeout=60,
                            check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    shutil.copy(img, root / "luks.img")
    compiled = assert_compiled(root)
    with Proxy(f"unix:{tmp_path / 'bus.sock'}", tcg_sim.uri) as proxy, \
            PtyRelay(parse_uri(proxy.uri)) as relay:  # the tree's /dev/tpmrm0
        done = run_in_root(root, ["/usr/lib/tpmseal/tpmseal", "luks", "passphrase",
                                  "/luks.img"], {}, tpmrm=relay.pts)
        exchanges = proxy.exchanges
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert bytecode(root) == compiled, "the unlock compiled modules the hook did not"
    assert opens(img, done.stdout, 1), "the passphrase from the initramfs does not open it"
    assert_no_leak(exchanges, done.stdout)
