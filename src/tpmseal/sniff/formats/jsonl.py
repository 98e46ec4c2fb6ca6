"""JSON lines: one object per exchange, for machines (``tpmseal sniff --json``).

Each line carries the timestamps, the time the TPM took, the command code and
name, the response code with its TPM 2.0 Part 2 §6.6 name, the session
attributes, the raw bytes as hex and every decoded field (bytes as hex,
structures as objects with a ``_struct`` key). The raw hex is authoritative:
:func:`read_jsonl` rebuilds exchanges from it alone, so ``tpmseal decode``
re-decodes a capture with the current registry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from tpmseal import safejson
from tpmseal.errors import BadInputError
from tpmseal.sniff.analysis.record import (
    Exchange,
    header_problem,
    safe_decode_command,
    safe_decode_response,
)
from tpmseal.sniff.analysis.values import handle_text, int_text, to_json
from tpmseal.sniff.formats.output import open_private
from tpmseal.wire.decode import Deciphered, DecodedCommand, DecodedField
from tpmseal.wire.frames import session_attrs_text
from tpmseal.wire.rc import decode_rc, rc_name


def _fields(params: list[DecodedField]) -> list[dict[str, Any]]:
    out = []
    for p in params:
        item: dict[str, Any] = {"name": p.name, "type": p.tpm_type, "offset": p.offset,
                                "encrypted": p.encrypted, "value": to_json(p.value)}
        if p.exposed:  # readable anyway: "value" is the plaintext when it was decrypted
            item["exposed"] = p.exposed
            item["decrypted"] = p.ciphertext is not None
            if p.ciphertext is not None:
                item["ciphertext"] = p.ciphertext.hex()
        if isinstance(p.value, int) and not isinstance(p.value, bool):
            item["text"] = int_text(p.value, p.tpm_type)
        out.append(item)
    return out


def command_json(data: bytes, deciphered: Deciphered | None = None) -> dict[str, Any]:
    """A command frame as JSON: raw hex plus the registry's decoding."""
    out: dict[str, Any] = {"hex": data.hex()}
    dec = safe_decode_command(data, deciphered)
    if dec is None:
        out["error"] = header_problem(data) or "undecodable"
        return out
    out.update({
        "tag": dec.tag, "size": dec.size, "code": dec.code, "name": dec.name,
        "handles": [{"name": n, "value": h, "text": handle_text(h)} for n, h in dec.handles],
        "sessions": [{"handle": s.session_handle, "handle_text": handle_text(s.session_handle),
                      "nonce": s.nonce.hex(), "attributes": s.attributes,
                      "attributes_text": session_attrs_text(s.attributes), "hmac": s.hmac.hex()}
                     for s in dec.sessions],
        "params": _fields(dec.params),
        "error": dec.error,
        "note": dec.note,
    })
    return out


def response_json(data: bytes, command: DecodedCommand | None,
                  deciphered: Deciphered | None = None) -> dict[str, Any]:
    """A response frame as JSON, decoded in the light of its command."""
    out: dict[str, Any] = {"hex": data.hex()}
    problem = header_problem(data)
    dec = safe_decode_response(data, command, deciphered) if problem is None else None
    if dec is None:
        out["error"] = problem or "undecodable"
        return out
    out.update({
        "tag": dec.tag, "size": dec.size, "rc": dec.rc, "rc_name": rc_name(dec.rc),
        "rc_text": decode_rc(dec.rc).describe(),
        "handles": [{"name": n, "value": h, "text": handle_text(h)} for n, h in dec.handles],
        "sessions": [{"nonce": s.nonce.hex(), "attributes": s.attributes,
                      "attributes_text": session_attrs_text(s.attributes), "hmac": s.hmac.hex()}
                     for s in dec.sessions],
        "params": _fields(dec.params),
        "error": dec.error,
        "note": dec.note,
    })
    return out


def _iso(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds")
    except (OverflowError, OSError, ValueError):  # a capture's nonsense timestamp
        return ""


def exchange_json(ex: Exchange) -> dict[str, Any]:
    """One exchange as a JSON-safe object."""
    cmd = ex.decoded_command()
    d = ex.deciphering
    rc = ex.rc
    obj: dict[str, Any] = {
        "index": ex.index, "client": ex.client,
        "started": ex.started, "finished": ex.finished, "started_iso": _iso(ex.started),
        "tpm_ms": None if ex.tpm_seconds is None else round(ex.tpm_seconds * 1000, 3),
        "code": ex.code, "command_name": ex.name,
        "rc": rc, "rc_name": None if rc is None else rc_name(rc),
        "session_attributes": [session_attrs_text(s.attributes)
                               for s in (cmd.sessions if cmd else [])],
        "command": command_json(ex.command, d.command if d else None),
        "response": None if ex.response is None else response_json(
            ex.response, cmd, d.response if d else None),
        "note": ex.note,
        "interposed": ex.interposed,
    }
    if ex.interposed:
        obj["tpm_command_hex"] = None if ex.tpm_command is None else ex.tpm_command.hex()
        obj["tpm_response_hex"] = None if ex.tpm_response is None else ex.tpm_response.hex()
    return obj


def dumps(ex: Exchange) -> str:
    """One JSON line (no trailing newline)."""
    return json.dumps(exchange_json(ex), separators=(",", ":"))


def _hex(value: Any, what: str, line: int) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInputError(f"line {line}: {what} is not a hex string",
                            hint="pass a capture written by `tpmseal sniff --json`")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BadInputError(f"line {line}: {what} is not valid hex",
                            hint="pass a capture written by `tpmseal sniff --json`") from None


def exchange_from_json(obj: Any, line: int = 0) -> Exchange:
    """Rebuild an :class:`Exchange` from one parsed JSON line."""
    if not isinstance(obj, dict) or not isinstance(obj.get("command"), dict):
        raise BadInputError(f"line {line}: not a tpmseal exchange object",
                            hint="pass a capture written by `tpmseal sniff --json`")
    command = _hex(obj["command"].get("hex"), "command.hex", line)
    if command is None:
        raise BadInputError(f"line {line}: command.hex is missing",
                            hint="pass a capture written by `tpmseal sniff --json`")
    resp = obj.get("response")
    response = _hex(resp.get("hex"), "response.hex", line) if isinstance(resp, dict) else None
    tpm_command: bytes | None = command
    tpm_response = response
    if obj.get("interposed"):
        tpm_command = _hex(obj.get("tpm_command_hex"), "tpm_command_hex", line)
        tpm_response = _hex(obj.get("tpm_response_hex"), "tpm_response_hex", line)
    tpm_ms = obj.get("tpm_ms")
    try:
        return Exchange(int(obj.get("index", line)), int(obj.get("client", 0)), command,
                        response, float(obj.get("started", 0.0)),
                        float(obj.get("finished", 0.0)),
                        None if tpm_ms is None else float(tpm_ms) / 1000, tpm_command,
                        tpm_response, str(obj.get("note", "")))
    except (TypeError, ValueError, OverflowError):
        raise BadInputError(f"line {line}: a number field has the wrong type",
                            "pass a capture written by `tpmseal sniff --json`") from None


def read_jsonl(text: str) -> list[Exchange]:
    """Exchanges from JSON lines text (blank lines are skipped)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        obj = safejson.loads(line, f"line {n}",
                             "pass a capture written by `tpmseal sniff --json`")
        out.append(exchange_from_json(obj, n))
    return out


class JsonlWriter:
    """A proxy observer appending one flushed JSON line per exchange."""

    def __init__(self, target: str | Path | IO[str]):
        if isinstance(target, str | Path):
            self._stream: IO[str] = open_private(target, binary=False)
            self._owned = True
        else:
            self._stream, self._owned = target, False
        #: how the proxy names this observer in a warning
        where = target if isinstance(target, str | Path) else "a stream"
        self.label = f"the JSON lines output ({where})"
        self._lock = threading.Lock()

    def __call__(self, ex: Exchange) -> None:
        with self._lock:
            self._stream.write(dumps(ex) + "\n")
            self._stream.flush()

    def write_all(self, exchanges: Iterable[Exchange]) -> None:
        for ex in exchanges:
            self(ex)

    def close(self) -> None:
        with self._lock:
            if self._owned:
                self._stream.close()
            else:
                self._stream.flush()
