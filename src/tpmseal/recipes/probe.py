"""``probe``: what this TPM is and what it holds, as a JSON-ready dictionary.

Reads fixed properties (Part 2 §6.13: TPM_PT_MANUFACTURER, VENDOR_STRING_1-4,
FIRMWARE_VERSION_1/2, REVISION, LEVEL, YEAR...), the allocated PCR banks,
whether TPM2_TestParms accepts AES-128-CFB, the profile's EK/SRK handles with
their Names, and which EK certificate NV indices exist.
"""

from __future__ import annotations

from typing import Any

from tpmseal.client.tpm import Tpm
from tpmseal.recipes.ekcert import EK_CERT_INDICES
from tpmseal.recipes.pcrspec import bank_name
from tpmseal.recipes.profiles import Profile
from tpmseal.recipes.provision import read_optional
from tpmseal.wire.constants import TPM_PT
from tpmseal.wire.structures import EccParms, RsaParms


def _chars(v: int) -> str:
    return v.to_bytes(4, "big").rstrip(b"\0 ").decode("ascii", "replace").strip()


def _key_info(tpm: Tpm, handle: int) -> dict[str, Any]:
    pub = read_optional(tpm, handle)
    if pub is None:
        return {"handle": f"{handle:#010x}", "present": False}
    kind = "rsa" if isinstance(pub.parameters, RsaParms) else (
        "ecc" if isinstance(pub.parameters, EccParms) else "other")
    return {"handle": f"{handle:#010x}", "present": True, "type": kind,
            "name": pub.name().hex()}


def probe(tpm: Tpm, profile: Profile) -> dict[str, Any]:
    """Gather the probe report."""
    props = tpm.properties(TPM_PT.FAMILY_INDICATOR, 64)
    vendor = "".join(_chars(props.get(p, 0)) for p in (
        TPM_PT.VENDOR_STRING_1, TPM_PT.VENDOR_STRING_2, TPM_PT.VENDOR_STRING_3,
        TPM_PT.VENDOR_STRING_4))
    fw1, fw2 = props.get(TPM_PT.FIRMWARE_VERSION_1, 0), props.get(TPM_PT.FIRMWARE_VERSION_2, 0)
    revision = props.get(TPM_PT.REVISION, 0)
    banks = {bank_name(s.hash_alg): sorted(s.pcrs) for s in tpm.pcr_banks().selections if s.pcrs}
    nv = set(tpm.handles(0x01C00000))
    keys = {"ek_rsa": _key_info(tpm, profile.ek_rsa), "srk": _key_info(tpm, profile.srk)}
    if profile.ek_ecc != profile.ek_rsa:
        keys["ek_ecc"] = _key_info(tpm, profile.ek_ecc)
    return {
        "manufacturer": _chars(props.get(TPM_PT.MANUFACTURER, 0)),
        "vendor": vendor,
        "firmware_version": f"{fw1 >> 16}.{fw1 & 0xFFFF}.{fw2 >> 16}.{fw2 & 0xFFFF}",
        "spec_family": _chars(props.get(TPM_PT.FAMILY_INDICATOR, 0)),
        "spec_revision": f"{revision // 100}.{revision % 100:02d}",
        "spec_level": props.get(TPM_PT.LEVEL, 0),
        "spec_year": props.get(TPM_PT.YEAR, 0),
        "pcr_banks": banks,
        "aes_128_cfb": tpm.test_parms(),
        "profile": profile.name,
        "keys": keys,
        "ek_certificates": {f"{i:#010x}": desc for i, desc in EK_CERT_INDICES.items() if i in nv},
    }
