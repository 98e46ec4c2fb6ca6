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
from tpmseal.transport.base import open_transport
from tpmseal.transport.capture import CapturingTransport
from tpmseal.transport.simulator import Simulator

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
    """Hook for the provisioned state every test starts from (EKs come from swtpm_setup)."""


def start_copy(template: Path) -> Simulator:
    d = _short_dir("tpmseal-")
    shutil.rmtree(d)
    shutil.copytree(template, d, ignore=_IGNORE)
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
