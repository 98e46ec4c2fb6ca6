"""The shape of every TPM 2.0 command: its handles, authorizations and encryptable parameters.

The command registry (:mod:`tpmseal.wire.commands`) declares in full the
commands tpmseal sends. A bus observer sees every other command too, and the
framing of any of them can be split without knowing its parameters (Part 1
§18.7-18.10): a command's handle area holds a fixed number of handles, of which
the first few need an authorization session (marked ``@`` in the command's
table in Part 3, "Commands"), and a response carries a handle area only for
the commands that create a handle. Parameter encryption applies to a first
parameter that is a TPM2B (Part 1 §21.1) — whether a command's first command
parameter and first response parameter are sized buffers is a fact of its
Part 3 table too.

:data:`SHAPES` holds those facts for every command code of Part 3 (TPM 2.0
Library, revision 1.83, codes 0x11F-0x19F, Part 2 §6.5.2). The registry is the
single source for what it declares; a test checks that the two agree.
"""

from __future__ import annotations

from tpmseal.records import record


@record
class CommandShape:
    """What framing needs to know of a command (Part 3, each command's tables)."""

    code: int
    name: str
    #: handles in the command's handle area
    handles: int
    #: how many of them, counted from the first, need an authorization session
    auth_handles: int
    #: handles in the response's handle area (0 or 1)
    response_handles: int = 0
    #: the first command parameter is a TPM2B, so a ``decrypt`` session may encrypt it
    decrypt: bool = False
    #: the first response parameter is a TPM2B, so an ``encrypt`` session may encrypt it
    encrypt: bool = False


_D, _E, _DE = "d", "e", "de"

#: (code, name, handles, authorized handles, response handles, encryptable: d(ecrypt)/e(ncrypt))
_TABLE: tuple[tuple[int, str, int, int, int, str], ...] = (
    (0x11F, "NV_UndefineSpaceSpecial", 2, 2, 0, ""),
    (0x120, "EvictControl", 2, 1, 0, ""),
    (0x121, "HierarchyControl", 1, 1, 0, ""),
    (0x122, "NV_UndefineSpace", 2, 1, 0, ""),
    (0x124, "ChangeEPS", 1, 1, 0, ""),
    (0x125, "ChangePPS", 1, 1, 0, ""),
    (0x126, "Clear", 1, 1, 0, ""),
    (0x127, "ClearControl", 1, 1, 0, ""),
    (0x128, "ClockSet", 1, 1, 0, ""),
    (0x129, "HierarchyChangeAuth", 1, 1, 0, _D),
    (0x12A, "NV_DefineSpace", 1, 1, 0, _D),
    (0x12B, "PCR_Allocate", 1, 1, 0, ""),
    (0x12C, "PCR_SetAuthPolicy", 1, 1, 0, _D),
    (0x12D, "PP_Commands", 1, 1, 0, ""),
    (0x12E, "SetPrimaryPolicy", 1, 1, 0, _D),
    (0x12F, "FieldUpgradeStart", 2, 1, 0, _D),
    (0x130, "ClockRateAdjust", 1, 1, 0, ""),
    (0x131, "CreatePrimary", 1, 1, 1, _DE),
    (0x132, "NV_GlobalWriteLock", 1, 1, 0, ""),
    (0x133, "GetCommandAuditDigest", 2, 2, 0, _DE),
    (0x134, "NV_Increment", 2, 1, 0, ""),
    (0x135, "NV_SetBits", 2, 1, 0, ""),
    (0x136, "NV_Extend", 2, 1, 0, _D),
    (0x137, "NV_Write", 2, 1, 0, _D),
    (0x138, "NV_WriteLock", 2, 1, 0, ""),
    (0x139, "DictionaryAttackLockReset", 1, 1, 0, ""),
    (0x13A, "DictionaryAttackParameters", 1, 1, 0, ""),
    (0x13B, "NV_ChangeAuth", 1, 1, 0, _D),
    (0x13C, "PCR_Event", 1, 1, 0, _D),
    (0x13D, "PCR_Reset", 1, 1, 0, ""),
    (0x13E, "SequenceComplete", 1, 1, 0, _DE),
    (0x13F, "SetAlgorithmSet", 1, 1, 0, ""),
    (0x140, "SetCommandCodeAuditStatus", 1, 1, 0, ""),
    (0x141, "FieldUpgradeData", 0, 0, 0, _D),
    (0x142, "IncrementalSelfTest", 0, 0, 0, ""),
    (0x143, "SelfTest", 0, 0, 0, ""),
    (0x144, "Startup", 0, 0, 0, ""),
    (0x145, "Shutdown", 0, 0, 0, ""),
    (0x146, "StirRandom", 0, 0, 0, _D),
    (0x147, "ActivateCredential", 2, 2, 0, _DE),
    (0x148, "Certify", 2, 2, 0, _DE),
    (0x149, "PolicyNV", 3, 1, 0, _D),
    (0x14A, "CertifyCreation", 2, 1, 0, _DE),
    (0x14B, "Duplicate", 2, 1, 0, _DE),
    (0x14C, "GetTime", 2, 2, 0, _DE),
    (0x14D, "GetSessionAuditDigest", 3, 2, 0, _DE),
    (0x14E, "NV_Read", 2, 1, 0, _E),
    (0x14F, "NV_ReadLock", 2, 1, 0, ""),
    (0x150, "ObjectChangeAuth", 2, 1, 0, _DE),
    (0x151, "PolicySecret", 2, 1, 0, _DE),
    (0x152, "Rewrap", 2, 1, 0, _DE),
    (0x153, "Create", 1, 1, 0, _DE),
    (0x154, "ECDH_ZGen", 1, 1, 0, _DE),
    (0x155, "HMAC", 1, 1, 0, _DE),
    (0x156, "Import", 1, 1, 0, _DE),
    (0x157, "Load", 1, 1, 1, _DE),
    (0x158, "Quote", 1, 1, 0, _DE),
    (0x159, "RSA_Decrypt", 1, 1, 0, _DE),
    (0x15B, "HMAC_Start", 1, 1, 1, _D),
    (0x15C, "SequenceUpdate", 1, 1, 0, _D),
    (0x15D, "Sign", 1, 1, 0, _D),
    (0x15E, "Unseal", 1, 1, 0, _E),
    (0x160, "PolicySigned", 2, 0, 0, _DE),
    (0x161, "ContextLoad", 0, 0, 1, ""),
    (0x162, "ContextSave", 1, 0, 0, ""),
    (0x163, "ECDH_KeyGen", 1, 0, 0, _E),
    (0x164, "EncryptDecrypt", 1, 1, 0, _E),
    (0x165, "FlushContext", 0, 0, 0, ""),
    (0x167, "LoadExternal", 0, 0, 1, _DE),
    (0x168, "MakeCredential", 1, 0, 0, _DE),
    (0x169, "NV_ReadPublic", 1, 0, 0, _E),
    (0x16A, "PolicyAuthorize", 1, 0, 0, _D),
    (0x16B, "PolicyAuthValue", 1, 0, 0, ""),
    (0x16C, "PolicyCommandCode", 1, 0, 0, ""),
    (0x16D, "PolicyCounterTimer", 1, 0, 0, _D),
    (0x16E, "PolicyCpHash", 1, 0, 0, _D),
    (0x16F, "PolicyLocality", 1, 0, 0, ""),
    (0x170, "PolicyNameHash", 1, 0, 0, _D),
    (0x171, "PolicyOR", 1, 0, 0, ""),
    (0x172, "PolicyTicket", 1, 0, 0, _D),
    (0x173, "ReadPublic", 1, 0, 0, _E),
    (0x174, "RSA_Encrypt", 1, 0, 0, _DE),
    (0x176, "StartAuthSession", 2, 0, 1, _DE),
    (0x177, "VerifySignature", 1, 0, 0, _D),
    (0x178, "ECC_Parameters", 0, 0, 0, ""),
    (0x179, "FirmwareRead", 0, 0, 0, _E),
    (0x17A, "GetCapability", 0, 0, 0, ""),
    (0x17B, "GetRandom", 0, 0, 0, _E),
    (0x17C, "GetTestResult", 0, 0, 0, _E),
    (0x17D, "Hash", 0, 0, 0, _DE),
    (0x17E, "PCR_Read", 0, 0, 0, ""),
    (0x17F, "PolicyPCR", 1, 0, 0, _D),
    (0x180, "PolicyRestart", 1, 0, 0, ""),
    (0x181, "ReadClock", 0, 0, 0, ""),
    (0x182, "PCR_Extend", 1, 1, 0, ""),
    (0x183, "PCR_SetAuthValue", 1, 1, 0, _D),
    (0x184, "NV_Certify", 3, 2, 0, _DE),
    (0x185, "EventSequenceComplete", 2, 2, 0, _D),
    (0x186, "HashSequenceStart", 0, 0, 1, _D),
    (0x187, "PolicyPhysicalPresence", 1, 0, 0, ""),
    (0x188, "PolicyDuplicationSelect", 1, 0, 0, _D),
    (0x189, "PolicyGetDigest", 1, 0, 0, _E),
    (0x18A, "TestParms", 0, 0, 0, ""),
    (0x18B, "Commit", 1, 1, 0, _DE),
    (0x18C, "PolicyPassword", 1, 0, 0, ""),
    (0x18D, "ZGen_2Phase", 1, 1, 0, _DE),
    (0x18E, "EC_Ephemeral", 0, 0, 0, _E),
    (0x18F, "PolicyNvWritten", 1, 0, 0, ""),
    (0x190, "PolicyTemplate", 1, 0, 0, _D),
    (0x191, "CreateLoaded", 1, 1, 1, _DE),
    (0x192, "PolicyAuthorizeNV", 3, 1, 0, ""),
    (0x193, "EncryptDecrypt2", 1, 1, 0, _DE),
    (0x194, "AC_GetCapability", 1, 0, 0, ""),
    (0x195, "AC_Send", 3, 2, 0, _D),
    (0x196, "Policy_AC_SendSelect", 1, 0, 0, _D),
    (0x197, "CertifyX509", 2, 2, 0, _DE),
    (0x198, "ACT_SetTimeout", 1, 1, 0, ""),
    (0x199, "ECC_Encrypt", 1, 0, 0, _DE),
    (0x19A, "ECC_Decrypt", 1, 1, 0, _DE),
    (0x19B, "PolicyCapability", 1, 0, 0, _D),
    (0x19C, "PolicyParameters", 1, 0, 0, _D),
    (0x19D, "NV_DefineSpace2", 1, 1, 0, _D),
    (0x19E, "NV_ReadPublic2", 1, 0, 0, _E),
    (0x19F, "SetCapability", 1, 1, 0, _D),
)

#: Every command of Part 3, by command code.
SHAPES: dict[int, CommandShape] = {
    code: CommandShape(code, name, n, auth, rn, "d" in enc, "e" in enc)
    for code, name, n, auth, rn, enc in _TABLE
}


def shape(code: int) -> CommandShape | None:
    """The shape of command code *code*, or ``None`` if Part 3 defines no such command."""
    return SHAPES.get(code)
