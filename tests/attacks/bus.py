"""The attacker's bench: a proxy on the bus, state snapshots, secret-safe assertions.

swtpm serves one data connection at a time and the proxy holds it while it
runs, so snapshots of the TPM (:func:`tpm_state`) are taken on a direct
connection *before* the proxy starts and *after* it stops.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from test_seal_support import CliResult, cli
from tpmseal.client.tpm import Tpm
from tpmseal.sniff.analysis.leaks import find, scan
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_CC, TPM_HT, TPM_RH, TPMA_NV, enum_name, handle_type
from tpmseal.wire.rc import TpmResponseError

NV_FIRST = 0x01000000
PERSISTENT_FIRST = 0x81000000


@contextmanager
def interposer(sim: Simulator, *, at: Path | None = None, **kw: Any) -> Iterator[Proxy]:
    """A recording :class:`Proxy` in front of *sim* (hooks via ``.interpose``), listening
    on a fresh socket or on *at* (so that several proxies in turn are one TPM address)."""
    d = Path(tempfile.mkdtemp(prefix="tpmseal-atk-", dir="/tmp"))
    try:
        with Proxy(f"unix:{at or d / 'tpm.sock'}", sim.uri, **kw) as proxy:
            yield proxy
    finally:
        shutil.rmtree(d, ignore_errors=True)


@dataclass(frozen=True, repr=False)
class Run(CliResult):
    """A CLI run whose repr shows stdout's length only: pytest prints the repr of
    anything in a failing ``assert``, and stdout may be the secret."""

    def __repr__(self) -> str:
        return f"Run(rc={self.rc}, out=<{len(self.out)} bytes>, err={self.err!r})"


def tpm(proxy: Proxy, *argv: str, stdin: bytes = b"") -> Run:
    """``tpmseal --tpm PROXY ARGV`` in this process."""
    r = cli(["--tpm", proxy.uri, *argv], stdin)
    return Run(r.rc, r.out, r.err)


def direct(sim: Simulator, *argv: str, stdin: bytes = b"") -> Run:
    """``tpmseal --tpm SIM ARGV`` with no one on the bus."""
    r = cli(["--tpm", sim.uri, *argv], stdin)
    return Run(r.rc, r.out, r.err)


# These helpers live outside the test modules, so pytest does not rewrite their
# asserts: a failure shows the message, never the bytes compared.


def expect_ok(r: Run, secret: bytes | None = None, *, size: int | None = None,
              what: str = "") -> None:
    """Exit 0, and stdout is exactly *secret* (or *size* bytes)."""
    __tracebackhide__ = True
    ctx = f"{what}: " if what else ""
    if r.rc != 0:
        raise AssertionError(f"{ctx}exit {r.rc}: {r.err.strip()}")
    if secret is not None and r.out != secret:
        raise AssertionError(f"{ctx}exit 0 but stdout ({len(r.out)} bytes) is NOT the "
                             f"{len(secret)}-byte secret: wrong data returned")
    if size is not None and len(r.out) != size:
        raise AssertionError(f"{ctx}stdout has {len(r.out)} bytes, expected {size}")


def expect_error(r: Run, code: int, *needles: str, what: str = "") -> None:
    """The documented failure: exit *code*, one ``tpmseal: error:`` line holding every
    needle, no traceback, nothing on stdout."""
    __tracebackhide__ = True
    ctx = f"{what}: " if what else ""
    lines = r.err.splitlines()
    if r.rc != code:
        raise AssertionError(f"{ctx}exit {r.rc}, expected {code}: {r.err.strip()}")
    if r.out:
        raise AssertionError(f"{ctx}exit {r.rc} but {len(r.out)} bytes on stdout")
    if len(lines) != 1 or not lines[0].startswith("tpmseal: error: ") or "Traceback" in r.err:
        raise AssertionError(f"{ctx}not one error line: {r.err!r}")
    missing = [n for n in needles if n not in lines[0]]
    if missing:
        raise AssertionError(f"{ctx}{missing} not in {lines[0]!r}")


def same_bytes(a: bytes, b: bytes, what: str) -> None:
    """*a* == *b* for secrets: the message gives lengths only."""
    __tracebackhide__ = True
    if a != b:
        raise AssertionError(f"{what}: {len(a)} bytes differ from the expected {len(b)}")


# --------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class TpmState:
    """What an attack must not change: persistent objects and NV indices, by content."""

    persistent: dict[int, bytes]  # handle -> Name
    nv: dict[int, tuple[bytes, bytes | None]]  # index -> (Name, contents if readable)

    def diff(self, other: TpmState) -> list[str]:
        """Which handles differ (no contents: they may be secret)."""
        out = []
        for what, a, b in (("persistent", self.persistent, other.persistent),
                           ("NV", self.nv, other.nv)):
            for h in sorted(set(a) | set(b)):
                if a.get(h) != b.get(h):
                    out.append(f"{what} {h:#x}: " + ("added" if h not in a else "removed"
                                                     if h not in b else "changed"))
        return out


def _read_nv(t: Tpm, index: int) -> tuple[bytes, bytes | None]:
    pub = t.nv_read_public(index)
    name = pub.name()
    if not pub.attributes & TPMA_NV.WRITTEN or not pub.data_size:
        return name, None
    auth = (TPM_RH.OWNER if pub.attributes & TPMA_NV.OWNERREAD
            else index if pub.attributes & TPMA_NV.AUTHREAD else None)
    if auth is None:
        return name, None
    try:
        return name, t.nv_read(index, pub.data_size, auth)
    except TpmResponseError:
        return name, None


def tpm_state(sim: Simulator) -> TpmState:
    """Persistent objects' Names and every NV index's Name and contents (direct connection)."""
    with Tpm.open(sim.uri) as t:
        persistent = {h: t.names[h] if h in t.names else _name(t, h)
                      for h in t.handles(PERSISTENT_FIRST)}
        nv = {i: _read_nv(t, i) for i in t.handles(NV_FIRST)
              if handle_type(i) == TPM_HT.NV_INDEX}
    return TpmState(persistent, nv)


def _name(t: Tpm, handle: int) -> bytes:
    t.read_public(handle)
    return t.names[handle]


def files_state(paths: Iterable[Path]) -> dict[Path, bytes | None]:
    return {p: p.read_bytes() if p.exists() else None for p in paths}


@dataclass
class Unchanged:
    """Snapshot of the TPM and some files; :meth:`check` asserts nothing changed."""

    sim: Simulator
    paths: tuple[Path, ...]

    def __post_init__(self) -> None:
        self.tpm_before = tpm_state(self.sim)
        self.files_before = files_state(self.paths)

    def check(self) -> None:
        __tracebackhide__ = True
        changed = self.tpm_before.diff(tpm_state(self.sim))
        assert not changed, changed
        now = files_state(self.paths)
        for p in self.paths:
            before, after = self.files_before[p], now[p]
            assert before == after, (f"{p} " + ("created" if before is None else "removed"
                                                if after is None else "modified"))


def unchanged(sim: Simulator, *paths: Path) -> Unchanged:
    return Unchanged(sim, tuple(paths))


# ------------------------------------------------------------------------ secrets


def assert_no_leak(exchanges: Sequence[Exchange], *secrets: bytes) -> None:
    """No secret in any spelling (raw, hex, base64) on either side of any exchange."""
    __tracebackhide__ = True
    assert exchanges, "the proxy recorded nothing: the test did not exercise the bus"
    leaks = scan(exchanges, list(secrets))
    assert not leaks, [leak.describe() for leak in leaks]


def assert_not_in(data: bytes, secret: bytes, where: str) -> None:
    """*secret* (any spelling) does not occur in *data*; the message names no bytes."""
    __tracebackhide__ = True
    hits = find(data, [secret])
    assert not hits, f"the secret occurs in {where} ({hits[0].encoding} at {hits[0].offset})"


def names(exchanges: Sequence[Exchange]) -> list[str]:
    """Command names in bus order (e.g. ``["Load", "StartAuthSession", ...]``)."""
    out = []
    for e in exchanges:
        try:
            out.append(enum_name(TPM_CC, e.code))
        except ValueError:
            out.append(f"{e.code:#x}")
    return out
