"""Provisioning: create what is missing (EK, SRK), persist it, pin it.

Idempotent: keys already at the profile's handles are kept when they can do
their job; a key that cannot is an error rather than something to overwrite.
A new EK is the TCG EK template (L-1/L-2) under the profile's EK hierarchy
(endorsement; owner for EVE, exactly as EVE's tpmmgr creates it, so that
EVE re-creating its keys later yields the same keys), a new SRK follows the
TCG Provisioning Guidance §7.5.1. An existing salt key only has to be a
restricted decryption key the TPM generated and cannot export (fixedTPM,
fixedParent, sensitiveDataOrigin; RSA or ECC), as EVE's CI layout has
(userWithAuth, no adminWithPolicy); an existing SRK also needs userWithAuth
(Create under it is authorized by its empty authValue). RSA key generation
takes seconds on real chips, which is why this happens once here and never on
the seal/unseal path.

The *salt key* (the key sessions are salted with) is the profile's EK, except
with ``--ek-ca`` on a profile whose EK is not in the endorsement hierarchy
(EVE): no EK certificate covers EVE's owner-hierarchy key, so the certified EK
at the TCG handle (persistent, or re-created from its template under the
endorsement hierarchy and persisted) salts instead, checked against its NV
certificate; the sealed objects stay under the profile's SRK.

Finally the salt key's public area and the SRK's Name are pinned in the trust
file (:mod:`tpmseal.recipes.trust`).

EK type ``auto`` (``DEFAULT_EK_TYPE``, the CLI's and the API's default; this
module's :func:`provision` keeps ``rsa`` as its own) salts sessions with the ECC
EK (TCG EK template L-2, NIST P-256) when the TPM has that curve: every seal and unseal
starts one salted session, and the TPM's side of an ECDH salt (Part 1 §19.6.13)
costs less than an RSA-2048 OAEP decryption on an SLB9672 or NPCT75x by
wolfTPM's published figures, and on an SLB9670 by its one-multiplication ECDSA
figure though not by its ECDHE upper bound (bench/chip_model.py).
A pinned EK, or one already persisted, keeps its type (see :func:`choose_ek_type`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, IntegrityError, TpmsealError, UsageError
from tpmseal.log import get_logger
from tpmseal.recipes import trust
from tpmseal.recipes.hierarchy import HIERARCHY_NAMES, primary_hierarchy
from tpmseal.recipes.profiles import EK_TYPES, TCG, Profile
from tpmseal.recipes.stores import nv_public
from tpmseal.recipes.templates import EK_ECC_TEMPLATE, EK_RSA_TEMPLATE, SRK_RSA_TEMPLATE
from tpmseal.records import record, replace
from tpmseal.session.auth import Session
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import (
    TPM_ALG,
    TPM_CAP,
    TPM_ECC,
    TPM_RH,
    TPM_SE,
    TPMA_OBJECT,
)
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
    #: the key sessions are salted with (``ek`` unless a certified EK salts instead)
    salt: KeyState | None = None
    #: the TPM address the record was pinned at (recipes/trust.py, address)
    address: str = ""


#: what every salt key and SRK needs: a restricted decryption key generated in the TPM
#: that cannot leave it (Part 1 §27.2: fixedTPM, fixedParent, sensitiveDataOrigin)
KEY_ATTRS = (TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin
             | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt)


def _shape(p: Public) -> Public:
    """The template-defining part of a public area (unique zeroed)."""
    return replace(p, unique=EccPoint(b"", b"") if isinstance(p.unique, EccPoint) else b"")


def usable_salt_key(p: Public) -> bool:
    """Whether *p* can salt sessions and be trusted to keep the salt: an RSA or ECC
    restricted decryption key with fixedTPM|fixedParent|sensitiveDataOrigin."""
    return p.type in (TPM_ALG.RSA, TPM_ALG.ECC) and p.object_attributes & KEY_ATTRS == KEY_ATTRS


def usable_parent(p: Public) -> bool:
    """Whether *p* can be the SRK: a usable salt key whose empty authValue authorizes use."""
    return usable_salt_key(p) and bool(p.object_attributes & TPMA_OBJECT.userWithAuth)


def read_optional(tpm: Tpm, handle: int, *sessions: Session) -> Public | None:
    """ReadPublic, or None when nothing is persisted at *handle*."""
    found = _read_key(tpm, handle, *sessions)
    return found[0] if found else None


def _read_key(tpm: Tpm, handle: int, *sessions: Session) -> tuple[Public, int | None] | None:
    """(public area, hierarchy if primary) of the key at *handle*; None if there is none."""
    try:
        r = tpm.run(cmds.ReadPublic(handle), *sessions)
    except TpmResponseError as e:
        if e.name == "HANDLE":
            return None
        raise
    if r.out_public.name() != r.name:
        raise IntegrityError(f"TPM returned a Name for {handle:#x} that does not match its "
                             "public area: possible bus tampering",
                             "retry; if it persists, suspect an interposer on the TPM bus")
    tpm.names[handle] = r.name
    return r.out_public, primary_hierarchy(r.name, r.qualified_name)


def existing_key(tpm: Tpm, handle: int, hierarchy: int, template: Public, what: str,
                 usable: Callable[[Public], bool] | None = None) -> KeyState | None:
    """The key at *handle* if it fits *template* (or is *usable*); None if there is none.
    A key that can do neither is a :class:`UsageError` (nothing is overwritten)."""
    found = _read_key(tpm, handle)
    if found is None:
        return None
    existing, in_hierarchy = found
    if _shape(existing) != _shape(template):
        if usable is None or not usable(existing):
            raise UsageError(
                f"handle {handle:#x} holds a key that cannot serve as the {what}, so nothing "
                "was created",
                f"evict it (tpm2_evictcontrol -C o -c {handle:#x}) or use another "
                "--profile")
        log.info("keeping the key at %#x as the %s (not the standard template, but a "
                 "restricted decryption key the TPM generated)", handle, what)
    elif in_hierarchy not in (None, hierarchy):
        log.warning("the key at %#x is the %s template under the %s hierarchy, not under "
                    "the %s one where this profile's owner (re-)creates it: re-creating it "
                    "there replaces it, and sessions salted to it then fail until "
                    "`tpmseal provision --repin`", handle, what,
                    HIERARCHY_NAMES[in_hierarchy],
                    HIERARCHY_NAMES.get(hierarchy))
    return KeyState(handle, existing.name(), existing, False)


@record
class Planned:
    """A key to be persisted at ``state.handle``, loaded now at ``loaded`` (transient when
    created here, else the persistent handle itself)."""

    state: KeyState
    loaded: int


def load_key(tpm: Tpm, handle: int, hierarchy: int, template: Public, what: str,
             usable: Callable[[Public], bool] | None = None) -> Planned:
    """The key at *handle* (:func:`existing_key`), else one created from *template* under
    *hierarchy* as a transient object: nothing is persisted until :func:`persist`."""
    kept = existing_key(tpm, handle, hierarchy, template, what, usable)
    if kept is not None:
        return Planned(kept, handle)
    log.info("creating the %s (this takes seconds on a hardware TPM)", what)
    r = tpm.run(cmds.CreatePrimary(hierarchy, SensitiveCreate(), template))
    return Planned(KeyState(handle, r.name, r.out_public, True), r.object_handle)


def persist(tpm: Tpm, key: Planned) -> KeyState:
    """EvictControl a key :func:`load_key` created (and flush its transient copy)."""
    if key.loaded != key.state.handle:
        with tpm.scoped(key.loaded):
            tpm.run(cmds.EvictControl(TPM_RH.OWNER, key.loaded, key.state.handle))
        tpm.names[key.state.handle] = key.state.name
    return key.state


def _aes_refused(tpm: Tpm, ek: Planned) -> bool:
    """Confirm a TestParms "unsupported" answer in a way an interposer cannot forge.

    Error responses carry no HMAC, so a forged TestParms failure would pin the
    TPM as legacy-only forever. If an EK-salted AES-128-CFB session decrypts a
    parameter (Tpm.confirm's StirRandom) and its response HMAC verifies, the TPM
    does support it and the TestParms answer was forged.
    """
    try:
        s = tpm.start_session(TPM_SE.HMAC, salt_key=ek.state.public, salt_handle=ek.loaded)
        with tpm.scoped(s.handle):
            tpm.confirm(s)
    except TpmResponseError:
        return True
    raise IntegrityError("TPM2_TestParms said AES-128-CFB is unsupported, yet the TPM just "
                         "performed it in an authenticated session: forged response, possible "
                         "interposer",
                         hint=("check the TPM bus; do not pin this TPM until the answers are "
                              "consistent"))


def _records(path: str | os.PathLike[str], repin: bool) -> list[trust.TrustRecord]:
    """The trust file's records, read before anything is created: an unreadable file is
    refused now (with *repin*, it is replaced: the way out of a corrupted one)."""
    try:
        return trust.load_all(path)
    except BadInputError:
        if repin:
            return []
        raise


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
              trust_file: str | os.PathLike[str] | None = None, ek_ca: str | None = None,
              repin: bool = False, allow_legacy: bool = False) -> ProvisionResult:
    """Create the profile's EK and SRK if missing, and pin them in the trust file.

    A TPM that reports no AES-128-CFB is pinned only with *allow_legacy*: every
    later seal on it would put the secret on the bus in plaintext, and a "not
    supported" answer is an error response, which an interposer can forge
    (errors carry no HMAC). The TCG PC Client TPM profile requires AES-128 in
    CFB mode, so on a PC-class TPM this answer is suspect in itself.

    Nothing is persisted when provisioning refuses: every check that can refuse
    (EK type and pinned handle, keys at the handles that cannot serve, AES
    support, the trust file's record for this TPM's address, the EK certificate)
    runs before the first EvictControl. A missing salt key is created as a
    transient object first (its public area is what is checked) and flushed on a
    refusal; a missing SRK or profile EK that salts nothing is created only then.
    """
    if ek_type not in EK_TYPES:
        raise UsageError(f"unknown EK type {ek_type!r}",
                         "use --ek-type auto, --ek-type rsa or --ek-type ecc")
    path = trust.trust_path(str(trust_file) if trust_file else None)
    where = trust.address_of(tpm)
    records = _records(path, repin)
    pinned = None if repin else trust.pinned_at(records, profile.name, where)
    ek_type = choose_ek_type(tpm, profile, pinned, ek_type, ek_ca)
    template = EK_RSA_TEMPLATE if ek_type == "rsa" else EK_ECC_TEMPLATE
    # EVE: no certificate covers its owner-hierarchy EK, so a certified EK salts apart
    certified_apart = ek_ca is not None and profile.ek_hierarchy != TPM_RH.ENDORSEMENT
    if ek_type not in profile.ek_types and not certified_apart:
        raise UsageError(
            f"profile {profile.name} keeps an {'/'.join(profile.ek_types).upper()} key at "
            f"{profile.ek_handle(ek_type):#x} (its tpmmgr re-creates it), not an "
            f"{ek_type.upper()} one",
            f"drop --ek-type, or pass --ek-ca to salt with the certified {ek_type.upper()} EK")
    salt_handle = TCG.ek_handle(ek_type) if certified_apart else profile.ek_handle(ek_type)
    if pinned is not None and pinned.ek_handle != salt_handle:
        # a changed salt key is a choice, not an attack
        raise UsageError(
            f"profile {profile.name} is pinned to the EK at {pinned.ek_handle:#x} (the "
            f"salt key) in trust file {path}, not the {ek_type.upper()} EK at "
            f"{salt_handle:#x}; nothing was changed",
            "pass the same --ek-type/--ek-ca as before, or --repin to switch (blobs "
            "sealed with the old salt key still unseal with it)")
    profile_type = profile.ek_types[0] if ek_type not in profile.ek_types else ek_type
    profile_template = EK_RSA_TEMPLATE if profile_type == "rsa" else EK_ECC_TEMPLATE
    ek_what = f"{profile_type.upper()} endorsement key"
    # every key already there must be able to serve before anything is created
    ek = existing_key(tpm, profile.ek_handle(profile_type), profile.ek_hierarchy,
                      profile_template, ek_what, usable_salt_key)
    srk = existing_key(tpm, profile.srk, TPM_RH.OWNER, SRK_RSA_TEMPLATE, "storage root key",
                       usable_parent)
    if certified_apart:
        log.info("the %s key at %#x is the EK template under the %s hierarchy (as EVE "
                 "creates it), which no EK certificate covers: salting with the certified "
                 "EK at %#x", profile.name, profile.ek_handle(profile_type),
                 HIERARCHY_NAMES[profile.ek_hierarchy], salt_handle)
        salt = load_key(tpm, salt_handle, TPM_RH.ENDORSEMENT, template,
                        f"certified {ek_type.upper()} endorsement key")
    elif ek is not None:
        salt = Planned(ek, ek.handle)
    else:
        salt = load_key(tpm, profile.ek_handle(profile_type), profile.ek_hierarchy,
                        profile_template, ek_what)
    try:
        if not repin:
            trust.refuse_new_ek(pinned, salt.state.name, path, where)
        aes = tpm.test_parms() or not _aes_refused(tpm, salt)
        if not aes and not allow_legacy:
            raise UsageError(
                "the TPM reports no AES-128-CFB support, so secrets sealed on it would cross "
                "the bus in plaintext (or an interposer forged that answer); nothing was "
                "created or pinned",
                "provision on a trusted bus; if this TPM really lacks AES-128-CFB, pass "
                "--allow-legacy")
        cert_state = "not checked"
        if ek_ca is not None:
            from tpmseal.recipes import ekcert  # X.509 costs start-up time: only when asked

            index = ekcert.verify_ek(tpm, salt.state.public, ek_ca, salt.loaded)
            cert_state = f"verified (NV {index:#x})"
    except BaseException:
        if salt.loaded != salt.state.handle:  # refused: the transient copy goes
            with contextlib.suppress(TpmsealError):
                tpm.flush(salt.loaded)
        raise
    # every check passed: persist what is missing
    salt_state = persist(tpm, salt)
    if ek is None:
        ek = salt_state if not certified_apart else persist(tpm, load_key(
            tpm, profile.ek_handle(profile_type), profile.ek_hierarchy, profile_template,
            ek_what))
    if srk is None:
        srk = persist(tpm, load_key(tpm, profile.srk, TPM_RH.OWNER, SRK_RSA_TEMPLATE,
                                    "storage root key"))
    trust.save(path, trust.TrustRecord(profile.name, salt_state.handle, salt_state.public,
                                       srk.handle, srk.name, aes, cert_state,
                                       addresses=(where,)), replace=repin)
    return ProvisionResult(profile.name, ek, srk, aes, cert_state, str(path), salt_state,
                           where)
