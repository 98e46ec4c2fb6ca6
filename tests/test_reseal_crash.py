"""Reseal without a window for loss: crash after every TPM command and file step.

A crash is injected by a transport that stops talking to the TPM after N
commands (the TPM ran command N; the process never saw its response), for
N = 1, 2, ... until a reseal completes. After each crash the leftover
transient objects and sessions are flushed (what a resource manager does when
a client dies), and the secret must still unseal from what is stored — the
old copy or the new one — and a following reseal must work. File steps
(fsync, rename) are crashed separately, and real child processes are
SIGKILLed at chosen commands through a proxy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import tpmseal.files
from conftest import measure_boot, start_copy
from test_seal_support import (
    Crash,
    TpmLog,
    cli,
    extend,
    flush_leftovers,
    install_crash,
    leftover_handles,
    secret_bytes,
    write,
)
from tpmseal.client.tpm import Tpm
from tpmseal.recipes import recovery
from tpmseal.recipes.stores import nv_public
from tpmseal.transport.simulator import Simulator
from tpmseal.transport.stream import read_frame

OLD, NEW = "sha256:0,1,2,3,4,6,7", "sha256:0,2,4,7"
NV_INDICES = (0x01800000, 0x01900000, 0x01800001, 0x01900001)


@dataclass
class Case:
    """One fresh TPM holding a sealed secret, and the commands to use it."""

    sim: Simulator
    key: bytes
    work: Path
    nv: bool
    current: str = OLD  # the PCRs of the copy that unsealed last
    #: what the reseal seals to (the default reads the current PCRs)
    new: tuple[str, ...] = ("--pcrs", NEW)

    @property
    def common(self) -> list[str]:
        return ["--tpm", self.sim.uri, "--trust-file", str(self.sim.state / "trust.json")]

    @property
    def blob(self) -> Path:
        return self.work / "sealed.json"

    def seal(self) -> None:
        where = ["--nv"] if self.nv else ["--output", str(self.blob)]
        r = cli([*self.common, "seal", "--profile", "eve", *where, "--pcrs", OLD,
                 "--input", str(write(self.work / "key", self.key))])
        assert r.rc == 0, r.err

    def reseal_argv(self) -> list[str]:
        where = (["--nv", "--old-pcrs", self.current] if self.nv
                 else ["--input", str(self.blob)])
        return [*self.common, "reseal", "--profile", "eve", *where, *self.new]

    def unseal(self) -> bytes:
        """The secret from the old copy or the new one (NV: no recovery search, which
        would make the sweep slow; recovery has its own tests)."""
        if not self.nv:
            r = cli([*self.common, "unseal", "--profile", "eve", "--input", str(self.blob)])
            assert r.rc == 0, f"secret lost: {r.err}"
            return r.out
        errors = []
        for pcrs in (OLD, NEW):
            r = cli([*self.common, "unseal", "--profile", "eve", "--nv", "--pcrs", pcrs,
                     "--no-recover"])
            if r.rc == 0:
                self.current = pcrs
                return r.out
            errors.append(r.err)
        raise AssertionError(f"secret lost: {errors}")

    def nv_state(self) -> dict[int, bool]:
        """Which of main/staging indices are defined, and whether written."""
        with Tpm.open(self.sim.uri) as t:
            return {i: bool(p.attributes & 0x20000000) for i in NV_INDICES
                    if (p := nv_public(t, i)) is not None}


@pytest.fixture
def cases(eve_template: Path, tmp_path: Path) -> Iterator[Callable[[bool], Case]]:
    """Factory of fresh cases (a private simulator copy each)."""
    made: list[Simulator] = []
    key = secret_bytes()

    def make(nv: bool) -> Case:
        s = start_copy(eve_template)
        made.append(s)
        measure_boot(s)
        work = Path(tempfile.mkdtemp(dir=tmp_path))
        c = Case(s, key, work, nv)
        c.seal()
        return c

    yield make
    for s in made:
        s.stop()
        shutil.rmtree(s.state, ignore_errors=True)


def _crash_reseal(case: Case, after: int, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Reseal, crashing after *after* TPM commands; True if it crashed."""
    with monkeypatch.context() as m:
        install_crash(m, after)
        try:
            r = cli(case.reseal_argv())
        except Crash:
            return True
    assert r.rc == 0, r.err
    return False


def _check_after_crash(case: Case) -> list[int]:
    """Clean up as a resource manager would, then the secret must unseal; returns what
    the crashed process had left loaded."""
    flushed = flush_leftovers(case.sim.uri)
    assert case.unseal() == case.key
    assert leftover_handles(case.sim.uri) == []
    return flushed


def _sweep(make: Callable[[], Case], monkeypatch: pytest.MonkeyPatch,
           prepare: Callable[[Case], None] = lambda c: None) -> int:
    """Crash a reseal after every command in turn; returns how many commands a reseal takes."""
    n = 0
    left: set[int] = set()
    while True:
        n += 1
        case = make()
        prepare(case)
        crashed = _crash_reseal(case, n, monkeypatch)
        try:
            left.update(h >> 24 for h in _check_after_crash(case))
        except AssertionError as e:
            raise AssertionError(f"after a crash at command {n}: {e}") from None
        if not crashed:
            # some crash left a loaded object and a session behind: the cleanup was exercised
            assert {0x80, 0x03} <= left, left
            return n - 1
        # the next reseal, uninterrupted, repairs whatever state the crash left
        assert cli(case.reseal_argv()).rc == 0
        assert case.unseal() == case.key
        if case.nv:
            assert set(case.nv_state()) == {0x01800000, 0x01900000}
        case.sim.stop()
        assert n < 100


def test_reseal_nv_crash_after_every_command(cases: Callable[[bool], Case],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    total = _sweep(lambda: cases(True), monkeypatch)
    assert total >= 20  # unseal + seal + staging and main NV writes


def test_reseal_file_crash_after_every_command(cases: Callable[[bool], Case],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    total = _sweep(lambda: cases(False), monkeypatch)
    assert total == 8  # Load, StartAuthSession, PolicyPCR, Unseal, Flush; SAS, PCR_Read, Create


def test_reseal_nv_to_states_crash_after_every_command(cases: Callable[[bool], Case],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-salted-session path (recipes/sealing.py, ``carrier``): a reseal --nv
    that adds a PolicyOR state keeps the unseal's session open for Create. A crash
    after any command (the kept session then left to the cleanup) leaves a copy that
    unseals, and the next reseal (the same state added again, so the same states)
    repairs the layout."""
    def prepare(case: Case) -> None:
        r = cli([*case.common, "pcrs", "show", "--pcrs", OLD, "--json"])
        assert r.rc == 0, r.err
        state = json.loads(r.out)
        state["sha256"]["7"] = "55" * 32
        case.new = ("--add-state", str(write(case.work / "state.json",
                                             json.dumps(state).encode())))

    log_case, log = cases(True), TpmLog()
    prepare(log_case)
    with monkeypatch.context() as m:
        log.install(m)
        assert cli(log_case.reseal_argv()).rc == 0
    log_case.sim.stop()
    assert log.names().count("StartAuthSession") == 1  # the carrier path
    assert _sweep(lambda: cases(True), monkeypatch, prepare) == len(log.names())


@pytest.mark.parametrize("state", ["main-mixed", "main-stale"])
def test_reseal_nv_after_an_interrupted_reseal(cases: Callable[[bool], Case],
                                               monkeypatch: pytest.MonkeyPatch,
                                               state: str) -> None:
    """A crashed reseal can leave staging as the only copy that unseals: mid-swap (the
    main pair's private index rewritten in place, its public one not yet), or before
    the swap when the PCRs then move on so that only the new policy holds (the main
    pair complete but stale). A second reseal, itself crashed after every command,
    must not lose the secret either."""
    # a stale copy makes every reseal try a PCR recovery search first (~1 s each): skip it
    monkeypatch.setattr(recovery, "recover", lambda *a, **kw: None)
    log_case = cases(True)
    log = TpmLog()
    with monkeypatch.context() as m:
        log.install(m)
        assert cli(log_case.reseal_argv()).rc == 0
    log_case.sim.stop()
    writes = [i for i, n in enumerate(log.names()) if n == "NV_Write"]
    # NV_Writes: staging private, staging public, main private, main public
    first_crash = writes[2 if state == "main-mixed" else 1] + 1

    def prepare(case: Case) -> None:
        assert _crash_reseal(case, first_crash, monkeypatch)
        flush_leftovers(case.sim.uri)
        got = case.nv_state()
        assert got == dict.fromkeys(NV_INDICES, True), got
        if state == "main-stale":
            extend(case.sim.uri, 6)  # in OLD, not in NEW: only the staged copy unseals
        case.current = NEW

    _sweep(lambda: cases(True), monkeypatch, prepare)


# --------------------------------------------------------------------------- files


class _CrashingOs(ModuleType):
    """tpmseal.files' view of ``os``: the k-th call of a file step crashes."""

    STEPS = ("fchmod", "write", "fsync", "link", "replace", "open")

    def __init__(self, crash_at: int):
        super().__init__("os")
        self.crash_at = crash_at
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in self.STEPS:
            return real

        def step(*a: Any, **kw: Any) -> Any:
            self.calls.append(name)
            if len(self.calls) == self.crash_at:
                raise Crash(f"crash at {name}")
            return real(*a, **kw)
        return step


def test_reseal_file_crash_at_every_file_step(cases: Callable[[bool], Case],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    k = 0
    seen: list[str] = []
    while True:
        k += 1
        case = cases(False)
        before = case.blob.read_bytes()
        fake = _CrashingOs(k)
        with monkeypatch.context() as m:
            m.setattr(tpmseal.files, "os", fake)
            try:
                r = cli(case.reseal_argv())
                crashed = False
            except Crash:
                crashed = True
        _check_after_crash(case)
        leftovers = [p.name for p in case.work.iterdir()
                     if p.name.startswith(".") and not p.name.endswith(".lock")]
        assert leftovers == []  # the lock file stays by design (tpmseal.files.locked)
        if not crashed:
            assert r.rc == 0 and case.blob.read_bytes() != before
            break
        seen = fake.calls
        case.sim.stop()
    assert {"fsync", "replace"} <= set(seen), seen


# ------------------------------------------------------------------------- SIGKILL


class KillingProxy:
    """A unix-socket TPM proxy that SIGKILLs its client's process once the TPM has run
    the client's k-th command, before the response reaches the client."""

    def __init__(self, upstream: Path, listen_at: Path, kill_after: int):
        self.upstream, self.kill_after = upstream, kill_after
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(listen_at))
        self.sock.listen(4)
        self.uri = f"unix:{listen_at}"
        self.pid: int | None = None
        self.ready = threading.Event()
        self.killed = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.killed.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as up:
                up.connect(str(self.upstream))
                with contextlib.suppress(Exception):  # the client went away
                    self._relay(client, up)

    def _relay(self, client: socket.socket, up: socket.socket) -> None:
        while True:
            command = read_frame(client, self.uri, "command")
            up.sendall(command)
            response = read_frame(up, str(self.upstream))
            self.count += 1
            if self.count == self.kill_after:
                self.ready.wait(10)
                assert self.pid is not None
                os.kill(self.pid, signal.SIGKILL)
                self.killed.set()
                return
            client.sendall(response)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_reseal_sigkill_child(cases: Callable[[bool], Case], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    probe = cases(True)
    log = TpmLog()
    with monkeypatch.context() as m:
        log.install(m)
        assert cli(probe.reseal_argv()).rc == 0
    total = len(log.names())
    names = log.names()
    # points of interest: mid-unseal, right after Create, each NV phase boundary, the end
    points = sorted({3, names.index("Create") + 1, *(i + 1 for i, n in enumerate(names)
                                                   if n == "NV_Write"), total - 1})
    for k in points:
        case = cases(True)
        proxy = KillingProxy(case.sim.sock, Path(tempfile.mkdtemp(dir="/tmp")) / "p.sock", k)
        argv = [a if a != case.sim.uri else proxy.uri for a in case.reseal_argv()]
        child = subprocess.Popen([sys.executable, "-m", "tpmseal.cli.main", *argv],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proxy.pid = child.pid
        proxy.ready.set()
        _, err = child.communicate(timeout=60)
        proxy.close()
        assert child.returncode == -signal.SIGKILL, (k, child.returncode, err)
        assert proxy.count == k
        _check_after_crash(case)
        case.sim.stop()
