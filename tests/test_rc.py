"""Response-code decoding (TPM 2.0 Part 2 §6.6, Figures 26/27, Table 16).

Format one (bit 7 set): error number in bits 0-5 (value RC_FMT1 + E), bit 6 P
(parameter), bits 8-11 N: parameter number when P is set, else session number
1-7 when bit 11 is set, else handle number 1-7. Format zero: bit 8 V (TPM 2.0
code; clear means a TPM 1.2 style code), bit 10 T (vendor), bit 11 S (warning).
Bits 16-23 name a software layer.
"""

from __future__ import annotations

import pytest

from tpmseal.errors import ExitCode
from tpmseal.wire.rc import RETRYABLE, SENTENCES, TpmResponseError, decode_rc, rc_name

# value, name, format_one, warning, vendor, layer, handle, parameter, session, base
TABLE: list[tuple[int, str, bool, bool, bool, int, int | None, int | None, int | None, int]] = [
    # format one, with handle / parameter / session numbers
    (0x9A2, "BAD_AUTH", True, False, False, 0, None, None, 1, 0x0A2),
    (0x98E, "AUTH_FAIL", True, False, False, 0, None, None, 1, 0x08E),
    (0x99D, "POLICY_FAIL", True, False, False, 0, None, None, 1, 0x09D),
    (0xA9D, "POLICY_FAIL", True, False, False, 0, None, None, 2, 0x09D),
    (0xF8E, "AUTH_FAIL", True, False, False, 0, None, None, 7, 0x08E),
    (0x1C4, "VALUE", True, False, False, 0, None, 1, None, 0x084),
    (0x2C4, "VALUE", True, False, False, 0, None, 2, None, 0x084),
    (0xFD5, "SIZE", True, False, False, 0, None, 15, None, 0x095),
    (0x18B, "HANDLE", True, False, False, 0, 1, None, None, 0x08B),
    (0x28B, "HANDLE", True, False, False, 0, 2, None, None, 0x08B),
    (0x7A2, "BAD_AUTH", True, False, False, 0, 7, None, None, 0x0A2),
    (0x084, "VALUE", True, False, False, 0, None, None, None, 0x084),
    (0x09F, "INTEGRITY", True, False, False, 0, None, None, None, 0x09F),
    (0x1DF, "INTEGRITY", True, False, False, 0, None, 1, None, 0x09F),
    (0x0BF, "FMT1_0x3f", True, False, False, 0, None, None, None, 0x0BF),
    # format zero errors
    (0x128, "PCR_CHANGED", False, False, False, 0, None, None, None, 0x128),
    (0x14C, "NV_DEFINED", False, False, False, 0, None, None, None, 0x14C),
    (0x148, "NV_LOCKED", False, False, False, 0, None, None, None, 0x148),
    (0x101, "FAILURE", False, False, False, 0, None, None, None, 0x101),
    (0x100, "INITIALIZE", False, False, False, 0, None, None, None, 0x100),
    (0x143, "COMMAND_CODE", False, False, False, 0, None, None, None, 0x143),
    # warnings (S and V set)
    (0x922, "RETRY", False, True, False, 0, None, None, None, 0x922),
    (0x908, "YIELDED", False, True, False, 0, None, None, None, 0x908),
    (0x90A, "TESTING", False, True, False, 0, None, None, None, 0x90A),
    (0x921, "LOCKOUT", False, True, False, 0, None, None, None, 0x921),
    (0x902, "OBJECT_MEMORY", False, True, False, 0, None, None, None, 0x902),
    (0x910, "REFERENCE_H0", False, True, False, 0, None, None, None, 0x910),
    (0x91E, "REFERENCE_S6", False, True, False, 0, None, None, None, 0x91E),
    # TPM 1.2 style (V clear)
    (0x01E, "BAD_TAG", False, False, False, 0, None, None, None, 0x01E),
    (0x003, "TPM12_0x3", False, False, False, 0, None, None, None, 0x003),
    # vendor (T set): error and flagged warning
    (0x500, "VENDOR_0x500", False, False, True, 0, None, None, None, 0x500),
    (0xD01, "VENDOR_0xd01", False, True, True, 0, None, None, None, 0xD01),
    # software layers in bits 16-23 (kernel resource manager uses 11)
    (0x000B0143, "COMMAND_CODE", False, False, False, 11, None, None, None, 0x143),
    (0x000B0910, "REFERENCE_H0", False, True, False, 11, None, None, None, 0x910),
    (0x000B0008, "TPM12_0x8", False, False, False, 11, None, None, None, 0x008),
    (0x000C09A2, "BAD_AUTH", True, False, False, 12, None, None, 1, 0x0A2),
    (0x000A000A, "TPM12_0xa", False, False, False, 10, None, None, None, 0x00A),
]


@pytest.mark.parametrize(
    ("value", "name", "fmt1", "warning", "vendor", "layer", "handle", "parameter", "session",
     "base"), TABLE, ids=[f"{row[0]:#x}" for row in TABLE])
def test_decode_rc_table(value: int, name: str, fmt1: bool, warning: bool, vendor: bool,
                         layer: int, handle: int | None, parameter: int | None,
                         session: int | None, base: int) -> None:
    d = decode_rc(value)
    assert (d.name, d.format_one, d.warning, d.vendor, d.layer) == (
        name, fmt1, warning, vendor, layer)
    assert (d.handle, d.parameter, d.session) == (handle, parameter, session)
    assert d.base == base
    assert rc_name(value) == f"TPM_RC_{name}"
    text = d.describe()
    assert text.startswith(f"{value:#x} TPM_RC_{name}")
    for label, n in (("handle", handle), ("parameter", parameter), ("session", session)):
        assert (f"({label} {n})" in text) == (n is not None)
    assert ("from the" in text) == bool(layer)


def test_layer_names() -> None:
    assert decode_rc(0x000B0143).describe().endswith("from the resource manager")
    assert decode_rc(0x000A000A).describe().endswith("from the TSS TCTI")
    assert decode_rc(0x003A0001).describe().endswith("from the software layer 58")


def test_retryable_set() -> None:
    assert frozenset({"RETRY", "YIELDED", "TESTING"}) == RETRYABLE
    assert all(decode_rc(v).name in RETRYABLE for v in (0x922, 0x908, 0x90A))
    assert decode_rc(0x921).name not in RETRYABLE  # LOCKOUT is not worth retrying now


@pytest.mark.parametrize(("value", "words"), [
    (0x99D, "policy check failed"),
    (0x128, "PCR changed"),
    (0x98E, "authorization value"),
    (0x9A2, "authorization value"),
    (0x09F, "integrity check"),
    (0x18B, "handle does not refer"),
    (0x1C4, "out of range"),
    (0x1D5, "wrong size"),
    (0x921, "lockout"),
    (0x922, "retry"),
    (0x908, "yielded"),
    (0x90A, "self-test"),
    (0x148, "locked"),
    (0x14C, "already defined"),
    (0x902, "object slots"),
])
def test_tpm_response_error_has_a_sentence(value: int, words: str) -> None:
    e = TpmResponseError(value, "Unseal")
    assert e.message.startswith("TPM2_Unseal failed: ")
    assert decode_rc(value).describe() in e.message
    sentence = e.message.split(": ", 2)[2]
    assert words.lower() in sentence.lower()
    assert sentence[0].islower() and len(sentence.split()) >= 4  # a sentence, not a code
    assert e.exit_code == ExitCode.TPM_ERROR
    assert e.name == decode_rc(value).name and e.command == "Unseal"
    assert "\n" not in e.one_line()


def test_every_common_code_has_a_sentence() -> None:
    common = {"POLICY_FAIL", "PCR_CHANGED", "AUTH_FAIL", "BAD_AUTH", "INTEGRITY", "HANDLE",
              "VALUE", "SIZE", "LOCKOUT", "RETRY", "YIELDED", "TESTING", "NV_LOCKED",
              "NV_DEFINED"}
    assert common <= set(SENTENCES)


def test_unknown_code_still_reads() -> None:
    e = TpmResponseError(0x0BF, "GetRandom", hint="see the TPM vendor's documentation")
    assert e.message == "TPM2_GetRandom failed: 0xbf TPM_RC_FMT1_0x3f"
    assert e.one_line().endswith("; see the TPM vendor's documentation")
