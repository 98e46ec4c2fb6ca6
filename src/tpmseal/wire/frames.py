"""Command and response frames (TPM 2.0 Part 1 §18.7-18.10, Part 3 §5).

A command is: header (tag, commandSize, commandCode), handle area, then — with
tag TPM_ST_SESSIONS — authorizationSize and the authorization area, then the
parameter area. A response is: header (tag, responseSize, responseCode), handle
area, then — with TPM_ST_SESSIONS — parameterSize, the parameters and the
response authorization area.

This module frames and unframes bytes; it neither computes HMACs nor decrypts
(that is :mod:`tpmseal.session`). The sniffer's field-by-field view of captured
traffic is :mod:`tpmseal.wire.decode`.
"""

from __future__ import annotations

from tpmseal.errors import DecodeError
from tpmseal.records import record
from tpmseal.wire.constants import TPM_ST, TPMA_SESSION, members
from tpmseal.wire.marshal import Reader, tpm2b, u8, u16, u32

HEADER_SIZE = 10


@record
class AuthCommand:
    """TPMS_AUTH_COMMAND (Part 2 §10.13.2)."""

    session_handle: int
    nonce: bytes
    attributes: int
    hmac: bytes

    def marshal(self) -> bytes:
        return u32(self.session_handle) + tpm2b(self.nonce) + u8(self.attributes) + tpm2b(self.hmac)

    @classmethod
    def unmarshal(cls, r: Reader) -> AuthCommand:
        return cls(r.u32("sessionHandle"), r.tpm2b("nonce"), r.u8("sessionAttributes"),
                   r.tpm2b("hmac"))

    def __repr__(self) -> str:  # the hmac field of a password session is the password
        return (f"AuthCommand(handle={self.session_handle:#x}, "
                f"attributes={session_attrs_text(self.attributes)})")


@record
class AuthResponse:
    """TPMS_AUTH_RESPONSE (Part 2 §10.13.3)."""

    nonce: bytes
    attributes: int
    hmac: bytes

    def marshal(self) -> bytes:
        return tpm2b(self.nonce) + u8(self.attributes) + tpm2b(self.hmac)

    @classmethod
    def unmarshal(cls, r: Reader) -> AuthResponse:
        return cls(r.tpm2b("nonce"), r.u8("sessionAttributes"), r.tpm2b("hmac"))


def session_attrs_text(attrs: int) -> str:
    """E.g. ``continueSession|decrypt``; ``0`` when no bit is set."""
    names = [name for name, bit in members(TPMA_SESSION).items() if attrs & bit]
    return "|".join(names) if names else "0"


@record
class Header:
    tag: int
    size: int
    code: int


def parse_header(data: bytes) -> Header:
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"frame shorter than its {HEADER_SIZE}-byte header", len(data))
    r = Reader(data)
    h = Header(r.u16("tag"), r.u32("size"), r.u32("code"))
    if h.size != len(data):
        raise DecodeError(f"header says {h.size} bytes, frame has {len(data)}", 2)
    return h


def build_command(code: int, handles: list[int], auths: list[AuthCommand], params: bytes) -> bytes:
    """Frame a command (Part 1 §18.7)."""
    body = b"".join(u32(h) for h in handles)
    if auths:
        area = b"".join(a.marshal() for a in auths)
        body += u32(len(area)) + area
    body += params
    tag = TPM_ST.SESSIONS if auths else TPM_ST.NO_SESSIONS
    return u16(tag) + u32(HEADER_SIZE + len(body)) + u32(code) + body


def build_response(rc: int, handles: list[int], params: bytes,
                   auths: list[AuthResponse]) -> bytes:
    """Frame a response (Part 1 §18.8); used by tests and the interposer."""
    if rc:
        return u16(TPM_ST.NO_SESSIONS) + u32(HEADER_SIZE) + u32(rc)
    body = b"".join(u32(h) for h in handles)
    if auths:
        body += u32(len(params)) + params + b"".join(a.marshal() for a in auths)
    else:
        body += params
    tag = TPM_ST.SESSIONS if auths else TPM_ST.NO_SESSIONS
    return u16(tag) + u32(HEADER_SIZE + len(body)) + u32(rc) + body


@record
class CommandFrame:
    """A command split into its areas; parameters start at *params_offset*."""

    header: Header
    handles: list[int]
    auths: list[AuthCommand]
    params_offset: int


def split_command(data: bytes, n_handles: int) -> CommandFrame:
    """Split a command into handle, authorization and parameter areas (Part 1 §18.7)."""
    h = parse_header(data)
    r = Reader(data, HEADER_SIZE)
    handles = [r.u32("handle") for _ in range(n_handles)]
    auths: list[AuthCommand] = []
    if h.tag == TPM_ST.SESSIONS:
        size = r.u32("authorizationSize")
        if size > r.remaining:
            raise DecodeError(f"authorizationSize {size} exceeds the {r.remaining} bytes left",
                              r.offset - 4)
        area = Reader(data, r.offset, r.offset + size)
        while area.remaining:
            auths.append(AuthCommand.unmarshal(area))
        r.offset += size
    elif h.tag != TPM_ST.NO_SESSIONS:
        raise DecodeError(f"unexpected command tag {h.tag:#x}", 0)
    return CommandFrame(h, handles, auths, r.offset)


@record
class ResponseFrame:
    """A successful response split into its areas."""

    handles: list[int]
    params: bytes
    params_offset: int
    auths: list[AuthResponse]


def split_response(data: bytes, n_handles: int, n_sessions: int) -> ResponseFrame:
    """Split a TPM_RC_SUCCESS response into handles, parameters and auth area."""
    h = parse_header(data)
    r = Reader(data, HEADER_SIZE)
    handles = [r.u32("handle") for _ in range(n_handles)]
    if h.tag == TPM_ST.SESSIONS:
        psize = r.u32("parameterSize")
        start = r.offset
        params = r.raw(psize, "parameters")
        auths = [AuthResponse.unmarshal(r) for _ in range(n_sessions)]
        r.done("response")
        return ResponseFrame(handles, params, start, auths)
    if h.tag != TPM_ST.NO_SESSIONS:
        raise DecodeError(f"unexpected response tag {h.tag:#x}", 0)
    if n_sessions:
        raise DecodeError("response carries no sessions but the command used some", 0)
    start = r.offset
    return ResponseFrame(handles, data[start:], start, [])
