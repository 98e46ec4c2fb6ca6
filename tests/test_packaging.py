"""Man pages and shell completion generated from the argparse definitions (tools/cli_docs.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "cli_docs.py"


def _gen(*argv: str) -> str:
    done = subprocess.run([sys.executable, str(TOOL), *argv], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_man_page_per_command(tmp_path: Path) -> None:
    written = {Path(p).name for p in _gen("man", str(tmp_path)).split()}
    assert written == {"-".join(("tpmseal", *path)) + ".1" for path in COMMANDS}
    seal = (tmp_path / "tpmseal-seal.1").read_text()
    for option in ("\\-\\-pcrs", "\\-\\-allow\\-downgrade", "\\-\\-json", "\\-\\-pin\\-file"):
        assert option in seal
    top = (tmp_path / "tpmseal.1").read_text()
    assert "TPM2TOOLS_TCTI" in top and "TPMSEAL_TIMEOUT" in top and ".SH EXIT STATUS" in top
    assert "\\fB10\\fR" in top  # the leak exit code, from errors.py


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed "
                    "(Debian `groff-base`)")
def test_man_pages_render_without_warnings(tmp_path: Path) -> None:
    _gen("man", str(tmp_path))
    for page in sorted(tmp_path.glob("*.1")):
        done = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert (done.returncode, done.stderr) == (0, ""), page.name


BASH_CASES = [
    ("tpmseal se", "seal"),
    ("tpmseal --tpm sim:/x va", "vault-key"),
    ("tpmseal seal --allow-d", "--allow-downgrade"),
    ("tpmseal seal --profile ", "eve tcg"),
    ("tpmseal sim ", "start stop status"),
    ("tpmseal pcrs show --j", "--json"),
]


def test_bash_completion(tmp_path: Path) -> None:
    script = tmp_path / "tpmseal.bash"
    _gen("bash", str(script))
    lines = [f"source {script}",
             't() { read -ra COMP_WORDS <<< "$1"; [[ $1 == *" " ]] && COMP_WORDS+=(""); '
             "COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); _tpmseal; "
             'echo "${COMPREPLY[*]}"; }']
    lines += [f"t {line!r}" for line, _ in BASH_CASES]
    done = subprocess.run(["bash", "-c", "\n".join(lines)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stderr == ""
    assert done.stdout.splitlines() == [want for _, want in BASH_CASES]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (Debian `zsh`)")
def test_zsh_completion(tmp_path: Path) -> None:
    script = tmp_path / "_tpmseal"
    _gen("zsh", str(script))
    assert script.read_text().startswith("#compdef tpmseal\n")
    test = "\n".join([
        "compdef() { : }", 'compadd() { shift; print -r -- "$*" }', "_files() { print FILES }",
        f"source {script}",
        't() { words=("$@"); CURRENT=${#words}; _tpmseal }',
        "t tpmseal seal --profile ''", "t tpmseal --tpm x sim ''", "t tpmseal decode ''"])
    done = subprocess.run(["zsh", "-f", "-c", test], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stderr == ""
    assert done.stdout.splitlines() == ["eve tcg", "start stop status", "FILES"]
