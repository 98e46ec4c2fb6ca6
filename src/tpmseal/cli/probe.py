"""``tpmseal probe``: describe the TPM."""

from __future__ import annotations

import argparse
from typing import Any

from tpmseal.cli.common import add_json, add_profile, open_tpm, print_json, profile_of, record_of
from tpmseal.recipes.probe import probe


def register(sub: Any) -> None:
    p = sub.add_parser("probe", help="describe the TPM: vendor, PCR banks, AES-CFB, keys",
                       description="Report the TPM's manufacturer, firmware, PCR banks, "
                                   "AES-128-CFB support, the profile's EK/SRK and EK "
                                   "certificates.")
    add_profile(p)
    add_json(p, "machine-readable output")
    p.add_argument("--authenticated", action="store_true",
                   help="read everything through an audit session salted with the pinned EK "
                        "(needs `tpmseal provision`), so an interposer cannot change it")
    p.set_defaults(handler=run)


UNAUTHENTICATED = ("read over the bus without an HMAC: an interposer could have changed any of "
                   "this; --authenticated reads it through the pinned EK")


def run(args: argparse.Namespace) -> int:
    profile = profile_of(args)
    rec = record_of(args, profile, required=True) if args.authenticated else None
    with open_tpm(args) as tpm:
        info = probe(tpm, profile, rec)
    if args.json:
        print_json(info)
        return 0
    print(f"manufacturer:     {info['manufacturer']} ({info['vendor']})")
    print(f"firmware:         {info['firmware_version']}")
    print(f"specification:    TPM {info['spec_family']} revision {info['spec_revision']} "
          f"level {info['spec_level']} ({info['spec_year']})")
    for bank, pcrs in info["pcr_banks"].items():
        print(f"PCR bank:         {bank}: {len(pcrs)} PCRs")
    print(f"AES-128-CFB:      {'supported' if info['aes_128_cfb'] else 'NOT supported'}")
    for role, k in info["keys"].items():
        state = f"{k['type']} key, name {k['name']}" if k["present"] else "absent"
        print(f"{role + ':':<17} {k['handle']} {state}")
    certs = info["ek_certificates"]
    print("EK certificates:  " + (", ".join(f"{i} {d}" for i, d in certs.items()) or "none"))
    print("authenticated:    " + ("yes, through the pinned EK (keys match the trust file)"
                                  if info["authenticated"] else f"no ({UNAUTHENTICATED})"))
    return 0
