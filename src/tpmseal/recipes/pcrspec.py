"""PCR selection specs: ``sha256:0,1,2`` or several banks ``sha256:0,7+sha384:0``.

Indices are 0-23 (PC Client platforms have 24 PCRs), without duplicates; the
order of banks is kept (it determines the PolicyPCR digest). Whether a bank is
allocated is checked against the TPM when the PCRs are read.
"""

from __future__ import annotations

from tpmseal.errors import UsageError
from tpmseal.wire.constants import HASH_NAMES, TPM_ALG, enum_name
from tpmseal.wire.structures import PcrSelection, PcrSelectionList

_BANKS = {name: alg for alg, name in HASH_NAMES.items()}
_HINT = "write e.g. sha256:0,1,2,3,4,6,7 or sha256:0,7+sha384:0"


def parse_pcrs(spec: str) -> PcrSelectionList:
    """Parse a PCR spec into a selection; raise :class:`UsageError` naming the problem."""
    selections: list[PcrSelection] = []
    seen_banks: set[int] = set()
    for part in spec.strip().split("+"):
        bank_name, sep, indices = part.partition(":")
        bank = _BANKS.get(bank_name.strip().lower())
        if not sep or bank is None:
            raise UsageError(f"bad PCR spec {spec!r}: {part!r} does not start with a bank "
                             f"({', '.join(_BANKS)})", _HINT)
        if bank in seen_banks:
            raise UsageError(f"bad PCR spec {spec!r}: bank {bank_name} appears twice", _HINT)
        seen_banks.add(bank)
        pcrs: list[int] = []
        for raw in indices.split(","):
            item = raw.strip()
            if not (item.isascii() and item.isdigit()):
                raise UsageError(f"bad PCR spec {spec!r}: {item!r} is not a PCR index", _HINT)
            i = int(item) if len(item) <= 9 else 24  # int() refuses 4300+ digits
            if not 0 <= i <= 23:
                raise UsageError(f"bad PCR spec {spec[:40]!r}: PCR {item[:12]} is outside "
                                 "0-23", _HINT)
            if i in pcrs:
                raise UsageError(f"bad PCR spec {spec!r}: PCR {i} is listed twice", _HINT)
            pcrs.append(i)
        selections.append(PcrSelection(bank, tuple(sorted(pcrs))))
    return PcrSelectionList(tuple(selections))


def format_pcrs(sel: PcrSelectionList) -> str:
    """The spec string of a selection (inverse of :func:`parse_pcrs`)."""
    return "+".join(
        f"{bank_name(s.hash_alg)}:{','.join(str(i) for i in sorted(s.pcrs))}"
        for s in sel.selections)


def bank_name(alg: int) -> str:
    return HASH_NAMES.get(alg) or enum_name(TPM_ALG, alg).lower()


def bank_alg(name: str) -> int:
    try:
        return _BANKS[name]
    except KeyError:
        raise UsageError(f"unknown PCR bank {name!r}", _HINT) from None


def to_dict(sel: PcrSelectionList) -> dict[str, list[int]]:
    """``{"sha256": [0, 1, ...]}`` for JSON."""
    return {bank_name(s.hash_alg): sorted(s.pcrs) for s in sel.selections}


def from_dict(d: dict[str, list[int]]) -> PcrSelectionList:
    return parse_pcrs("+".join(f"{b}:{','.join(str(i) for i in ix)}" for b, ix in d.items()))
