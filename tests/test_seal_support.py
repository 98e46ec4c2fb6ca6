"""Helpers shared by the seal / unseal / reseal / vault / CLI tests (no tests here).

* :func:`cli` runs ``tpmseal`` in-process (``main([...])``) with private
  stdin/stdout/stderr and returns exit code, raw stdout and stderr;
  :func:`cli_subprocess` runs it as a real child process.
* :class:`TpmLog` wraps every transport the CLI opens in a
  :class:`CapturingTransport`, so a test can list the commands one run issued.
* :class:`CrashingTransport` dies (raises :class:`Crash`, a BaseException, as a
  killed process would stop) once a given number of commands reached the TPM.
* :func:`flush_leftovers` does what a resource manager does when a client
  dies: flush its transient objects and sessions.
* :func:`tools` runs tpm2-tools 5.4 against a simulator.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

import tpmseal.client.tpm as client_tpm
from tpmseal.cli.main import main
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.blob import SealedBlob
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.transport.base import Transport, open_transport
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_CAP, TPM_CC, enum_name
from tpmseal.wire.structures import PcrSelection, PcrSelectionList

#: EVE's default PCR list, and the TCG profile's.
EVE_PCRS = "sha256:0,1,2,3,4,6,7,8,9,10,11,12,13,14"
TCG_PCRS = "sha256:0,1,2,3,4,6,7"

#: First handles of the ranges a resource manager would clean up after a dead client.
LEFTOVER_RANGES = (0x80000000, 0x02000000, 0x03000000)


# ----------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class CliResult:
    rc: int
    out: bytes
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def cli(argv: Sequence[str], stdin: bytes = b"") -> CliResult:
    """Run ``tpmseal ARGV`` in this process; never raises for a failing command."""
    saved = sys.stdin, sys.stdout, sys.stderr
    out, err = io.BytesIO(), io.BytesIO()
    streams = (io.TextIOWrapper(io.BytesIO(stdin)), io.TextIOWrapper(out, write_through=True),
               io.TextIOWrapper(err, write_through=True))
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        try:
            rc = main(list(argv))
        except SystemExit as e:  # argparse: --help (0) and usage errors (2)
            rc = e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        for s in streams:
            s.flush()
            s.detach()  # keep the buffers open for reading
    return CliResult(rc, out.getvalue(), err.getvalue().decode())


def cli_subprocess(argv: Sequence[str], stdin: bytes = b"", env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> CliResult:
    """Run ``tpmseal ARGV`` as a child process (inherits TPMSEAL_* from os.environ)."""
    done = subprocess.run([sys.executable, "-m", "tpmseal.cli.main", *argv], input=stdin,
                          capture_output=True, env=env, cwd=cwd, timeout=60, check=False)
    return CliResult(done.returncode, done.stdout, done.stderr.decode())


def assert_one_line_error(r: CliResult, code: int, *needles: str) -> None:
    """The documented failure shape: exit *code*, one stderr line, no traceback."""
    assert r.rc == code, (r.rc, r.err)
    assert len(r.err_lines) == 1, r.err
    line = r.err_lines[0]
    assert line.startswith("tpmseal: error: ") or (
        line.startswith("tpmseal ") and ": error: " in line), line
    assert "Traceback" not in r.err
    for needle in needles:
        assert needle in line, (needle, line)


# ----------------------------------------------------------------------- transports


@dataclass
class TpmLog:
    """Every transport opened through ``Tpm.open`` while installed, capturing."""

    captures: list[CapturingTransport] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> TpmLog:
        def wrapped(uri: str | None = None, timeout: float = 120.0) -> Transport:
            cap = CapturingTransport(open_transport(uri, timeout))
            self.captures.append(cap)
            return cap

        monkeypatch.setattr(client_tpm, "open_transport", wrapped)
        return self

    def names(self) -> list[str]:
        return [cc_name(c) for cap in self.captures for c in cap.codes()]

    def exchanges(self) -> list[tuple[bytes, bytes]]:
        return [(e.command, e.response or b"") for cap in self.captures for e in cap.exchanges]

    def clear(self) -> None:
        self.captures.clear()


def cc_name(code: int) -> str:
    try:
        return enum_name(TPM_CC, code)
    except ValueError:
        return f"{code:#x}"


class Crash(BaseException):
    """The process 'died': nothing after this reaches the TPM."""


@dataclass
class CrashingTransport:
    """Passes *after* commands to the TPM, then crashes (the TPM ran the last one,
    the caller never sees its response); every later send crashes too."""

    inner: Transport
    after: int
    sent: int = 0

    @property
    def uri(self) -> str:
        return self.inner.uri

    def send(self, command: bytes) -> bytes:
        if self.sent >= self.after:
            raise Crash(f"crashed after {self.after} commands")
        self.sent += 1
        response = self.inner.send(command)
        if self.sent >= self.after:
            raise Crash(f"crashed after {self.after} commands")
        return response

    def close(self) -> None:
        self.inner.close()


def install_crash(monkeypatch: pytest.MonkeyPatch, after: int) -> list[CrashingTransport]:
    """Make the next ``Tpm.open`` crash after *after* commands (counted over all opens)."""
    opened: list[CrashingTransport] = []

    def wrapped(uri: str | None = None, timeout: float = 120.0) -> Transport:
        done = sum(t.sent for t in opened)
        t = CrashingTransport(open_transport(uri, timeout), max(after - done, 0))
        opened.append(t)
        return t

    monkeypatch.setattr(client_tpm, "open_transport", wrapped)
    return opened


def _leftovers(t: Tpm) -> list[int]:
    # the loaded-session query (0x02) lists policy sessions with their own type, 0x03
    kinds = {0x80000000: {0x80}, 0x02000000: {0x02, 0x03}, 0x03000000: {0x02, 0x03}}
    found: list[int] = []
    for first in LEFTOVER_RANGES:
        for (h,) in t.capability(TPM_CAP.HANDLES, first):
            if h >> 24 in kinds[first] and h not in found:
                found.append(h)
    return found


def flush_leftovers(uri: str) -> list[int]:
    """Flush every transient object and session, as a resource manager would for a dead
    client; returns the handles flushed."""
    with Tpm(open_transport(uri)) as t:
        flushed = _leftovers(t)
        for h in flushed:
            t.run(cmds.FlushContext(h))
    return flushed


def leftover_handles(uri: str) -> list[int]:
    """Transient objects and sessions (loaded or saved) present on the TPM."""
    with Tpm(open_transport(uri)) as t:
        return _leftovers(t)


def extend(uri: str, pcr: int, data: bytes = b"tampered", bank: str = "sha256") -> None:
    """PCR_Extend one bank of *pcr* with H(data)."""
    from tpmseal.recipes.pcrspec import bank_alg
    from tpmseal.wire.structures import DigestValues, digest

    alg = bank_alg(bank)
    with Tpm(open_transport(uri)) as t:
        t.run(cmds.PCR_Extend(pcr, DigestValues(((alg, digest(alg, data)),))))


def read_pcrs(uri: str, bank: int, pcrs: Sequence[int]) -> dict[tuple[int, int], bytes]:
    with Tpm(open_transport(uri)) as t:
        return t.pcr_read(PcrSelectionList((PcrSelection(bank, tuple(pcrs)),)))


def load_blob(path: Path) -> SealedBlob:
    return SealedBlob.from_json(path.read_bytes(), str(path))


# ------------------------------------------------------------------------ tpm2-tools


def tools(sim: Simulator, *argv: str, cwd: Path | None = None,
          check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run one tpm2-tools command against *sim*."""
    env = {**os.environ, "TPM2TOOLS_TCTI": sim.tools_tcti}
    done = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, timeout=60,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): "
                             f"{done.stderr.decode(errors='replace')}")
    return done


def tools_flush(sim: Simulator) -> None:
    """tpm2-tools leave objects and sessions loaded when no resource manager is in between."""
    for flag in ("-t", "-s", "-l"):
        tools(sim, "tpm2_flushcontext", flag, check=False)


def tools_unseal(sim: Simulator, cwd: Path, srk: str, ek: str, pcrs: str,
                 salted: bool) -> bytes:
    """tpm2-tools unseal of cwd/seal.pub + seal.priv under *srk* through a PolicyPCR session
    (EK-salted with --enable-encrypt when *salted*); returns the unsealed bytes."""
    tools(sim, "tpm2_load", "-C", srk, "-u", "seal.pub", "-r", "seal.priv", "-c", "seal.ctx",
          cwd=cwd)
    session = ["tpm2_startauthsession", "--policy-session", "-S", "pol.ctx"]
    if salted:
        session += ["--tpmkey-context", ek, "-g", "sha256", "-G", "aes"]
    tools(sim, *session, cwd=cwd)
    tools(sim, "tpm2_policypcr", "-S", "pol.ctx", "-l", pcrs, cwd=cwd)
    if salted:
        tools(sim, "tpm2_sessionconfig", "--enable-encrypt", "pol.ctx", cwd=cwd)
    tools(sim, "tpm2_unseal", "-c", "seal.ctx", "-p", "session:pol.ctx", "-o", "out", cwd=cwd)
    tools_flush(sim)
    return (cwd / "out").read_bytes()


def pinned_json(doc: dict[str, Any], profile: str = "tcg") -> dict[str, Any]:
    """The JSON object of *profile*'s only record in a trust file document (format 1 or 2)."""
    if "profiles" in doc:
        return cast(dict[str, Any], doc["profiles"][profile])
    found = [e["profiles"][profile] for e in doc["tpms"].values() if profile in e["profiles"]]
    assert len(found) == 1, found
    return cast(dict[str, Any], found[0])


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def secret_bytes() -> bytes:
    """A random 32-byte key whose spelling cannot occur by chance on the bus."""
    return os.urandom(32)

