"""The keyscript inside a real initramfs (mkinitramfs, tpmseal's hook) with a token of
each type tpmseal unlocks — a tpmseal token with a PIN, a systemd-tpm2 token with a
PIN, and clevis' tpm2 binding — the PINs asked for with TPMSEAL_PIN=ask through an
askpass stand-in, each token chosen by /etc/tpmseal/keyscript.conf's TPMSEAL_ARGS.

Every passphrase printed opens its keyslot, none is on the bus, stderr is empty, and
the runs compile no module: every one a token type imports is in the image with its
bytecode (boot/boot-files).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attacks.bus import assert_no_leak
from boot_support import assert_compiled, bytecode, needs_root_namespaces, run_in_root
from luks_support import make_image, needs_cryptsetup, opens
from ptyrelay import PtyRelay
from test_boot_initramfs import build_initramfs
from test_luks_clevis import bind
from test_seal_support import cli
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.base import parse_uri
from tpmseal.transport.simulator import Simulator

pytestmark = [needs_cryptsetup, needs_root_namespaces, pytest.mark.skipif(
    not (shutil.which("mkinitramfs") and shutil.which("unmkinitramfs")),
    reason="initramfs-tools not installed (apt-get install initramfs-tools "
           "cryptsetup-initramfs)")]

PIN = b"8642"


def test_every_token_type_with_pins_inside_the_initramfs(tcg_sim: Simulator,
                                                          tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    pin = tmp_path / "pin"
    pin.write_bytes(PIN)
    for kind in ("tpmseal", "systemd-tpm2"):  # keyslots 1 and 2, tokens 0 and 1
        r = cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw), "--token-type",
                 kind, "--pin-file", str(pin)])
        assert r.rc == 0, r.err
    slots = {0: 1, 1: 2}
    if shutil.which("clevis") and shutil.which("clevis-luks-bind"):
        bind(tcg_sim.tools_tcti, tcg_sim.uri, img, pw)  # keyslot 3, token 2
        slots[2] = 3
    root = build_initramfs(tmp_path, tcg_sim.state / "trust.json")
    shutil.copy(img, root / "luks.img")
    (root / "askpass").write_text(f"#!/bin/sh\nprintf {PIN.decode()}\n")
    (root / "askpass").chmod(0o755)
    compiled = assert_compiled(root)
    conf = root / "etc" / "tpmseal" / "keyscript.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    for token_id, slot in slots.items():
        conf.write_text(f'TPMSEAL_ARGS="--token-id {token_id}"\nTPMSEAL_PIN=ask\n')
        with Proxy(f"unix:{tmp_path / 'bus.sock'}", tcg_sim.uri) as proxy, \
                PtyRelay(parse_uri(proxy.uri)) as relay:
            env = {"CRYPTTAB_SOURCE": "/luks.img", "CRYPTTAB_NAME": "data",
                   "CRYPTTAB_TRIED": "0", "TPMSEAL_ASKPASS": "/askpass"}
            done = run_in_root(root, ["/bin/sh", "/usr/lib/tpmseal/keyscript"], env,
                               tpmrm=relay.pts)
            exchanges = proxy.exchanges
        assert done.returncode == 0, (token_id, done.stderr.decode(errors="replace"))
        assert done.stderr == b"", (token_id, done.stderr.decode(errors="replace"))
        assert opens(img, done.stdout, slot), f"token {token_id}: not keyslot {slot}'s key"
        assert_no_leak(exchanges, done.stdout, PIN)
    assert bytecode(root) == compiled, "the unlock compiled modules the hook did not"
