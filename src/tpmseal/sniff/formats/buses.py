"""Logic-analyser captures of a TPM bus: detect the file, pick the bus, reassemble the frames.

Formats (detected from their first bytes, or forced with ``--format``):

``sigrok``       sigrok-cli annotation lines (``-A spi=mosi-transfer:miso-transfer``)
``sigrok-json``  the same as ``--protocol-decoder-jsontrace`` writes it
``sigrok-bin``   sigrok-cli's binary SPI output (``-B spi``): never detected, only forced
``saleae-csv``   Saleae Logic 2's SPI analyser table export
``vcd``          a value change dump, decoded by sigrok-cli's own decoders
``sr``           a sigrok session file (PulseView, ``sigrok-cli -O srzip``), likewise

The bus (``--bus spi|lpc|i2c``) is read from the decoder named in sigrok's
output or from the capture's channel names when not given. Frames come out
of the PTP reassembler (FIFO and CRB, :mod:`tpmseal.sniff.analysis.ptp`) as
exchanges whose ``client`` is the locality; a capture with none says so in
a warning.
"""

from __future__ import annotations

from collections.abc import Iterable

from tpmseal.errors import BadInputError, MissingToolError, UsageError
from tpmseal.sniff.analysis.i2c import decode_i2c
from tpmseal.sniff.analysis.lpc import decode_lpc
from tpmseal.sniff.analysis.ptp import PtpReassembler
from tpmseal.sniff.analysis.spi import SpiTransaction, decode_spi, split_stream
from tpmseal.sniff.formats.logic import (
    SIGROK,
    SR_MAGIC,
    decoder_help,
    detect_bus,
    map_channels,
    parse_overrides,
    run_sigrok,
    sr_channels,
    vcd_channels,
)
from tpmseal.sniff.formats.pcapread import Capture
from tpmseal.sniff.formats.saleae import looks_like_saleae, read_saleae
from tpmseal.sniff.formats.sigrok import (
    JSONTRACE_START,
    Annotation,
    i2c_events,
    looks_like_annotations,
    lpc_cycles,
    read_annotations,
    read_jsontrace,
    spi_binary,
    spi_transactions,
)

BUSES = ("spi", "lpc", "i2c")
BUS_FORMATS = ("sigrok", "sigrok-json", "sigrok-bin", "saleae-csv", "vcd", "sr")
_VCD_KEYWORDS = (b"$date", b"$version", b"$timescale", b"$comment", b"$scope", b"$var")
#: sigrok-cli's decoder per bus and the annotation classes tpmseal reads
_DECODERS = {
    "spi": ("spi", "spi=mosi-transfer:miso-transfer"),
    "lpc": ("lpc", "lpc=start:cycle-type:addr:sync:server-data:peripheral-data"),
    "i2c": ("i2c", "i2c=start:repeat-start:stop:ack:nack:address-read:address-write:"
                   "data-read:data-write"),
}


def detect_bus_format(data: bytes) -> str | None:
    """One of :data:`BUS_FORMATS`, or ``None``."""
    if data[:4] == SR_MAGIC:
        return "sr"
    head = data.lstrip()[:4096]
    if head.startswith(_VCD_KEYWORDS):
        return "vcd"
    if head.startswith(JSONTRACE_START):
        return "sigrok-json"
    text = head.decode("utf-8", "replace")
    if looks_like_saleae(text):
        return "saleae-csv"
    if looks_like_annotations(text):
        return "sigrok"
    return None


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"the {what} is not UTF-8 text",
                            "pass the file as the tool wrote it, or force --format") from None


def _bus_of(annotations: list[Annotation], bus: str | None) -> str:
    found = {a.decoder.split("-")[0] for a in annotations} & set(BUSES)
    if bus is not None:
        return bus
    if len(found) != 1:
        raise BadInputError("cannot tell the bus from the decoder output "
                            f"({', '.join(sorted(found)) or 'no spi, lpc or i2c decoder'})",
                            "choose one with --bus")
    return found.pop()


def _sigrok_args(bus: str, channels: dict[str, str]) -> list[str]:
    decoder, annotations = _DECODERS[bus]
    spec = ":".join([decoder, *(f"{role}={name}" for role, name in channels.items())])
    return ["-P", spec, "-A", annotations, "--protocol-decoder-jsontrace"]


def _waveform(data: bytes, fmt: str, bus: str | None, channel_spec: str | None) -> Capture:
    overrides = parse_overrides(channel_spec)
    names = vcd_channels(data) if fmt == "vcd" else sr_channels(data)
    bus = bus or detect_bus(names, overrides)
    channels = map_channels(bus, names, overrides)
    if channels is None:
        raise BadInputError(f"cannot find the {bus.upper()} channels among "
                            f"{', '.join(names)}", "name them with --channels role=NAME,...")
    if bus == "lpc" and "peripheral-data" not in decoder_help("lpc"):
        raise MissingToolError(
            f"the installed {SIGROK}'s lpc decoder (libsigrokdecode 0.5.3, as in Debian 12) "
            "reads each LPC cycle one clock late and every write as a read, so it cannot "
            "decode TPM cycles",
            "decode with a libsigrokdecode whose lpc decoder has the server-data and "
            "peripheral-data annotations and pass its output (-A lpc ... "
            "--protocol-decoder-jsontrace)")
    out = run_sigrok(data, _sigrok_args(bus, channels), vcd=fmt == "vcd")
    return _decoded(bus, list(read_jsontrace(out)))


def _decoded(bus: str, annotations: list[Annotation]) -> Capture:
    if bus == "spi":
        return _spi(spi_transactions(iter(annotations)))
    if bus == "i2c":
        return _result(decode_i2c(i2c_events(iter(annotations))))
    return _result(decode_lpc(lpc_cycles(iter(annotations))))


def _result(r: PtpReassembler) -> Capture:
    if not r.exchanges:
        r.warnings.append("no TPM command was found in the capture (wrong --bus or channels, "
                          "or no TPM traffic?)")
    return Capture(r.exchanges, r.warnings)


def _spi(transactions: Iterable[SpiTransaction]) -> Capture:
    return _result(decode_spi(transactions))


def load_bus(data: bytes, fmt: str | None, bus: str | None = None,
             channels: str | None = None) -> Capture:
    """Exchanges from a logic-analyser capture (format *fmt*, detected when ``None``)."""
    if bus is not None and bus not in BUSES:
        raise UsageError(f"unknown bus {bus!r}", f"use one of {', '.join(BUSES)}")
    fmt = fmt or detect_bus_format(data)
    if fmt in ("vcd", "sr"):
        return _waveform(data, fmt, bus, channels)
    if fmt == "sigrok-bin":
        if bus not in (None, "spi"):
            raise UsageError("sigrok's binary output is read as SPI only", "use --bus spi")
        mosi, miso = spi_binary(data)
        warnings: list[str] = []
        transactions = list(split_stream(mosi, miso, warnings))
        cap = _spi(transactions)
        return Capture(cap.exchanges, warnings + cap.warnings)
    if fmt == "saleae-csv":
        if bus not in (None, "spi"):
            raise UsageError("a Saleae CSV export is read as SPI only", "use --bus spi")
        return _spi(read_saleae(_text(data, "Saleae CSV")))
    if fmt in ("sigrok", "sigrok-json"):
        text = _text(data, "sigrok output")
        notes = list(read_jsontrace(text) if fmt == "sigrok-json" else read_annotations(text))
        return _decoded(_bus_of(notes, bus), notes)
    raise BadInputError("not a logic-analyser capture (sigrok output, Saleae CSV, VCD, .sr)",
                        "force its format with --format")
