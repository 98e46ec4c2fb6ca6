"""``tpmseal provision``: create and persist the EK and SRK, pin them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tpmseal.cli.common import add_json, add_profile, open_tpm, print_json, profile_of, trust_of
from tpmseal.errors import UsageError
from tpmseal.files import locked
from tpmseal.recipes.profiles import DEFAULT_EK_TYPE, EK_TYPES, Profile, conflicts
from tpmseal.recipes.provision import provision

if TYPE_CHECKING:  # argparse loads only when parsing needs it (cli/quick.py)
    import argparse


def register(sub: Any) -> None:
    p = sub.add_parser(
        "provision", help="create the EK and SRK if missing and pin them in the trust file",
        description="Create what is missing (EK from the TCG template, SRK per the TCG "
                    "provisioning guidance), persist it at the profile's handles, and record "
                    "the EK's public key in the trust file. Idempotent. --profile eve "
                    "creates exactly EVE's keys (its EK template under the owner hierarchy); "
                    "with --ek-ca the certified EK at the TCG handle salts the sessions.")
    add_profile(p)
    p.add_argument("--ek-type", choices=EK_TYPES, default=DEFAULT_EK_TYPE,
                   help="EK that salts sessions: auto (default: the pinned or persisted one, "
                        "else ecc when the TPM has NIST P-256, else rsa), rsa (template L-1) "
                        "or ecc (L-2, P-256; a cheaper salt on most SPI TPMs)")
    p.add_argument("--ek-ca", metavar="FILE|DIR",
                   help="verify the EK certificate in NV against these CA certificates")
    p.add_argument("--repin", action="store_true",
                   help="accept a different EK than the one already pinned (replaced TPM)")
    p.add_argument("--allow-legacy", action="store_true",
                   help="pin a TPM without AES-128-CFB (later seals put secrets on the bus in "
                        "plaintext)")
    add_json(p, "machine-readable output")
    p.set_defaults(handler=run)


def _explain_conflict(e: UsageError, profile: Profile) -> UsageError:
    """A key of the wrong kind at a handle another profile uses: say which profile put it."""
    for handle, why in conflicts(profile).items():
        if f"{handle:#x}" in e.message:
            return UsageError(f"{e.message} ({why})", e.hint)
    return e


def run(args: argparse.Namespace) -> int:
    profile = profile_of(args)
    with locked(trust_of(args)), open_tpm(args) as tpm:  # it rewrites the trust file
        try:
            r = provision(tpm, profile, ek_type=args.ek_type, trust_file=trust_of(args),
                          ek_ca=args.ek_ca, repin=args.repin, allow_legacy=args.allow_legacy)
        except UsageError as e:
            raise _explain_conflict(e, profile) from None
    roles = [("ek", r.ek), ("srk", r.srk)]
    if r.salt is not None and r.salt.handle != r.ek.handle:
        roles.append(("salt", r.salt))  # the certified EK, apart from the profile's EK
    keys = {role: {"handle": f"{k.handle:#010x}", "name": k.name.hex(), "created": k.created}
            for role, k in roles}
    if args.json:
        print_json({"profile": r.profile, **keys, "aes_128_cfb": r.aes_128_cfb,
                    "ek_certificate": r.ek_certificate, "trust_file": r.trust_file,
                    "address": r.address})
        return 0
    for role, k in keys.items():
        verb = "created" if k["created"] else "present"
        print(f"{role.upper():<4} {k['handle']} {verb:<8} name {k['name']}")
    if "salt" in keys:
        print(f"sessions salted with the certified EK at {keys['salt']['handle']}")
    print(f"AES-128-CFB {'supported' if r.aes_128_cfb else 'NOT supported (legacy sealing)'}")
    print(f"EK certificate: {r.ek_certificate}")
    print(f"pinned in {r.trust_file} for {r.address}")
    return 0
