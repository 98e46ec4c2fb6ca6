"""``probe``: what this TPM is and what it holds, as a JSON-ready dictionary.

Reads fixed properties (Part 2 §6.13: TPM_PT_MANUFACTURER, VENDOR_STRING_1-4,
FIRMWARE_VERSION_1/2, REVISION, LEVEL, YEAR...), the allocated PCR banks,
whether TPM2_TestParms accepts AES-128-CFB, the profile's EK/SRK handles with
their Names, and which EK certificate NV indices exist.

Everything is read over the bus, so by default it is what an interposer chose to
show (``"authenticated": false``). With a pinned EK (*trust*) every command runs
with an EK-salted *audit* session (Part 1 §19.6.x, TPMA_SESSION.audit): each
success response carries an HMAC keyed with the salt, so the report is what the
TPM said (``"authenticated": true``), and the keys are compared with the pins. An
absent key or a failed TestParms is an error response, which carries no HMAC
(Part 1 §18.8), so an authenticated report checks each one: a key is absent only
if the audited listing of persistent handles lacks it, and "no AES-128-CFB"
always means an interposer (the TPM accepted the AES-128-CFB audit session, or
its symmetric was rewritten on the way). A forged error is reported as
tampering (exit 6), never as a replaced TPM: the salted session has just proved
that the pinned EK is there.
"""

from __future__ import annotations

from typing import Any

from tpmseal.client.tpm import Tpm
from tpmseal.errors import IntegrityError
from tpmseal.recipes.ekcert import EK_CERT_INDICES
from tpmseal.recipes.pcrspec import bank_name
from tpmseal.recipes.profiles import Profile
from tpmseal.recipes.provision import read_optional
from tpmseal.recipes.trust import TrustRecord, salted_session
from tpmseal.session.auth import Session
from tpmseal.wire.constants import TPM_PT, TPMA_SESSION
from tpmseal.wire.structures import AES_128_CFB, EccParms, RsaParms

#: The first persistent handle (Part 2 §7.5): the audited listing starts there.
PERSISTENT_FIRST = 0x81000000


def _chars(v: int) -> str:
    return v.to_bytes(4, "big").rstrip(b"\0 ").decode("ascii", "replace").strip()


def _key_info(tpm: Tpm, handle: int, *sessions: Session) -> dict[str, Any]:
    pub = read_optional(tpm, handle, *sessions)
    if pub is None:
        return {"handle": f"{handle:#010x}", "present": False}
    kind = "rsa" if isinstance(pub.parameters, RsaParms) else (
        "ecc" if isinstance(pub.parameters, EccParms) else "other")
    return {"handle": f"{handle:#010x}", "present": True, "type": kind,
            "name": pub.name().hex()}


def probe(tpm: Tpm, profile: Profile, trust: TrustRecord | None = None) -> dict[str, Any]:
    """Gather the probe report; authenticated through the pinned EK when *trust* is given."""
    if trust is None:
        return _probe(tpm, profile)
    s = salted_session(tpm, trust, TPMA_SESSION.continueSession | TPMA_SESSION.audit)
    with tpm.scoped(s.handle):
        info = _probe(tpm, profile, s)
        listed = set(tpm.handles(PERSISTENT_FIRST, s))
        for k in info["keys"].values():
            _check_absent(k, listed)
        if not info["aes_128_cfb"]:
            raise _no_aes_is_forged()
        for role, handle, name in (("EK", trust.ek_handle, trust.ek_name),
                                   ("SRK", trust.srk_handle, trust.srk_name)):
            key = next((k for k in info["keys"].values() if k["handle"] == f"{handle:#010x}"),
                       None) or _check_absent(_key_info(tpm, handle, s), listed)
            if key.get("name") != name.hex():
                raise IntegrityError(f"the TPM's {role} at {handle:#010x} is not the one pinned "
                                     f"in {trust.path}: possible interposer or replaced TPM",
                                     "if the TPM was replaced or cleared, re-pin with "
                                     "`tpmseal provision --repin`")
    return info


def _check_absent(key: dict[str, Any], listed: set[int]) -> dict[str, Any]:
    """*key*, unless it was reported absent by an error the audited handle list belies."""
    if not key["present"] and int(key["handle"], 16) in listed:
        raise IntegrityError(f"the TPM answered that no key is at {key['handle']}, but its "
                             "authenticated handle list holds one: a forged error response, "
                             "possible interposer", "check the TPM bus; do not re-pin")
    return key


def _no_aes_is_forged() -> IntegrityError:
    """A TestParms "no AES-128-CFB" under the authenticated probe means an interposer.

    The audit session was started with AES-128-CFB, and a TPM rejects a
    StartAuthSession with a symmetric definition it does not implement (Part 3
    §11.1, TPM_RC_SYMMETRIC/MODE/KEY_SIZE on unmarshalling). So either the error
    was forged, or the symmetric was rewritten on the way (it joins no HMAC, so the
    session still audits): deciphering a parameter could not tell the two apart.
    """
    return IntegrityError("TPM2_TestParms reported no AES-128-CFB, but the TPM accepted the "
                          "AES-128-CFB session this report is read through: a forged error "
                          "response or a session rewritten in transit, possible interposer",
                          "check the TPM bus")


def _probe(tpm: Tpm, profile: Profile, *sessions: Session) -> dict[str, Any]:
    props = tpm.properties(TPM_PT.FAMILY_INDICATOR, 64, *sessions)
    vendor = "".join(_chars(props.get(p, 0)) for p in (
        TPM_PT.VENDOR_STRING_1, TPM_PT.VENDOR_STRING_2, TPM_PT.VENDOR_STRING_3,
        TPM_PT.VENDOR_STRING_4))
    fw1, fw2 = props.get(TPM_PT.FIRMWARE_VERSION_1, 0), props.get(TPM_PT.FIRMWARE_VERSION_2, 0)
    revision = props.get(TPM_PT.REVISION, 0)
    banks = {bank_name(s.hash_alg): sorted(s.pcrs)
             for s in tpm.pcr_banks(*sessions).selections if s.pcrs}
    nv = set(tpm.handles(0x01C00000, *sessions))
    keys = {"ek_rsa": _key_info(tpm, profile.ek_rsa, *sessions),
            "srk": _key_info(tpm, profile.srk, *sessions)}
    if profile.ek_ecc != profile.ek_rsa:
        keys["ek_ecc"] = _key_info(tpm, profile.ek_ecc, *sessions)
    return {
        "manufacturer": _chars(props.get(TPM_PT.MANUFACTURER, 0)),
        "vendor": vendor,
        "firmware_version": f"{fw1 >> 16}.{fw1 & 0xFFFF}.{fw2 >> 16}.{fw2 & 0xFFFF}",
        "spec_family": _chars(props.get(TPM_PT.FAMILY_INDICATOR, 0)),
        "spec_revision": f"{revision // 100}.{revision % 100:02d}",
        "spec_level": props.get(TPM_PT.LEVEL, 0),
        "spec_year": props.get(TPM_PT.YEAR, 0),
        "pcr_banks": banks,
        "aes_128_cfb": tpm.test_parms(AES_128_CFB, *sessions),
        "profile": profile.name,
        "keys": keys,
        "ek_certificates": {f"{i:#010x}": desc for i, desc in EK_CERT_INDICES.items() if i in nv},
        "authenticated": bool(sessions),
    }
