"""The CRB interface (PTP §6.5.3): commands and responses in a memory-mapped buffer, SPI and LPC.

The encoder's :class:`CrbSpiHost` drives real swtpm frames the way Linux's
tpm_crb does: cmdReady, the command into TPM_CRB_DATA_BUFFER with
incrementing addresses, CTRL_START, the 8-byte response header, the rest,
goIdle; with an abandoned half-written command and bus noise. :class:`CrbLpcHost`
reaches the same buffer with LPC memory cycles at 0xFED4xxxx.
"""

from __future__ import annotations

import shutil

import pytest

from ptp_encoder import CrbLpcHost, CrbSpiHost, drive, encode, lpc_lines, sigrok_lines, vcd
from tpmseal.client.tpm import Tpm
from tpmseal.sniff.analysis.ptp import reassemble
from tpmseal.sniff.analysis.registers import Access
from tpmseal.sniff.analysis.spi import decode_spi
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.sniff.formats.offline import load

Pairs = list[tuple[bytes, bytes]]
CMD = bytes.fromhex("80010000000c0000017b0008")
RSP = bytes.fromhex("800100000014000000000008") + bytes(range(8))


@pytest.fixture
def pairs(tpm: Tpm, bus: CapturingTransport) -> Pairs:
    tpm.get_random(16)
    tpm.get_random(48)
    tpm.get_random(8)
    return [(e.command, e.response) for e in bus.exchanges if e.response is not None]


@pytest.mark.parametrize("burst", [8, 64])
def test_crb_over_spi_round_trip(pairs: Pairs, burst: int) -> None:
    host = CrbSpiHost(burst=burst, wait_rate=0.3)
    drive(pairs * 2, host, localities=(0, 3), odd_every=3)
    cap = load(sigrok_lines(host.out).encode())
    assert [(e.client, e.command, e.response) for e in cap.exchanges] == [
        (loc, c, r) for loc, (c, r) in zip((0, 3) * 3, pairs * 2, strict=True)]


def test_a_fifo_tpm_is_not_taken_for_a_crb(pairs: Pairs) -> None:
    """DID_VID at 0xF00 and TPM_XDATA_FIFO at 0x80 are FIFO registers: no CRB there."""
    r = decode_spi(encode(pairs, localities=(0,), odd_every=1))
    assert [(e.command, e.response) for e in r.exchanges] == pairs


def test_crb_mid_command_start_and_idle_abort() -> None:
    r = reassemble([
        Access(0, 0x40, True, b"\x01"),
        Access(0, 0x80 + 6, True, CMD[6:]),                 # the capture began here
        Access(0, 0x4C, True, b"\x01"),
        Access(0, 0x80, False, RSP),                        # its response: no command known
        Access(0, 0x40, True, b"\x02"),
        Access(0, 0x40, True, b"\x01"),
        Access(0, 0x80, True, CMD[:4]), Access(0, 0x84, True, CMD[4:]),
        Access(0, 0x4C, True, b"\x01"),
        Access(0, 0x80, False, RSP[:8]), Access(0, 0x88, False, RSP[8:]),
        Access(0, 0x40, True, b"\x02"),
        Access(0, 0x80, True, CMD), Access(0, 0x4C, True, b"\x01"),
        Access(0, 0x80, False, RSP[:4]),
        Access(0, 0x40, True, b"\x02"),                     # idle before the response is read
    ])
    assert [(e.command, e.response) for e in r.exchanges] == [(CMD, RSP), (CMD, None)]
    assert r.warnings == [
        "locality 0: CRB start  for a command not written whole in the capture (it began "
        "mid-command?); skipped",
        "locality 0: the CRB goes idle  before the response was read whole"]


@pytest.mark.skipif(shutil.which("sigrok-cli") is None,
                    reason="sigrok-cli is not installed (Debian `sigrok-cli`)")
def test_crb_waveform_through_sigrok(pairs: Pairs) -> None:
    host = CrbSpiHost(wait_rate=0.3, abort_first=True)
    drive(pairs, host)
    cap = load(vcd(host.out))
    assert [(e.command, e.response) for e in cap.exchanges] == pairs


def test_crb_over_lpc_memory_cycles(pairs: Pairs) -> None:
    host = CrbLpcHost(wait_rate=0.3, abort_first=True)
    drive(pairs, host, localities=(0, 2))
    cap = load(lpc_lines(host.cycles).encode(), bus="lpc")
    assert [(e.client, e.command, e.response) for e in cap.exchanges] == [
        (loc, c, r) for loc, (c, r) in zip((0, 2, 0), pairs, strict=True)]
