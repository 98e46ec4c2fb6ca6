"""The one table of TPM 2.0 constants tpmseal uses.

Every value comes from TPM 2.0 Library Specification Part 2 ("Structures"),
revision 1.59; the section is given on each class. Nothing else in the package
spells a command code, algorithm identifier, handle or attribute bit as a bare
number.

Each table is a plain class of ``int`` attributes, not an ``IntEnum``: defining
the ~330 members of these enums was the largest single cost of the modules every
``tpmseal unseal`` imports. :func:`enum_name` and :func:`members` give the names
back (the sniffer, error messages), from a reverse table built on first use.
"""

from __future__ import annotations


class TPM_CC:
    """Command codes (Part 2 §6.5.2)."""

    NV_UndefineSpaceSpecial = 0x11F
    EvictControl = 0x120
    HierarchyControl = 0x121
    NV_UndefineSpace = 0x122
    ChangeEPS = 0x124
    ChangePPS = 0x125
    Clear = 0x126
    ClearControl = 0x127
    ClockSet = 0x128
    HierarchyChangeAuth = 0x129
    NV_DefineSpace = 0x12A
    PCR_Allocate = 0x12B
    PCR_SetAuthPolicy = 0x12C
    PP_Commands = 0x12D
    SetPrimaryPolicy = 0x12E
    FieldUpgradeStart = 0x12F
    ClockRateAdjust = 0x130
    CreatePrimary = 0x131
    NV_GlobalWriteLock = 0x132
    GetCommandAuditDigest = 0x133
    NV_Increment = 0x134
    NV_SetBits = 0x135
    NV_Extend = 0x136
    NV_Write = 0x137
    NV_WriteLock = 0x138
    DictionaryAttackLockReset = 0x139
    DictionaryAttackParameters = 0x13A
    NV_ChangeAuth = 0x13B
    PCR_Event = 0x13C
    PCR_Reset = 0x13D
    SequenceComplete = 0x13E
    SetAlgorithmSet = 0x13F
    SetCommandCodeAuditStatus = 0x140
    FieldUpgradeData = 0x141
    IncrementalSelfTest = 0x142
    SelfTest = 0x143
    Startup = 0x144
    Shutdown = 0x145
    StirRandom = 0x146
    ActivateCredential = 0x147
    Certify = 0x148
    PolicyNV = 0x149
    CertifyCreation = 0x14A
    Duplicate = 0x14B
    GetTime = 0x14C
    GetSessionAuditDigest = 0x14D
    NV_Read = 0x14E
    NV_ReadLock = 0x14F
    ObjectChangeAuth = 0x150
    PolicySecret = 0x151
    Rewrap = 0x152
    Create = 0x153
    ECDH_ZGen = 0x154
    HMAC = 0x155
    Import = 0x156
    Load = 0x157
    Quote = 0x158
    RSA_Decrypt = 0x159
    HMAC_Start = 0x15B
    SequenceUpdate = 0x15C
    Sign = 0x15D
    Unseal = 0x15E
    PolicySigned = 0x160
    ContextLoad = 0x161
    ContextSave = 0x162
    ECDH_KeyGen = 0x163
    EncryptDecrypt = 0x164
    FlushContext = 0x165
    LoadExternal = 0x167
    MakeCredential = 0x168
    NV_ReadPublic = 0x169
    PolicyAuthorize = 0x16A
    PolicyAuthValue = 0x16B
    PolicyCommandCode = 0x16C
    PolicyCounterTimer = 0x16D
    PolicyCpHash = 0x16E
    PolicyLocality = 0x16F
    PolicyNameHash = 0x170
    PolicyOR = 0x171
    PolicyTicket = 0x172
    ReadPublic = 0x173
    RSA_Encrypt = 0x174
    StartAuthSession = 0x176
    VerifySignature = 0x177
    ECC_Parameters = 0x178
    FirmwareRead = 0x179
    GetCapability = 0x17A
    GetRandom = 0x17B
    GetTestResult = 0x17C
    Hash = 0x17D
    PCR_Read = 0x17E
    PolicyPCR = 0x17F
    PolicyRestart = 0x180
    ReadClock = 0x181
    PCR_Extend = 0x182
    PCR_SetAuthValue = 0x183
    NV_Certify = 0x184
    EventSequenceComplete = 0x185
    HashSequenceStart = 0x186
    PolicyPhysicalPresence = 0x187
    PolicyDuplicationSelect = 0x188
    PolicyGetDigest = 0x189
    TestParms = 0x18A
    Commit = 0x18B
    PolicyPassword = 0x18C
    ZGen_2Phase = 0x18D
    EC_Ephemeral = 0x18E
    PolicyNvWritten = 0x18F
    PolicyTemplate = 0x190
    CreateLoaded = 0x191
    PolicyAuthorizeNV = 0x192
    EncryptDecrypt2 = 0x193


class TPM_ALG:
    """Algorithm identifiers (Part 2 §6.3)."""

    ERROR = 0x0000
    RSA = 0x0001
    TDES = 0x0003
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    MGF1 = 0x0007
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    SM4 = 0x0013
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CAMELLIA = 0x0026
    SHA3_256 = 0x0027
    SHA3_384 = 0x0028
    SHA3_512 = 0x0029
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


class TPM_ECC:
    """ECC curve identifiers (Part 2 §6.4)."""

    NONE = 0x0000
    NIST_P192 = 0x0001
    NIST_P224 = 0x0002
    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005
    BN_P256 = 0x0010
    BN_P638 = 0x0011
    SM2_P256 = 0x0020


class TPM_ST:
    """Structure tags (Part 2 §6.9)."""

    RSP_COMMAND = 0x00C4
    NULL = 0x8000
    NO_SESSIONS = 0x8001
    SESSIONS = 0x8002
    ATTEST_NV = 0x8014
    ATTEST_COMMAND_AUDIT = 0x8015
    ATTEST_SESSION_AUDIT = 0x8016
    ATTEST_CERTIFY = 0x8017
    ATTEST_QUOTE = 0x8018
    ATTEST_TIME = 0x8019
    ATTEST_CREATION = 0x801A
    CREATION = 0x8021
    VERIFIED = 0x8022
    AUTH_SECRET = 0x8023
    HASHCHECK = 0x8024
    AUTH_SIGNED = 0x8025


class TPM_SU:
    """Startup types (Part 2 §6.10)."""

    CLEAR = 0x0000
    STATE = 0x0001


class TPM_SE:
    """Session types (Part 2 §6.11)."""

    HMAC = 0x00
    POLICY = 0x01
    TRIAL = 0x03


class TPM_CAP:
    """Capability selectors (Part 2 §6.12)."""

    ALGS = 0x00
    HANDLES = 0x01
    COMMANDS = 0x02
    PP_COMMANDS = 0x03
    AUDIT_COMMANDS = 0x04
    PCRS = 0x05
    TPM_PROPERTIES = 0x06
    PCR_PROPERTIES = 0x07
    ECC_CURVES = 0x08
    AUTH_POLICIES = 0x09
    ACT = 0x0A


class TPM_PT:
    """Fixed and variable TPM properties (Part 2 §6.13)."""

    FAMILY_INDICATOR = 0x100
    LEVEL = 0x101
    REVISION = 0x102
    DAY_OF_YEAR = 0x103
    YEAR = 0x104
    MANUFACTURER = 0x105
    VENDOR_STRING_1 = 0x106
    VENDOR_STRING_2 = 0x107
    VENDOR_STRING_3 = 0x108
    VENDOR_STRING_4 = 0x109
    VENDOR_TPM_TYPE = 0x10A
    FIRMWARE_VERSION_1 = 0x10B
    FIRMWARE_VERSION_2 = 0x10C
    INPUT_BUFFER = 0x10D
    HR_TRANSIENT_MIN = 0x10E
    HR_PERSISTENT_MIN = 0x10F
    HR_LOADED_MIN = 0x110
    ACTIVE_SESSIONS_MAX = 0x111
    PCR_COUNT = 0x112
    PCR_SELECT_MIN = 0x113
    CONTEXT_GAP_MAX = 0x114
    NV_COUNTERS_MAX = 0x116
    NV_INDEX_MAX = 0x117
    MEMORY = 0x118
    CLOCK_UPDATE = 0x119
    CONTEXT_HASH = 0x11A
    CONTEXT_SYM = 0x11B
    CONTEXT_SYM_SIZE = 0x11C
    ORDERLY_COUNT = 0x11D
    MAX_COMMAND_SIZE = 0x11E
    MAX_RESPONSE_SIZE = 0x11F
    MAX_DIGEST = 0x120
    MAX_OBJECT_CONTEXT = 0x121
    MAX_SESSION_CONTEXT = 0x122
    NV_BUFFER_MAX = 0x12C
    MODES = 0x12D
    PERMANENT = 0x200
    STARTUP_CLEAR = 0x201
    HR_NV_INDEX = 0x202
    HR_LOADED = 0x203
    HR_LOADED_AVAIL = 0x204
    HR_ACTIVE = 0x205
    HR_ACTIVE_AVAIL = 0x206
    HR_TRANSIENT_AVAIL = 0x207
    HR_PERSISTENT = 0x208
    HR_PERSISTENT_AVAIL = 0x209
    NV_COUNTERS = 0x20A
    NV_COUNTERS_AVAIL = 0x20B
    ALGORITHM_SET = 0x20C
    LOADED_CURVES = 0x20D
    LOCKOUT_COUNTER = 0x20E
    MAX_AUTH_FAIL = 0x20F
    LOCKOUT_INTERVAL = 0x210
    LOCKOUT_RECOVERY = 0x211


class TPM_HT:
    """Handle types: the most significant octet of a handle (Part 2 §7.2)."""

    PCR = 0x00
    NV_INDEX = 0x01
    HMAC_SESSION = 0x02
    POLICY_SESSION = 0x03
    PERMANENT = 0x40
    TRANSIENT = 0x80
    PERSISTENT = 0x81
    AC = 0x90


class TPM_RH:
    """Permanent handles (Part 2 §7.4)."""

    SRK = 0x40000000
    OWNER = 0x40000001
    REVOKE = 0x40000002
    TRANSPORT = 0x40000003
    OPERATOR = 0x40000004
    ADMIN = 0x40000005
    EK = 0x40000006
    NULL = 0x40000007
    UNASSIGNED = 0x40000008
    RS_PW = 0x40000009
    LOCKOUT = 0x4000000A
    ENDORSEMENT = 0x4000000B
    PLATFORM = 0x4000000C
    PLATFORM_NV = 0x4000000D


class TPMA_OBJECT:
    """Object attributes (Part 2 §8.3)."""

    fixedTPM = 1 << 1
    stClear = 1 << 2
    fixedParent = 1 << 4
    sensitiveDataOrigin = 1 << 5
    userWithAuth = 1 << 6
    adminWithPolicy = 1 << 7
    noDA = 1 << 10
    encryptedDuplication = 1 << 11
    restricted = 1 << 16
    decrypt = 1 << 17
    sign = 1 << 18
    x509sign = 1 << 19


class TPMA_SESSION:
    """Session attributes (Part 2 §8.4)."""

    continueSession = 0x01
    auditExclusive = 0x02
    auditReset = 0x04
    decrypt = 0x20
    encrypt = 0x40
    audit = 0x80


class TPMA_NV:
    """NV index attributes (Part 2 §13.4); bits 4..7 hold TPM_NT."""

    PPWRITE = 1 << 0
    OWNERWRITE = 1 << 1
    AUTHWRITE = 1 << 2
    POLICYWRITE = 1 << 3
    POLICY_DELETE = 1 << 10
    WRITELOCKED = 1 << 11
    WRITEALL = 1 << 12
    WRITEDEFINE = 1 << 13
    WRITE_STCLEAR = 1 << 14
    GLOBALLOCK = 1 << 15
    PPREAD = 1 << 16
    OWNERREAD = 1 << 17
    AUTHREAD = 1 << 18
    POLICYREAD = 1 << 19
    NO_DA = 1 << 25
    ORDERLY = 1 << 26
    CLEAR_STCLEAR = 1 << 27
    READLOCKED = 1 << 28
    WRITTEN = 1 << 29
    PLATFORMCREATE = 1 << 30
    READ_STCLEAR = 1 << 31


class TPM_EO:
    """Comparison operators of TPM2_PolicyNV and PolicyCounterTimer (Part 2 §6.8)."""

    EQ = 0x0000
    NEQ = 0x0001
    SIGNED_GT = 0x0002
    UNSIGNED_GT = 0x0003
    SIGNED_LT = 0x0004
    UNSIGNED_LT = 0x0005
    SIGNED_GE = 0x0006
    UNSIGNED_GE = 0x0007
    SIGNED_LE = 0x0008
    UNSIGNED_LE = 0x0009
    BITSET = 0x000A
    BITCLEAR = 0x000B


#: TPM_NT_COUNTER in TPMA_NV bits 4..7 (Part 2 §13.4): an NV counter index.
NT_COUNTER = 0x1 << 4


#: Hash algorithms this package can compute, with their digest sizes (Part 2 §10.1).
HASH_SIZES: dict[int, int] = {
    TPM_ALG.SHA1: 20,
    TPM_ALG.SHA256: 32,
    TPM_ALG.SHA384: 48,
    TPM_ALG.SHA512: 64,
}

#: The hashlib / cryptography names of those algorithms.
HASH_NAMES: dict[int, str] = {
    TPM_ALG.SHA1: "sha1",
    TPM_ALG.SHA256: "sha256",
    TPM_ALG.SHA384: "sha384",
    TPM_ALG.SHA512: "sha512",
}


def handle_type(handle: int) -> int:
    """The handle's type octet (Part 2 §7.2)."""
    return (handle >> 24) & 0xFF


def members(table: type) -> dict[str, int]:
    """The names and values of a table, in declaration order."""
    return {k: v for k, v in vars(table).items() if not k.startswith("_") and type(v) is int}


_NAMES: dict[type, dict[int, str]] = {}


def enum_name(table: type, value: int) -> str:
    """The member name for *value* (the first declared, as with an enum), or its hex
    spelling when the table lacks it."""
    names = _NAMES.get(table)
    if names is None:
        names = {}
        for k, v in members(table).items():
            names.setdefault(v, k)
        _NAMES[table] = names
    return names.get(value) or f"0x{value:x}"
