"""Wire layer vectors: every registry command/response and structure round-trips.

Round trips build representative instances, marshal them the way the client
does (``param_parts`` / ``param_bytes``) and parse them back with the same
registry declaration (``from_wire``). Truncated and over-long inputs must fail
with a :class:`DecodeError` that names a byte offset (docs/ARCHITECTURE.md, principle 3).
Byte-exact vectors come from the seed capture (eve-pr-5711.txt), from Part 2's
TPMS_PCR_SELECTION bitmap rule and from Names assembled by hand.
"""

from __future__ import annotations

import hashlib
import inspect
import struct
from collections.abc import Callable
from typing import Any

import pytest

from tpmseal.errors import DecodeError
from tpmseal.records import fields, is_record
from tpmseal.wire import codecs, decode, frames, structures
from tpmseal.wire import commands as cmds
from tpmseal.wire.commands import REGISTRY, Command, Response
from tpmseal.wire.constants import (
    TPM_ALG,
    TPM_CAP,
    TPM_CC,
    TPM_ECC,
    TPM_RH,
    TPM_ST,
    TPMA_NV,
    TPMA_OBJECT,
    TPMA_SESSION,
    enum_name,
)
from tpmseal.wire.frames import AuthCommand, AuthResponse, build_command, build_response
from tpmseal.wire.marshal import Reader, parse_exact, tpm2b
from tpmseal.wire.structures import (
    AES_128_CFB,
    CapabilityData,
    Context,
    CreationData,
    DigestList,
    DigestValues,
    EccParms,
    EccPoint,
    KeyedHashParms,
    NvPublic,
    PcrSelection,
    PcrSelectionList,
    Public,
    PublicParms,
    RsaParms,
    Scheme,
    SensitiveCreate,
    Signature,
    SymCipherParms,
    SymDef,
    Ticket,
)

# ----------------------------------------------------------------------------- samples

SEL = PcrSelectionList((PcrSelection(TPM_ALG.SHA256, (0, 1, 2, 3, 4, 6, 7)),
                        PcrSelection(TPM_ALG.SHA1, (23,))))
RSA_PUB = Public(TPM_ALG.RSA, TPM_ALG.SHA256,
                 TPMA_OBJECT.fixedTPM | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt,
                 bytes(range(32)), RsaParms(AES_128_CFB, Scheme(), 2048, 0), bytes(range(256)))
ECC_PUB = Public(TPM_ALG.ECC, TPM_ALG.SHA384, TPMA_OBJECT.sign | TPMA_OBJECT.userWithAuth, b"",
                 EccParms(SymDef(), Scheme(TPM_ALG.ECDSA, (TPM_ALG.SHA384,)), TPM_ECC.NIST_P384,
                          Scheme()),
                 EccPoint(b"\x01" * 48, b"\x02" * 48))
SEALED_PUB = Public(TPM_ALG.KEYEDHASH, TPM_ALG.SHA256,
                    TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.adminWithPolicy,
                    b"\xaa" * 32, KeyedHashParms(), b"\xbb" * 32)
SYM_PUB = Public(TPM_ALG.SYMCIPHER, TPM_ALG.SHA1, TPMA_OBJECT.decrypt, b"",
                 SymCipherParms(SymDef(TPM_ALG.AES, 256, TPM_ALG.CFB)), b"\xcc" * 20)
CREATION = CreationData(SEL, b"\x11" * 32, 0x01, TPM_ALG.SHA256, b"\x00\x0b" + b"\x22" * 32,
                        b"\x00\x0b" + b"\x33" * 32, b"info")
TICKET = Ticket(TPM_ST.CREATION, TPM_RH.OWNER, b"\x44" * 32)
NV_PUB = NvPublic(0x01800000, TPM_ALG.SHA256,
                  TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHREAD, b"", 64)

#: Several representative values of every structure in structures.py.
STRUCT_SAMPLES: dict[type[Any], list[Any]] = {
    PcrSelection: [PcrSelection(TPM_ALG.SHA256, (0, 7, 23)), PcrSelection(TPM_ALG.SHA1, ()),
                   PcrSelection(TPM_ALG.SHA384, (31,), 4)],
    PcrSelectionList: [PcrSelectionList(), SEL],
    DigestList: [DigestList(), DigestList((b"\x01" * 32, b"", b"\x02" * 20))],
    DigestValues: [DigestValues(), DigestValues(((TPM_ALG.SHA256, b"\x05" * 32),
                                                 (TPM_ALG.SHA1, b"\x06" * 20)))],
    SymDef: [SymDef(), AES_128_CFB, SymDef(TPM_ALG.XOR, TPM_ALG.SHA256)],
    Scheme: [Scheme(), Scheme(TPM_ALG.OAEP, (TPM_ALG.SHA256,)),
             Scheme(TPM_ALG.ECDAA, (TPM_ALG.SHA256, 7)),
             Scheme(TPM_ALG.XOR, (TPM_ALG.SHA256, TPM_ALG.KDF1_SP800_108))],
    RsaParms: [RsaParms(), RsaParms(AES_128_CFB, Scheme(TPM_ALG.RSASSA, (TPM_ALG.SHA256,)),
                                    3072, 65537)],
    EccParms: [EccParms(), ECC_PUB.parameters],
    KeyedHashParms: [KeyedHashParms(), KeyedHashParms(Scheme(TPM_ALG.HMAC, (TPM_ALG.SHA256,)))],
    SymCipherParms: [SymCipherParms(), SymCipherParms(SymDef(TPM_ALG.AES, 256, TPM_ALG.CFB))],
    PublicParms: [PublicParms(TPM_ALG.SYMCIPHER, SymCipherParms()),
                  PublicParms(TPM_ALG.RSA, RsaParms()),
                  PublicParms(TPM_ALG.ECC, EccParms())],
    EccPoint: [EccPoint(b"", b""), EccPoint(b"\x01" * 32, b"\x02" * 32)],
    Public: [RSA_PUB, ECC_PUB, SEALED_PUB, SYM_PUB],
    SensitiveCreate: [SensitiveCreate(), SensitiveCreate(b"pw", b"\x99" * 32)],
    CreationData: [CREATION],
    Ticket: [TICKET, Ticket(TPM_ST.HASHCHECK, TPM_RH.NULL, b"")],
    NvPublic: [NV_PUB, NV_PUB.written()],
    Signature: [Signature(TPM_ALG.RSASSA, TPM_ALG.SHA256, b"\x05" * 256),
                Signature(TPM_ALG.ECDSA, TPM_ALG.SHA256, r=b"\x06" * 32, s=b"\x07" * 32)],
    Context: [Context(0x1122334455667788, 0x80000000, TPM_RH.OWNER, b"\x77" * 100)],
    CapabilityData: [
        CapabilityData(TPM_CAP.ALGS, ((TPM_ALG.RSA, 9), (TPM_ALG.AES, 0x24))),
        CapabilityData(TPM_CAP.HANDLES, ((0x81000001,), (0x81010001,))),
        CapabilityData(TPM_CAP.COMMANDS, ((0x02000153,),)),
        CapabilityData(TPM_CAP.TPM_PROPERTIES, ((0x105, 0x49424D00), (0x10B, 0x20191023))),
        CapabilityData(TPM_CAP.ECC_CURVES, ((TPM_ECC.NIST_P256,), (TPM_ECC.NIST_P384,))),
        CapabilityData(TPM_CAP.PCRS, pcrs=SEL),
        CapabilityData(TPM_CAP.HANDLES, ()),
    ],
    AuthCommand: [AuthCommand(TPM_RH.RS_PW, b"", 1, b""),
                  AuthCommand(0x02000000, b"\x01" * 16, 0x61, b"\x02" * 32)],
    AuthResponse: [AuthResponse(b"", 1, b""), AuthResponse(b"\x03" * 32, 0x40, b"\x04" * 32)],
}

ALL_SAMPLES = [(cls, i, v) for cls, vs in STRUCT_SAMPLES.items() for i, v in enumerate(vs)]


def _struct_id(p: tuple[type[Any], int, Any]) -> str:
    return f"{p[0].__name__}-{p[1]}"


def _sample(codec: codecs.Codec[Any], index: int) -> Any:
    """A representative value for one field codec (index varies the choice)."""
    if isinstance(codec, codecs.UInt):
        return {1: 0x5A, 2: 0x1234, 4: 0x81000001 + index}[codec.width]
    if isinstance(codec, codecs.Buffer):
        return bytes((index + i) & 0xFF for i in range(20 + index))
    if isinstance(codec, codecs.Sized | codecs.Struct):
        options = STRUCT_SAMPLES[codec.struct]
        return options[index % len(options)]
    raise AssertionError(f"no sample for codec {codec!r}")


def _instance(cls: type[Any], index: int = 0) -> Any:
    """An instance of a command or response declaration with sample values."""
    values: dict[str, Any] = {}
    for i, f in enumerate(fields(cls)):
        kind = f.metadata.get("kind")
        if kind == "handle":
            values[f.name] = 0x80000000 + 0x100 * i + index
        elif kind == "param":
            values[f.name] = _sample(f.metadata["codec"], index + i)
    return cls(**values)


COMMANDS = sorted(REGISTRY.items())
CMD_IDS = [enum_name(TPM_CC, cc) for cc, _ in COMMANDS]


def test_registry_covers_the_foundation_issue() -> None:
    wanted = {"Startup", "Shutdown", "SelfTest", "GetCapability", "GetRandom", "TestParms",
              "ReadPublic", "CreatePrimary", "Create", "Load", "Unseal", "FlushContext",
              "EvictControl", "StartAuthSession", "PolicyPCR", "PolicyGetDigest",
              "PolicyAuthValue", "PolicyPassword", "PCR_Read", "PCR_Extend", "NV_DefineSpace",
              "NV_UndefineSpace", "NV_ReadPublic", "NV_Read", "NV_Write", "ContextSave",
              "ContextLoad", "Clear"}
    assert wanted <= {enum_name(TPM_CC, cc) for cc in REGISTRY}
    for cc, cls in REGISTRY.items():
        assert cc == cls.CC and cls.__name__ == enum_name(TPM_CC, cc)
        assert cls.SECTION.startswith("Part 3 §")
        assert issubclass(cls.RESPONSE, Response)


# ------------------------------------------------------------------- registry round trips


@pytest.mark.parametrize(("cc", "cls"), COMMANDS, ids=CMD_IDS)
@pytest.mark.parametrize("variant", [0, 1])
def test_command_round_trip(cc: int, cls: type[Command[Any]], variant: int) -> None:
    cmd = _instance(cls, variant)
    params = b"".join(cmd.param_parts())
    back = cls.from_wire(cmd.handle_values(), Reader(params))
    assert back == cmd
    # the framed command decodes field by field to the same values (sniffer view)
    frame = build_command(cc, cmd.handle_values(), [], params)
    decoded = decode.decode_command(frame)
    assert decoded.error is None and decoded.code == cc
    assert [v for _, v in decoded.handles] == cmd.handle_values()
    assert [f.value for f in decoded.params] == [getattr(cmd, p.name)
                                                for p in cls.layout().params]


@pytest.mark.parametrize(("cc", "cls"), COMMANDS, ids=CMD_IDS)
@pytest.mark.parametrize("variant", [0, 1])
def test_response_round_trip(cc: int, cls: type[Command[Any]], variant: int) -> None:
    resp = _instance(cls.RESPONSE, variant)
    params = resp.param_bytes()
    back = cls.RESPONSE.from_wire(resp.handle_values(), Reader(params))
    assert back == resp
    frame = build_response(0, resp.handle_values(), params,
                           [AuthResponse(b"\x01" * 32, 1, b"\x02" * 32)])
    split = frames.split_response(frame, len(resp.handle_values()), 1)
    assert split.params == params and split.handles == resp.handle_values()


@pytest.mark.parametrize(("cc", "cls"), COMMANDS, ids=CMD_IDS)
def test_command_params_truncated_and_overlong(cc: int, cls: type[Command[Any]]) -> None:
    cmd = _instance(cls)
    params = b"".join(cmd.param_parts())
    with pytest.raises(DecodeError) as e:
        cls.from_wire(cmd.handle_values(), Reader(params + b"\x00"))
    assert e.value.offset == len(params)
    assert f"at byte offset {len(params)}" in str(e.value)
    for cut in range(len(params)):
        with pytest.raises(DecodeError) as e:
            cls.from_wire(cmd.handle_values(), Reader(params[:cut]))
        assert 0 <= e.value.offset <= cut, (cut, e.value)


@pytest.mark.parametrize(("cc", "cls"), COMMANDS, ids=CMD_IDS)
def test_response_params_truncated_and_overlong(cc: int, cls: type[Command[Any]]) -> None:
    resp = _instance(cls.RESPONSE)
    params = resp.param_bytes()
    base = 14  # as if the parameters started after a header and a parameterSize
    with pytest.raises(DecodeError) as e:
        cls.RESPONSE.from_wire(resp.handle_values(), Reader(params + b"\xff\xff", base=base))
    assert e.value.offset == base + len(params)
    for cut in range(len(params)):
        with pytest.raises(DecodeError) as e:
            cls.RESPONSE.from_wire(resp.handle_values(), Reader(params[:cut], base=base))
        assert base <= e.value.offset <= base + cut


def test_first_parameter_encryptable_flags() -> None:
    """The registry flag that drives parameter encryption (Part 1 §21.1)."""
    flags = {enum_name(TPM_CC, cc): (cls.layout().first_param_encryptable,
                               cls.RESPONSE.layout().first_param_encryptable)
             for cc, cls in REGISTRY.items()}
    assert flags["Create"] == (True, True)          # inSensitive / outPrivate
    assert flags["CreatePrimary"] == (True, True)
    assert flags["Load"] == (True, True)            # inPrivate / name (after the handle)
    assert flags["Unseal"] == (False, True)         # - / outData
    assert flags["GetRandom"] == (False, True)      # bytesRequested / randomBytes
    assert flags["NV_Write"] == (True, False)
    assert flags["NV_Read"] == (False, True)
    assert flags["StartAuthSession"] == (True, True)
    assert flags["PolicyPCR"] == (True, False)
    assert flags["PCR_Read"] == (False, False)
    assert flags["FlushContext"] == (False, False)
    assert flags["NV_DefineSpace"] == (True, False)


# ------------------------------------------------------------------- structure round trips


def _module_structures() -> set[type[Any]]:
    found: set[type[Any]] = set()
    for mod in (structures, frames):
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if (obj.__module__ == mod.__name__ and is_record(obj)
                    and hasattr(obj, "marshal") and hasattr(obj, "unmarshal")):
                found.add(obj)
    return found


def test_every_structure_has_samples() -> None:
    assert _module_structures() <= set(STRUCT_SAMPLES)


@pytest.mark.parametrize(("cls", "i", "value"), ALL_SAMPLES, ids=[_struct_id(p) for p in
                                                                    ALL_SAMPLES])
def test_structure_round_trip(cls: type[Any], i: int, value: Any) -> None:
    data = value.marshal()
    assert parse_exact(data, cls.unmarshal, cls.__name__) == value
    # over-long: the trailing byte is reported at its offset
    with pytest.raises(DecodeError) as e:
        parse_exact(data + b"\x00", cls.unmarshal, cls.__name__)
    assert e.value.offset == len(data)
    assert "trailing" in e.value.message
    # truncated anywhere: an error at or before the cut, never an IndexError
    for cut in range(len(data)):
        with pytest.raises(DecodeError) as e:
            parse_exact(data[:cut], cls.unmarshal, cls.__name__)
        assert 0 <= e.value.offset <= cut
        assert "at byte offset" in str(e.value)


@pytest.mark.parametrize("value", STRUCT_SAMPLES[Public], ids=lambda p: enum_name(TPM_ALG, p.type))
def test_public_sized_round_trip_and_inner_slack(value: Public) -> None:
    sized = value.sized()
    assert Public.from_sized(sized) == value
    assert Public.from_bytes(value.marshal()) == value
    # a TPM2B_PUBLIC whose size claims one byte more than TPMT_PUBLIC uses
    slack = tpm2b(value.marshal() + b"\x00")
    with pytest.raises(DecodeError) as e:
        Public.from_sized(slack)
    assert e.value.offset == len(slack) - 1
    # a size larger than what follows
    with pytest.raises(DecodeError) as e:
        Public.from_sized(sized[:-1])
    assert e.value.offset == 2 and "exceeds" in e.value.message


def test_sized_codec_rejects_slack_inside_response() -> None:
    """CreateResponse with a TPM2B_CREATION_DATA one byte too long: offset of that byte."""
    resp = _instance(cmds.CreateResponse)
    params = resp.param_bytes()
    priv = tpm2b(resp.out_private)
    pub = resp.out_public.sized()
    cd = CREATION.marshal()
    tail = params[len(priv) + len(pub) + 2 + len(cd):]
    bad = priv + pub + tpm2b(cd + b"\x00") + tail
    with pytest.raises(DecodeError) as e:
        cmds.CreateResponse.from_wire([], Reader(bad))
    assert e.value.offset == len(priv) + len(pub) + 2 + len(cd)


@pytest.mark.parametrize(("data", "what"), [
    (b"\x00\x00\x00\x11", "TPML_PCR_SELECTION.count"),
    (b"\x00\x00\x00\x09", "TPML_DIGEST.count"),
])
def test_list_counts_are_bounded(data: bytes, what: str) -> None:
    parse = PcrSelectionList.unmarshal if "PCR" in what else DigestList.unmarshal
    with pytest.raises(DecodeError) as e:
        parse_exact(data + bytes(64), parse, what)
    assert e.value.offset == 0 and "exceeds" in e.value.message


@pytest.mark.parametrize(("parse", "data", "offset"), [
    (Public.unmarshal, b"\x00\x99" + bytes(20), 0),        # unknown public type
    (Scheme.unmarshal, b"\x00\x99", 0),                    # unknown scheme
    (DigestValues.unmarshal, b"\x00\x00\x00\x01\x00\x99", 4),  # unknown TPMT_HA hash
    (CapabilityData.unmarshal, b"\x00\x00\x00\x0a", 0),    # unsupported capability
    (CapabilityData.unmarshal, b"\x00\x00\x00\x01\x00\x01\x00\x00", 4),  # count too big
])
def test_unknown_selectors_name_their_offset(parse: Callable[[Reader], Any], data: bytes,
                                             offset: int) -> None:
    with pytest.raises(DecodeError) as e:
        parse(Reader(data))
    assert e.value.offset == offset
    # inside a response the offset is absolute (the reader's base is added)
    with pytest.raises(DecodeError) as e:
        parse(Reader(b"\xee" * 3 + data, offset=3, base=100))
    assert e.value.offset == 100 + 3 + offset


# --------------------------------------------------------------------- frames


def test_parse_header_errors_carry_offsets() -> None:
    with pytest.raises(DecodeError) as e:
        frames.parse_header(b"\x80\x01\x00")
    assert e.value.offset == 3
    with pytest.raises(DecodeError) as e:
        frames.parse_header(b"\x80\x01\x00\x00\x00\x0b\x00\x00\x00\x00")
    assert e.value.offset == 2 and "header says 11 bytes" in e.value.message


def test_split_response_errors() -> None:
    ok = build_response(0, [0x80000001], b"\x00\x02ab", [AuthResponse(b"", 1, b"")])
    assert frames.split_response(ok, 1, 1).params == b"\x00\x02ab"
    with pytest.raises(DecodeError):  # one session more than the response has
        frames.split_response(ok, 1, 2)
    with pytest.raises(DecodeError):  # no sessions in a response to a command with sessions
        frames.split_response(build_response(0, [], b"", []), 0, 1)
    bad_tag = b"\x80\x03" + ok[2:]
    with pytest.raises(DecodeError) as e:
        frames.split_response(bad_tag, 1, 0)
    assert e.value.offset == 0
    # parameterSize larger than the frame
    over = bytearray(ok)
    over[14:18] = struct.pack(">I", 200)
    with pytest.raises(DecodeError) as e:
        frames.split_response(bytes(over), 1, 1)
    assert e.value.offset == 18


def test_error_response_is_header_only() -> None:
    assert build_response(0x9A2, [1], b"xx", []) == bytes.fromhex("80010000000a000009a2")


# ------------------------------------------------------------------- byte-exact vectors

#: First 0x30 bytes of the legacy (password session) Create in eve-pr-5711.txt.
SEED_LEGACY_CREATE = bytes.fromhex(
    "80020000005d000001538100000200000009400000090000010000000a000000"
    "0673656372657400" "2e0008000b000000")


def test_seed_legacy_create_bytes() -> None:
    """Rebuild EVE's legacy Create and compare field by field with the seed capture."""
    b = SEED_LEGACY_CREATE
    assert b[0:2] == b"\x80\x02"                             # TPM_ST_SESSIONS
    assert int.from_bytes(b[2:6], "big") == 93               # commandSize 0x5d
    assert int.from_bytes(b[6:10], "big") == TPM_CC.Create
    assert int.from_bytes(b[10:14], "big") == 0x81000002    # parentHandle (EVE's SRK)
    assert int.from_bytes(b[14:18], "big") == 9             # authorizationSize
    auth = AuthCommand.unmarshal(Reader(b, 18))
    assert auth == AuthCommand(TPM_RH.RS_PW, b"", TPMA_SESSION.continueSession, b"")
    r = Reader(b, 27)
    assert r.u16() == 0x0A                                  # TPM2B_SENSITIVE_CREATE.size
    assert r.tpm2b() == b""                                 # userAuth
    assert r.tpm2b() == b"secret"                           # data, in the clear
    assert r.u16() == 0x2E                                  # TPM2B_PUBLIC.size
    assert r.u16() == TPM_ALG.KEYEDHASH and r.u16() == TPM_ALG.SHA256
    # our marshaling of the same command reproduces every captured byte
    sealed = Public(TPM_ALG.KEYEDHASH, TPM_ALG.SHA256,
                    TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent, b"\x00" * 32,
                    KeyedHashParms(), b"")
    cmd = cmds.Create(0x81000002, SensitiveCreate(b"", b"secret"), sealed)
    frame = build_command(TPM_CC.Create, cmd.handle_values(), [auth],
                          b"".join(cmd.param_parts()))
    assert len(frame) == 93
    assert frame[:0x2D] == b[:0x2D]
    decoded = decode.decode_command(frame)
    assert decoded.name == "Create" and decoded.error is None
    assert decoded.params[0].value == SensitiveCreate(b"", b"secret")


def test_seed_encrypted_create_header() -> None:
    """EVE's encrypted Create: 16-byte nonce, decrypt attribute, 32-byte HMAC → 141 bytes."""
    row = bytes.fromhex("80020000008d00000153810000020000" "0039020000010010844b681366609357")
    assert int.from_bytes(row[2:6], "big") == 141
    assert int.from_bytes(row[14:18], "big") == 0x39
    assert int.from_bytes(row[18:22], "big") == 0x02000001  # an HMAC session handle
    # 0x39 = handle 4 + nonce 2+16 + attributes 1 + hmac 2+32
    assert 4 + 2 + 16 + 1 + 2 + 32 == 0x39
    assert 10 + 4 + 4 + 0x39 + 66 == 141  # same 66 parameter bytes as the legacy command


def test_seed_legacy_unseal_response_bytes() -> None:
    """The seed's plaintext Unseal response: 43 bytes, outData at offset 0x10."""
    seen = bytes.fromhex("80020000002b0000000000000008" "0006736563726574" "0010961d0dca47f01c5f")
    nonce = seen[24:] + bytes(8)  # the capture stops after 8 of the 16 nonce bytes
    frame = build_response(0, [], tpm2b(b"secret"),
                           [AuthResponse(nonce, TPMA_SESSION.continueSession, b"")])
    assert len(frame) == 43
    assert frame[: len(seen)] == seen
    assert frame.index(b"secret") == 0x10
    split = frames.split_response(frame, 0, 1)
    assert cmds.UnsealResponse.from_wire([], Reader(split.params)).out_data == b"secret"


@pytest.mark.parametrize(("bank", "pcrs", "hexbytes"), [
    (TPM_ALG.SHA256, (0, 1, 2, 3, 4, 6, 7), "000b03df0000"),
    (TPM_ALG.SHA256, (8,), "000b03000100"),
    (TPM_ALG.SHA256, (23,), "000b03000080"),
    (TPM_ALG.SHA1, tuple(range(24)), "000403ffffff"),
    (TPM_ALG.SHA384, (), "000c03000000"),
    (TPM_ALG.SHA256, (0, 15, 16, 31), "000b0401800180"),
])
def test_pcr_selection_bitmap(bank: int, pcrs: tuple[int, ...], hexbytes: str) -> None:
    """Part 2 §10.6.2: PCR n is bit (n mod 8) of octet n div 8."""
    sel = PcrSelection(bank, pcrs, 4 if max(pcrs, default=0) > 23 else 3)
    assert sel.marshal().hex() == hexbytes
    assert PcrSelection.unmarshal(Reader(bytes.fromhex(hexbytes))) == sel


def test_pcr_selection_list_vector() -> None:
    sel = PcrSelectionList((PcrSelection(TPM_ALG.SHA256, (0, 1, 2, 3, 4, 6, 7)),))
    assert sel.marshal().hex() == "00000001000b03df0000"
    assert sel.pairs() == [(TPM_ALG.SHA256, i) for i in (0, 1, 2, 3, 4, 6, 7)]


def test_name_of_public_area_assembled_by_hand() -> None:
    """Name = nameAlg ‖ H(TPMT_PUBLIC) (Part 1 §16), TPMT_PUBLIC packed field by field."""
    policy = bytes.fromhex("60006f998f510089c2196373158d2289c202688be9c31141d423d64a9532a004")
    tpmt = struct.pack(">HHI", 0x0008, 0x000B, 0x00000092)  # keyedHash, sha256, attrs
    tpmt += struct.pack(">H", 32) + policy                   # authPolicy
    tpmt += struct.pack(">H", 0x0010)                        # scheme NULL
    tpmt += struct.pack(">H", 32) + b"\x5a" * 32             # unique
    pub = Public(TPM_ALG.KEYEDHASH, TPM_ALG.SHA256, 0x92, policy, KeyedHashParms(),
                 b"\x5a" * 32)
    assert pub.marshal() == tpmt
    assert pub.name() == b"\x00\x0b" + hashlib.sha256(tpmt).digest()
    rsa = Public(TPM_ALG.RSA, TPM_ALG.SHA1, 0x00030072, b"", RsaParms(key_bits=1024),
                 b"\x01" * 128)
    raw = (struct.pack(">HHI", 1, 4, 0x00030072) + b"\x00\x00" + b"\x00\x10" + b"\x00\x10"
           + struct.pack(">HI", 1024, 0) + struct.pack(">H", 128) + b"\x01" * 128)
    assert rsa.marshal() == raw
    assert rsa.name() == b"\x00\x04" + hashlib.sha1(raw).digest()


def test_nv_name_changes_when_written() -> None:
    """The WRITTEN attribute is part of TPMS_NV_PUBLIC, so the Name changes (Part 1 §16)."""
    raw = struct.pack(">IHI", 0x01800000, 0x000B, int(NV_PUB.attributes)) + b"\x00\x00"
    raw += struct.pack(">H", 64)
    assert NV_PUB.marshal() == raw
    assert NV_PUB.name() == b"\x00\x0b" + hashlib.sha256(raw).digest()
    w = NV_PUB.written()
    assert w.attributes == NV_PUB.attributes | TPMA_NV.WRITTEN
    assert w.name() != NV_PUB.name()
    assert w.written() == w
    raw_w = bytearray(raw)
    raw_w[6:10] = struct.pack(">I", int(NV_PUB.attributes | TPMA_NV.WRITTEN))
    assert w.name() == b"\x00\x0b" + hashlib.sha256(bytes(raw_w)).digest()


def test_ek_policy_a_vector() -> None:
    """PolicySecret(TPM_RH_ENDORSEMENT) from zeros gives the EK templates' PolicyA."""
    from tpmseal.recipes.templates import EK_POLICY_A

    step = hashlib.sha256(bytes(32) + struct.pack(">II", TPM_CC.PolicySecret,
                                                  TPM_RH.ENDORSEMENT)).digest()
    assert hashlib.sha256(step).digest() == EK_POLICY_A  # policyRef is empty


def test_auth_command_repr_hides_password() -> None:
    a = AuthCommand(TPM_RH.RS_PW, b"", 1, b"hunter2")
    assert "hunter2" not in repr(a) and "continueSession" in repr(a)
    assert frames.session_attrs_text(0) == "0"
    assert frames.session_attrs_text(0x61) == "continueSession|decrypt|encrypt"
