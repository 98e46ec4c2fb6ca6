"""A field-by-field view of captured commands and responses, for the sniffer.

:func:`decode_command` and :func:`decode_response` read frames (TPM 2.0 Part 1
§18.7-18.10, Part 3 §5, framed by :mod:`tpmseal.wire.frames`) with the command
registry's declarations, and say which parameter crossed the bus encrypted
(Part 1 §21) and whether an observer could decrypt it anyway. Nothing on the
client's path imports this module.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tpmseal.errors import DecodeError
from tpmseal.records import record
from tpmseal.wire.codecs import Codec
from tpmseal.wire.commands import Layout, registry
from tpmseal.wire.constants import TPM_CC, TPM_RH, TPM_ST, TPMA_SESSION, enum_name
from tpmseal.wire.frames import (
    HEADER_SIZE,
    AuthCommand,
    AuthResponse,
    parse_header,
    split_command,
)
from tpmseal.wire.marshal import Reader, tpm2b

if TYPE_CHECKING:
    from tpmseal.wire.handles import CommandShape


@record
class Deciphered:
    """What an observer knows of an encrypted first parameter: how, and its plaintext.

    Parameter encryption (Part 1 §21) hides nothing when its key derives from
    what crossed the bus: a session started neither salted nor bound, say.
    *how* says so in words ("encrypted with a key derivable from the bus");
    *plaintext* is the parameter's data bytes decrypted, or ``None`` when the
    key is derivable in principle but was not derived.
    """

    how: str
    plaintext: bytes | None = None


@record
class DecodedField:
    """One decoded field: name, TPM type, and value (or raw bytes when encrypted).

    An encrypted field an observer could decrypt anyway has *exposed* set to
    the reason, its decrypted value in *value* when it was decrypted, and the
    bytes as they crossed the bus in *ciphertext*.
    """

    name: str
    tpm_type: str
    value: Any
    offset: int
    encrypted: bool = False
    exposed: str = ""
    ciphertext: bytes | None = None


@record
class DecodedCommand:
    tag: int
    size: int
    code: int
    name: str
    handles: list[tuple[str, int]]
    sessions: list[AuthCommand]
    params: list[DecodedField]
    error: str | None = None
    #: information that is not a fault, e.g. that the parameters were not decoded
    note: str | None = None


@record
class DecodedResponse:
    tag: int
    size: int
    rc: int
    handles: list[tuple[str, int]]
    sessions: list[AuthResponse]
    params: list[DecodedField]
    error: str | None = None
    note: str | None = None


def command_name(code: int) -> str:
    """``Create``; a Part 3 command tpmseal's enum lacks by its table name; else hex."""
    name = enum_name(TPM_CC, code)
    if name.startswith("0x"):
        from tpmseal.wire.handles import shape

        s = shape(code)
        if s is not None:
            return s.name
    return name


def _encrypting(sessions: Sequence[AuthCommand], bit: int) -> bool:
    """True if a real session asks for parameter encryption.

    The password pseudo-session TPM_RS_PW has no key: the TPM rejects or
    ignores ``decrypt``/``encrypt`` on it (Part 1 §19.8.4), so its bits never
    mean the bytes are enciphered.
    """
    return any(s.attributes & bit and s.session_handle != TPM_RH.RS_PW for s in sessions)


def _first_encrypted(name: str, tpm_type: str, codec: Codec[Any] | None, r: Reader,
                     deciphered: Deciphered | None) -> DecodedField:
    off = r.offset
    ct = r.tpm2b(name)
    if deciphered is None:
        return DecodedField(name, tpm_type, ct, off, True)
    plain = deciphered.plaintext
    if plain is None or len(plain) != len(ct):
        return DecodedField(name, tpm_type, ct, off, True, deciphered.how)
    value: Any = plain
    if codec is not None:
        try:
            pr = Reader(tpm2b(plain))
            value = codec.get(pr)
            pr.done(name)
        except (DecodeError, ValueError, IndexError, KeyError, struct.error):
            value = plain
    return DecodedField(name, tpm_type, value, off, True, deciphered.how, ct)


def _decode_params(layout: Layout, r: Reader, first_encrypted: bool,
                   deciphered: Deciphered | None = None) -> list[DecodedField]:
    out: list[DecodedField] = []
    for i, p in enumerate(layout.params):
        assert p.codec is not None
        off = r.offset
        if i == 0 and first_encrypted:
            out.append(_first_encrypted(p.name, p.codec.tpm_type, p.codec, r, deciphered))
        else:
            out.append(DecodedField(p.name, p.codec.tpm_type, p.codec.get(r), off))
    return out


def _generic_params(s: CommandShape, first_2b: bool, r: Reader, first_encrypted: bool,
                    deciphered: Deciphered | None) -> tuple[list[DecodedField], str]:
    """A command outside the registry: its first parameter when the table says it is a
    TPM2B, and a note on how many bytes are left undecoded."""
    params: list[DecodedField] = []
    if first_2b and r.remaining >= 2:
        if first_encrypted:
            params.append(_first_encrypted("parameter 1", "TPM2B", None, r, deciphered))
        else:
            off = r.offset
            params.append(DecodedField("parameter 1", "TPM2B", r.tpm2b("parameter 1"), off))
    left = r.remaining
    what = "remaining parameters" if params else "parameters"
    note = (f"{what} not decoded (TPM2_{s.name} is not in tpmseal's command registry): "
            f"{left} bytes")
    r.offset += left
    return params, note


def decode_command(data: bytes, deciphered: Deciphered | None = None) -> DecodedCommand:
    """Decode a captured command field by field.

    Registered commands are decoded in full; any other command of Part 3 has
    its header, handles and sessions decoded from the table in
    :mod:`tpmseal.wire.handles` (and its first parameter when that is a TPM2B),
    with a ``note`` saying the rest was not decoded. *deciphered*, from an
    observer that derived the session key, supplies the plaintext of an
    encrypted first parameter. Parse failures do not raise: the result
    carries what was decoded and an ``error`` sentence, since captured
    traffic can be anything.
    """
    from tpmseal.wire.handles import shape  # the sniffer's table, off the client's path

    h = parse_header(data)
    name = command_name(h.code)
    cls = registry().get(h.code)
    s = shape(h.code)
    handles: list[tuple[str, int]] = []
    sessions: list[AuthCommand] = []
    params: list[DecodedField] = []
    note: str | None = None
    if cls is None and s is None:
        return DecodedCommand(h.tag, h.size, h.code, name, [], [], [],
                              f"0x{h.code:x} is not a TPM 2.0 command code (Part 2 §6.5.2); "
                              "fields not decoded")
    try:
        if cls is not None:
            lay = cls.layout()
            frame = split_command(data, len(lay.handles))
            handles = [(f.name, v) for f, v in zip(lay.handles, frame.handles, strict=True)]
        else:
            assert s is not None
            frame = split_command(data, s.handles)
            handles = [(f"handle {i + 1}" + (" (authorized)" if i < s.auth_handles else ""), v)
                       for i, v in enumerate(frame.handles)]
        sessions = frame.auths
        r = Reader(data, frame.params_offset)
        encrypted = _encrypting(sessions, TPMA_SESSION.decrypt)
        if cls is not None:
            params = _decode_params(lay, r, encrypted and lay.first_param_encryptable,
                                    deciphered)
        else:
            assert s is not None
            params, note = _generic_params(s, s.decrypt, r, encrypted and s.decrypt,
                                           deciphered)
        r.done("command parameters")
    except DecodeError as e:
        return DecodedCommand(h.tag, h.size, h.code, name, handles, sessions, params, e.message,
                              note)
    return DecodedCommand(h.tag, h.size, h.code, name, handles, sessions, params, None, note)


def decode_response(data: bytes, command: DecodedCommand | None,
                    deciphered: Deciphered | None = None) -> DecodedResponse:
    """Decode a captured response, given the command it answers (if known).

    Like :func:`decode_command`, a response to a command outside the registry
    has its handles, parameter area and sessions split by the Part 3 table.
    """
    h = parse_header(data)
    if h.code != 0 or command is None:
        return DecodedResponse(h.tag, h.size, h.code, [], [], [])
    from tpmseal.wire.handles import shape

    cls = registry().get(command.code)
    s = shape(command.code)
    if cls is None and s is None:
        return DecodedResponse(h.tag, h.size, h.code, [], [], [],
                               "the command code is not a TPM 2.0 command code; "
                               "fields not decoded")
    lay = cls.RESPONSE.layout() if cls is not None else None
    n_handles = len(lay.handles) if lay is not None else s.response_handles if s else 0
    first_2b = lay.first_param_encryptable if lay is not None else bool(s and s.encrypt)
    names = ([f.name for f in lay.handles] if lay is not None
             else [f"handle {i + 1}" for i in range(n_handles)])
    r = Reader(data, HEADER_SIZE)
    handles: list[tuple[str, int]] = []
    sessions: list[AuthResponse] = []
    params: list[DecodedField] = []
    note: str | None = None
    encrypted = _encrypting(command.sessions, TPMA_SESSION.encrypt) and first_2b
    try:
        handles = [(n, r.u32(n)) for n in names]
        if h.tag == TPM_ST.SESSIONS:
            psize = r.u32("parameterSize")
            if psize > r.remaining:
                raise DecodeError(f"parameterSize {psize} exceeds the {r.remaining} bytes left",
                                  r.offset - 4)
            pr = Reader(data, r.offset, r.offset + psize)
            if lay is not None:
                params = _decode_params(lay, pr, encrypted, deciphered)
            else:
                assert s is not None
                params, note = _generic_params(s, first_2b, pr, encrypted, deciphered)
            pr.done("response parameters")
            r.offset += psize
            while r.remaining:
                sessions.append(AuthResponse.unmarshal(r))
        elif h.tag == TPM_ST.NO_SESSIONS:
            if lay is not None:
                params = _decode_params(lay, r, False)
            else:
                assert s is not None
                params, note = _generic_params(s, first_2b, r, False, None)
            r.done("response parameters")
        else:
            raise DecodeError(f"unexpected response tag {h.tag:#x}", 0)
    except DecodeError as e:
        return DecodedResponse(h.tag, h.size, h.code, handles, sessions, params, e.message,
                               note)
    return DecodedResponse(h.tag, h.size, h.code, handles, sessions, params, None, note)
