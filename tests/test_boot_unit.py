"""tpmseal-unlock (run by tpmseal-unlock@.service) and the keyscript on the running system.

Without device-mapper the final ``cryptsetup open`` cannot map the volume: the test
then checks that everything before it ran (unseal, cryptsetup's --test-passphrase of
the key) and that the failure is the mapping's; with device-mapper it opens for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from boot_support import BOOT
from luks_support import HAS_DM, cryptsetup, make_image, needs_cryptsetup, opens
from test_seal_support import cli
from tpmseal.transport.simulator import Simulator

pytestmark = needs_cryptsetup

TPMSEAL = str(Path(sys.executable).parent / "tpmseal")


def _run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", str(BOOT / script), *args], env={**os.environ, **env},
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          check=False)


def test_tpmseal_unlock_service_script(tcg_sim: Simulator, tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    assert cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw)]).rc == 0
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    (volumes / "tpmseal-unit.conf").write_text(f"DEVICE={img}\n")
    env = {"TPMSEAL_VOLUMES": str(volumes), "TPMSEAL": TPMSEAL}
    done = _run("tpmseal-unlock", "tpmseal-unit", env=env)
    if HAS_DM:
        try:
            assert done.returncode == 0, done.stderr
            assert Path("/dev/mapper/tpmseal-unit").exists()
        finally:
            cryptsetup("close", "tpmseal-unit")
    else:
        assert done.returncode == 2, done.stderr
        assert f"opening {img} as tpmseal-unit failed" in done.stderr.decode()
    missing = _run("tpmseal-unlock", "nothing", env=env)
    assert missing.returncode == 1 and b"no " in missing.stderr


def test_keyscript_on_the_running_system(tcg_sim: Simulator, tmp_path: Path) -> None:
    img, pw = make_image(tmp_path)
    assert cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw)]).rc == 0
    done = _run("keyscript", env={"CRYPTTAB_SOURCE": str(img), "CRYPTTAB_NAME": "data",
                                  "TPMSEAL": TPMSEAL})
    assert done.returncode == 0, done.stderr
    assert opens(img, done.stdout, 1)


def test_keyscript_asks_for_the_pin_with_askpass(tcg_sim: Simulator, tmp_path: Path) -> None:
    """TPMSEAL_PIN=ask: the PIN comes from askpass (here a stand-in printing it, as
    cryptsetup's askpass prints what was typed) and reaches tpmseal on a pipe."""
    img, pw = make_image(tmp_path)
    pin = tmp_path / "pin"
    pin.write_bytes(b"8642")
    assert cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw), "--pin-file",
                str(pin)]).rc == 0
    askpass = tmp_path / "askpass"
    askpass.write_text(f'#!/bin/sh\necho "$1" > {tmp_path}/prompt\nprintf 8642\n')
    askpass.chmod(0o755)
    env = {"CRYPTTAB_SOURCE": str(img), "CRYPTTAB_NAME": "data", "TPMSEAL": TPMSEAL,
           "TPMSEAL_PIN": "ask", "TPMSEAL_ASKPASS": str(askpass)}
    done = _run("keyscript", env=env)
    assert done.returncode == 0, done.stderr
    assert opens(img, done.stdout, 1)
    assert (tmp_path / "prompt").read_text() == "TPM PIN for data: \n"
