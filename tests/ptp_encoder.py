"""A PTP-compliant TPM SPI host and TPM, in reverse: frames in, bus traffic out (tests only).

Plays both sides of the TCG PC Client PTP FIFO interface over SPI (§6.4.6)
the way Linux's tpm_tis_spi driver does: commandReady, status polls, the
command in bursts of at most burstCount bytes with the last byte written
alone, tpmGo, dataAvail polls, a 10-byte response header read first, the
rest in bursts, commandReady again. Options add what real captures hold:
wait states, transactions cut short and repeated, commands aborted with
commandReady and written again, responseRetry, TPM_ACCESS and DID_VID noise
and another device on the bus. :func:`vcd` draws the transactions as an SPI
mode 0 waveform that sigrok-cli's spi decoder reads back.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tpmseal.sniff.analysis.spi import SpiTransaction

ACCESS, STS, FIFO, XFIFO, DID_VID = 0x00, 0x18, 0x24, 0x80, 0xF00


@dataclass
class SpiHost:
    """Emits :class:`SpiTransaction` objects for register accesses; knobs for the odd cases."""

    rng: random.Random = field(default_factory=lambda: random.Random(16))
    burst: int = 64          # the TPM's burstCount
    wait_rate: float = 0.0   # chance of wait states on a transaction
    abort_rate: float = 0.0  # chance a transaction is cut short (then repeated whole)
    dummy: int = 0x00        # MOSI filler during reads (0x00, or 0xFF on some controllers)
    out: list[SpiTransaction] = field(default_factory=list)

    def _miso_filler(self) -> int:
        return self.rng.choice((0x00, 0xFF, 0xA5, 0x5A))

    def transfer(self, locality: int, register: int, data: bytes, read: bool) -> None:
        size = len(data)
        assert 1 <= size <= 64
        head = bytes([(0x80 if read else 0) | (size - 1), 0xD4, locality << 4 | register >> 8,
                      register & 0xFF])
        miso = bytearray(self._miso_filler() for _ in range(3))
        mosi = bytearray(head)
        if self.rng.random() < self.wait_rate:
            miso.append(self.rng.choice((0x00, 0xFE, 0x02)))  # bit 0 clear: wait
            for _ in range(self.rng.randrange(0, 4)):
                mosi.append(0x00)
                miso.append(self.rng.choice((0x00, 0xFE, 0x80)))
            mosi.append(0x00)
            miso.append(self.rng.choice((0x01, 0xFF, 0x03)))  # bit 0 set: go on
        else:
            miso.append(self._miso_filler() | 1)
        if read:
            mosi += bytes([self.dummy]) * size
            miso += data
        else:
            mosi += data
            miso += bytes(self._miso_filler() for _ in range(size))
        if self.rng.random() < self.abort_rate:
            cut = self.rng.randrange(1, len(mosi))
            self.out.append(SpiTransaction(bytes(mosi[:cut]), bytes(miso[:cut])))
        self.out.append(SpiTransaction(bytes(mosi), bytes(miso)))

    def write(self, locality: int, register: int, data: bytes) -> None:
        self.transfer(locality, register, data, read=False)

    def read(self, locality: int, register: int, data: bytes) -> None:
        self.transfer(locality, register, data, read=True)

    def status(self, locality: int, sts: int, burst: int | None = None) -> None:
        b = self.burst if burst is None else burst
        self.read(locality, STS, bytes([sts, b & 0xFF, b >> 8, 0]))

    def fifo_write(self, locality: int, data: bytes) -> None:
        """Bursts of at most burstCount; the last byte alone, as Linux's tpm_tis does."""
        body, last = data[:-1], data[-1:]
        for i in range(0, len(body), self.burst):
            self.status(locality, 0x80, self.burst)
            reg = FIFO if self.rng.random() < 0.8 else XFIFO
            self.write(locality, reg + self.rng.randrange(4), body[i : i + self.burst])
        self.status(locality, 0x88)  # stsValid | Expect
        self.write(locality, FIFO, last)

    def fifo_read(self, locality: int, data: bytes) -> None:
        """The 10-byte header first, then the rest in bursts."""
        self.read(locality, FIFO, data[:10])
        for i in range(10, len(data), self.burst):
            self.status(locality, 0x90)  # stsValid | dataAvail
            self.read(locality, FIFO, data[i : i + self.burst])
        self.status(locality, 0x80)

    def exchange(self, command: bytes, response: bytes, locality: int = 0, *,
                 abort_command: bool = False, retry_response: bool = False,
                 noise: bool = False) -> None:
        if noise:
            self.write(locality, ACCESS, b"\x02")   # requestUse
            self.read(locality, ACCESS, b"\xa1")
            self.read(locality, DID_VID, bytes.fromhex("d1150b00"))
            self.out.append(SpiTransaction(bytes.fromhex("0b001000") + bytes(8),
                                           bytes(4) + bytes(range(8))))  # SPI flash read
        self.write(locality, STS, b"\x40")  # commandReady
        self.status(locality, 0xC0, 0)      # a poll with burstCount 0
        if abort_command:
            self.fifo_write(locality, command[: len(command) // 2 + 1])
            self.write(locality, STS, b"\x40")
        self.fifo_write(locality, command)
        self.write(locality, STS, b"\x20")  # tpmGo
        self.status(locality, 0x80, 0)
        if retry_response:
            self.read(locality, FIFO, response[:10])
            self.write(locality, STS, b"\x02")  # responseRetry
        self.fifo_read(locality, response)
        self.write(locality, STS, b"\x40")


def encode(pairs: Iterable[tuple[bytes, bytes]], host: SpiHost | None = None, *,
           localities: Sequence[int] = (0,), odd_every: int = 0) -> list[SpiTransaction]:
    """SPI transactions for *pairs*; every *odd_every*-th exchange aborts, retries and is noisy."""
    host = host or SpiHost()
    for n, (cmd, rsp) in enumerate(pairs):
        odd = bool(odd_every) and n % odd_every == odd_every - 1
        host.exchange(cmd, rsp, localities[n % len(localities)], abort_command=odd,
                      retry_response=odd, noise=odd or n == 0)
    return host.out


def sigrok_lines(transactions: Iterable[SpiTransaction]) -> str:
    """What ``sigrok-cli -A spi=mosi-transfer:miso-transfer`` prints for *transactions*."""
    lines = []
    for t in transactions:
        lines.append("spi-1: " + t.miso.hex(" ").upper())
        lines.append("spi-1: " + t.mosi.hex(" ").upper())
    return "\n".join(lines) + "\n"


def saleae_csv(transactions: Iterable[SpiTransaction]) -> str:
    """Logic 2's SPI analyser table export for *transactions*."""
    rows = ['name,type,start_time,duration,"mosi","miso"']
    t = 0.0
    for tr in transactions:
        rows.append(f'"SPI","enable",{t:.9f},0,,')
        for a, b in zip(tr.mosi, tr.miso, strict=True):
            t += 8e-6
            rows.append(f'"SPI","result",{t:.9f},8e-06,0x{a:02X},0x{b:02X}')
        t += 2e-6
        rows.append(f'"SPI","disable",{t:.9f},0,,')
        t += 4e-6
    return "\n".join(rows) + "\n"


def vcd(transactions: Iterable[SpiTransaction], names: Sequence[str] = ("SCK", "CS#", "MOSI",
                                                                     "MISO"),
        one_line: bool = False) -> bytes:
    """An SPI mode 0 waveform (1 us per half clock): data changes with SCK low, sampled rising.

    Linux pauses the clock between header and data: so does this, CS held low.
    *one_line* writes every value change on one line, as sigrok's own re-export does.
    """
    clk, cs, mosi, miso = "!", '"', "#", "$"
    head = ["$timescale 1 us $end", "$scope module tpm $end",
            *(f"$var wire 1 {i} {n} $end" for i, n in zip((clk, cs, mosi, miso), names,
                                                           strict=True)),
            "$upscope $end", "$enddefinitions $end", "#0", f"0{clk}", f"1{cs}", f"0{mosi}",
            f"0{miso}"]
    events: dict[int, dict[str, str]] = {}
    t = 2
    state = {mosi: 0, miso: 0}

    def at(changes: dict[str, int]) -> None:
        events.setdefault(t, {}).update({k: str(v) for k, v in changes.items()})

    for tr in transactions:
        at({cs: 0})
        t += 1
        for n, (a, b) in enumerate(zip(tr.mosi, tr.miso, strict=True)):
            if n == 4:
                t += 3  # the clock pauses after the header
            for bit in range(7, -1, -1):
                for wire, byte in ((mosi, a), (miso, b)):
                    v = (byte >> bit) & 1
                    if state[wire] != v:
                        state[wire] = v
                        at({wire: v})
                t += 1
                at({clk: 1})
                t += 1
                at({clk: 0})
        t += 1
        at({cs: 1})
        t += 2
    t += 4
    at({clk: 0})
    body = [f"#{when} " + " ".join(v + k for k, v in ch.items()) for when, ch in events.items()]
    sep = " " if one_line else "\n"
    return ("\n".join(head) + "\n" + sep.join(body) + "\n").encode()
