"""Interposer hooks: an active attacker on the TPM bus, as a library.

The threat model of tpmseal (docs/SECURITY.md) includes an *active* bus attacker — an
interposer chip on the LPC/SPI bus — who can read, rewrite, drop, delay and
replay every message between the CPU and the TPM. :class:`~tpmseal.sniff.capture.proxy.Proxy`
plays that attacker in tests: it calls ``on_command(ctx)`` before a command goes
to the TPM and ``on_response(ctx)`` before a response goes back to the client.
A hook returns a *verdict*:

==========================  ===========================================================
``None``                    pass the message on unchanged
``bytes``                   send these bytes instead (rewrite, forge, replay)
``Respond(data)``           (``on_command`` only) answer the client with *data*; the TPM
                            never sees the command
``Close(partial=b"")``      send *partial* (e.g. a truncated message), then close the
                            client's connection: the client sees a closed connection
``HANG``                    never answer and keep the connection open: the client times out
==========================  ===========================================================

Delays are just sleeps: ``ctx.delay(seconds)`` sleeps but wakes early when the
proxy stops. Hooks run one exchange at a time (the proxy serializes exchanges
onto the TPM), so a delay holds the bus as a stalled interposer would. The
helpers below build the attacks' messages: :func:`flip`, :func:`error_response`,
:func:`success_response`, :func:`parse_command`/:func:`build_command`,
:func:`parse_response` and :func:`set_session_attributes`.

Response HMACs (TPM 2.0 Part 1 §19.6.16) are what defeats most of these; error
responses carry no HMAC (Part 1 §18.8), which is why forged *errors* need care
on the client side.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from tpmseal.errors import DecodeError
from tpmseal.sniff.analysis.record import Exchange, safe_decode_command, safe_decode_response
from tpmseal.wire.commands import REGISTRY, Command, Response
from tpmseal.wire.constants import TPM_ST
from tpmseal.wire.decode import DecodedCommand, DecodedResponse, command_name
from tpmseal.wire.frames import (
    HEADER_SIZE,
    AuthCommand,
    AuthResponse,
    build_response,
    parse_header,
    split_command,
    split_response,
)
from tpmseal.wire.frames import build_command as _frame_command
from tpmseal.wire.marshal import Reader


class Action:
    """Base of the non-bytes verdicts a hook may return."""


@dataclass(frozen=True)
class Respond(Action):
    """Answer the client with *response* without forwarding the command to the TPM."""

    response: bytes


@dataclass(frozen=True)
class Close(Action):
    """Send *partial* (possibly empty) to the client, then close its connection."""

    partial: bytes = b""


@dataclass(frozen=True)
class Hang(Action):
    """Never answer; the connection stays open until the client gives up."""


#: Close the client's connection without an answer.
DROP = Close()
#: Never answer.
HANG = Hang()

Verdict = bytes | Action | None


@dataclass(frozen=True)
class HookContext:
    """What a hook knows about the exchange in flight.

    ``command`` is what the client sent. In ``on_response``, ``tpm_command`` is
    what the TPM received (after any rewrite) and ``response`` what it answered.
    ``history`` holds the exchanges completed before this one.
    """

    index: int
    client: int
    command: bytes
    history: tuple[Exchange, ...] = ()
    response: bytes | None = None
    tpm_command: bytes | None = None
    stopping: threading.Event = field(default_factory=threading.Event, repr=False,
                                      compare=False)

    @property
    def code(self) -> int:
        """The command code (Part 2 §6.5.2)."""
        return int.from_bytes(self.command[6:10], "big")

    @property
    def name(self) -> str:
        return command_name(self.code)

    @cached_property
    def decoded(self) -> DecodedCommand | None:
        """The client's command decoded by the registry."""
        return safe_decode_command(self.command)

    @cached_property
    def decoded_response(self) -> DecodedResponse | None:
        """The TPM's response decoded in the light of the command it answers."""
        if self.response is None:
            return None
        sent = self.tpm_command if self.tpm_command is not None else self.command
        return safe_decode_response(self.response, safe_decode_command(sent))

    def previous(self, code: int | None = None) -> Exchange | None:
        """The latest earlier exchange with a response (and command *code*, if given)."""
        for ex in reversed(self.history):
            if ex.response is not None and (code is None or ex.code == code):
                return ex
        return None

    def delay(self, seconds: float) -> None:
        """Sleep *seconds*, waking early if the proxy is stopping."""
        self.stopping.wait(seconds)

    def parse(self) -> tuple[Command[Any], list[AuthCommand]]:
        """The client's command as a registry object and its sessions (:func:`parse_command`)."""
        return parse_command(self.command)


CommandHook = Callable[[HookContext], Verdict]
ResponseHook = Callable[[HookContext], Verdict]

#: What the proxy does with the client's connection after an exchange.
ANSWER, CLOSE, WAIT = "answer", "close", "wait"


@dataclass(frozen=True)
class Outcome:
    """A verdict resolved: bytes for the client, what next, and a note for the record."""

    reply: bytes | None
    then: str = ANSWER
    note: str = ""


def check_verdict(verdict: object) -> Verdict:
    """*verdict* if it is one a hook may return, else :class:`TypeError`."""
    if verdict is None or isinstance(verdict, bytes | Action):
        return verdict
    raise TypeError(f"hook returned {type(verdict).__name__}; expected None, bytes, Respond, "
                    "Close or HANG")


def resolve(verdict: Verdict, default: bytes | None, what: str) -> Outcome:
    """What a *verdict* on the ``command`` or ``response`` means for the client.

    *default* is what the client gets when the hook lets the message pass.
    (A ``bytes`` verdict on a command is a rewrite for the TPM; the proxy
    handles that before asking here.)
    """
    if verdict is None:
        return Outcome(default)
    if isinstance(verdict, bytes):
        return Outcome(verdict, note=f"{what} rewritten by hook")
    if isinstance(verdict, Respond):
        return Outcome(verdict.response, note="answered by hook; the TPM never saw the command"
                       if what == "command" else "response rewritten by hook")
    if isinstance(verdict, Close):
        sent = f" after sending {len(verdict.partial)} bytes" if verdict.partial else ""
        return Outcome(verdict.partial or None, CLOSE,
                       f"connection closed by hook at the {what}{sent}")
    return Outcome(None, WAIT, f"hook never answered the {what}")


# ------------------------------------------------------------------------- helpers


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    """*data* with the byte at *offset* XORed with *mask* (negative offsets count from the end)."""
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def error_response(rc: int) -> bytes:
    """A bare error response with response code *rc* (Part 1 §18.8: header only)."""
    return build_response(rc, [], b"", [])


def success_response(response: Response, auths: Sequence[AuthResponse] = ()) -> bytes:
    """A TPM_RC_SUCCESS frame carrying a registry response object.

    Without *auths* the frame has tag TPM_ST_NO_SESSIONS, which a client that
    used sessions must reject.
    """
    return build_response(0, response.handle_values(), response.param_bytes(), list(auths))


def parse_command(data: bytes) -> tuple[Command[Any], list[AuthCommand]]:
    """Parse a command frame into its registry object and authorization sessions.

    Raises :class:`DecodeError` for an unknown command code or when the
    parameters do not parse — which is the case when the first parameter is
    encrypted and is a structure (an attacker sees only ciphertext there).
    """
    h = parse_header(data)
    cls = REGISTRY.get(h.code)
    if cls is None:
        raise DecodeError(f"command code {h.code:#x} is not in the registry", 6)
    frame = split_command(data, len(cls.layout().handles))
    cmd: Command[Any] = cls.from_wire(frame.handles, Reader(data, frame.params_offset))
    return cmd, frame.auths


def build_command(cmd: Command[Any], auths: Sequence[AuthCommand] = ()) -> bytes:
    """Marshal a registry command with the given authorization area (Part 1 §18.7)."""
    return _frame_command(int(type(cmd).CC), cmd.handle_values(), list(auths),
                          b"".join(cmd.param_parts()))


def parse_response(data: bytes, command: bytes) -> tuple[Response, list[AuthResponse]]:
    """Parse a successful response to *command* into its registry object and sessions."""
    h = parse_header(command)
    cls = REGISTRY.get(h.code)
    if cls is None:
        raise DecodeError(f"command code {h.code:#x} is not in the registry", 6)
    lay = cls.RESPONSE.layout()
    n_sessions = len(session_attribute_offsets(command))
    frame = split_response(data, len(lay.handles), n_sessions)
    resp: Response = cls.RESPONSE.from_wire(frame.handles,
                                            Reader(frame.params, base=frame.params_offset))
    return resp, frame.auths


def session_attribute_offsets(command: bytes) -> list[int]:
    """Offsets of each session's ``sessionAttributes`` byte in a command (Part 2 §10.13.2)."""
    h = parse_header(command)
    if h.tag != TPM_ST.SESSIONS:
        return []
    cls = REGISTRY.get(h.code)
    if cls is None:
        raise DecodeError(f"command code {h.code:#x} is not in the registry", 6)
    r = Reader(command, HEADER_SIZE + 4 * len(cls.layout().handles))
    size = r.u32("authorizationSize")
    area = Reader(command, r.offset, r.offset + size)
    offsets = []
    while area.remaining:
        area.u32("sessionHandle")
        area.tpm2b("nonceCaller")
        offsets.append(area.offset)
        area.u8("sessionAttributes")
        area.tpm2b("hmac")
    return offsets


def set_session_attributes(command: bytes, attributes: int, session: int = 0) -> bytes:
    """*command* with session number *session*'s attributes replaced by *attributes*."""
    out = bytearray(command)
    out[session_attribute_offsets(command)[session]] = attributes
    return bytes(out)
