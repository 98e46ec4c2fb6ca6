"""One time-out per exchange, and a simulator judged alive by its process."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tpmseal.errors import TransportError
from tpmseal.transport.base import open_transport
from tpmseal.transport.simulator import Simulator

RESPONSE = bytes.fromhex("80010000001c00000000") + b"\x00\x10" + bytes(16)


def test_a_trickling_peer_cannot_stretch_the_time_out(tmp_path: Path) -> None:
    """A fake TPM that sends one byte every 0.2 s: a 0.6 s time-out holds for the whole
    response, not for each byte."""
    path = str(tmp_path / "drip.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    stop = threading.Event()

    def drip() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            for b in RESPONSE:
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([b]))
                except OSError:
                    return

    t = threading.Thread(target=drip)
    t.start()
    transport = open_transport(f"unix:{path}", timeout=0.6)
    started = time.monotonic()
    try:
        with pytest.raises(TransportError, match="did not answer in time"):
            transport.send(bytes.fromhex("80010000000c0000017b0010"))
    finally:
        transport.close()
        stop.set()
        t.join(5)
        server.close()
    assert time.monotonic() - started < 1.5


def test_a_busy_simulator_is_not_restarted(blank_sim: Simulator) -> None:
    """swtpm serves one data connection at a time; while a client holds it, `sim:` and
    `sim status` must still see the simulator running and leave its sockets alone."""
    holder = open_transport(blank_sim.uri)
    try:
        pid = blank_sim.pid()
        assert pid is not None
        status = blank_sim.status()
        assert status.running and status.pid == pid
        assert blank_sim.start() == blank_sim.uri  # idempotent, no second swtpm
        assert blank_sim.pid() == pid
        assert blank_sim.sock.exists() and blank_sim.ctrl.exists()
    finally:
        holder.close()
    t = open_transport(blank_sim.uri)  # and it still serves
    try:
        assert len(t.send(bytes.fromhex("80010000000c0000017b0010"))) == 28
    finally:
        t.close()
