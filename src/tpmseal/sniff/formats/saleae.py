"""Read Saleae Logic 2's exported SPI analyser table (CSV).

Logic 2's SPI analyser emits frames of type ``enable`` (chip select became
active), ``result`` (one word, with ``mosi`` and ``miso``) and ``disable``;
its data table exports them one per row with the columns ``name, type,
start_time, duration, mosi, miso`` (values in the display radix: hex
``0x80`` or decimal). One enable..disable period is one transaction.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from tpmseal.errors import BadInputError
from tpmseal.sniff.analysis.spi import SpiTransaction

_HINT = "export the SPI analyser's data table with the enable (CS) channel set, radix hex"


def looks_like_saleae(text: str) -> bool:
    first = text.lstrip("\ufeff").split("\n", 1)[0].lower().replace('"', "")
    cols = [c.strip() for c in first.split(",")]
    return {"type", "mosi", "miso"} <= set(cols)


def _byte(value: str, where: str) -> int:
    v = value.strip()
    try:
        n = int(v, 16) if v.lower().startswith("0x") else int(v, 10)
    except ValueError:
        raise BadInputError(f"Saleae CSV {where}: {v[:20]!r} is not a byte value", _HINT) \
            from None
    if not 0 <= n <= 0xFF:
        raise BadInputError(f"Saleae CSV {where}: {v[:20]!r} is not an 8-bit word", _HINT)
    return n


def _time(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def read_saleae(text: str) -> Iterator[SpiTransaction]:
    """Transactions from a Logic 2 SPI CSV export."""
    try:
        rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    except csv.Error as e:
        raise BadInputError(f"Saleae CSV is malformed: {e}", _HINT) from None
    mosi = bytearray()
    miso = bytearray()
    start, where, open_ = 0.0, "", False
    for n, raw in enumerate(rows, 2):
        row = {str(k).strip().lower(): (v or "") for k, v in raw.items() if k is not None}
        kind = row.get("type", "").strip().strip('"').lower()
        here = f"line {n}"
        if kind == "enable":
            if open_ and mosi:
                yield SpiTransaction(bytes(mosi), bytes(miso), start, where)
            mosi.clear()
            miso.clear()
            start, where, open_ = _time(row.get("start_time")), f"at {here}", True
        elif kind == "result":
            if not open_:
                continue  # the export began inside a transaction: its header is lost
            mosi.append(_byte(row.get("mosi", ""), here))
            miso.append(_byte(row.get("miso", ""), here))
        elif kind == "disable":
            if open_:
                yield SpiTransaction(bytes(mosi), bytes(miso), start, where)
            mosi.clear()
            miso.clear()
            open_ = False
    if open_ and mosi:
        yield SpiTransaction(bytes(mosi), bytes(miso), start, where)
