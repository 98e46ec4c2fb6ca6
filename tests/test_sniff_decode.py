"""The sniffer's decoder over every registry entry, its human dump and its JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.analysis.render import (
    Span,
    hexdump,
    render_exchange,
    response_lines,
    secret_spans,
)
from tpmseal.sniff.analysis.values import handle_text, to_json
from tpmseal.sniff.formats.jsonl import exchange_json, read_jsonl
from tpmseal.wire import codecs as c
from tpmseal.wire.commands import REGISTRY, Command
from tpmseal.wire.constants import (
    TPM_ALG,
    TPM_CAP,
    TPM_CC,
    TPM_ECC,
    TPM_RH,
    TPM_ST,
    TPMA_OBJECT,
    enum_name,
)
from tpmseal.wire.decode import decode_command, decode_response
from tpmseal.wire.frames import AuthCommand, AuthResponse, build_command, build_response
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

SEL = PcrSelectionList((PcrSelection(TPM_ALG.SHA256, (0, 1, 2, 3, 4, 6, 7)),))
SAMPLES: dict[type, Any] = {
    SensitiveCreate: SensitiveCreate(b"pin", b"s3cr3t-key-bytes"),
    Public: Public(TPM_ALG.KEYEDHASH, TPM_ALG.SHA256,
                   TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.adminWithPolicy,
                   bytes(range(32)), KeyedHashParms(), b""),
    CreationData: CreationData(SEL, b"\x01" * 32, 0, TPM_ALG.SHA256, b"\x00\x0b" + b"\x02" * 32,
                               b"\x00\x0b" + b"\x03" * 32, b""),
    Ticket: Ticket(TPM_ST.CREATION, TPM_RH.OWNER, b"\x04" * 32),
    PcrSelectionList: SEL,
    DigestList: DigestList((b"\x05" * 32, b"\x06" * 32)),
    DigestValues: DigestValues(((TPM_ALG.SHA256, b"\x07" * 32),)),
    SymDef: AES_128_CFB,
    PublicParms: PublicParms(TPM_ALG.SYMCIPHER, SymCipherParms(AES_128_CFB)),
    NvPublic: NvPublic(0x01500000, TPM_ALG.SHA256, 0x2000A, b"", 32),
    Context: Context(7, 0x80000001, TPM_RH.OWNER, b"\x08" * 64),
    CapabilityData: CapabilityData(TPM_CAP.TPM_PROPERTIES, ((0x100, 0x322E3000), (0x101, 0))),
    Signature: Signature(TPM_ALG.ECDSA, TPM_ALG.SHA256, r=b"\x09" * 32, s=b"\x0a" * 32),
}


def sample(codec: c.Codec[Any]) -> Any:
    if isinstance(codec, c.UInt):
        return {1: 0x01, 2: TPM_ALG.SHA256, 4: 0x81000002}[codec.width]
    if isinstance(codec, c.Buffer):
        return bytes([len(codec.tpm_type)]) * 20
    if isinstance(codec, c.Sized | c.Struct):
        return SAMPLES[codec.struct]
    raise AssertionError(f"no sample for {codec}")


def frames_for(cls: type[Command[Any]]) -> tuple[bytes, bytes, list[Any], list[Any]]:
    """A command and a success response for a registry entry, and their parameter values."""
    lay = cls.layout()
    handles = [0x80000001 + i for i in range(len(lay.handles))]
    values = [sample(p.codec) for p in lay.params if p.codec]
    params = b"".join(p.codec.put(v) for p, v in zip(lay.params, values, strict=True) if p.codec)
    auths = [AuthCommand(TPM_RH.RS_PW, b"", 0x01, b"") for h in lay.handles if h.auth]
    command = build_command(int(cls.CC), handles, auths, params)
    rlay = cls.RESPONSE.layout()
    rvalues = [sample(p.codec) for p in rlay.params if p.codec]
    rparams = b"".join(p.codec.put(v) for p, v in zip(rlay.params, rvalues, strict=True)
                       if p.codec)
    response = build_response(0, [0x80000010 + i for i in range(len(rlay.handles))], rparams,
                              [AuthResponse(b"", 0x01, b"") for _ in auths])
    return command, response, values, rvalues


def _name(cls: type[Command[Any]]) -> str:
    return enum_name(TPM_CC, cls.CC)


@pytest.mark.parametrize("cls", [REGISTRY[cc] for cc in sorted(REGISTRY)], ids=_name)
def test_every_registry_entry_decodes(cls: type[Command[Any]]) -> None:
    command, response, values, rvalues = frames_for(cls)
    dec = decode_command(command)
    assert dec.error is None and dec.name == enum_name(TPM_CC, cls.CC)
    lay = cls.layout()
    assert [n for n, _ in dec.handles] == [h.name for h in lay.handles]
    assert [p.name for p in dec.params] == [p.name for p in lay.params]
    assert [p.value for p in dec.params] == values
    assert not any(p.encrypted for p in dec.params)
    rdec = decode_response(response, dec)
    assert rdec.error is None and rdec.rc == 0
    assert [p.value for p in rdec.params] == rvalues
    assert len(rdec.handles) == len(cls.RESPONSE.layout().handles)

    ex = Exchange.passive(3, 1, command, response, 1.5e9, 1.5e9 + 0.001, 0.0005)
    text = render_exchange(ex)
    name = enum_name(TPM_CC, cls.CC)
    assert f">>> Command: {name} (tag=0x{dec.tag:04x} size={len(command)})" in text
    assert f"<<< Response to {name}: rc=0x00000000 TPM_RC_SUCCESS" in text
    for p in dec.params + rdec.params:
        assert f"{p.name} ({p.tpm_type})" in text
    line = json.dumps(exchange_json(ex))
    obj = json.loads(line)
    assert obj["command_name"] == enum_name(TPM_CC, cls.CC) and obj["rc_name"] == "TPM_RC_SUCCESS"
    assert [p["name"] for p in obj["command"]["params"]] == [p.name for p in dec.params]
    [back] = read_jsonl(line)
    assert back == ex


def test_signed_policy_commands_are_decoded() -> None:
    """The commands of signed and combined policies (issue 13) come from the registry."""
    names = {enum_name(TPM_CC, REGISTRY[cc].CC) for cc in REGISTRY}
    assert {"LoadExternal", "VerifySignature", "PolicyAuthorize", "PolicyOR", "PolicyNV",
            "NV_Increment"} <= names
    command, _, _, _ = frames_for(REGISTRY[0x16A])  # TPM_CC_PolicyAuthorize
    dec = decode_command(command)
    assert [p.name for p in dec.params] == ["approved_policy", "policy_ref", "key_sign",
                                            "check_ticket"]


def test_encrypted_first_parameters_are_marked() -> None:
    hmac = AuthCommand(0x02000000, b"\x01" * 32, 0x61, b"\x02" * 32)  # continue|decrypt|encrypt
    params = b"\x00\x10" + b"\xee" * 16 + SAMPLES[Public].sized() + b"\x00\x00" + bytes(4)
    command = build_command(0x153, [0x81000002], [hmac], params)
    dec = decode_command(command)
    assert dec.error is None
    assert [(p.name, p.encrypted) for p in dec.params][:2] == [("in_sensitive", True),
                                                               ("in_public", False)]
    assert dec.params[0].value == b"\xee" * 16
    unseal = build_command(0x15E, [0x80000001], [hmac], b"")
    resp = build_response(0, [], b"\x00\x04" + b"\xcc" * 4,
                          [AuthResponse(b"\x03" * 32, 0x61, b"\x04" * 32)])
    ex = Exchange.passive(0, 1, unseal, resp, 0.0, 0.0)
    text = render_exchange(ex)
    assert "out_data (TPM2B_SENSITIVE_DATA) [encrypted]: 4 bytes: cccccccc" in text
    assert "[0] handle=0x02000000 (HMAC session) attributes=continueSession|decrypt|encrypt " \
           "(0x61)" in text
    obj = exchange_json(ex)
    assert obj["response"]["params"][0]["encrypted"] is True
    assert obj["session_attributes"] == ["continueSession|decrypt|encrypt"]
    assert obj["command"]["sessions"][0]["nonce"] == "01" * 32


def test_error_responses_are_spelled_out() -> None:
    command = build_command(0x15E, [0x80000001], [AuthCommand(0x03000000, b"", 0x01, b"")], b"")
    lines = response_lines(build_response(0x99D, [], b"", []), decode_command(command))
    assert lines[0] == "<<< Response to Unseal: rc=0x99d TPM_RC_POLICY_FAIL (session 1) " \
                       "(tag=0x8001 size=10)"
    assert lines[-1].strip().startswith("meaning: the policy check failed")


@pytest.mark.parametrize(("handle", "text"), [
    (0x40000009, "0x40000009 (TPM_RS_PW)"),
    (0x40000001, "0x40000001 (OWNER)"),
    (0x4000000B, "0x4000000b (ENDORSEMENT)"),
    (0x40000007, "0x40000007 (NULL)"),
    (0x81000001, "0x81000001 (persistent)"),
    (0x81010001, "0x81010001 (persistent, TCG RSA EK)"),
    (0x80000002, "0x80000002 (transient)"),
    (0x02000000, "0x02000000 (HMAC session)"),
    (0x03000001, "0x03000001 (policy session)"),
    (0x01C00002, "0x01c00002 (NV index, RSA-2048 EK certificate)"),
    (0x00000007, "0x00000007 (PCR 7)"),
])
def test_handle_names(handle: int, text: str) -> None:
    assert handle_text(handle) == text


def test_hexdump_matches_the_seed_layout() -> None:
    # the first rows of the legacy Create in the seed's sniffer output
    data = bytes.fromhex("80020000005d00000153810000020000" "0009400000090000010000000a000000"
                         "06736563726574002e0008000b000000")
    assert hexdump(data) == [
        "00000000  80 02 00 00 00 5d 00 00  01 53 81 00 00 02 00 00   |.....]...S......|",
        "00000010  00 09 40 00 00 09 00 00  01 00 00 00 0a 00 00 00   |..@.............|",
        "00000020  06 73 65 63 72 65 74 00  2e 00 08 00 0b 00 00 00   |.secret.........|",
    ]
    lines = hexdump(data, secret_spans(data, [b"secret"]))
    assert lines[3:] == [" " * 13 + "^" * 17 + " " * 33 + "^" * 6,
                         " " * 10 + "secret visible in plaintext at offset 0x21"]
    colored = hexdump(data, [Span(0x21, 0x27, "x")], color=True)
    assert len(colored) == 3 and "\x1b[1;97;41m73\x1b[0m" in colored[2]
    assert "\x1b" not in "".join(colored[:2])
    assert hexdump(data[:3]) == ["00000000  80 02 00" + " " * 43 + "|...|"]


def test_to_json_is_json_safe() -> None:
    value = Public(TPM_ALG.ECC, TPM_ALG.SHA256, 0x30072, b"\x01",
                   EccParms(AES_128_CFB, Scheme(), TPM_ECC.NIST_P256), EccPoint(b"\x02", b"\x03"))
    obj = to_json({"p": value, "t": (1, b"\xff"), "r": RsaParms(SymDef())})
    assert json.loads(json.dumps(obj)) == obj
    assert obj["p"]["unique"] == {"_struct": "EccPoint", "x": "02", "y": "03"}
    assert obj["t"] == [1, "ff"]


def test_interposed_exchanges_show_both_sides() -> None:
    cmd = bytes.fromhex("80010000000c0000017b0008")
    real = bytes.fromhex("800100000014000000000008") + b"\xab" * 8
    text = render_exchange(Exchange(1, 2, cmd, real[:12], 1.0, 1.5, 0.001, cmd[:-1] + b"\x10",
                                    real, "connection closed by hook"))
    lines = [x for x in text.splitlines() if x[:3] in (">>>", "<<<", "!!!")]
    assert lines == [
        ">>> Command: GetRandom (tag=0x8001 size=12)",
        ">>> Command as the interposer rewrote it (what the TPM got): GetRandom "
        "(tag=0x8001 size=12)",
        "<<< TPM's own response (the interposer replaced it) to GetRandom: "
        "rc=0x00000000 TPM_RC_SUCCESS (tag=0x8001 size=20)",
        "<<< Response to GetRandom: ? (12 bytes: header says 20 bytes, frame has 12)",
        "!!! connection closed by hook",
    ]
    hung = render_exchange(Exchange(2, 2, cmd, None, 1.0, 1.0, None, None, None, "hung"))
    assert "!!! interposer: the command was not forwarded to the TPM" in hung
    assert "<<< No response to GetRandom" in hung
