"""The command registry's second half: the commands ``tpmseal unseal`` does not send.

Declared exactly as in :mod:`tpmseal.wire.commands` (one frozen record per
command and response, Part 3 sections cited), which re-exports every name here
and defines this module the first time one of them, or its ``REGISTRY``, is
asked for: provisioning and reading public areas, context management, random
and capability, the signed and combined policies, NV definition and writes,
hierarchies. Import the names from :mod:`tpmseal.wire.commands`.
"""

from __future__ import annotations

from tpmseal.records import record
from tpmseal.wire import codecs as c
from tpmseal.wire.commands import Command, Empty, Response, handle, param
from tpmseal.wire.constants import TPM_CC
from tpmseal.wire.structures import (
    CapabilityData,
    Context,
    CreationData,
    DigestList,
    DigestValues,
    NvPublic,
    PcrSelectionList,
    Public,
    PublicParms,
    SensitiveCreate,
    Signature,
    Ticket,
)

# ----------------------------------------------------------------------- startup and testing


@record
class Startup(Command[Empty]):
    """TPM2_Startup (Part 3 §9.3)."""

    CC = TPM_CC.Startup
    SECTION = "Part 3 §9.3"
    RESPONSE = Empty
    startup_type: int = param(c.UInt(2, "TPM_SU"))


@record
class Shutdown(Command[Empty]):
    """TPM2_Shutdown (Part 3 §9.4)."""

    CC = TPM_CC.Shutdown
    SECTION = "Part 3 §9.4"
    RESPONSE = Empty
    shutdown_type: int = param(c.UInt(2, "TPM_SU"))


@record
class SelfTest(Command[Empty]):
    """TPM2_SelfTest (Part 3 §10.2)."""

    CC = TPM_CC.SelfTest
    SECTION = "Part 3 §10.2"
    RESPONSE = Empty
    full_test: int = param(c.YES_NO, 1)


# ------------------------------------------------------------------------------ objects


@record
class CreatePrimaryResponse(Response):
    object_handle: int = handle()
    out_public: Public = param(c.Sized(Public, "TPM2B_PUBLIC"))
    creation_data: CreationData = param(c.Sized(CreationData, "TPM2B_CREATION_DATA"))
    creation_hash: bytes = param(c.DIGEST)
    creation_ticket: Ticket = param(c.Struct(Ticket, "TPMT_TK_CREATION"))
    name: bytes = param(c.NAME)


@record
class CreatePrimary(Command[CreatePrimaryResponse]):
    """TPM2_CreatePrimary (Part 3 §24.1): a primary object in a hierarchy."""

    CC = TPM_CC.CreatePrimary
    SECTION = "Part 3 §24.1"
    RESPONSE = CreatePrimaryResponse
    primary_handle: int = handle(auth=True)
    in_sensitive: SensitiveCreate = param(c.Sized(SensitiveCreate, "TPM2B_SENSITIVE_CREATE"))
    in_public: Public = param(c.Sized(Public, "TPM2B_PUBLIC"))
    outside_info: bytes = param(c.DATA, b"")
    creation_pcr: PcrSelectionList = param(
        c.Struct(PcrSelectionList, "TPML_PCR_SELECTION"), PcrSelectionList())


@record
class ReadPublicResponse(Response):
    out_public: Public = param(c.Sized(Public, "TPM2B_PUBLIC"))
    name: bytes = param(c.NAME)
    qualified_name: bytes = param(c.NAME)


@record
class ReadPublic(Command[ReadPublicResponse]):
    """TPM2_ReadPublic (Part 3 §12.4)."""

    CC = TPM_CC.ReadPublic
    SECTION = "Part 3 §12.4"
    RESPONSE = ReadPublicResponse
    object_handle: int = handle()


# --------------------------------------------------------------------- context management


@record
class EvictControl(Command[Empty]):
    """TPM2_EvictControl (Part 3 §28.5): make an object persistent, or evict it."""

    CC = TPM_CC.EvictControl
    SECTION = "Part 3 §28.5"
    RESPONSE = Empty
    auth: int = handle(auth=True)
    object_handle: int = handle()
    persistent_handle: int = param(c.UInt(4, "TPMI_DH_PERSISTENT"))


@record
class ContextSaveResponse(Response):
    context: Context = param(c.Struct(Context, "TPMS_CONTEXT"))


@record
class ContextSave(Command[ContextSaveResponse]):
    """TPM2_ContextSave (Part 3 §28.2)."""

    CC = TPM_CC.ContextSave
    SECTION = "Part 3 §28.2"
    RESPONSE = ContextSaveResponse
    save_handle: int = handle()


@record
class ContextLoadResponse(Response):
    loaded_handle: int = handle()


@record
class ContextLoad(Command[ContextLoadResponse]):
    """TPM2_ContextLoad (Part 3 §28.3)."""

    CC = TPM_CC.ContextLoad
    SECTION = "Part 3 §28.3"
    RESPONSE = ContextLoadResponse
    context: Context = param(c.Struct(Context, "TPMS_CONTEXT"))


# ------------------------------------------------------------------------------- random


@record
class GetRandomResponse(Response):
    random_bytes: bytes = param(c.DIGEST)

    def __repr__(self) -> str:  # may become key material
        return f"GetRandomResponse(random_bytes=<{len(self.random_bytes)} bytes>)"


@record
class GetRandom(Command[GetRandomResponse]):
    """TPM2_GetRandom (Part 3 §16.1)."""

    CC = TPM_CC.GetRandom
    SECTION = "Part 3 §16.1"
    RESPONSE = GetRandomResponse
    bytes_requested: int = param(c.U16)


@record
class StirRandom(Command[Empty]):
    """TPM2_StirRandom (Part 3 §16.2): add entropy to the TPM's RNG state."""

    CC = TPM_CC.StirRandom
    SECTION = "Part 3 §16.2"
    RESPONSE = Empty
    in_data: bytes = param(c.SENSITIVE_DATA)


# --------------------------------------------------------------------------- capability


@record
class GetCapabilityResponse(Response):
    more_data: int = param(c.YES_NO)
    capability_data: CapabilityData = param(c.Struct(CapabilityData, "TPMS_CAPABILITY_DATA"))


@record
class GetCapability(Command[GetCapabilityResponse]):
    """TPM2_GetCapability (Part 3 §30.2)."""

    CC = TPM_CC.GetCapability
    SECTION = "Part 3 §30.2"
    RESPONSE = GetCapabilityResponse
    capability: int = param(c.UInt(4, "TPM_CAP"))
    property: int = param(c.U32)
    property_count: int = param(c.U32)


@record
class TestParms(Command[Empty]):
    """TPM2_TestParms (Part 3 §30.3): does the TPM support these parameters?"""

    __test__ = False  # not a pytest class
    CC = TPM_CC.TestParms
    SECTION = "Part 3 §30.3"
    RESPONSE = Empty
    parameters: PublicParms = param(c.Struct(PublicParms, "TPMT_PUBLIC_PARMS"))


# ------------------------------------------------------------------------------- policy


@record
class PolicyGetDigestResponse(Response):
    policy_digest: bytes = param(c.DIGEST)


@record
class PolicyGetDigest(Command[PolicyGetDigestResponse]):
    """TPM2_PolicyGetDigest (Part 3 §23.19)."""

    CC = TPM_CC.PolicyGetDigest
    SECTION = "Part 3 §23.19"
    RESPONSE = PolicyGetDigestResponse
    policy_session: int = handle()


@record
class PolicyPassword(Command[Empty]):
    """TPM2_PolicyPassword (Part 3 §23.18): require the authValue as a plain password."""

    CC = TPM_CC.PolicyPassword
    SECTION = "Part 3 §23.18"
    RESPONSE = Empty
    policy_session: int = handle()


@record
class PolicyRestart(Command[Empty]):
    """TPM2_PolicyRestart (Part 3 §23.24): reset a policy session's digest."""

    CC = TPM_CC.PolicyRestart
    SECTION = "Part 3 §23.24"
    RESPONSE = Empty
    session_handle: int = handle()


# ------------------------------------------------- signed and combined policies (issue 13)


@record
class LoadExternalResponse(Response):
    object_handle: int = handle()
    name: bytes = param(c.NAME)


@record
class LoadExternal(Command[LoadExternalResponse]):
    """TPM2_LoadExternal (Part 3 §12.3): load a public key; *in_private* stays empty."""

    CC = TPM_CC.LoadExternal
    SECTION = "Part 3 §12.3"
    RESPONSE = LoadExternalResponse
    in_private: bytes = param(c.Buffer("TPM2B_SENSITIVE"))
    in_public: Public = param(c.Sized(Public, "TPM2B_PUBLIC"))
    hierarchy: int = param(c.UInt(4, "TPMI_RH_HIERARCHY"))


@record
class VerifySignatureResponse(Response):
    validation: Ticket = param(c.Struct(Ticket, "TPMT_TK_VERIFIED"))


@record
class VerifySignature(Command[VerifySignatureResponse]):
    """TPM2_VerifySignature (Part 3 §20.1): check *signature* over *digest*, get a ticket."""

    CC = TPM_CC.VerifySignature
    SECTION = "Part 3 §20.1"
    RESPONSE = VerifySignatureResponse
    key_handle: int = handle()
    digest: bytes = param(c.DIGEST)
    signature: Signature = param(c.Struct(Signature, "TPMT_SIGNATURE"))


@record
class PolicyAuthorize(Command[Empty]):
    """TPM2_PolicyAuthorize (Part 3 §23.16): replace an approved digest by the signer's."""

    CC = TPM_CC.PolicyAuthorize
    SECTION = "Part 3 §23.16"
    RESPONSE = Empty
    policy_session: int = handle()
    approved_policy: bytes = param(c.DIGEST)
    policy_ref: bytes = param(c.NONCE)
    key_sign: bytes = param(c.NAME)
    check_ticket: Ticket = param(c.Struct(Ticket, "TPMT_TK_VERIFIED"))


@record
class PolicyOR(Command[Empty]):
    """TPM2_PolicyOR (Part 3 §23.6): the digest is one of up to 8 branches."""

    CC = TPM_CC.PolicyOR
    SECTION = "Part 3 §23.6"
    RESPONSE = Empty
    policy_session: int = handle()
    p_hash_list: DigestList = param(c.Struct(DigestList, "TPML_DIGEST"))


@record
class PolicyNV(Command[Empty]):
    """TPM2_PolicyNV (Part 3 §23.9): gate on NV contents compared with *operand_b*."""

    CC = TPM_CC.PolicyNV
    SECTION = "Part 3 §23.9"
    RESPONSE = Empty
    auth_handle: int = handle(auth=True)
    nv_index: int = handle()
    policy_session: int = handle()
    operand_b: bytes = param(c.Buffer("TPM2B_OPERAND"))
    offset: int = param(c.U16)
    operation: int = param(c.UInt(2, "TPM_EO"))


@record
class PolicyAuthorizeNV(Command[Empty]):
    """TPM2_PolicyAuthorizeNV (Part 3 §23.22): the session's digest equals the policy
    stored in *nv_index* (a TPMT_HA); it then becomes H(0 ‖ CC ‖ the index's Name)."""

    CC = TPM_CC.PolicyAuthorizeNV
    SECTION = "Part 3 §23.22"
    RESPONSE = Empty
    auth_handle: int = handle(auth=True)
    nv_index: int = handle()
    policy_session: int = handle()



@record
class NV_Increment(Command[Empty]):
    """TPM2_NV_Increment (Part 3 §31.10): add one to an NV counter."""

    CC = TPM_CC.NV_Increment
    SECTION = "Part 3 §31.10"
    RESPONSE = Empty
    auth_handle: int = handle(auth=True)
    nv_index: int = handle()


# --------------------------------------------------------------------------------- PCRs


@record
class PCR_Extend(Command[Empty]):
    """TPM2_PCR_Extend (Part 3 §22.2)."""

    CC = TPM_CC.PCR_Extend
    SECTION = "Part 3 §22.2"
    RESPONSE = Empty
    pcr_handle: int = handle(auth=True)
    digests: DigestValues = param(c.Struct(DigestValues, "TPML_DIGEST_VALUES"))


# ----------------------------------------------------------------------------------- NV


@record
class NV_DefineSpace(Command[Empty]):
    """TPM2_NV_DefineSpace (Part 3 §31.3)."""

    CC = TPM_CC.NV_DefineSpace
    SECTION = "Part 3 §31.3"
    RESPONSE = Empty
    auth_handle: int = handle(auth=True)
    auth: bytes = param(c.AUTH)
    public_info: NvPublic = param(c.Sized(NvPublic, "TPM2B_NV_PUBLIC"))


@record
class NV_UndefineSpace(Command[Empty]):
    """TPM2_NV_UndefineSpace (Part 3 §31.4)."""

    CC = TPM_CC.NV_UndefineSpace
    SECTION = "Part 3 §31.4"
    RESPONSE = Empty
    auth_handle: int = handle(auth=True)
    nv_index: int = handle()


@record
class NV_ReadPublicResponse(Response):
    nv_public: NvPublic = param(c.Sized(NvPublic, "TPM2B_NV_PUBLIC"))
    nv_name: bytes = param(c.NAME)


@record
class NV_ReadPublic(Command[NV_ReadPublicResponse]):
    """TPM2_NV_ReadPublic (Part 3 §31.6)."""

    CC = TPM_CC.NV_ReadPublic
    SECTION = "Part 3 §31.6"
    RESPONSE = NV_ReadPublicResponse
    nv_index: int = handle()


@record
class NV_Write(Command[Empty]):
    """TPM2_NV_Write (Part 3 §31.7)."""

    CC = TPM_CC.NV_Write
    SECTION = "Part 3 §31.7"
    RESPONSE = Empty
    auth_handle: int = handle(auth=True)
    nv_index: int = handle()
    data: bytes = param(c.MAX_NV_BUFFER)
    offset: int = param(c.U16, 0)

    def __repr__(self) -> str:
        return f"NV_Write(index={self.nv_index:#x}, data=<{len(self.data)} bytes>)"


# -------------------------------------------------------------------------- hierarchies


@record
class Clear(Command[Empty]):
    """TPM2_Clear (Part 3 §24.6): reset the owner hierarchy (lockout or platform auth)."""

    CC = TPM_CC.Clear
    SECTION = "Part 3 §24.6"
    RESPONSE = Empty
    auth_handle: int = handle(auth=True)
