"""Test fixtures: real swtpm simulators on private unix sockets.

A session-wide *template* state is provisioned once (swtpm_setup with EK
certificates from a private CA, then tpmseal's own provisioning); every test
that asks for ``sim`` gets a private copy of it started on its own socket, so
tests cannot disturb each other and a copy costs a few milliseconds.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tpmseal.client.tpm import Tpm
from tpmseal.recipes.profiles import get_profile
from tpmseal.recipes.provision import provision
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.transport.base import open_transport
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import HASH_SIZES
from tpmseal.wire.structures import DigestValues, digest

_IGNORE = shutil.ignore_patterns("tpm.sock*", "swtpm.pid", "swtpm.log")


def _short_dir(prefix: str) -> Path:
    # unix socket paths are limited to 107 bytes: keep simulators out of deep pytest dirs
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="session")
def sim_template() -> Iterator[Path]:
    """A provisioned, stopped simulator state to copy from."""
    d = _short_dir("tpmseal-tpl-")
    sim = Simulator(d)
    sim.start(ek_cert=True)
    try:
        provision_template(sim)
    finally:
        sim.stop()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def provision_template(sim: Simulator) -> None:
    """Hook for the state every ``sim`` starts from (EKs and certs come from swtpm_setup)."""


def _provisioned_template(base: Path, profile: str) -> Path:
    """A copy of *base* provisioned for *profile*, with its trust file at STATE/trust.json."""
    d = _short_dir(f"tpmseal-{profile}-")
    shutil.rmtree(d)
    shutil.copytree(base, d, ignore=_IGNORE)
    sim = Simulator(d)
    sim.start()
    try:
        with Tpm.open(sim.uri) as t:
            # RSA: tests of the EK types start from a pinned RSA EK (test_cli_edges.py)
            provision(t, get_profile(profile), ek_type="rsa", trust_file=d / "trust.json")
    finally:
        sim.stop()
    return d


def measure_boot(sim: Simulator) -> None:
    """Extend PCRs 0-7 of every bank as a measured boot would (a simulator starts at zero)."""
    with Tpm.open(sim.uri) as t:
        for pcr in range(8):
            event = f"boot component {pcr}".encode()
            t.run(cmds.PCR_Extend(pcr, DigestValues(tuple(
                (alg, digest(alg, event)) for alg in HASH_SIZES))))


@pytest.fixture(scope="session")
def tcg_template(sim_template: Path) -> Iterator[Path]:
    d = _provisioned_template(sim_template, "tcg")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def eve_template(sim_template: Path) -> Iterator[Path]:
    d = _provisioned_template(sim_template, "eve")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _measured(template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    s = start_copy(template)
    measure_boot(s)
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(s.state / "trust.json"))
    monkeypatch.setenv("TPMSEAL_TPM", s.uri)
    yield s
    s.stop()
    shutil.rmtree(s.state, ignore_errors=True)


@pytest.fixture
def tcg_sim(tcg_template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    """A running TPM provisioned for the tcg profile after a measured boot (PCRs 0-7 set).

    ``$TPMSEAL_TPM`` and ``$TPMSEAL_TRUST_FILE`` point at it (trust file STATE/trust.json).
    """
    yield from _measured(tcg_template, monkeypatch)


@pytest.fixture
def eve_sim(eve_template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    """Like ``tcg_sim`` for EVE's profile (EK 0x81000001, SRK 0x81000002)."""
    yield from _measured(eve_template, monkeypatch)


def start_copy(template: Path) -> Simulator:
    """A running copy of *template*; its trust file's records are at the copy's address
    (the copy is the TPM they were provisioned on)."""
    d = _short_dir("tpmseal-")
    shutil.rmtree(d)
    shutil.copytree(template, d, ignore=_IGNORE)
    pinned = d / "trust.json"
    if pinned.exists():
        pinned.write_text(pinned.read_text().replace(str(template), str(d)))
    sim = Simulator(d)
    sim.start()
    return sim


@pytest.fixture
def sim(sim_template: Path) -> Iterator[Simulator]:
    """A running private copy of the provisioned template."""
    s = start_copy(sim_template)
    yield s
    s.stop()
    shutil.rmtree(s.state, ignore_errors=True)


@pytest.fixture
def blank_sim() -> Iterator[Simulator]:
    """A running simulator with a factory-fresh TPM (no EK, no SRK, no certificates)."""
    d = _short_dir("tpmseal-blank-")
    s = Simulator(d)
    s.start()
    yield s
    s.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def bus(sim: Simulator) -> Iterator[CapturingTransport]:
    """A capturing transport to ``sim``: every exchange is recorded."""
    cap = CapturingTransport(open_transport(sim.uri))
    yield cap


@pytest.fixture
def tpm(bus: CapturingTransport) -> Iterator[Tpm]:
    """A client on ``bus``; closes (and flushes what it loaded) at the end."""
    with Tpm(bus) as t:
        yield t


@pytest.fixture
def sniffed(sim: Simulator) -> Iterator[Proxy]:
    """The sniffer proxy in front of ``sim``: connect to ``.uri``, assert on ``.exchanges``.

    The proxy holds swtpm's one data connection, so do not combine it with the
    direct ``bus``/``tpm`` fixtures; ``Tpm.open(sniffed.uri)`` is the client, and
    ``sniffed.tools_tcti`` the tpm2-tools TCTI. A hook that raised fails the test.
    """
    d = _short_dir("tpmseal-sniff-")
    try:
        with Proxy(f"unix:{d / 'tpm.sock'}", sim.uri) as proxy:
            yield proxy
    finally:
        shutil.rmtree(d, ignore_errors=True)
