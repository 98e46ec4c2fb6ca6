"""Provisioning: create what is missing (EK, SRK), persist it, pin it.

Idempotent: keys already at the profile's handles are kept when they have the
template's shape (TCG EK template L-1/L-2, SRK per the TCG Provisioning
Guidance); a different key at such a handle is an error rather than something
to overwrite. RSA key generation takes seconds on real chips, which is why
this happens once here and never on the seal/unseal path.

Finally the EK's public area and the SRK's Name are pinned in the trust file
(:mod:`tpmseal.recipes.trust`), after checking the EK against its certificate
when a CA bundle is given.

EK type ``auto`` (the CLI's default) salts sessions with the ECC EK (TCG EK
template L-2, NIST P-256) when the TPM has that curve: every seal and unseal
starts one salted session, and the TPM's side of an ECDH salt (Part 1 §19.6.13)
costs less than an RSA-2048 OAEP decryption on an SLB9672 or NPCT75x by
wolfTPM's published figures, though not on an SLB9670 (bench/chip_model.py).
A pinned EK, or one already persisted, keeps its type (see :func:`choose_ek_type`).
"""

from __future__ import annotations

from pathlib import Path

from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, IntegrityError, UsageError
from tpmseal.log import get_logger
from tpmseal.recipes import trust
from tpmseal.recipes.profiles import Profile
from tpmseal.recipes.stores import nv_public
from tpmseal.recipes.templates import EK_ECC_TEMPLATE, EK_RSA_TEMPLATE, SRK_RSA_TEMPLATE
from tpmseal.records import record, replace
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_CAP, TPM_ECC, TPM_RH, TPM_SE, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import EccPoint, Public, SensitiveCreate

log = get_logger("tpmseal.provision")


@record
class KeyState:
    handle: int
    name: bytes
    public: Public
    created: bool


@record
class ProvisionResult:
    profile: str
    ek: KeyState
    srk: KeyState
    aes_128_cfb: bool
    ek_certificate: str
    trust_file: str


def _shape(p: Public) -> Public:
    """The template-defining part of a public area (unique zeroed)."""
    return replace(p, unique=EccPoint(b"", b"") if isinstance(p.unique, EccPoint) else b"")


def read_optional(tpm: Tpm, handle: int) -> Public | None:
    """ReadPublic, or None when nothing is persisted at *handle*."""
    try:
        return tpm.read_public(handle)
    except TpmResponseError as e:
        if e.name == "HANDLE":
            return None
        raise


def ensure_key(tpm: Tpm, handle: int, hierarchy: int, template: Public, what: str) -> KeyState:
    """Keep the key at *handle* if it fits *template*; else create and persist one."""
    existing = read_optional(tpm, handle)
    if existing is not None:
        if _shape(existing) != _shape(template):
            raise UsageError(
                f"handle {handle:#x} holds a key that is not a standard {what}",
                f"evict it (tpm2_evictcontrol -C o -c {handle:#x}) or use another --profile")
        return KeyState(handle, existing.name(), existing, False)
    log.info("creating the %s (this takes seconds on a hardware TPM)", what)
    r = tpm.run(cmds.CreatePrimary(hierarchy, SensitiveCreate(), template))
    with tpm.scoped(r.object_handle):
        tpm.run(cmds.EvictControl(TPM_RH.OWNER, r.object_handle, handle))
    tpm.names[handle] = r.name
    return KeyState(handle, r.name, r.out_public, True)


def _aes_refused(tpm: Tpm, ek: KeyState) -> bool:
    """Confirm a TestParms "unsupported" answer in a way an interposer cannot forge.

    Error responses carry no HMAC, so a forged TestParms failure would pin the
    TPM as legacy-only forever. If an EK-salted AES-128-CFB session completes an
    encrypted GetRandom whose response HMAC verifies, the TPM does support it
    and the TestParms answer was forged.
    """
    try:
        s = tpm.start_session(TPM_SE.HMAC, salt_key=ek.public, salt_handle=ek.handle,
                              attributes=TPMA_SESSION.encrypt)
        tpm.get_random(16, s)
    except TpmResponseError:
        return True
    raise IntegrityError("TPM2_TestParms said AES-128-CFB is unsupported, yet the TPM just "
                         "performed it in an authenticated session: forged response, possible "
                         "interposer")


def _pinned(path: Path, profile: str) -> trust.TrustRecord | None:
    try:
        return trust.load_all(path).get(profile)
    except BadInputError:
        return None  # save() reports the unreadable file


EK_TYPES = ("auto", "rsa", "ecc")


def has_p256(tpm: Tpm) -> bool:
    """Whether the TPM lists NIST P-256 among its curves (GetCapability ECC_CURVES).

    The answer is not authenticated; forging it can only make provisioning pick
    the RSA EK (slower, as safe) or fail creating an ECC EK the TPM lacks.
    """
    try:
        curves = tpm.capability(TPM_CAP.ECC_CURVES)
    except TpmResponseError as e:
        if e.rc.warning:
            raise
        return False
    return (int(TPM_ECC.NIST_P256),) in curves


#: NV index of the TCG EK certificate for template L-2 (ECC NIST P-256)
ECC_EK_CERT_INDEX = 0x01C0000A


def choose_ek_type(tpm: Tpm, profile: Profile, pinned: trust.TrustRecord | None,
                   requested: str, ek_ca: str | None = None) -> str:
    """``rsa`` or ``ecc`` for *requested* ``auto`` (else *requested* itself).

    In order: the pinned EK's type; RSA for a profile with one EK handle (EVE's
    code keeps an RSA EK there); the type of an EK already persisted at the
    profile's handles, ECC first (nothing is created needlessly); then, on a TPM
    with neither, ECC if it has P-256 (and, to verify against *ek_ca*, an ECC EK
    certificate in NV), else RSA.
    """
    if requested != "auto":
        return requested
    if pinned is not None:
        return "ecc" if pinned.ek_public.type == TPM_ALG.ECC else "rsa"
    if profile.ek_ecc == profile.ek_rsa:
        return "rsa"
    for kind in ("ecc", "rsa"):
        if read_optional(tpm, profile.ek_handle(kind)) is not None:
            return kind
    if not has_p256(tpm):
        return "rsa"
    if ek_ca is not None and nv_public(tpm, ECC_EK_CERT_INDEX) is None:
        return "rsa"
    return "ecc"


def provision(tpm: Tpm, profile: Profile, *, ek_type: str = "rsa",
              trust_file: Path | None = None, ek_ca: str | None = None,
              repin: bool = False, allow_legacy: bool = False) -> ProvisionResult:
    """Create the profile's EK and SRK if missing, and pin them in the trust file.

    A TPM that reports no AES-128-CFB is pinned only with *allow_legacy*: every
    later seal on it would put the secret on the bus in plaintext, and a "not
    supported" answer is an error response, which an interposer can forge
    (errors carry no HMAC). The TCG PC Client TPM profile requires AES-128 in
    CFB mode, so on a PC-class TPM this answer is suspect in itself.
    """
    if ek_type not in EK_TYPES:
        raise UsageError(f"unknown EK type {ek_type!r}",
                         "use --ek-type auto, --ek-type rsa or --ek-type ecc")
    path = trust.trust_path(str(trust_file) if trust_file else None)
    pinned = None if repin else _pinned(path, profile.name)
    ek_type = choose_ek_type(tpm, profile, pinned, ek_type, ek_ca)
    template = EK_RSA_TEMPLATE if ek_type == "rsa" else EK_ECC_TEMPLATE
    # before creating anything: a changed EK type is a choice, not an attack (pinned is
    # None with repin)
    if pinned is not None and pinned.ek_handle != profile.ek_handle(ek_type):
        raise UsageError(
            f"profile {profile.name} is pinned to the EK at {pinned.ek_handle:#x}, not the "
            f"{ek_type.upper()} EK at {profile.ek_handle(ek_type):#x}; nothing was changed",
            "pass --repin to switch (blobs sealed to the old EK still unseal with it)")
    ek = ensure_key(tpm, profile.ek_handle(ek_type), TPM_RH.ENDORSEMENT, template,
                    f"{ek_type.upper()} endorsement key")
    srk = ensure_key(tpm, profile.srk, TPM_RH.OWNER, SRK_RSA_TEMPLATE, "storage root key")
    aes = tpm.test_parms() or not _aes_refused(tpm, ek)
    if not aes and not allow_legacy:
        raise UsageError(
            "the TPM reports no AES-128-CFB support, so secrets sealed on it would cross the "
            "bus in plaintext (or an interposer forged that answer); nothing was pinned",
            "provision on a trusted bus; if this TPM really lacks AES-128-CFB, pass "
            "--allow-legacy")
    cert_state = "not checked"
    if ek_ca is not None:
        from tpmseal.recipes import ekcert  # X.509 costs start-up time: only when asked

        index = ekcert.verify_ek(tpm, ek.public, ek_ca)
        cert_state = f"verified (NV {index:#x})"
    trust.save(path, trust.TrustRecord(profile.name, ek.handle, ek.public, srk.handle, srk.name,
                                       aes, cert_state), replace=repin)
    return ProvisionResult(profile.name, ek, srk, aes, cert_state, str(path))
