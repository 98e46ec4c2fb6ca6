#!/usr/bin/env python3
"""How fast ``tpmseal decode`` turns a logic-analyser capture of a TPM's SPI bus into frames.

Builds N GetRandom(48) exchanges (well-formed frames; decoding speed does not
depend on where they came from), drives them through the test suite's PTP
encoder (tests/ptp_encoder.py: Linux-style bursts, 25 % of transactions
with wait states) and draws an SPI mode 0 VCD, then times, each the median
of R runs:

* sigrok  - sigrok-cli's spi decoder on the VCD (``-P spi ... --protocol-decoder-jsontrace``);
* reassemble - tpmseal reading that JSON trace and reassembling the frames (no sigrok);
* lines   - tpmseal reading the same traffic as sigrok annotation lines.

Usage: python bench/bench_bus_decode.py [-n 100 400] [-r 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ptp_encoder import SpiHost, encode, sigrok_lines, vcd
from tpmseal.sniff.formats.buses import load_bus
from tpmseal.sniff.formats.logic import run_sigrok


def _frames(n: int) -> list[tuple[bytes, bytes]]:
    cmd = bytes.fromhex("80010000000c0000017b0030")
    out = []
    for _ in range(n):
        rsp = bytes.fromhex("80010000003c00000000") + bytes.fromhex("0030") + os.urandom(48)
        out.append((cmd, rsp))
    return out


def _median(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, nargs="+", default=[100, 400], help="exchanges per capture")
    ap.add_argument("-r", type=int, default=3, help="runs per measurement")
    args = ap.parse_args()
    if shutil.which("sigrok-cli") is None:
        print("sigrok-cli is not installed (Debian `sigrok-cli`)", file=sys.stderr)
        return 1
    spi = ["-P", "spi:clk=SCK:mosi=MOSI:miso=MISO:cs=CS#", "-A",
           "spi=mosi-transfer:miso-transfer", "--protocol-decoder-jsontrace"]
    print(f"{'exchanges':>9} {'transactions':>12} {'bus bytes':>9} {'VCD MB':>7} "
          f"{'sigrok s':>8} {'reassemble ms':>13} {'lines ms':>8} {'frames':>6}")
    for n in args.n:
        pairs = _frames(n)
        transactions = encode(pairs, SpiHost(wait_rate=0.25))
        wave = vcd(transactions)
        trace = run_sigrok(wave, spi, vcd=True).encode()
        lines = sigrok_lines(transactions).encode()
        got = load_bus(trace, "sigrok-json").exchanges
        if [(e.command, e.response) for e in got] != pairs:
            print(f"n={n}: frames lost", file=sys.stderr)
            return 1
        t_sigrok = _median(args.r, partial(run_sigrok, wave, spi, vcd=True))
        t_trace = _median(args.r, partial(load_bus, trace, "sigrok-json"))
        t_lines = _median(args.r, partial(load_bus, lines, "sigrok"))
        print(f"{n:>9} {len(transactions):>12} {sum(len(t.mosi) for t in transactions):>9} "
              f"{len(wave) / 1e6:>7.2f} {t_sigrok:>8.2f} {t_trace * 1e3:>13.1f} "
              f"{t_lines * 1e3:>8.1f} {len(got):>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
