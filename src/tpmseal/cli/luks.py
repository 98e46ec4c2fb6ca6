"""``tpmseal luks enroll | unlock | test | list | remove | reseal``: LUKS2 volumes.

Keys and passphrases reach cryptsetup on pipes only (never argv, never a file).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from tpmseal.cli.common import (
    add_json,
    add_profile,
    json_needs_file,
    open_tpm,
    print_json,
    profile_of,
    record_of,
)
from tpmseal.cli.seal import _pcr_spec, add_policy_options, seal_policy
from tpmseal.cli.secrets import add_pin_options, read_pin, write_secret
from tpmseal.errors import UsageError
from tpmseal.recipes import cryptsetup, luks, unlockers
from tpmseal.recipes.pcrspec import format_pcrs

if TYPE_CHECKING:  # signed policies, argparse and the enrolment of systemd tokens: on use
    import argparse

    from tpmseal.recipes.signed import SignedPolicy

#: the token type systemd-cryptenroll writes (recipes/systemd_tpm2.py, loaded on use)
SYSTEMD = "systemd-tpm2"


def register(sub: Any) -> None:
    p = sub.add_parser("luks", help="enrol, unlock and manage LUKS2 volumes with TPM tokens",
                       description="LUKS2 volumes unlocked by the TPM: tpmseal tokens, and "
                                   "volumes enrolled by systemd-cryptenroll or clevis.")
    lsub = p.add_subparsers(dest="luks_command", metavar="ACTION", required=True)

    e = lsub.add_parser("enroll", help="add a TPM-sealed keyslot and its tpmseal token",
                        description="Seal a random 32-byte key on the encrypted path, add it "
                                    "as a new keyslot (authorised by an existing passphrase "
                                    "or --unlock-key-file) and store the sealed blob as a "
                                    "LUKS2 token of type tpmseal.")
    _device(e)
    add_profile(e)
    e.add_argument("--pcrs", metavar="SPEC", type=_pcr_spec,
                   help="PCRs to seal to, e.g. sha256:0,1,2,3,4,6,7 (default: the profile's)")
    e.add_argument("--unlock-key-file", metavar="FILE",
                   help="a file holding an existing passphrase or key of the volume (read by "
                        "cryptsetup; default: ask on the terminal)")
    e.add_argument("--allow-unmeasured", action="store_true",
                   help="seal even if PCR 0 or 4 is all zero (unmeasured boot)")
    add_policy_options(e, " (tpmseal tokens only)")
    e.add_argument("--token-type", choices=(luks.TOKEN_TYPE, SYSTEMD),
                   default=luks.TOKEN_TYPE,
                   help="tpmseal (default), or systemd-tpm2: a token systemd-cryptsetup and "
                        "cryptsetup's systemd-tpm2 plugin also unlock (one PCR bank)")
    add_pin_options(e, prompt=True)
    add_json(e)
    e.set_defaults(handler=run_enroll)

    u = lsub.add_parser("unlock", help="open the volume as /dev/mapper/NAME",
                        description="Unseal the keyslot passphrase from the volume's TPM token "
                                    "and open the volume with cryptsetup, the key on a pipe.")
    _device(u)
    u.add_argument("name", metavar="NAME", help="the mapping name (/dev/mapper/NAME)")
    _unlock_options(u)
    u.add_argument("--allow-discards", action="store_true", help="passed to cryptsetup open")
    u.add_argument("--readonly", action="store_true", help="passed to cryptsetup open")
    u.set_defaults(handler=run_unlock)

    t = lsub.add_parser("test", help="check that a TPM token unlocks the volume (no mapping)",
                        description="Unseal the keyslot passphrase and check it with "
                                    "cryptsetup open --test-passphrase.")
    _device(t)
    _unlock_options(t)
    add_json(t)
    t.set_defaults(handler=run_test)

    pp = lsub.add_parser("passphrase", help="print the keyslot passphrase (for keyscripts)",
                         description="Unseal a TPM token's keyslot passphrase, check it with "
                                     "cryptsetup and write it to stdout (a pipe: refused on a "
                                     "terminal) or --output; what a crypttab keyscript runs.")
    _device(pp)
    _unlock_options(pp)
    pp.add_argument("--output", metavar="FILE|-", help="where to write it (default stdout)")
    add_json(pp)
    pp.set_defaults(handler=run_passphrase)

    ls = lsub.add_parser("list", help="list the volume's tokens and keyslots")
    _device(ls)
    add_json(ls)
    ls.set_defaults(handler=run_list)

    r = lsub.add_parser("remove", help="remove a token and the keyslot only it uses",
                        description="Remove a token and its keyslot; the last keyslot of a "
                                    "volume is never removed.")
    _device(r)
    r.add_argument("--token-id", type=int, required=True, metavar="N",
                   help="the token to remove (see `tpmseal luks list`)")
    add_json(r)
    r.set_defaults(handler=run_remove)

    rs = lsub.add_parser("reseal", help="move a tpmseal token's key to new PCRs",
                         description="Unseal the key of a tpmseal token and seal it to NEW "
                                     "PCRs for the same keyslot; the new token is stored "
                                     "before the old one is removed.")
    _device(rs)
    add_profile(rs)
    rs.add_argument("--pcrs", metavar="SPEC", type=_pcr_spec,
                    help="new PCRs to seal to (default: the PCRs it is sealed to now)")
    rs.add_argument("--token-id", type=int, metavar="N",
                    help="the tpmseal token (default: the only one)")
    rs.add_argument("--allow-unmeasured", action="store_true",
                    help="seal even if PCR 0 or 4 is all zero (unmeasured boot)")
    _policy_option(rs)
    add_pin_options(rs, prompt=False)
    add_json(rs)
    rs.set_defaults(handler=run_reseal)


def _device(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", metavar="DEVICE", help="the LUKS2 block device or image file")


def _unlock_options(p: argparse.ArgumentParser) -> None:
    add_profile(p)
    p.add_argument("--token-id", type=int, metavar="N",
                   help="use only this token (default: every supported TPM token in turn)")
    p.add_argument("--token-type", choices=sorted(unlockers.KINDS),
                   help="use only tokens of this type")
    _policy_option(p)
    p.add_argument("--pcrlock", metavar="FILE",
                   help="systemd-pcrlock's policy for a systemd-tpm2 token with tpm2_pcrlock "
                        "(default: /run/systemd/pcrlock.json, then "
                        "/var/lib/systemd/pcrlock.json)")
    add_pin_options(p, prompt=False)


def _policy_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", metavar="FILE|DIR", action="append", default=[],
                   help="signed policy (`tpmseal policy sign` or systemd-measure's JSON), or a "
                        "directory of them, for a token enrolled --authorized-by or a "
                        "systemd-tpm2 token with tpm2_pubkey (default for those: "
                        "tpm2-pcr-signature.json where systemd looks); repeatable")


def _signed(args: argparse.Namespace) -> tuple[SignedPolicy, ...]:
    if not args.policy:
        return ()
    from tpmseal.recipes import signed

    return tuple(signed.load_policies(args.policy))


def _existing_passphrase(args: argparse.Namespace) -> bytes | None:
    if args.unlock_key_file:
        return None
    if not sys.stdin.isatty():
        raise UsageError("an existing passphrase of the volume is needed to add a keyslot, "
                         "and there is no terminal", "pass --unlock-key-file FILE")
    import getpass

    return getpass.getpass(f"existing passphrase for {args.device}: ").encode()


def _say(args: argparse.Namespace, text: str, report: dict[str, Any]) -> None:
    """The line a person reads, or with --json the report (README: JSON output)."""
    if args.json:
        print_json(report)
    else:
        print(text)


def run_enroll(args: argparse.Namespace) -> int:
    profile = profile_of(args)
    rec = record_of(args, profile, required=True)
    cryptsetup.header(args.device)  # not LUKS2: say so before asking for anything
    pin = read_pin(args, needed=False, confirm=True)
    passphrase = _existing_passphrase(args)
    if args.token_type == SYSTEMD:
        from tpmseal.recipes import systemd_enroll

        if args.authorized_by or args.pcr_values or args.min_version_nv is not None:
            raise UsageError("--authorized-by, --pcr-values and --min-version-nv apply to "
                             "tpmseal tokens", "drop them, or --token-type systemd-tpm2")
        with open_tpm(args) as tpm:
            sd = systemd_enroll.enroll_systemd(
                tpm, args.device, rec, args.pcrs or profile.default_pcrs, pin=pin,
                key_file=args.unlock_key_file, passphrase=passphrase,
                allow_unmeasured=args.allow_unmeasured)
        _say(args, f"enrolled keyslot {sd.keyslot} (systemd-tpm2 token {sd.token_id}) sealed "
                   f"to {format_pcrs(sd.pcrs)}{' with PIN' if sd.pin else ''}",
             {"command": "luks enroll", "device": args.device, "token_type": args.token_type,
              "token_id": sd.token_id, "keyslot": sd.keyslot, "pcrs": format_pcrs(sd.pcrs),
              "pin": sd.pin})
        return 0
    with open_tpm(args) as tpm:
        done = luks.enroll(tpm, args.device, rec, profile=profile, policy=seal_policy(args),
                           pin=pin, key_file=args.unlock_key_file, passphrase=passphrase,
                           allow_unmeasured=args.allow_unmeasured)
    signer = " signed by the key" if done.blob.authorizer is not None else ""
    _say(args, f"enrolled keyslot {done.keyslot} (token {done.token_id}) sealed to "
               f"{format_pcrs(done.blob.pcrs)}{signer}{' with PIN' if done.blob.pin else ''}",
         {"command": "luks enroll", "device": args.device, "token_type": args.token_type,
          "token_id": done.token_id, "keyslot": done.keyslot, "pcrs": format_pcrs(done.blob.pcrs),
          "pin": done.blob.pin, "signed": done.blob.authorizer is not None})
    return 0


def _unlocked(args: argparse.Namespace) -> unlockers.Unlocked:
    profile = profile_of(args)
    rec = record_of(args, profile, required=False)
    kinds = (args.token_type,) if args.token_type else None
    cands = unlockers.candidates(args.device, args.token_id, kinds)
    pin = read_pin(args, needed=any(c.needs_pin() for c in cands), confirm=False)
    offered = _signed(args)
    with open_tpm(args) as tpm:
        return unlockers.unlock_key(tpm, args.device, cands, rec, pin, offered, args.pcrlock)


def run_test(args: argparse.Namespace) -> int:
    got = _unlocked(args)
    _say(args, f"token {got.token_id} ({got.kind}) unlocks keyslot {got.keyslot}",
         {"command": "luks test", "device": args.device, "token_id": got.token_id,
          "token_type": got.kind, "keyslot": got.keyslot})
    return 0


def run_passphrase(args: argparse.Namespace) -> int:
    json_needs_file(args)
    got = _unlocked(args)
    write_secret(args.output, got.passphrase)
    if args.json:
        print_json({"command": "luks passphrase", "device": args.device,
                    "token_id": got.token_id, "token_type": got.kind, "keyslot": got.keyslot,
                    "output": args.output})
    return 0


def run_unlock(args: argparse.Namespace) -> int:
    got = _unlocked(args)
    options = [o for o, on in (("--allow-discards", args.allow_discards),
                               ("--readonly", args.readonly)) if on]
    cryptsetup.open_volume(args.device, args.name, got.passphrase, got.keyslot, options)
    return 0


def run_list(args: argparse.Namespace) -> int:
    tokens = unlockers.list_tokens(args.device)
    hdr = cryptsetup.header(args.device)
    if args.json:
        print_json({"keyslots": sorted(hdr.keyslots), "tokens": [
            {"id": t.token_id, "type": t.kind, "keyslots": t.keyslots, **t.detail}
            for t in tokens]})
        return 0
    print(f"keyslots: {', '.join(map(str, sorted(hdr.keyslots))) or 'none'}")
    for t in tokens:
        extra = ", ".join(f"{k}={v}" for k, v in t.detail.items())
        slots = ", ".join(map(str, t.keyslots)) or "none"
        print(f"token {t.token_id}: {t.kind} keyslots={slots} {extra}".rstrip())
    return 0


def run_remove(args: argparse.Namespace) -> int:
    gone = luks.remove(args.device, args.token_id)
    _say(args, f"removed token {args.token_id}"
               + (f" and keyslot {', '.join(map(str, gone))}" if gone else ""),
         {"command": "luks remove", "device": args.device, "token_id": args.token_id,
          "keyslots_removed": sorted(gone)})
    return 0


def run_reseal(args: argparse.Namespace) -> int:
    profile = profile_of(args)
    rec = record_of(args, profile, required=True)
    cands = unlockers.candidates(args.device, args.token_id, (luks.TOKEN_TYPE,))
    if len(cands) > 1:
        raise UsageError(f"{args.device} has {len(cands)} tpmseal tokens",
                         "choose one with --token-id")
    pin = read_pin(args, needed=cands[0].needs_pin(), confirm=False)
    offered = _signed(args)
    with open_tpm(args) as tpm:
        done = luks.reseal(tpm, args.device, cands[0].token_id, rec, profile=profile,
                           pcrs=args.pcrs, pin=pin, allow_unmeasured=args.allow_unmeasured,
                           policies=offered)
    _say(args, f"resealed keyslot {done.keyslot} to {format_pcrs(done.blob.pcrs)} "
               f"(token {done.token_id})",
         {"command": "luks reseal", "device": args.device, "token_id": done.token_id,
          "keyslot": done.keyslot, "pcrs": format_pcrs(done.blob.pcrs), "pin": done.blob.pin})
    return 0
