"""The ``device:`` transport, through a pty relay standing in for /dev/tpmrm0 (ptyrelay.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptyrelay import PtyRelay
from test_seal_support import cli, secret_bytes
from tpmseal.client.tpm import Tpm
from tpmseal.transport.base import open_transport, parse_uri
from tpmseal.transport.device import DeviceTransport
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_SE


@pytest.fixture
def relay(tcg_sim: Simulator) -> Iterator[PtyRelay]:
    r = PtyRelay(parse_uri(tcg_sim.uri))
    yield r
    r.close()


def test_device_transport_exchanges(relay: PtyRelay) -> None:
    t = open_transport(relay.uri)
    assert isinstance(t, DeviceTransport)
    with Tpm(t) as tpm:
        assert len(tpm.get_random(32)) == 32
        assert tpm.pcr_banks()
    assert relay.commands >= 2


def test_cli_seal_unseal_through_the_device(relay: PtyRelay, tmp_path: Path) -> None:
    secret = secret_bytes()
    blob = tmp_path / "disk.json"
    r = cli(["--tpm", relay.uri, "seal", "--pcrs", "sha256:0,7", "--output", str(blob)],
            stdin=secret)
    assert r.rc == 0, r.err
    r = cli(["--tpm", relay.uri, "unseal", "--input", str(blob), "--output", "-"])
    assert (r.rc, r.out) == (0, secret), r.err
    relay.wait_idle()
    assert relay.flushed == []  # tpmseal flushes its own sessions and objects


def test_close_flushes_what_the_client_left(relay: PtyRelay) -> None:
    """A client that dies holding a session and a key leaves nothing, as with the kernel RM."""
    tpm = Tpm(DeviceTransport(relay.path, 10.0))
    session = tpm.start_session(TPM_SE.HMAC)
    tpm.transport.close()  # not tpm.close(): no FlushContext is sent
    relay.wait_idle()
    assert session.handle in relay.flushed, relay.events
    with Tpm(open_transport(relay.uri)) as again:
        assert again.handles(0x02000000) == [] and again.handles(0x03000000) == []
        assert again.handles(0x80000000) == []


@pytest.mark.skipif(shutil.which("tpm2_getrandom") is None,
                    reason="tpm2-tools is not installed (Debian `tpm2-tools`)")
def test_tpm2_tools_through_the_device(relay: PtyRelay, tmp_path: Path) -> None:
    env = {**os.environ, "TPM2TOOLS_TCTI": relay.uri}
    done = subprocess.run(["tpm2_getrandom", "16", "--hex"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert len(bytes.fromhex(done.stdout)) == 16
    ctx = tmp_path / "primary.ctx"
    done = subprocess.run(["tpm2_createprimary", "-C", "o", "-c", str(ctx)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    relay.wait_idle()  # tpm2-tools left the primary loaded: the relay flushed it
    assert any(h >> 24 == 0x80 for h in relay.flushed), relay.events


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare to bind the relay's pty on /dev/tpmrm0")
def test_unseal_on_tpmrm0_leaves_the_last_flush_to_the_resource_manager(
        relay: PtyRelay, tmp_path: Path) -> None:
    """Through /dev/tpmrm0 the kernel flushes what a connection leaves when it closes:
    unseal sends 4 commands, not 5, and the sealed object it loaded is gone after."""
    from tpmrm_relay import run_with_tpmrm

    secret = secret_bytes()
    blob = tmp_path / "disk.json"
    r = cli(["--tpm", relay.uri, "seal", "--pcrs", "sha256:0,7", "--output", str(blob)],
            stdin=secret)
    assert r.rc == 0, r.err
    relay.wait_idle()
    before = relay.commands
    done = run_with_tpmrm(relay, [sys.executable, "-m", "tpmseal.cli.main", "--tpm",
                                  "device:/dev/tpmrm0", "unseal", "--input", str(blob),
                                  "--output", "-"], tmp_path)
    assert (done.returncode, done.stdout) == (0, secret), done.stderr.decode()
    assert relay.commands - before == 4, relay.events  # no FlushContext of its own
    assert [h >> 24 for h in relay.flushed] == [0x80], relay.events  # the object, by the RM
    with Tpm(open_transport(relay.uri)) as again:
        assert again.handles(0x80000000) == [] and again.handles(0x03000000) == []


def test_only_a_resource_manager_device_flushes_on_close(relay: PtyRelay) -> None:
    t = DeviceTransport(relay.path, 1.0)
    try:
        assert not t.flushes_on_close  # a pty standing in for /dev/tpm0: no kernel RM
    finally:
        t.close()
