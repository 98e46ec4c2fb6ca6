"""What a ``tpmseal unseal`` process imports may not grow back.

Start-up is most of an unseal (README: Performance), and each stdlib module or
tpmseal module on its path costs time and memory. The child process records
``sys.modules`` at exit; every tpmseal and standard-library module in it must be
in tests/data/unseal_modules.txt (its standard-library part on the Python version
named in its first line); ``luks passphrase``, the boot-time unlock, may add its own
few. cryptography's internal modules vary between its
releases, so only a few heavy ones are forbidden by name, as are the standard
library modules the start-up work removed. When an import is
deliberately added, add it to the list (and measure with ``make bench``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from luks_support import make_image, needs_cryptsetup, opens
from test_seal_support import cli, secret_bytes, write
from tpmseal.transport.simulator import Simulator

ALLOWED = Path(__file__).parent / "data" / "unseal_modules.txt"
FORBIDDEN_CRYPTOGRAPHY = ("cryptography.x509", "cryptography.hazmat.primitives.serialization",
                          "cryptography.hazmat.backends")
#: what start-up work removed, on any Python version
FORBIDDEN_STDLIB = {"logging", "hashlib", "hmac", "dataclasses", "inspect", "tempfile", "shutil",
                    "datetime", "getpass", "json.tool", "email", "pathlib", "urllib", "fcntl",
                    "threading", "argparse", "gettext", "locale", "signal", "socket",
                    "selectors", "subprocess"}
#: what `luks passphrase` adds to the unseal path's list: its own modules (a tpmseal
#: token's; another type's module loads only for a token of that type)
LUKS = {"select", "tpmseal.cli.luks", "tpmseal.recipes.cryptsetup", "tpmseal.recipes.luks",
        "tpmseal.recipes.unlockers"}
#: and for a systemd-tpm2 token: its module, and the commands that recreate systemd's SRK
SYSTEMD = {"tpmseal.recipes.systemd_tpm2", "tpmseal.recipes.owner_primary",
           "tpmseal.wire.commands_cold", "tpmseal.wire.structures_cold"}

RECORD = """\
import atexit, sys
atexit.register(lambda: open(sys.argv.pop(1), "w").write("\\n".join(sorted(sys.modules))))
from tpmseal.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def _ours(name: str) -> bool:
    """A module the list governs (the recorder itself imports atexit, a builtin)."""
    top = name.split(".", maxsplit=1)[0]
    if name == "atexit":
        return False
    return top == "tpmseal" or (top in sys.stdlib_module_names and top != "encodings")


@pytest.mark.parametrize("ek_type", ["rsa", "ecc"])
def test_unseal_imports_only_the_allowed_modules(tcg_sim: Simulator, tmp_path: Path,
                                                 ek_type: str) -> None:
    if ek_type == "ecc":
        assert cli(["provision", "--ek-type", "ecc", "--repin"]).rc == 0
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    assert cli(["seal", "--input", str(key), "--output", str(blob)]).rc == 0
    out, imported = _recorded(tmp_path, ["unseal", "--input", str(blob), "--output", "-"])
    assert out == key.read_bytes()
    _check(imported, set())
    # each salt loads its own key type only (session/salt.py): ~2 ms for RSA's
    other = {"rsa": "ec", "ecc": "rsa"}[ek_type]
    assert f"cryptography.hazmat.primitives.asymmetric.{other}" not in imported


@needs_cryptsetup
@pytest.mark.parametrize("token_type", ["tpmseal", "systemd-tpm2"])
def test_luks_passphrase_imports_the_unseal_path_and_its_own_modules(
        tcg_sim: Simulator, tmp_path: Path, token_type: str) -> None:
    """The boot-time unlock (a crypttab keyscript's `luks passphrase`): no argparse,
    subprocess, logging, dataclasses or datetime, and no module of another token type."""
    img, pw = make_image(tmp_path)
    assert cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw), "--token-type",
                token_type, "--pcrs", "sha256:7"]).rc == 0
    out, imported = _recorded(tmp_path, ["luks", "passphrase", str(img)])
    assert opens(img, out, 1)
    _check(imported, LUKS | (SYSTEMD if token_type == "systemd-tpm2" else set()))


def _recorded(tmp_path: Path, argv: list[str]) -> tuple[bytes, set[str]]:
    """What ``tpmseal ARGV`` wrote to stdout, and the modules it had imported at exit."""
    modules = tmp_path / "modules.txt"
    done = subprocess.run([sys.executable, "-c", RECORD, str(modules), *argv],
                          capture_output=True, env=dict(os.environ), timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout, set(modules.read_text().split())


def _check(imported: set[str], extra: set[str]) -> None:
    """*imported* is within the list (and *extra*), and holds nothing forbidden."""
    header, *names = ALLOWED.read_text().splitlines()
    allowed = set(names) | extra
    # the standard library's own imports differ between Python versions: the list is
    # checked in full on the version that recorded it, tpmseal's part on any other
    same_python = header == f"# Python {sys.version_info[0]}.{sys.version_info[1]}"
    ours = {m for m in imported if _ours(m) and (same_python or m.startswith("tpmseal"))}
    assert ours - allowed == set(), \
        f"new imports on the unseal path; keep them off it or add them to {ALLOWED.name}"
    assert not [m for m in imported if m.startswith(FORBIDDEN_CRYPTOGRAPHY)]
    assert imported & FORBIDDEN_STDLIB == set()
