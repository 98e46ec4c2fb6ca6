"""Logic captures (VCD, sigrok .sr): channel names, their bus roles, and sigrok-cli's decoders.

tpmseal does no electrical decoding: sigrok-cli's own spi, lpc and i2c
decoders turn the waveform into bytes (``-P spi:clk=..:mosi=..:miso=..:cs=..``,
SPI mode 0, the TPM's), printed as a JSON trace that :mod:`.sigrok` reads.
The capture reaches sigrok-cli through an anonymous in-memory file (memfd),
never a temporary file: a bus capture can hold key material.

Channel names are read from the VCD header, tokenised rather than split by
line (sigrok's own re-export puts every value change on one line), or from
``sigrok-cli --show`` for a .sr file, and mapped to roles by their usual
names (SCK/SCLK/CLK, CS#/CS/SS, MOSI, MISO; LFRAME#, LCLK, LAD0-3; SCL, SDA);
``--channels role=NAME,...`` overrides.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

from tpmseal.errors import BadInputError, MissingToolError, UsageError

SIGROK = "sigrok-cli"
SR_MAGIC = b"PK\x03\x04"
_TIMEOUT = 600

#: bus -> role -> the names a channel with that role usually has (normalised)
ROLES: dict[str, dict[str, tuple[str, ...]]] = {
    "spi": {"clk": ("SCK", "SCLK", "CLK", "SPICLK", "SPISCK"),
            "cs": ("CS", "CSN", "NCS", "SS", "SSN", "NSS", "CSB", "CE"),
            "mosi": ("MOSI", "COPI", "SI"),
            "miso": ("MISO", "CIPO", "SO")},
    "lpc": {"lframe": ("LFRAME", "LFRAMEN", "FRAME"),
            "lclk": ("LCLK", "LPCCLK", "CLK", "PCICLK"),
            "lad0": ("LAD0",), "lad1": ("LAD1",), "lad2": ("LAD2",), "lad3": ("LAD3",)},
    "i2c": {"scl": ("SCL", "I2CSCL"), "sda": ("SDA", "I2CSDA")},
}
_PREFIXES = ("SPI", "TPM", "LPC")


def _spellings(name: str) -> set[str]:
    """``SPI_MOSI`` -> ``{"SPIMOSI", "MOSI"}``: upper case, punctuation and bus prefix dropped."""
    n = re.sub(r"[^A-Z0-9]", "", name.upper())
    return {n} | {n[len(p):] for p in _PREFIXES if n.startswith(p) and len(n) > len(p)}


def vcd_tokens(data: bytes) -> Iterator[str]:
    """Whitespace-separated tokens of a VCD file, lazily."""
    for m in re.finditer(rb"\S+", data):
        yield m.group().decode("latin-1")


def vcd_channels(data: bytes) -> list[str]:
    """The reference names of the 1-bit ``$var`` declarations in a VCD header."""
    names: list[str] = []
    tokens = vcd_tokens(data)
    for tok in tokens:
        if tok == "$enddefinitions":
            return names
        if tok != "$var":
            continue
        decl = []
        for t in tokens:
            if t == "$end":
                break
            decl.append(t)
        # $var type width id reference [bit-select] $end
        if len(decl) >= 4 and decl[1] == "1":
            names.append(decl[3])
    if not names:
        raise BadInputError("the VCD file declares no 1-bit signals before $enddefinitions",
                            "export the bus channels as single-bit signals")
    return names


def parse_overrides(spec: str | None) -> dict[str, str]:
    """``clk=D0,cs=D3`` -> ``{"clk": "D0", "cs": "D3"}``."""
    out: dict[str, str] = {}
    for item in filter(None, (spec or "").split(",")):
        role, sep, name = item.partition("=")
        if not sep or not role.strip() or not name.strip():
            raise UsageError(f"bad --channels entry {item!r}", "write ROLE=NAME, e.g. clk=D0")
        out[role.strip().lower()] = name.strip()
    return out


def map_channels(bus: str, names: list[str], overrides: dict[str, str]) -> dict[str, str] | None:
    """Role -> channel name for *bus*, or ``None`` if some role has no channel."""
    roles = ROLES[bus]
    unknown = set(overrides) - set(roles)
    if unknown:
        raise UsageError(f"--channels names unknown {bus} role(s) {', '.join(sorted(unknown))}",
                         f"use {', '.join(roles)}")
    out: dict[str, str] = {}
    for role, usual in roles.items():
        if role in overrides:
            if overrides[role] not in names:
                raise UsageError(f"--channels: the capture has no channel {overrides[role]!r}",
                                 f"its channels are {', '.join(names)}")
            out[role] = overrides[role]
            continue
        found = [n for n in names if _spellings(n) & set(usual) and n not in out.values()]
        if not found:
            return None
        out[role] = found[0]
    return out


def detect_bus(names: list[str], overrides: dict[str, str]) -> str:
    """The one bus whose roles all have a channel."""
    fits = []
    for bus in ROLES:
        try:
            if map_channels(bus, names, overrides) is not None:
                fits.append(bus)
        except UsageError:
            continue
    if len(fits) != 1:
        what = "no bus" if not fits else f"more than one bus ({', '.join(fits)})"
        raise BadInputError(f"the capture's channels ({', '.join(names)}) fit {what}",
                            "choose one with --bus and name channels with --channels "
                            "role=NAME,...")
    return fits[0]


def _tool() -> str:
    tool = shutil.which(SIGROK)
    if tool is None:
        raise MissingToolError(f"{SIGROK} is not installed; it decodes VCD and .sr captures",
                               "install it (Debian: apt-get install sigrok-cli) or decode "
                               "with sigrok yourself and pass its annotations")
    return tool


def run_sigrok(data: bytes, args: list[str], vcd: bool) -> str:
    """Run sigrok-cli on *data* (VCD or .sr) with decoder *args*; its stdout."""
    tool = _tool()
    fd = os.memfd_create("tpmseal-capture")
    try:
        _write_all(fd, data)
        path = f"/proc/self/fd/{fd}"
        cmd = [tool, *(["-I", "vcd"] if vcd else []), "-i", path, *args]
        done = _run(cmd, (fd,))
    finally:
        os.close(fd)
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise BadInputError(f"{SIGROK} could not decode the capture: "
                            f"{why[-1] if why else 'exit status ' + str(done.returncode)}",
                            "check the capture opens in PulseView")
    return done.stdout.decode("utf-8", "replace")


def _run(cmd: list[str], fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=_TIMEOUT, pass_fds=fds,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BadInputError(f"{SIGROK} took more than {_TIMEOUT} s on the capture",
                            "cut the capture down to the TPM traffic") from None
    except OSError as e:
        raise MissingToolError(f"{SIGROK} could not be started: {e.strerror}",
                               "check its installation (Debian: apt-get install sigrok-cli)") \
            from None


def decoder_help(decoder: str) -> str:
    """``sigrok-cli -P DECODER --show``: the installed decoder's channels and annotation classes."""
    return _run([_tool(), "-P", decoder, "--show"]).stdout.decode("utf-8", "replace")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def sr_channels(data: bytes) -> list[str]:
    """The logic channel names of a .sr capture (``sigrok-cli --show``)."""
    out = run_sigrok(data, ["--show"], vcd=False)
    names = [m.group(1) for m in re.finditer(r"^- (.+): logic$", out, re.M)]
    if not names:
        raise BadInputError("the .sr capture has no logic channels",
                            "capture the bus with logic (digital) channels")
    return names
