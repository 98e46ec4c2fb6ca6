#!/usr/bin/env python3
"""tpmseal's CLI as whole processes, against tpm2-tools and the floor of a Python unseal.

On two private swtpm simulators (``tcg`` and ``eve`` profiles, provisioned by
tpmseal, PCRs 0-7 extended as a measured boot would), one run of this script
times, interleaved round by round (the order rotating each round):

* ``tpmseal unseal``, ``seal``, ``vault-key`` (EVE's NV layout, the every-boot
  path: the key exists and is unsealed) and ``provision`` (already provisioned:
  what a boot script runs), each the console script of a normal, non-editable
  ``pip install`` of this tree into a private virtual environment (an editable
  install adds import hooks and ``.pth`` files to every start-up) of Debian's
  python3 where there is one (``--python`` chooses another), as a Debian or Ubuntu
  machine runs it (interpreters built otherwise, e.g. by pyenv, start at another
  speed);
* tpm2-tools' salted unseal and seal sequences (tests/peers/tpm2_tools_flow.sh:
  7 and 5 tool processes);
* the floor: bench/floor_unseal.py sending tpmseal unseal's 5 commands with the
  same checks, once with ``cryptography`` and once with the standard library only,
  on the interpreter of that same virtual environment;
* ``tpmseal unseal`` and the floor again with the ``tcg`` TPM's ECC EK (pinned in a
  trust file of its own), the salt ``provision --ek-type auto`` picks where the TPM
  has one;
* ``tpmseal luks passphrase`` on a LUKS2 image file with a tpmseal token, what a
  crypttab keyscript runs at boot (its two cryptsetup processes included), when
  cryptsetup is installed.

Per row: the median wall and CPU (user+sys, the process and its children) time,
the peak RSS (one more run under GNU time, Debian package ``time``), and the TPM
commands per operation from one more run through tpmseal's recording proxy.
Ratios divide a row's median by the tpm2-tools unseal sequence's and by the
floor's (cryptography); wall times on a loaded machine are
noisy, CPU times much less so. Only what this run measured is printed.

Usage: python bench/bench_cli.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_unseal import (
    TOOLS_FLOW,
    Machine,
    flush_leftovers,
    machine_info,
    simulator,
    tools_version,
)

from tpmseal.client.tpm import Tpm
from tpmseal.recipes.profiles import EVE, TCG
from tpmseal.recipes.provision import provision
from tpmseal.sniff.capture.proxy import Proxy

FLOOR = Path(__file__).resolve().parent / "floor_unseal.py"
SOURCE = FLOOR.parent.parent
TOOLS_BASE = "tpm2-tools unseal"
FLOOR_BASE = "floor (cryptography)"
ECC_ROW, ECC_FLOOR = "tpmseal unseal, ECC EK", "floor (crypto, ECC EK)"
LUKS_ROW = "tpmseal luks passphrase"
TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None  # GNU time, for %M


@dataclass
class Row:
    name: str
    argv: list[str]
    env: dict[str, str]
    check: Callable[[bytes], None] | None = None
    after: Callable[[], object] | None = None
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


def _timed_popen(row: Row, argv: list[str], env: dict[str, str]) -> tuple[float, Any, bytes]:
    """Run *argv*; wall ms, the child's rusage (with its children) and its stdout."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"{row.name} failed (exit {p.returncode}): "
                         f"{err.decode(errors='replace').strip()[-600:]}")
    return wall, ru, out


def measure(row: Row, argv: list[str] | None = None, env: dict[str, str] | None = None,
            record: bool = True, after: bool = True) -> None:
    wall, ru, out = _timed_popen(row, argv or row.argv, env or row.env)
    if row.check is not None:
        row.check(out)
    if after and row.after is not None:
        row.after()
    if record:
        row.wall.append(wall)
        row.cpu.append((ru.ru_utime + ru.ru_stime) * 1000)


def peak_rss(row: Row, report: Path) -> None:
    """One more run under GNU time, whose %M is the peak RSS of the process (or of the
    largest of its children). The rusage of our own children cannot tell: a child
    forked from this (larger) Python process inherits its RSS high-water mark."""
    assert TIME is not None
    _timed_popen(row, [TIME, "-f", "%M", "-o", str(report), *row.argv], row.env)
    if row.after is not None:
        row.after()
    row.rss = [int(report.read_text().split()[-1]) / 1024]


#: the interpreter the issue's figures are measured on: Debian's, when there is one
DEBIAN_PYTHON = "/usr/bin/python3"


def default_python() -> str:
    """Debian's python3 if it has venv (Debian package python3-venv), else this one."""
    if Path(DEBIAN_PYTHON).exists() and subprocess.run(
            [DEBIAN_PYTHON, "-c", "import venv"], capture_output=True,
            check=False).returncode == 0:
        return DEBIAN_PYTHON
    return sys.executable


def install(venv: Path, base_python: str) -> Path:
    """A normal (non-editable) ``pip install`` of this tree into a virtual environment
    *venv* of *base_python*; its python.

    The venv has no pip or setuptools of its own (so no ``distutils-precedence.pth``
    runs at each start-up); this interpreter's pip installs into it."""
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "-q", "--no-cache-dir", str(SOURCE)], capture_output=True, check=False)
    if done.returncode:
        raise SystemExit("could not pip install this tree into the bench's virtual environment: "
                         f"{done.stderr.decode(errors='replace').strip()[-600:]}")
    return python


def expect(what: str, want: bytes) -> Callable[[bytes], None]:
    def check(out: bytes) -> None:
        if out != want:
            raise SystemExit(f"{what}: the unsealed secret differs from the sealed one")
    return check


class Setup:
    """The simulators, files and rows of one bench run."""

    def __init__(self, base: Path, tcg: Machine, eve: Machine, base_python: str) -> None:
        self.base, self.tcg, self.eve = base, tcg, eve
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")  # run from compiled bytecode
        self.env = env
        self.python = str(install(base / "venv", base_python))
        self.cli = [str(base / "venv" / "bin" / "tpmseal")]
        self.key = os.urandom(32)
        (base / "key.bin").write_bytes(self.key)
        self.tools_dir = base / "tools"
        self.tools_dir.mkdir()
        (self.tools_dir / "secret.bin").write_bytes(os.urandom(32))
        self.vault_key = b""
        self.tools = False
        self.ecc_trust = base / "trust-ecc.json"
        self.provision_trust = base / "trust-provision.json"
        #: the same TPM with its ECC EK, pinned in a file of its own
        self.ecc = Machine(tcg.profile, tcg.sim, self.ecc_trust, tcg.trust)
        #: provision gets a copy of the trust file: run through the counting proxy (a new
        #: address) it pins that address too, which no other row should see
        self.again = Machine(tcg.profile, tcg.sim, self.provision_trust, tcg.trust)
        self.luks = b""

    def cli_argv(self, m: Machine, uri: str, *args: str) -> list[str]:
        return [*self.cli, "--tpm", uri, "--trust-file", str(m.trust_file), *args]

    def tools_env(self, tcti: str) -> dict[str, str]:
        m = self.tcg
        return {**self.env, "TPM2TOOLS_TCTI": tcti, "WORKDIR": str(self.tools_dir),
                "EK_HANDLE": f"{m.trust.ek_handle:#x}", "SRK_HANDLE": f"{m.trust.srk_handle:#x}",
                "PCRS": m.pcrs}

    def build(self, tcg_uri: str, eve_uri: str, tcti: str) -> list[Row]:
        """The rows, against these endpoints (the simulators, or proxies in front)."""
        tcg, eve, b = self.tcg, self.eve, self.base
        blob = str(b / "blob.json")
        ecc, again = self.ecc, self.again
        rows = [
            Row("tpmseal unseal", self.cli_argv(tcg, tcg_uri, "unseal", "--input", blob,
                                                "--output", "-"), self.env,
                expect("tpmseal unseal", self.key)),
            Row(ECC_ROW, self.cli_argv(ecc, tcg_uri, "unseal", "--input",
                                       str(b / "blob-ecc.json"), "--output", "-"), self.env,
                expect(ECC_ROW, self.key)),
            Row("tpmseal seal", self.cli_argv(tcg, tcg_uri, "seal", "--input",
                                              str(b / "key.bin"), "--output",
                                              str(b / "blob2.json"), "--force"), self.env),
            Row("tpmseal vault-key", self.cli_argv(eve, eve_uri, "vault-key", "--profile", "eve"),
                self.env, expect("tpmseal vault-key", self.vault_key)),
            Row("tpmseal provision", self.cli_argv(again, tcg_uri, "provision"), self.env),
        ]
        if self.luks:
            rows.append(Row(LUKS_ROW, self.cli_argv(tcg, tcg_uri, "luks", "passphrase",
                                                    str(b / "luks.img")), self.env,
                            expect(LUKS_ROW, self.luks)))
        rows += [
            Row(FLOOR_BASE, [self.python, str(FLOOR), tcg_uri.removeprefix("unix:"),
                             str(tcg.trust_file), "tcg", blob, "crypto"], self.env,
                expect("floor", self.key)),
            Row(ECC_FLOOR, [self.python, str(FLOOR), tcg_uri.removeprefix("unix:"),
                            str(self.ecc_trust), "tcg", str(b / "blob-ecc.json"), "crypto"],
                self.env, expect(ECC_FLOOR, self.key)),
            Row("floor (stdlib only)", [self.python, str(FLOOR), tcg_uri.removeprefix("unix:"),
                                        str(tcg.trust_file), "tcg", blob, "stdlib"], self.env,
                expect("floor", self.key)),
        ]
        if self.tools:
            flush = lambda: flush_leftovers(tcg_uri)  # noqa: E731 - outside the timing
            tenv = self.tools_env(tcti)
            rows += [Row(TOOLS_BASE, ["bash", str(TOOLS_FLOW), "unseal"], tenv, after=flush),
                     Row("tpm2-tools seal", ["bash", str(TOOLS_FLOW), "seal"], tenv,
                         after=flush)]
        return rows

    def prepare(self) -> None:
        """Seal the blob, create EVE's vault key, seal the tools' object (not timed)."""
        tcg, eve = self.tcg, self.eve
        seal = self.cli_argv(tcg, tcg.sim.uri, "seal", "--input", str(self.base / "key.bin"),
                             "--output", str(self.base / "blob.json"))
        subprocess.run(seal, env=self.env, check=True, capture_output=True)
        with Tpm.open(tcg.sim.uri) as tpm:  # the same TPM's ECC EK, pinned in its own file
            provision(tpm, tcg.profile, ek_type="ecc", trust_file=self.ecc_trust)
        subprocess.run([*self.cli_argv(self.ecc, tcg.sim.uri, "seal", "--input",
                                       str(self.base / "key.bin"), "--output",
                                       str(self.base / "blob-ecc.json"))],
                       env=self.env, check=True, capture_output=True)
        vault = self.cli_argv(eve, eve.sim.uri, "vault-key", "--profile", "eve")
        self.vault_key = subprocess.run(vault, env=self.env, check=True,
                                        capture_output=True).stdout
        self.luks = self._luks_image(tcg) if shutil.which("cryptsetup") else b""
        shutil.copy(tcg.trust_file, self.provision_trust)
        self.tools = TOOLS_FLOW.exists() and tools_version() is not None
        if self.tools:
            subprocess.run(["bash", str(TOOLS_FLOW), "seal"],
                           env=self.tools_env(tcg.sim.tools_tcti), check=True,
                           capture_output=True)
            flush_leftovers(tcg.sim.uri)


    def _luks_image(self, m: Machine) -> bytes:
        """A LUKS2 image file with a tpmseal token enrolled; its keyslot passphrase."""
        img, pw = self.base / "luks.img", self.base / "luks.pw"
        with open(img, "wb") as f:
            f.truncate(20 << 20)
        pw.write_bytes(os.urandom(16).hex().encode())
        subprocess.run(["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
                        "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", str(img),
                        str(pw)], check=True, capture_output=True)
        subprocess.run(self.cli_argv(m, m.sim.uri, "luks", "enroll", str(img),
                                     "--unlock-key-file", str(pw)),
                       env=self.env, check=True, capture_output=True)
        return subprocess.run(self.cli_argv(m, m.sim.uri, "luks", "passphrase", str(img)),
                              env=self.env, check=True, capture_output=True).stdout


def run(runs: int, base: Path, base_python: str) -> tuple[dict[str, Any], list[Row]]:
    with simulator(base, TCG) as tcg, simulator(base, EVE) as eve:
        s = Setup(base, tcg, eve, base_python)
        s.prepare()
        rows = s.build(tcg.sim.uri, eve.sim.uri, tcg.sim.tools_tcti)
        for row in rows:  # warm the bytecode caches and the page cache
            measure(row, record=False)
        for i in range(runs):
            k = i % len(rows)
            for row in rows[k:] + rows[:k]:
                measure(row)
        if TIME is not None:
            for row in rows:
                peak_rss(row, base / "rss.txt")
        with Proxy(f"unix:{base / 'tcg-proxy.sock'}", tcg.sim.uri) as pt, \
                Proxy(f"unix:{base / 'eve-proxy.sock'}", eve.sim.uri) as pe:
            counted = s.build(pt.uri, pe.uri, pt.tools_tcti)
            for row, via in zip(rows, counted, strict=True):
                proxy = pe if "vault-key" in row.name else pt
                proxy.clear()
                measure(via, record=False, after=False)
                row.commands = [e.name for e in proxy.exchanges]
                if via.after is not None:  # the bench's clean-up: not the row's commands
                    via.after()
        info = machine_info(runs, None, tools_version())
        info["python"] = subprocess.run(  # the interpreter the processes ran on
            [s.python, "-c", "import platform, sys; print(platform.python_version(), "
                             "sys._base_executable)"],
            capture_output=True, text=True, check=True).stdout.strip()
    return info, rows


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def table(info: dict[str, Any], rows: list[Row]) -> str:
    by = {r.name: r for r in rows}
    bases = [(n, by[n]) for n in (TOOLS_BASE, FLOOR_BASE) if n in by]
    out = [
        "tpmseal CLI as processes on swtpm, against tpm2-tools and the floor script "
        "(bench/bench_cli.py)",
        f"machine: {info['platform']}; {info['cpus']} CPUs ({info['cpu']}); "
        f"python {info['python']}; tpmseal {info['tpmseal']}; swtpm {info['swtpm']}; "
        f"tpm2-tools {info['tpm2_tools'] or 'not installed'}",
        f"{info['runs']} interleaved runs per row, medians; cpu = user+sys of the process "
        "and its children; cmds = TPM commands (one run through the recording proxy)",
        "",
        f"{'row':<24} {'wall ms':>8} {'cpu ms':>7} {'RSS MB':>7} {'cmds':>5}  "
        + "  ".join(f"{'/' + ('tools' if n == TOOLS_BASE else 'floor'):>13}" for n, _ in bases),
        f"{'':<24} {'':>8} {'':>7} {'':>7} {'':>5}  "
        + "  ".join(f"{'wall   cpu':>13}" for _ in bases),
    ]
    for r in rows:
        w, c = _med(r.wall), _med(r.cpu)
        ratios = []
        for _, b in bases:
            bw, bc = _med(b.wall), _med(b.cpu)
            ratios.append(f"{w / bw:5.2f}x {c / bc:5.2f}x" if w and bw and c and bc else "-")
        rss = f"{r.rss[0]:7.1f}" if r.rss else f"{'-':>7}"
        out.append(f"{r.name:<24} {w or 0:8.1f} {c or 0:7.1f} {rss} "
                   f"{len(r.commands):5d}  " + "  ".join(f"{x:>13}" for x in ratios))
    if ECC_ROW in by and ECC_FLOOR in by:
        e, f = by[ECC_ROW], by[ECC_FLOOR]
        ew, ec, fw, fc = _med(e.wall), _med(e.cpu), _med(f.wall), _med(f.cpu)
        if ew and ec and fw and fc:
            out += ["", f"ECC EK (provision --ek-type auto on a TPM with one): {ECC_ROW} / "
                        f"{ECC_FLOOR} = {ew / fw:.2f}x wall, {ec / fc:.2f}x cpu"]
    out += ["", "commands per operation:"]
    out += [f"  {r.name}: {' '.join(r.commands)}" for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=15, metavar="N",
                    help="interleaved rounds (default 15)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--python", metavar="PATH", default=None,
                    help=f"the interpreter whose virtual environment tpmseal is installed in "
                         f"(default: Debian's {DEBIAN_PYTHON} when it has venv, else this one)")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="tpmseal-bc-", dir="/tmp"))  # short socket paths
    try:
        info, rows = run(max(1, args.runs), base, args.python or default_python())
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        json.dump({"machine": info, "rows": [
            {"name": r.name, "wall_ms": r.wall, "cpu_ms": r.cpu, "rss_mb": r.rss,
             "commands": r.commands} for r in rows]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table(info, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
