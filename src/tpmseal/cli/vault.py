"""``tpmseal vault-key``: EVE's FetchSealedVaultKey."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tpmseal.cli.common import (
    add_accept_sealed_object,
    add_json,
    add_profile,
    json_needs_file,
    open_tpm,
    print_json,
    profile_of,
    record_of,
    trust_of,
)
from tpmseal.cli.seal import _pcr_spec
from tpmseal.cli.secrets import add_pin_options, read_pin, write_secret
from tpmseal.files import locked
from tpmseal.log import get_logger
from tpmseal.recipes.lifecycle import UnsealOptions, require_nv, vault_key
from tpmseal.recipes.stores import NvStore

if TYPE_CHECKING:  # argparse loads only when parsing needs it (cli/quick.py)
    import argparse

log = get_logger("tpmseal.cli")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "vault-key", help="get the vault key: generate+seal, migrate a legacy key, or unseal",
        description="EVE's FetchSealedVaultKey. No key yet: 32 bytes from the TPM's RNG mixed "
                    "with the OS's are sealed into NV. Only a legacy plaintext key in NV "
                    "0x01700000: it is sealed and, as EVE does, kept (releases from before "
                    "sealing read it after a rollback). A sealed key: it is unsealed "
                    "(recovering the PCR list if needed). Part of a sealed pair and no "
                    "complete one (an interrupted write): refused with exit code 12, NV "
                    "untouched. The key goes to stdout or --output (e.g. `| cryptsetup open "
                    "--key-file=- ...`).")
    add_profile(p)
    p.set_defaults(profile="eve")
    p.add_argument("--pcrs", metavar="SPEC", type=_pcr_spec,
                   help="PCRs to seal a new key to (default: the profile's list); for a key "
                        "already sealed, PCRs other than the ones the trust file records for "
                        "it are refused")
    p.add_argument("--output", metavar="FILE|-", help="where to write the key (default stdout)")
    p.add_argument("--legacy", action="store_true", help="no parameter encryption")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="allow --legacy when the TPM supports parameter encryption")
    p.add_argument("--allow-unmeasured", action="store_true",
                   help="seal even if PCR 0 or 4 is all zero (unmeasured boot)")
    add_accept_sealed_object(p)
    p.add_argument("--remove-legacy-key", action="store_true",
                   help="remove the legacy plaintext key in NV 0x01700000 once the sealed key "
                        "unsealed to the same value (a rollback to a release from before "
                        "sealing then loses the vault)")
    add_pin_options(p, prompt=False)
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    json_needs_file(args)
    profile = profile_of(args)
    require_nv(profile)
    rec = record_of(args, profile, required=not args.legacy)
    pin = read_pin(args, needed=False, confirm=False)
    opts = UnsealOptions(legacy=args.legacy, allow_downgrade=args.allow_downgrade, pin=pin,
                         trust=rec)
    with locked(trust_of(args)), open_tpm(args) as tpm:  # one vault-key per TPM at a time
        store = NvStore.for_profile(profile, args.pcrs, rec, pin is not None,
                                    args.accept_sealed_object)
        result = vault_key(tpm, profile, store, opts, allow_unmeasured=args.allow_unmeasured,
                           remove_legacy=args.remove_legacy_key)
    log.info("vault key %s", result.action)
    write_secret(args.output, result.key)
    if args.json:
        print_json({"command": "vault-key", "action": result.action, "store": store.describe(),
                    "profile": profile.name, "output": args.output, "bytes": len(result.key)})
    return 0
