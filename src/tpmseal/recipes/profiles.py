"""Profiles: where a deployment keeps its keys and sealed blobs.

* ``tcg``: TCG handle conventions — EK at 0x81010001 (RSA) or 0x81010002 (ECC)
  per the TCG EK Credential Profile §2.2.1.5, SRK at 0x81000001 per the TCG
  Provisioning Guidance §7.
* ``eve``: LF Edge EVE's layout — EK 0x81000001, SRK 0x81000002, sealed object
  in NV 0x01800000 (TPM2B_PRIVATE contents) and 0x01900000 (TPM2B_PUBLIC
  contents), legacy plaintext vault key in NV 0x01700000, default PCRs sha256
  0-14 without 5. EVE's "EK" is the TCG EK template (L-1, RSA) created under
  the *owner* hierarchy: EVE's ``evetpm.CreateKey`` calls CreatePrimary under
  TPM_RH_OWNER whatever hierarchy tpmmgr passes it. No EK certificate covers
  that key; with ``--ek-ca`` the certified EK (endorsement hierarchy, at the
  TCG handle) salts the sessions instead.

  Both use 0x81000001, tcg for its SRK and eve for its EK (:func:`conflicts`): EVE's
  EK cannot serve as tcg's SRK, so one TPM should serve one profile.
"""

from __future__ import annotations

from tpmseal.errors import UsageError
from tpmseal.records import record
from tpmseal.wire.constants import TPM_ALG, TPM_RH
from tpmseal.wire.structures import PcrSelection, PcrSelectionList


@record
class NvLayout:
    """NV indices holding a sealed object with no metadata (EVE's format)."""

    private: int
    public: int
    legacy_key: int
    #: where a re-seal stages the new pair before swapping it in
    staging_private: int
    staging_public: int


@record
class Profile:
    name: str
    ek_rsa: int
    ek_ecc: int
    srk: int
    default_pcrs: PcrSelectionList
    nv: NvLayout | None = None
    #: the hierarchy the profile's EK is created under (EVE: owner, see above)
    ek_hierarchy: int = TPM_RH.ENDORSEMENT
    #: EK types the profile's EK handle may hold (EVE's tpmmgr re-creates an RSA key)
    ek_types: tuple[str, ...] = ("rsa", "ecc")

    def ek_handle(self, ek_type: str) -> int:
        return self.ek_ecc if ek_type == "ecc" else self.ek_rsa


#: what ``provision --ek-type`` and the API's ``provision(ek_type=)`` take: ``auto``
#: (recipes/provision.py, choose_ek_type) or the type itself
EK_TYPES = ("auto", "rsa", "ecc")
#: the default of both: the ECC EK where the TPM has P-256 (a cheaper salt on an SLB9672
#: or NPCT75x, and on an SLB9670 by its one-multiplication figure though not by the ECDHE
#: upper bound: README.md, Performance)
DEFAULT_EK_TYPE = "auto"


def _sha256(*pcrs: int) -> PcrSelectionList:
    return PcrSelectionList((PcrSelection(TPM_ALG.SHA256, pcrs),))


TCG = Profile("tcg", 0x81010001, 0x81010002, 0x81000001, _sha256(0, 1, 2, 3, 4, 6, 7))
EVE = Profile(
    "eve", 0x81000001, 0x81000001, 0x81000002,
    _sha256(0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14),
    NvLayout(0x01800000, 0x01900000, 0x01700000, 0x01800001, 0x01900001),
    ek_hierarchy=TPM_RH.OWNER, ek_types=("rsa",))

PROFILES = {p.name: p for p in (TCG, EVE)}


def _roles(p: Profile) -> dict[int, str]:
    return {p.ek_rsa: "EK", p.ek_ecc: "EK", p.srk: "SRK"} if p.ek_rsa == p.ek_ecc else {
        p.ek_rsa: "RSA EK", p.ek_ecc: "ECC EK", p.srk: "SRK"}


def conflicts(profile: Profile) -> dict[int, str]:
    """Handle -> a sentence, for each handle *profile* shares with another profile's key of
    another role: such profiles cannot be provisioned on one TPM."""
    mine = _roles(profile)
    found: dict[int, str] = {}
    for other in PROFILES.values():
        if other.name == profile.name:
            continue
        for handle, role in _roles(other).items():
            if handle in mine and mine[handle] != role:
                found[handle] = (f"the {other.name} profile keeps its {role} at {handle:#x}, "
                                 f"where the {profile.name} profile keeps its {mine[handle]}: "
                                 "one TPM serves only one of the two profiles")
    return found


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(f"unknown profile {name!r}",
                         "use --profile tcg or --profile eve") from None
