"""Helpers for the LUKS2 tests: image files made by the real cryptsetup, fast KDF."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CRYPTSETUP = shutil.which("cryptsetup") or (
    "/usr/sbin/cryptsetup" if os.access("/usr/sbin/cryptsetup", os.X_OK) else None)

needs_cryptsetup = pytest.mark.skipif(
    CRYPTSETUP is None, reason="cryptsetup not installed (apt-get install cryptsetup-bin)")


def _device_mapper() -> bool:
    """Whether the kernel's device-mapper answers (a container may have the node only)."""
    try:
        os.close(os.open("/dev/mapper/control", os.O_RDWR))
    except OSError:
        return False
    return True


#: Real device-mapper: only then can a volume really be opened.
HAS_DM = _device_mapper()

PASSPHRASE = b"correct horse battery staple"


def cryptsetup(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    assert CRYPTSETUP is not None
    return subprocess.run([CRYPTSETUP, *args], input=stdin, capture_output=True, timeout=60,
                          check=False)


def make_image(directory: Path, name: str = "luks.img") -> tuple[Path, Path]:
    """A 20 MiB LUKS2 image with PASSPHRASE in keyslot 0, and a 0600 file holding it."""
    img, pw = directory / name, directory / f"{name}.pass"
    with open(img, "wb") as f:
        f.truncate(20 << 20)
    pw.write_bytes(PASSPHRASE)
    pw.chmod(0o600)
    r = cryptsetup("luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
                   "--pbkdf-force-iterations", "1000", "--key-file", str(pw), str(img))
    assert r.returncode == 0, r.stderr
    return img, pw


def opens(img: Path, key: bytes, slot: int | None = None) -> bool:
    """Whether cryptsetup accepts *key* for *img* (or its *slot*)."""
    where = ["--key-slot", str(slot)] if slot is not None else []
    return cryptsetup("open", "--test-passphrase", "--key-file=-", *where, str(img),
                      stdin=key).returncode == 0
