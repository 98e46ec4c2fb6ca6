"""Decoded values for humans and for JSON.

The registry decodes fields into ints, bytes and structure dataclasses
(:mod:`tpmseal.wire.structures`). This module spells them out: handles with
their well-known names (TPM 2.0 Part 2 §7: TPM_RS_PW, OWNER, persistent...),
algorithm identifiers (Part 2 §6.3), attribute bits (Part 2 §8.3, §8.4, §13.4),
and turns any decoded value into JSON-safe data (bytes become lowercase hex).
It is the sniffer: bytes are shown in full, key material included.
"""

from __future__ import annotations

from typing import Any

from tpmseal.records import fields, is_record
from tpmseal.wire.constants import (
    TPM_ALG,
    TPM_CAP,
    TPM_ECC,
    TPM_HT,
    TPM_RH,
    TPM_SE,
    TPM_ST,
    TPM_SU,
    TPMA_NV,
    TPMA_OBJECT,
    enum_name,
    handle_type,
    members,
)

#: TCG-registered handles worth naming (TCG EK Credential Profile §2.2.1.4, §2.2.1.5).
TCG_HANDLES: dict[int, str] = {
    0x81010001: "TCG RSA EK",
    0x81010002: "TCG ECC EK",
    0x81010016: "TCG ECC P-384 EK",
    0x01C00002: "RSA-2048 EK certificate",
    0x01C0000A: "ECC P-256 EK certificate",
    0x01C00012: "RSA-2048 EK certificate (H-1)",
    0x01C00014: "ECC P-256 EK certificate (H-2)",
    0x01C00016: "ECC P-384 EK certificate (H-3)",
}

_HANDLE_KINDS: dict[int, str] = {
    TPM_HT.NV_INDEX: "NV index",
    TPM_HT.HMAC_SESSION: "HMAC session",
    TPM_HT.POLICY_SESSION: "policy session",
    TPM_HT.TRANSIENT: "transient",
    TPM_HT.PERSISTENT: "persistent",
    TPM_HT.AC: "attached component",
}


def handle_label(handle: int) -> str:
    """What a handle is: ``TPM_RS_PW``, ``OWNER``, ``persistent``, ``PCR 7``..."""
    if handle == TPM_RH.RS_PW:
        return "TPM_RS_PW"
    ht = handle_type(handle)
    if ht == TPM_HT.PERMANENT:
        name = enum_name(TPM_RH, handle)
        return "permanent" if name.startswith("0x") else name
    if ht == TPM_HT.PCR:
        return f"PCR {handle}"
    kind = _HANDLE_KINDS.get(ht, "unknown type")
    tcg = TCG_HANDLES.get(handle)
    return f"{kind}, {tcg}" if tcg else kind


def handle_text(handle: int) -> str:
    """E.g. ``0x40000009 (TPM_RS_PW)``, ``0x81000001 (persistent)``."""
    return f"0x{handle:08x} ({handle_label(handle)})"


def flags_text(flags: type, value: int, width: int = 8) -> str:
    """E.g. ``fixedTPM|fixedParent (0x00000012)``."""
    names = [name for name, bit in members(flags).items() if bit and value & bit == bit]
    return f"{'|'.join(names) or '0'} (0x{value:0{width}x})"


def _enum_text(enum: type, value: int, width: int = 4) -> str:
    return f"{enum_name(enum, value)} (0x{value:0{width}x})"


def int_text(value: int, hint: str) -> str:
    """An integer field spelled out according to its TPM type or field name."""
    if hint in ("TPM_ALG_ID", "alg"):
        return _enum_text(TPM_ALG, value)
    if hint in ("TPM_SU", "su"):
        return _enum_text(TPM_SU, value)
    if hint == "TPM_SE":
        return _enum_text(TPM_SE, value, 2)
    if hint in ("TPM_CAP", "cap"):
        return _enum_text(TPM_CAP, value, 8)
    if hint == "TPM_ST":
        return _enum_text(TPM_ST, value)
    if hint == "curve":
        return _enum_text(TPM_ECC, value)
    if hint == "TPMI_YES_NO":
        return "YES" if value else "NO"
    if hint.startswith(("TPMI_DH", "TPMI_RH", "TPM_HANDLE", "handle")):
        return handle_text(value)
    if hint == "object_attributes":
        return flags_text(TPMA_OBJECT, value)
    if hint == "nv_attributes":
        return flags_text(TPMA_NV, value)
    return str(value) if value < 10 else f"{value} (0x{value:x})"


#: Hints for integer fields inside structures, by field name.
_FIELD_HINTS: dict[str, str] = {
    "type": "alg", "name_alg": "alg", "hash_alg": "alg", "algorithm": "alg", "mode": "alg",
    "scheme": "alg", "parent_name_alg": "alg", "auth_hash": "alg",
    "object_attributes": "object_attributes", "curve_id": "curve", "capability": "cap",
    "nv_index": "handle", "saved_handle": "handle", "hierarchy": "handle",
}


def field_hint(owner: object, name: str) -> str:
    if name == "attributes" and type(owner).__name__ == "NvPublic":
        return "nv_attributes"
    if name == "tag" and type(owner).__name__ == "Ticket":
        return "TPM_ST"
    return _FIELD_HINTS.get(name, "")


def bytes_text(data: bytes, limit: int = 64) -> str:
    """``N bytes: <hex>`` (cut after *limit* bytes; the hexdump has them all)."""
    if not data:
        return "0 bytes"
    shown = data[:limit].hex()
    more = "..." if len(data) > limit else ""
    return f"{len(data)} bytes: {shown}{more}"


def value_lines(label: str, value: Any, hint: str = "", indent: str = "") -> list[str]:
    """Lines describing *value*, nested structures indented below their label."""
    if is_record(value) and not isinstance(value, type):
        lines = [f"{indent}{label}: {type(value).__name__}"]
        for f in fields(value):
            lines += value_lines(f.name, getattr(value, f.name), field_hint(value, f.name),
                                 indent + "    ")
        return lines
    if isinstance(value, tuple | list):
        if all(isinstance(v, int) for v in value):
            items = ", ".join(int_text(v, hint) if hint else str(v) for v in value)
            return [f"{indent}{label}: [{items}]"]
        lines = [f"{indent}{label}: {len(value)} item(s)"]
        for i, v in enumerate(value):
            lines += value_lines(f"[{i}]", v, hint, indent + "    ")
        return lines
    if isinstance(value, bytes):
        return [f"{indent}{label}: {bytes_text(value)}"]
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{indent}{label}: {value!r}"]
    return [f"{indent}{label}: {int_text(value, hint)}"]


def to_json(value: Any) -> Any:
    """A JSON-safe form of a decoded value: bytes as hex, structures as objects."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return int(value)
    if is_record(value) and not isinstance(value, type):
        out: dict[str, Any] = {"_struct": type(value).__name__}
        for f in fields(value):
            out[f.name] = to_json(getattr(value, f.name))
        return out
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return repr(value)
