"""Response code decoding (TPM 2.0 Part 2 §6.6) and :class:`TpmResponseError`.

A response code is either format-zero (bit 7 clear: a plain error or warning,
optionally vendor-defined, TPM 1.2 style when bit 8 is also clear) or format-one
(bit 7 set: an error number in bits 0-5 plus the handle, parameter or session it
concerns in bits 8-11, with bit 6 choosing "parameter"). Codes above 0xFFFF carry
a TSS layer in bits 16-23 (resource manager, TCTI...).
"""

from __future__ import annotations

from tpmseal.errors import ExitCode, TpmsealError
from tpmseal.records import record

RC_VER1 = 0x100
RC_FMT1 = 0x080
RC_WARN = 0x900

#: Format-one error numbers (value = RC_FMT1 + E), Part 2 §6.6.3.
FMT1: dict[int, str] = {
    0x081: "ASYMMETRIC", 0x082: "ATTRIBUTES", 0x083: "HASH", 0x084: "VALUE",
    0x085: "HIERARCHY", 0x087: "KEY_SIZE", 0x088: "MGF", 0x089: "MODE", 0x08A: "TYPE",
    0x08B: "HANDLE", 0x08C: "KDF", 0x08D: "RANGE", 0x08E: "AUTH_FAIL", 0x08F: "NONCE",
    0x090: "PP", 0x092: "SCHEME", 0x095: "SIZE", 0x096: "SYMMETRIC", 0x097: "TAG",
    0x098: "SELECTOR", 0x09A: "INSUFFICIENT", 0x09B: "SIGNATURE", 0x09C: "KEY",
    0x09D: "POLICY_FAIL", 0x09F: "INTEGRITY", 0x0A0: "TICKET", 0x0A1: "RESERVED_BITS",
    0x0A2: "BAD_AUTH", 0x0A3: "EXPIRED", 0x0A4: "POLICY_CC", 0x0A5: "BINDING",
    0x0A6: "CURVE", 0x0A7: "ECC_POINT",
}

#: Format-zero errors (RC_VER1 + n) and warnings (RC_WARN + n), Part 2 §6.6.3.
FMT0: dict[int, str] = {
    0x000: "SUCCESS", 0x01E: "BAD_TAG",
    0x100: "INITIALIZE", 0x101: "FAILURE", 0x103: "SEQUENCE", 0x10B: "PRIVATE",
    0x119: "HMAC", 0x120: "DISABLED", 0x121: "EXCLUSIVE", 0x124: "AUTH_TYPE",
    0x125: "AUTH_MISSING", 0x126: "POLICY", 0x127: "PCR", 0x128: "PCR_CHANGED",
    0x12D: "UPGRADE", 0x12E: "TOO_MANY_CONTEXTS", 0x12F: "AUTH_UNAVAILABLE",
    0x130: "REBOOT", 0x131: "UNBALANCED", 0x142: "COMMAND_SIZE", 0x143: "COMMAND_CODE",
    0x144: "AUTHSIZE", 0x145: "AUTH_CONTEXT", 0x146: "NV_RANGE", 0x147: "NV_SIZE",
    0x148: "NV_LOCKED", 0x149: "NV_AUTHORIZATION", 0x14A: "NV_UNINITIALIZED",
    0x14B: "NV_SPACE", 0x14C: "NV_DEFINED", 0x150: "BAD_CONTEXT", 0x151: "CPHASH",
    0x152: "PARENT", 0x153: "NEEDS_TEST", 0x154: "NO_RESULT", 0x155: "SENSITIVE",
    0x901: "CONTEXT_GAP", 0x902: "OBJECT_MEMORY", 0x903: "SESSION_MEMORY", 0x904: "MEMORY",
    0x905: "SESSION_HANDLES", 0x906: "OBJECT_HANDLES", 0x907: "LOCALITY", 0x908: "YIELDED",
    0x909: "CANCELED", 0x90A: "TESTING", 0x920: "NV_RATE", 0x921: "LOCKOUT", 0x922: "RETRY",
    0x923: "NV_UNAVAILABLE",
    **{0x910 + i: f"REFERENCE_H{i}" for i in range(7)},
    **{0x918 + i: f"REFERENCE_S{i}" for i in range(7)},
}

#: What each common condition means for a user, and what to do about it.
SENTENCES: dict[str, str] = {
    "POLICY_FAIL": "the policy check failed: the PCR values (or another policy input) "
                   "differ from those the object was sealed to",
    "PCR_CHANGED": "a PCR changed while the policy session was being built; retry",
    "AUTH_FAIL": "the authorization value (password/PIN) is wrong; repeated failures "
                 "lead to dictionary-attack lockout",
    "BAD_AUTH": "the authorization value (password/PIN) is wrong",
    "INTEGRITY": "the TPM rejected the data's integrity check: the blob belongs to another "
                 "TPM or parent key, or was corrupted",
    "HANDLE": "the handle does not refer to a loaded or persistent object",
    "VALUE": "a value is out of range for this command",
    "SIZE": "a structure or buffer has the wrong size",
    "LOCKOUT": "the TPM is in dictionary-attack lockout; wait for the lockout to expire or "
               "reset it with the lockout authorization",
    "RETRY": "the TPM asked to retry the command",
    "YIELDED": "the TPM yielded; the command should be retried",
    "TESTING": "the TPM is running its self-test; retry shortly",
    "NV_LOCKED": "the NV index is locked for this operation",
    "NV_DEFINED": "the NV index is already defined",
    "NV_SPACE": "the TPM has no NV space left",
    "NV_UNINITIALIZED": "the NV index has never been written",
    "NV_AUTHORIZATION": "the NV index cannot be accessed with this authorization",
    "NV_RANGE": "the NV read or write is outside the index's size",
    "INITIALIZE": "the TPM has not been started (TPM2_Startup missing)",
    "FAILURE": "the TPM is in failure mode",
    "ATTRIBUTES": "inconsistent attributes (of the object, or of a session for this command)",
    "SCHEME": "unsupported or inconsistent scheme",
    "SYMMETRIC": "unsupported symmetric algorithm or mode",
    "KEY_SIZE": "unsupported key size",
    "CURVE": "unsupported ECC curve",
    "HASH": "unsupported or wrong hash algorithm",
    "TYPE": "wrong object type for this command",
    "AUTH_MISSING": "the command needs an authorization session that was not supplied",
    "POLICY_CC": "the policy session is not valid for this command code",
    "OBJECT_MEMORY": "the TPM is out of object slots; flush unused transient objects",
    "SESSION_MEMORY": "the TPM is out of session slots; flush unused sessions",
    "SESSION_HANDLES": "too many loaded sessions; flush unused sessions",
    "OBJECT_HANDLES": "too many loaded objects; flush unused transient objects",
    "COMMAND_CODE": "the TPM does not implement this command",
    "NV_RATE": "the TPM is rate-limiting NV writes; retry later",
    "DISABLED": "the hierarchy is disabled",
    "EXPIRED": "the policy session has expired",
    "KEY": "the key is not valid for this operation",
    "BINDING": "the public and private parts of the object do not belong together",
}

#: Software layers that set bits 16-23 of a response code (TSS 2.0 TCTI/RC
#: conventions; the Linux kernel's /dev/tpmrm0 resource manager uses 11 for the
#: TPM-format codes it makes up itself, e.g. 0x000b0143).
LAYERS: dict[int, str] = {
    6: "TSS feature API", 7: "TSS ESAPI", 8: "TSS SAPI", 9: "TSS marshaling",
    10: "TSS TCTI", 11: "resource manager", 12: "resource manager (TPM code)",
    13: "TSS driver",
}

#: Warnings that mean "send the same command again" (Part 2 §6.6.3).
RETRYABLE = frozenset({"RETRY", "YIELDED", "TESTING"})


@record
class DecodedRC:
    """A response code taken apart per Part 2 §6.6."""

    value: int
    name: str
    format_one: bool
    warning: bool
    vendor: bool
    layer: int
    handle: int | None = None
    parameter: int | None = None
    session: int | None = None

    @property
    def base(self) -> int:
        """The canonical code with layer and handle/parameter/session bits removed."""
        v = self.value & 0xFFFF
        return RC_FMT1 + (v & 0x3F) if self.format_one else v & 0xFFF

    def where(self) -> str:
        if self.handle is not None:
            return f"handle {self.handle}"
        if self.parameter is not None:
            return f"parameter {self.parameter}"
        if self.session is not None:
            return f"session {self.session}"
        return ""

    def describe(self) -> str:
        """E.g. ``0x99d TPM_RC_POLICY_FAIL (session 1)``; names a non-TPM layer."""
        where = self.where()
        text = f"{self.value:#x} TPM_RC_{self.name}"
        if where:
            text += f" ({where})"
        if self.layer:
            text += f" from the {LAYERS.get(self.layer, f'software layer {self.layer}')}"
        return text


def decode_rc(rc: int) -> DecodedRC:
    """Take a response code apart (Part 2 §6.6, Figures 26 and 27)."""
    layer = (rc >> 16) & 0xFF
    v = rc & 0xFFFF
    if v & 0x80:  # format one
        base = RC_FMT1 + (v & 0x3F)
        n = (v >> 8) & 0xF
        name = FMT1.get(base, f"FMT1_{v & 0x3F:#x}")
        h = p = s = None
        if v & 0x40:
            p = n
        elif n & 0x8:
            s = n & 0x7
        elif n:
            h = n
        return DecodedRC(rc, name, True, False, False, layer, h, p, s)
    vendor = bool(v & 0x400)
    warning = bool(v & 0x800) and bool(v & 0x100)
    if not v & 0x100 and v:  # TPM 1.2 style code
        return DecodedRC(rc, FMT0.get(v, f"TPM12_{v:#x}"), False, False, vendor, layer)
    name = f"VENDOR_{v:#x}" if vendor else FMT0.get(v & 0xFFF, f"{v:#x}")
    return DecodedRC(rc, name, False, warning, vendor, layer)


def rc_name(rc: int) -> str:
    """``TPM_RC_<NAME>`` for a response code."""
    return f"TPM_RC_{decode_rc(rc).name}"


class TpmResponseError(TpmsealError):
    """The TPM answered a command with a non-zero response code."""

    exit_code = ExitCode.TPM_ERROR
    default_hint = "see the response code in TPM 2.0 Part 2 §6.6; rerun with --debug for details"

    def __init__(self, rc: int, command: str, hint: str | None = None):
        self.rc = decode_rc(rc)
        self.command = command
        sentence = SENTENCES.get(self.rc.name)
        msg = f"TPM2_{command} failed: {self.rc.describe()}"
        if sentence:
            msg += f": {sentence}"
        super().__init__(msg, hint)

    @property
    def name(self) -> str:
        return self.rc.name
