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

The same driver runs over the TCG I2C interface (:class:`I2cHost`,
:func:`i2c_vcd`), over LPC (:class:`LpcHost`, :func:`lpc_vcd`,
:func:`lpc_lines`) and against a CRB TPM on SPI (:class:`CrbSpiHost`).
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

    def other_device(self) -> None:
        """A SPI flash read on the same bus (another chip select, same decoder)."""
        self.out.append(SpiTransaction(bytes.fromhex("0b001000") + bytes(8),
                                       bytes(4) + bytes(range(8))))

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
            self.other_device()
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


def drive(pairs: Iterable[tuple[bytes, bytes]], host: SpiHost, *,
          localities: Sequence[int] = (0,), odd_every: int = 0) -> None:
    """Every *odd_every*-th exchange aborts, retries and is noisy."""
    for n, (cmd, rsp) in enumerate(pairs):
        odd = bool(odd_every) and n % odd_every == odd_every - 1
        host.exchange(cmd, rsp, localities[n % len(localities)], abort_command=odd,
                      retry_response=odd, noise=odd or n == 0)


def encode(pairs: Iterable[tuple[bytes, bytes]], host: SpiHost | None = None, *,
           localities: Sequence[int] = (0,), odd_every: int = 0) -> list[SpiTransaction]:
    """SPI transactions for *pairs* (see :func:`drive`)."""
    host = host or SpiHost()
    drive(pairs, host, localities=localities, odd_every=odd_every)
    return host.out


@dataclass
class I2cHost(SpiHost):
    """The same driver over the TCG I2C interface: one-byte registers, TPM_LOC_SEL, NACKs.

    Emits ``(kind, value)`` events: ``S`` start, ``Sr`` repeated start, ``P`` stop,
    ``AW``/``AR`` address, ``D`` data byte, ``A`` ACK, ``N`` NACK.
    """

    address: int = 0x2E
    busy_rate: float = 0.0        # chance the TPM NACKs its address (the driver retries)
    repeated_start: bool = False  # read with a repeated start instead of stop + start
    events: list[tuple[str, int]] = field(default_factory=list)
    _locality: int | None = None

    _REGISTERS = {ACCESS: 0x04, STS: STS, DID_VID: 0x48}

    def _message(self, read: bool, data: bytes, restart: bool = False) -> None:
        while self.rng.random() < self.busy_rate:
            self.events += [("S", 0), ("AR" if read else "AW", self.address), ("N", 0),
                            ("P", 0)]
        self.events += [("Sr" if restart else "S", 0), ("AR" if read else "AW", self.address),
                        ("A", 0)]
        for i, b in enumerate(data):
            self.events += [("D", b), ("N" if read and i == len(data) - 1 else "A", 0)]

    def transfer(self, locality: int, register: int, data: bytes, read: bool) -> None:
        reg = 0x24 if 0x24 <= register < 0x28 or 0x80 <= register < 0x84 else \
            self._REGISTERS[register]
        if locality != self._locality:
            self._message(False, bytes([0x00, locality]))
            self.events.append(("P", 0))
            self._locality = locality
        if read:
            self._message(False, bytes([reg]))
            if not self.repeated_start:
                self.events.append(("P", 0))
            self._message(True, data, restart=self.repeated_start)
        else:
            self._message(False, bytes([reg]) + data)
        self.events.append(("P", 0))

    def other_device(self) -> None:
        """An EEPROM at 0x50 on the same bus."""
        self.events += [("S", 0), ("AW", 0x50), ("A", 0), ("D", 0x00), ("A", 0), ("Sr", 0),
                        ("AR", 0x50), ("A", 0), ("D", 0xAA), ("N", 0), ("P", 0)]


def i2c_lines(events: Iterable[tuple[str, int]]) -> str:
    """What ``sigrok-cli -A i2c=...`` prints for *events* (bits row left out)."""
    text = {"S": "Start", "Sr": "Start repeat", "P": "Stop", "A": "ACK", "N": "NACK"}
    lines = []
    read = False
    for kind, value in events:
        if kind in ("AW", "AR"):
            read = kind == "AR"
            lines.append(f"Address {'read' if read else 'write'}: {value:02X}")
        elif kind == "D":
            lines.append(f"Data {'read' if read else 'write'}: {value:02X}")
        else:
            lines.append(text[kind])
    return "".join(f"i2c-1: {line}\n" for line in lines)


def i2c_vcd(events: Iterable[tuple[str, int]], names: Sequence[str] = ("SCL", "SDA")) -> bytes:
    """The I2C waveform (1 us per quarter bit): SDA changes with SCL low, except at S/Sr/P."""
    scl, sda = "!", '"'
    head = ["$timescale 1 us $end", "$scope module tpm $end",
            *(f"$var wire 1 {i} {n} $end" for i, n in zip((scl, sda), names, strict=True)),
            "$upscope $end", "$enddefinitions $end", f"#0 1{scl} 1{sda}"]
    body: list[str] = []
    t = 4
    level = {scl: 1, sda: 1}

    def put(wire: str, v: int) -> None:
        nonlocal t
        if level[wire] != v:
            level[wire] = v
            body.append(f"#{t} {v}{wire}")
            t += 1

    def bit(v: int) -> None:
        put(sda, v)
        put(scl, 1)
        put(scl, 0)

    for kind, value in events:
        if kind in ("S", "Sr"):
            if level[scl] == 0:   # repeated start: release SDA, then SCL
                put(sda, 1)
                put(scl, 1)
            put(sda, 0)
            put(scl, 0)
        elif kind == "P":
            put(sda, 0)
            put(scl, 1)
            put(sda, 1)
            t += 4
        elif kind in ("A", "N"):
            bit(0 if kind == "A" else 1)
        else:
            byte = value << 1 | (kind == "AR") if kind in ("AW", "AR") else value
            for i in range(7, -1, -1):
                bit(byte >> i & 1)
    body.append(f"#{t + 4} 1{scl}")
    return ("\n".join(head + body) + "\n").encode()



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


@dataclass
class LpcHost(SpiHost):
    """The same driver over LPC: one byte per TPM cycle (START 0101b, I/O type, 16-bit address),
    or per memory cycle at 0xFED4xxxx with *memory*. Emits ``(lframe, lad)`` clocks.

    *write_wait_rate* adds long-wait SYNCs to writes; *read_wait_rate* to reads, which
    sigrok's lpc decoder cannot follow (the decoder reads one SYNC clock).
    """

    memory: bool = False
    wait_rate: float = 0.0
    error_rate: float = 0.0  # chance the TPM answers SYNC Error (the driver repeats the cycle)
    abort_rate: float = 0.0  # chance the host aborts a cycle (LFRAME# with 1111), then repeats
    clocks: list[tuple[int, int]] = field(default_factory=list)
    #: (START, cycle type, address, data, SYNCs) per cycle, for :func:`lpc_lines`
    cycles: list[tuple[int, int, int, int, list[int]]] = field(default_factory=list)

    def _cycle(self, address: int, write: bool, value: int) -> None:
        if self.rng.random() < self.abort_rate:
            start, ct = (0, 0b0110 if write else 0b0100) if self.memory else \
                (0b0101, 0b0010 if write else 0b0000)
            self.clocks += [(0, start), (1, ct), (1, 0), (0, 0xF), (1, 0xF)]
            self.cycles.append((start, ct, -1, 0, []))
        if self.rng.random() < self.error_rate:
            self._one(address, write, value, error=True)
        self._one(address, write, value)

    def _one(self, address: int, write: bool, value: int, error: bool = False) -> None:
        c = self.clocks
        if self.memory:
            c.append((0, 0b0000))
            c.append((1, 0b0110 if write else 0b0100))
            address |= 0xFED40000
            nibbles = 8
        else:
            c.append((0, 0b0101))
            c.append((1, 0b0010 if write else 0b0000))
            nibbles = 4
        c += [(1, address >> 4 * i & 0xF) for i in range(nibbles - 1, -1, -1)]
        data = [(1, value & 0xF), (1, value >> 4)]
        sync = [(1, 0b0110)] * (self.rng.randrange(1, 4) if self.rng.random() < self.wait_rate
                                else 0)
        sync.append((1, 0b1010 if error else 0b0000))
        self.cycles.append((c[-nibbles - 2][1], c[-nibbles - 1][1], address, value,
                            [n for _, n in sync]))
        if write:
            c += data + [(1, 0xF)] * 2 + sync + [(1, 0xF)] * 2
        else:
            c += [(1, 0xF)] * 2 + sync + data + [(1, 0xF)] * 2
        c += [(1, 0xF)] * 2  # idle

    crb: bool = False  # a CRB TPM: no FIFO, every multi-byte access moves on

    def transfer(self, locality: int, register: int, data: bytes, read: bool) -> None:
        fifo = not self.crb and (0x24 <= register < 0x28 or 0x80 <= register < 0x84)
        for i, b in enumerate(data):
            address = locality << 12 | (register if fifo else register + i)
            self._cycle(address, not read, b)

    def other_device(self) -> None:
        """A Super I/O port write (START 0000, I/O cycle to 0x2E) on the same bus."""
        self.clocks += [(0, 0), (1, 0b0010), (1, 0), (1, 0), (1, 2), (1, 0xE), (1, 7), (1, 0),
                        (1, 0xF), (1, 0xF), (1, 0), (1, 0xF), (1, 0xF), (1, 0xF), (1, 0xF)]
        self.cycles.append((0, 0b0010, 0x2E, 0x07, [0]))


_START = {0b0000: "Start of cycle for a target", 0b0101: "Reserved"}
_CT = {0b0000: "I/O read", 0b0010: "I/O write", 0b0100: "Memory read", 0b0110: "Memory write"}
_SYNC = {0b0000: "Ready", 0b0110: "Long wait", 0b1010: "Error"}


def lpc_lines(cycles: Iterable[tuple[int, int, int, int, list[int]]]) -> str:
    """What sigrok-cli's lpc decoder with server/peripheral data rows prints (``-A lpc``).

    Its annotation texts, read from the upstream decoder's source: the START
    field's name, ``Cycle type:``, ``Address: 0x%04x`` (``%08x`` for memory),
    the host's ``DATA`` before the TAR for a write, ``SYNC: <name>`` per SYNC
    clock, the TPM's ``DATA`` after the SYNC for a read, a LAD-bits line per clock.
    """
    out: list[str] = []
    for start, ct, address, value, syncs in cycles:
        out += [f"{start:04b}", _START[start], f"{ct:04b}", f"Cycle type: {_CT[ct]}"]
        if address < 0:
            out.append("ABORT")
            continue
        out.append(f"Address: 0x{address:0{8 if ct & 0b0100 else 4}x}")
        data = [f"DATA: 0x{value:02x}"]
        tar = ["TAR, cycle 0: 1111", "TAR, cycle 1: 1111"]
        sync = [f"SYNC: {_SYNC[n]}" for n in syncs]
        out += data + tar + sync + tar if ct & 0b0010 else tar + sync + data + tar
    return "".join(f"lpc-1: {line}\n" for line in out)


def lpc_vcd(clocks: Iterable[tuple[int, int]],
            names: Sequence[str] = ("LCLK", "LFRAME#", "LAD0", "LAD1", "LAD2", "LAD3")) -> bytes:
    """The LPC waveform (1 us per half clock): LFRAME# and LAD change with LCLK low."""
    ids = ["!", '"', "#", "$", "%", "&"]
    head = ["$timescale 1 us $end", "$scope module lpc $end",
            *(f"$var wire 1 {i} {n} $end" for i, n in zip(ids, names, strict=True)),
            "$upscope $end", "$enddefinitions $end",
            "#0 0! 1\" 1# 1$ 1% 1&"]
    level = {i: 1 for i in ids[1:]}
    body: list[str] = []
    t = 2
    for lframe, lad in [(1, 0xF), (1, 0xF), *clocks, (1, 0xF), (1, 0xF)]:
        want = {'"': lframe, "#": lad & 1, "$": lad >> 1 & 1, "%": lad >> 2 & 1,
                "&": lad >> 3 & 1}
        changes = [f"{v}{k}" for k, v in want.items() if level[k] != v]
        level.update(want)
        body.append(f"#{t} " + " ".join(changes) if changes else f"#{t}")
        body.append(f"#{t + 1} 1!")
        body.append(f"#{t + 2} 0!")
        t += 2
    return ("\n".join(head + body) + "\n").encode()


@dataclass
class CrbSpiHost(SpiHost):
    """A CRB TPM on SPI, driven as Linux's tpm_crb does: cmdReady, the command into the data
    buffer (addresses increment), START, poll, the 8-byte response header, the rest, goIdle."""

    abort_first: bool = False

    def _buffer(self, locality: int, data: bytes, read: bool, offset: int = 0) -> None:
        for i in range(0, len(data), self.burst):
            self.transfer(locality, 0x80 + offset + i, data[i : i + self.burst], read)

    def exchange(self, command: bytes, response: bytes, locality: int = 0, *,
                 abort_command: bool = False, retry_response: bool = False,
                 noise: bool = False) -> None:
        if noise:
            self.write(locality, 0x08, b"\x01")          # TPM_LOC_CTRL requestAccess
            self.read(locality, 0x00, b"\x83\x00\x00\x00")  # TPM_LOC_STATE
        self.write(locality, 0x40, b"\x01\x00\x00\x00")  # CTRL_REQ cmdReady
        self.read(locality, 0x40, b"\x00\x00\x00\x00")
        if abort_command or self.abort_first:
            self._buffer(locality, command[: len(command) // 2 + 1], read=False)
            self.write(locality, 0x40, b"\x02\x00\x00\x00")  # goIdle: abandoned
            self.write(locality, 0x40, b"\x01\x00\x00\x00")
            self.abort_first = False
        self._buffer(locality, command, read=False)
        self.write(locality, 0x4C, b"\x01\x00\x00\x00")  # CTRL_START
        self.read(locality, 0x4C, b"\x01\x00\x00\x00")
        self.read(locality, 0x4C, b"\x00\x00\x00\x00")
        self._buffer(locality, response[:8], read=True)
        self._buffer(locality, response[8:], read=True, offset=8)
        self.write(locality, 0x40, b"\x02\x00\x00\x00")  # goIdle


@dataclass
class CrbLpcHost(LpcHost, CrbSpiHost):
    """A CRB TPM reached with LPC memory cycles at 0xFED4xxxx, one byte per cycle."""

    memory: bool = True
    crb: bool = True
