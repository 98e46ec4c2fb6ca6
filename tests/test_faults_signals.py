"""SIGINT and SIGTERM at every step of a real CLI process: clean exit, nothing left loaded.

The sniffer proxy sits between a child ``tpmseal`` and swtpm and, at a chosen
exchange, signals the child while holding the TPM's answer (a slow TPM): the
child must finish the exchange, flush what it loaded, remove temp files, print
one line and exit 130 (SIGINT) or 143 (SIGTERM). swtpm has no resource manager,
so a direct GetCapability(HANDLES) afterwards shows anything the child left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from test_seal_support import cli, leftover_handles, write
from tpmseal.sniff.capture.hooks import HookContext
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.simulator import Simulator

SECRET = os.urandom(32)


class Signaller:
    """Proxy hooks that signal the child at exchange *at* (command or response side)."""

    def __init__(self, at: int, signum: int, side: str):
        self.at, self.signum, self.side = at, signum, side
        self.pid: int | None = None
        self.ready = threading.Event()
        self.fired = False

    def _maybe(self, ctx: HookContext, side: str) -> None:
        if side == self.side and ctx.index == self.at and not self.fired:
            self.ready.wait(10)
            assert self.pid is not None
            os.kill(self.pid, self.signum)
            self.fired = True
            ctx.delay(0.3)  # the TPM is slow: the child must wait for this answer

    def on_command(self, ctx: HookContext) -> None:
        self._maybe(ctx, "command")

    def on_response(self, ctx: HookContext) -> None:
        self._maybe(ctx, "response")


@contextlib.contextmanager
def _proxy(tcg_sim: Simulator) -> Iterator[Proxy]:
    """The proxy holds swtpm's one data connection: everything goes through it."""
    d = Path(tempfile.mkdtemp(prefix="tpmseal-sig-", dir="/tmp"))
    try:
        with Proxy(f"unix:{d / 'tpm.sock'}", tcg_sim.uri) as p:
            yield p
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _names(proxy: Proxy, first: int) -> list[str]:
    return [ex.name for ex in proxy.exchanges[first:]]


def _child(proxy: Proxy, argv: list[str], sig: Signaller, stdin: bytes = b"") -> tuple[int, str]:
    env = {**os.environ, "TPMSEAL_TPM": proxy.uri}
    child = subprocess.Popen([sys.executable, "-m", "tpmseal.cli.main", *argv], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    sig.pid = child.pid
    sig.ready.set()
    _, err = child.communicate(stdin, timeout=60)
    return child.returncode, err.decode()


def _sweep(tcg_sim: Simulator, argv: list[str], tmp_path: Path,
           stdin: bytes = b"") -> dict[str, int]:
    """Run *argv* once to list its exchanges, then signal it at each of them."""
    with _proxy(tcg_sim) as proxy:
        return _sweep_through(proxy, argv, tmp_path, stdin)


def _sweep_through(proxy: Proxy, argv: list[str], tmp_path: Path,
                   stdin: bytes) -> dict[str, int]:
    start = len(proxy.exchanges)
    env = {**os.environ, "TPMSEAL_TPM": proxy.uri}
    done = subprocess.run([sys.executable, "-m", "tpmseal.cli.main", *argv], env=env,
                          input=stdin, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    names = _names(proxy, start)
    assert leftover_handles(proxy.uri) == []
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        for f in tmp_path.iterdir():
            if f.name.startswith("out"):
                f.unlink()
        signum = signal.SIGTERM if k % 2 == 0 else signal.SIGINT
        sig = Signaller(len(proxy.exchanges) + k, signum, "response" if k % 3 else "command")
        with proxy.interpose(sig.on_command, sig.on_response):
            rc, err = _child(proxy, argv, sig, stdin)
        assert sig.fired, (k, name)
        label = f"{name}#{k}"
        assert rc == 128 + signum, (label, rc, err)
        assert err.count("\n") == 1 and "interrupted" in err, (label, err)
        assert leftover_handles(proxy.uri) == [], label
        assert [f.name for f in tmp_path.iterdir() if f.name.startswith((".out", "out"))
                and not f.name.endswith(".lock")] == [], label
        assert all(SECRET not in f.read_bytes() for f in tmp_path.iterdir()
                   if f.is_file() and f.name != "s.bin"), label
        seen[label] = rc
    return seen


def test_signals_during_unseal_leave_nothing(tcg_sim: Simulator, tmp_path: Path) -> None:
    blob = tmp_path / "blob.json"
    r = cli(["seal", "--input", str(write(tmp_path / "s.bin", SECRET)), "--output", str(blob)])
    assert r.rc == 0, r.err
    seen = _sweep(tcg_sim, ["unseal", "--input", str(blob), "--output",
                                   str(tmp_path / "out.bin")], tmp_path)
    names = {label.split("#")[0] for label in seen}
    assert {"StartAuthSession", "Load", "PolicyPCR", "Unseal"} <= names, seen
    assert set(seen.values()) == {130, 143}


def test_signals_during_seal_leave_nothing(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = write(tmp_path / "s.bin", SECRET)
    seen = _sweep(tcg_sim, ["seal", "--input", str(secret), "--output",
                                   str(tmp_path / "out.json")], tmp_path)
    assert "Create" in {label.split("#")[0] for label in seen}, seen


def test_signals_during_reseal_keep_an_unsealable_blob(tcg_sim: Simulator,
                                                       tmp_path: Path) -> None:
    blob = tmp_path / "blob.json"
    r = cli(["seal", "--input", str(write(tmp_path / "s.bin", SECRET)), "--output", str(blob)])
    assert r.rc == 0, r.err
    seen = _sweep(tcg_sim, ["reseal", "--input", str(blob)], tmp_path)
    assert {"Unseal", "Create"} <= {label.split("#")[0] for label in seen}, seen
    assert cli(["unseal", "--input", str(blob), "--output", "-"]).out == SECRET


def test_signals_during_vault_key_leave_nothing(eve_sim: Simulator, tmp_path: Path) -> None:
    first = tmp_path / "first.bin"
    assert cli(["vault-key", "--output", str(first)]).rc == 0  # generated and sealed
    seen = _sweep(eve_sim, ["vault-key", "--output", str(tmp_path / "out.bin")], tmp_path)
    assert {"NV_Read", "Unseal"} <= {label.split("#")[0] for label in seen}, seen
    assert cli(["vault-key", "--output", "-"]).out == first.read_bytes()
