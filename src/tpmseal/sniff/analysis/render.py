"""Human-readable dumps of TPM traffic, in the seed's format and beyond.

Per exchange: ``>>> Command: Create (tag=0x8002 size=141)``, a hexdump with
offsets and an ASCII column, then the fields decoded by the command registry —
handles with their well-known names, each session (TPMS_AUTH_COMMAND, TPM 2.0
Part 2 §10.13.2: handle, nonce, attributes, HMAC), parameters by name with the
first marked *encrypted* when a session carries ``decrypt`` (commands) or
``encrypt`` (responses) (Part 1 §21). Then ``<<< Response to Create: rc=...``
with the response code decoded per Part 2 §6.6.

Byte ranges can be highlighted (:class:`Span`) — the leak scanner and the demo
mark the secret's bytes: in colour on a terminal, otherwise with a ``^^^^``
marker line under the hexdump row and a label, as in the seed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from tpmseal.sniff.analysis.leaks import find, find_deciphered
from tpmseal.sniff.analysis.record import (
    Exchange,
    header_problem,
    safe_decode_command,
    safe_decode_response,
)
from tpmseal.sniff.analysis.values import bytes_text, handle_text, value_lines
from tpmseal.wire.decode import Deciphered, DecodedCommand, DecodedField, command_name
from tpmseal.wire.frames import AuthCommand, AuthResponse, session_attrs_text
from tpmseal.wire.rc import SENTENCES, decode_rc

_HL = "\x1b[1;97;41m"  # bold white on red
_BOLD = "\x1b[1m"
_RESET = "\x1b[0m"
_ASCII_COL = 62  # where the ASCII column's first character sits in a hexdump row
_INDENT = "    "


@dataclass(frozen=True)
class Span:
    """Bytes ``[start, end)`` of a message to highlight, with what they are."""

    start: int
    end: int
    label: str


def secret_spans(data: bytes, secrets: Sequence[bytes]) -> list[Span]:
    """Spans covering every appearance of *secrets* in *data* (see :mod:`.leaks`)."""
    out = []
    for m in find(data, secrets):
        what = "secret" if len(secrets) == 1 else f"secret {m.secret + 1}"
        how = "in plaintext" if m.encoding == "raw" else f"as {m.encoding}"
        out.append(Span(m.offset, m.offset + m.length,
                        f"{what} visible {how} at offset 0x{m.offset:x}"))
    return out


def _col(i: int) -> int:
    return 10 + 3 * i + (1 if i >= 8 else 0)


def hexdump(data: bytes, spans: Sequence[Span] = (), color: bool = False) -> list[str]:
    """16 bytes per row: offset, hex in two groups of 8, ASCII; highlights as *spans* say."""
    marked: set[int] = set()
    for s in spans:
        marked.update(range(max(s.start, 0), min(s.end, len(data))))
    lines = []
    for row in range(0, max(len(data), 1), 16):
        chunk = data[row : row + 16]
        if not chunk:
            break
        cells = []
        chars = []
        for i, b in enumerate(chunk):
            cell, ch = f"{b:02x}", chr(b) if 0x20 <= b < 0x7F else "."
            if color and row + i in marked:
                cell, ch = f"{_HL}{cell}{_RESET}", f"{_HL}{ch}{_RESET}"
            cells.append(cell)
            chars.append(ch)
        pad = ["  "] * (16 - len(chunk))
        cells += pad
        left, right = " ".join(cells[:8]), " ".join(cells[8:])
        lines.append(f"{row:08x}  {left}  {right}   |{''.join(chars)}|")
        if not color:
            lines += _marker_lines(row, len(chunk), marked, spans)
    return lines


def _marker_lines(row: int, n: int, marked: set[int], spans: Sequence[Span]) -> list[str]:
    hits = [i for i in range(n) if row + i in marked]
    if not hits:
        return []
    line = [" "] * (_ASCII_COL + 16)
    for i in hits:
        line[_col(i)] = line[_col(i) + 1] = "^"
        if i + 1 in hits:
            for c in range(_col(i) + 2, _col(i + 1)):
                line[c] = "^"
        line[_ASCII_COL + i] = "^"
    out = ["".join(line).rstrip()]
    out += [" " * 10 + s.label for s in spans if row <= s.start < row + 16]
    return out


def _bold(text: str, color: bool) -> str:
    return f"{_BOLD}{text}{_RESET}" if color else text


def _param_lines(params: Sequence[DecodedField]) -> list[str]:
    lines = []
    for p in params:
        label = f"{p.name} ({p.tpm_type})"
        if not p.encrypted:
            lines += value_lines(label, p.value, p.tpm_type, _INDENT * 2)
        elif p.ciphertext is not None:  # decrypted by the session tracker
            lines.append(f"{_INDENT * 2}{label} [{p.exposed}]: {bytes_text(p.ciphertext)}")
            lines += value_lines("decrypted", p.value, p.tpm_type, _INDENT * 3)
        else:
            lines.append(f"{_INDENT * 2}{label} [{p.exposed or 'encrypted'}]: "
                         f"{bytes_text(p.value)}")
    return lines


def command_lines(data: bytes, spans: Sequence[Span] = (), *, color: bool = False,
                  dump: bool = True, title: str = "Command",
                  deciphered: Deciphered | None = None) -> list[str]:
    """The ``>>> Command`` block: header line, hexdump and decoded fields."""
    problem = header_problem(data)
    dec = safe_decode_command(data, deciphered)
    if dec is None or problem is not None:
        lines = [_bold(f">>> {title}: ? ({len(data)} bytes: {problem or 'undecodable'})",
                       color)]
        return lines + (hexdump(data, spans, color) if dump else [])
    lines = [_bold(f">>> {title}: {dec.name} (tag=0x{dec.tag:04x} size={dec.size})", color)]
    if dump:
        lines += hexdump(data, spans, color)
    lines += _handle_lines(dec.handles)
    lines += _session_lines([(f"handle={handle_text(s.session_handle)} ", s)
                             for s in dec.sessions])
    if dec.params:
        lines.append(f"{_INDENT}parameters:")
        lines += _param_lines(dec.params)
    if dec.note:
        lines.append(f"{_INDENT}{dec.note}")
    if dec.error:
        lines.append(f"{_INDENT}decode error: {dec.error}")
    return lines


def _handle_lines(handles: Sequence[tuple[str, int]]) -> list[str]:
    if not handles:
        return []
    return [f"{_INDENT}handles:", *(f"{_INDENT * 2}{n}: {handle_text(h)}" for n, h in handles)]


def _session_lines(sessions: Sequence[tuple[str, AuthCommand | AuthResponse]]) -> list[str]:
    """The sessions block: each session's *prefix* (its handle, in a command), attributes,
    nonce and HMAC."""
    if not sessions:
        return []
    lines = [f"{_INDENT}sessions:"]
    for i, (prefix, s) in enumerate(sessions):
        lines.append(f"{_INDENT * 2}[{i}] {prefix}attributes={session_attrs_text(s.attributes)} "
                     f"(0x{s.attributes:02x})")
        lines.append(f"{_INDENT * 3}nonce: {bytes_text(s.nonce)}")
        lines.append(f"{_INDENT * 3}hmac: {bytes_text(s.hmac)}")
    return lines


def rc_summary(rc: int) -> str:
    """``rc=0x00000000 TPM_RC_SUCCESS`` or ``rc=0x99d TPM_RC_POLICY_FAIL (session 1)``."""
    return "rc=0x00000000 TPM_RC_SUCCESS" if rc == 0 else f"rc={decode_rc(rc).describe()}"


def response_lines(data: bytes, command: DecodedCommand | None, spans: Sequence[Span] = (),
                   *, color: bool = False, dump: bool = True,
                   title: str = "Response to", deciphered: Deciphered | None = None
                   ) -> list[str]:
    """The ``<<< Response to`` block for *data*, decoded in the light of *command*."""
    name = command.name if command is not None else "?"
    problem = header_problem(data)
    dec = safe_decode_response(data, command, deciphered) if problem is None else None
    if dec is None:
        lines = [_bold(f"<<< {title} {name}: ? ({len(data)} bytes: {problem or 'undecodable'})",
                       color)]
        return lines + (hexdump(data, spans, color) if dump else [])
    lines = [_bold(f"<<< {title} {name}: {rc_summary(dec.rc)} "
                   f"(tag=0x{dec.tag:04x} size={dec.size})", color)]
    if dump:
        lines += hexdump(data, spans, color)
    if dec.rc:
        sentence = SENTENCES.get(decode_rc(dec.rc).name)
        if sentence:
            lines.append(f"{_INDENT}meaning: {sentence}")
        return lines
    lines += _handle_lines(dec.handles)
    if dec.params:
        lines.append(f"{_INDENT}parameters:")
        lines += _param_lines(dec.params)
    lines += _session_lines([("", s) for s in dec.sessions])
    if dec.note:
        lines.append(f"{_INDENT}{dec.note}")
    if dec.error:
        lines.append(f"{_INDENT}decode error: {dec.error}")
    return lines


def exchange_title(ex: Exchange) -> str:
    """``=== #3 client 1 at 14:37:34.123456 (TPM 1.23 ms)``."""
    try:
        clock = time.strftime("%H:%M:%S", time.localtime(ex.started))
        micros = int((ex.started % 1) * 1_000_000)
    except (OverflowError, OSError, ValueError):  # a capture's nonsense timestamp
        clock, micros = "??:??:??", 0
    tpm = f" (TPM {ex.tpm_seconds * 1000:.2f} ms)" if ex.tpm_seconds is not None else ""
    return f"=== #{ex.index} client {ex.client} at {clock}.{micros:06d}{tpm}"


def _deciphered_spans(raw: bytes, plain: bytes | None, region: tuple[int, int] | None,
                      secrets: Sequence[bytes]) -> list[Span]:
    out = []
    for m in find_deciphered(raw, plain, region, secrets):
        what = "secret" if len(secrets) == 1 else f"secret {m.secret + 1}"
        how = "" if m.encoding == "raw" else f" as {m.encoding}"
        out.append(Span(m.offset, m.offset + m.length,
                        f"{what} visible{how} once decrypted (the key derives from the bus) "
                        f"at offset 0x{m.offset:x}"))
    return out


def render_exchange(ex: Exchange, *, secrets: Sequence[bytes] = (), color: bool = False,
                    dump: bool = True) -> str:
    """The full human dump of one exchange, secrets highlighted where they appear."""
    def spans(data: bytes) -> list[Span]:
        return secret_spans(data, secrets) if secrets else []

    d = ex.deciphering
    cmd_spans = spans(ex.command)
    if d is not None and secrets:
        cmd_spans += _deciphered_spans(ex.command, d.plain_command(ex.command),
                                       d.region_command, secrets)
    lines = [exchange_title(ex)]
    lines += command_lines(ex.command, cmd_spans, color=color, dump=dump,
                           deciphered=d.command if d else None)
    cmd = ex.decoded_command()
    if ex.tpm_command is None:
        lines.append("!!! interposer: the command was not forwarded to the TPM")
    elif ex.tpm_command != ex.command:
        lines += command_lines(ex.tpm_command, spans(ex.tpm_command), color=color, dump=dump,
                               title="Command as the interposer rewrote it (what the TPM got)")
    sent = safe_decode_command(ex.tpm_command) if ex.tpm_command is not None else cmd
    if ex.tpm_response is not None and ex.tpm_response != ex.response:
        lines += response_lines(ex.tpm_response, sent, spans(ex.tpm_response), color=color,
                                dump=dump,
                                title="TPM's own response (the interposer replaced it) to")
    if ex.response is None:
        name = cmd.name if cmd is not None else command_name(ex.code)
        lines.append(_bold(f"<<< No response to {name}", color))
    else:
        resp_spans = spans(ex.response)
        if d is not None and secrets:
            resp_spans += _deciphered_spans(ex.response, d.plain_response(ex.response),
                                            d.region_response, secrets)
        lines += response_lines(ex.response, cmd if cmd is not None else sent, resp_spans,
                                color=color, dump=dump, deciphered=d.response if d else None)
    if ex.note:
        lines.append(f"!!! {ex.note}")
    return "\n".join(lines) + "\n"


def stream_name(stream: IO[str]) -> str:
    """``stdout``, ``stderr``, a file's name, or ``a stream``."""
    name = getattr(stream, "name", None)
    if isinstance(name, str):
        return name.strip("<>")
    return "a stream"


def color_enabled(mode: str, stream: IO[str] | None = None) -> bool:
    """Whether to colour output to *stream* (default stdout) for a ``--color`` *mode*.

    ``always`` and ``never`` say it; ``auto`` colours a terminal unless the
    ``NO_COLOR`` environment variable is set to anything non-empty
    (https://no-color.org).
    """
    if mode == "always":
        return True
    if mode != "auto":
        return False
    out = sys.stdout if stream is None else stream
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        tty = False
    return tty and not os.environ.get("NO_COLOR")


class TextWriter:
    """A proxy observer printing each exchange's dump to a text stream."""

    def __init__(self, stream: IO[str], *, secrets: Sequence[bytes] = (), color: bool = False,
                 dump: bool = True):
        self.stream = stream
        #: how the proxy names this observer in a warning
        self.label = f"the text output ({stream_name(stream)})"
        self.secrets = list(secrets)
        self.color = color
        self.dump = dump
        self._lock = threading.Lock()

    def __call__(self, ex: Exchange) -> None:
        text = render_exchange(ex, secrets=self.secrets, color=self.color, dump=self.dump)
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()
