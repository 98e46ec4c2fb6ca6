"""Fitting the ecosystem: version, ``python -m tpmseal``, licence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tpmseal
from test_seal_support import cli

ROOT = Path(__file__).resolve().parent.parent


def test_version_single_source() -> None:
    from importlib.metadata import version

    assert tpmseal.__version__ == version("tpmseal")
    major, minor, patch = (int(x) for x in tpmseal.__version__.split("."))
    assert major >= 0 and minor >= 0 and patch >= 0


def test_version_option() -> None:
    r = cli(["--version"])
    assert (r.rc, r.out.decode(), r.err) == (0, f"tpmseal {tpmseal.__version__}\n", "")


def test_python_dash_m() -> None:
    done = subprocess.run([sys.executable, "-m", "tpmseal", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, f"tpmseal {tpmseal.__version__}")


def test_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
