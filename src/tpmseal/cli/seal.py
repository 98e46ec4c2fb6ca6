"""``tpmseal seal | unseal | reseal | import``."""

from __future__ import annotations

import contextlib
import os
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
from tpmseal.cli.secrets import add_pin_options, read_pin, read_secret, write_secret
from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError, DecodeError, UsageError
from tpmseal.files import locked, read_input
from tpmseal.log import get_logger
from tpmseal.recipes import policies, sealing
from tpmseal.recipes.blob import ENCRYPTED, LEGACY, SaltKey, SealedBlob, read_values_file
from tpmseal.recipes.lifecycle import (
    UnsealOptions,
    refuse_downgrade,
    reseal,
    seal_into,
    unseal_stored,
)
from tpmseal.recipes.pcrspec import format_pcrs, parse_pcrs
from tpmseal.recipes.policies import SealPolicy
from tpmseal.recipes.profiles import Profile
from tpmseal.recipes.stores import FileStore, NvStore, Store, first_candidate
from tpmseal.recipes.trust import TrustRecord
from tpmseal.session.policy import compute_policy
from tpmseal.wire.marshal import Reader, parse_exact
from tpmseal.wire.structures import PcrSelectionList, Public

if TYPE_CHECKING:  # signed policies load on use only; argparse when parsing needs it
    import argparse

    from tpmseal.recipes.signed import SignedPolicy

log = get_logger("tpmseal.cli")


def register(sub: Any) -> None:
    for name in _REGISTER:
        register_one(sub, name)


def register_one(sub: Any, name: str) -> None:
    """Only the sub-parser of *name* (argparse parsers cost start-up time)."""
    _REGISTER[name](sub)


def _pcrs_option(p: argparse.ArgumentParser, help_: str,
                 default: str = "the profile's list") -> None:
    p.add_argument("--pcrs", metavar="SPEC", type=_pcr_spec,
                   help=f"{help_} (e.g. sha256:0,1,2,3,4,6,7 or sha256:0,7+sha384:0; "
                        f"default: {default})")


def _pcr_spec(text: str) -> PcrSelectionList:
    try:
        return parse_pcrs(text)
    except UsageError as e:
        raise _type_error(e.one_line()) from None


def _type_error(message: str) -> Exception:
    """argparse's error for a value its ``type`` refuses (argparse loads on errors only)."""
    import argparse

    return argparse.ArgumentTypeError(message)


def _nv_index(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise _type_error(f"{text!r} is not an NV index") from None
    if value >> 24 != 0x01:
        raise _type_error(f"{text} is not an NV index (0x01xxxxxx)")
    return value


def _storage(p: argparse.ArgumentParser, direction: str) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    flag = "--output" if direction == "out" else "--input"
    g.add_argument(flag, metavar="BLOB.json", dest="blob",
                   help="sealed blob file (JSON)")
    g.add_argument("--nv", action="store_true",
                   help="EVE's NV layout (0x01800000 private, 0x01900000 public; --profile eve)")


def _register_seal(sub: Any) -> None:
    p = sub.add_parser("seal", help="seal a secret under a PCR policy",
                       description="Seal a secret (from stdin or --input) to the current PCR "
                                   "values. On the encrypted path the secret crosses the TPM bus "
                                   "only as AES-128-CFB ciphertext.")
    add_profile(p)
    _pcrs_option(p, "PCRs to seal to")
    p.add_argument("--input", metavar="FILE|-", default="-", help="secret source (default stdin)")
    _storage(p, "out")
    p.add_argument("--legacy", action="store_true",
                   help="no parameter encryption (for TPMs without AES-128-CFB)")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="allow --legacy although the pinned TPM supports parameter encryption "
                        "(the secret then crosses the bus in plaintext)")
    p.add_argument("--allow-unmeasured", action="store_true",
                   help="seal even if PCR 0 or 4 is all zero (unmeasured boot)")
    p.add_argument("--force", action="store_true", help="replace an existing sealed secret")
    p.add_argument("--no-check-value", action="store_true",
                   help="do not store a check value (automatic for passphrase-like secrets)")
    p.add_argument("--ek-ca", metavar="FILE|DIR", help="verify the EK certificate first")
    add_policy_options(p)
    add_pin_options(p, prompt=True)
    add_json(p)
    p.set_defaults(handler=run_seal)


def add_policy_options(p: argparse.ArgumentParser, scope: str = "") -> None:
    """--authorized-by | --pcr-values, and --min-version-nv: read by :func:`seal_policy`."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--authorized-by", metavar="SIGNER.pub",
                   help="unseal in any PCR state this key signs (`tpmseal policy sign`), "
                        f"so updates need no reseal; --pcrs names the PCRs its policies use{scope}")
    g.add_argument("--pcr-values", metavar="FILE", action="append", default=[],
                   help="seal to these PCR values (`pcrs show --json` output) instead of the "
                        f"current ones; repeat for up to 8 allowed states (PolicyOR){scope}")
    p.add_argument("--min-version-nv", metavar="INDEX", type=_nv_index,
                   help="with --authorized-by: accept only signed policies gated by this NV "
                        "counter (defined if missing), so `policy revoke-below` can revoke "
                        "old ones")


def _register_unseal(sub: Any) -> None:
    p = sub.add_parser("unseal", help="unseal a secret to stdout or a file",
                       description="Unseal a secret. Raw bytes go to stdout (for pipelines such "
                                   "as `cryptsetup open --key-file=-`) or to a 0600 file.")
    add_profile(p)
    _storage(p, "in")
    _pcrs_option(p, "with --nv: the PCRs the secret was sealed to, needed only for an object "
                    "the trust file has no record of (EVE's, an older tpmseal's); for one it "
                    "records, PCRs other than the record's are refused")
    p.add_argument("--output", metavar="FILE|-", help="where to write the secret "
                                                      "(default stdout, refused on a terminal)")
    p.add_argument("--legacy", action="store_true", help="no parameter encryption")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="allow --legacy on a secret sealed with parameter encryption")
    p.add_argument("--no-recover", action="store_true",
                   help="with --nv: do not search for the PCR selection on a policy failure")
    p.add_argument("--ek-ca", metavar="FILE|DIR", help="verify the EK certificate first")
    add_accept_sealed_object(p)
    p.add_argument("--policy", metavar="FILE|DIR", action="append", default=[],
                   help="signed policy (`tpmseal policy sign` or systemd-measure's JSON), or "
                        "a directory of them, for a secret sealed --authorized-by; repeatable")
    _nv_signer_options(p)
    add_pin_options(p, prompt=False)
    add_json(p)
    p.set_defaults(handler=run_unseal)


def _nv_signer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--authorized-by", metavar="SIGNER.pub",
                   help="with --nv, for an object the trust file has no record of (sealed by "
                        "an older tpmseal): the signer it was sealed to (a signer other than "
                        "a record's is refused)")
    p.add_argument("--min-version-nv", metavar="INDEX", type=_nv_index,
                   help="with --nv --authorized-by: the revocation counter it was sealed with")


def _register_reseal(sub: Any) -> None:
    p = sub.add_parser("reseal", help="move a sealed secret to a new PCR policy, crash-safely",
                       description="Unseal with the old policy and seal to NEW PCRs. At no "
                                   "moment does a crash leave no unsealable copy.")
    add_profile(p)
    _pcrs_option(p, "new PCRs to seal to", default="the PCRs it is sealed to now")
    _storage(p, "in")
    p.add_argument("--output", metavar="BLOB.json",
                   help="write the new blob here instead of replacing --input")
    p.add_argument("--force", action="store_true",
                   help="let --output replace another sealed secret (which is then lost)")
    p.add_argument("--old-pcrs", metavar="SPEC", type=_pcr_spec,
                   help="with --nv: the PCRs the secret is sealed to now, needed only for an "
                        "object the trust file has no record of (PCRs other than a record's "
                        "are refused)")
    p.add_argument("--legacy", action="store_true", help="no parameter encryption")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="allow --legacy on a secret sealed with parameter encryption")
    p.add_argument("--allow-unmeasured", action="store_true",
                   help="seal even if PCR 0 or 4 is all zero (unmeasured boot)")
    p.add_argument("--policy", metavar="FILE|DIR", action="append", default=[],
                   help="signed policies, for a secret sealed --authorized-by (it stays "
                        "sealed to that signer)")
    p.add_argument("--add-state", metavar="FILE", action="append", default=[],
                   help="also allow these PCR values (`pcrs show --json` output); repeatable")
    p.add_argument("--drop-state", metavar="FILE", action="append", default=[],
                   help="no longer allow these PCR values; repeatable")
    _nv_signer_options(p)
    add_accept_sealed_object(p)
    add_pin_options(p, prompt=False)
    add_json(p)
    p.set_defaults(handler=run_reseal)


def _register_import(sub: Any) -> None:
    p = sub.add_parser("import", help="wrap a tpm2-tools sealed object into a tpmseal blob",
                       description="Make a tpmseal blob from tpm2-tools' seal.pub (TPM2B_PUBLIC) "
                                   "and seal.priv (TPM2B_PRIVATE) of an object sealed under "
                                   "PolicyPCR.")
    add_profile(p)
    p.add_argument("--public", required=True, metavar="FILE",
                   help="TPM2B_PUBLIC file (tpm2_create -u)")
    p.add_argument("--private", required=True, metavar="FILE",
                   help="TPM2B_PRIVATE file (tpm2_create -r)")
    p.add_argument("--pcrs", required=True, metavar="SPEC", type=_pcr_spec,
                   help="the PCRs the object was sealed to")
    p.add_argument("--output", required=True, metavar="BLOB.json", help="the blob to write")
    p.add_argument("--force", action="store_true", help="replace an existing blob file")
    add_json(p)
    p.set_defaults(handler=run_import)


# ---------------------------------------------------------------------------- helpers


def _trust(args: argparse.Namespace, profile: Profile, *, required: bool,
           sealed: bool = False) -> TrustRecord | None:
    """The record for the TPM --tpm names; with *sealed*, for an --input blob file, the
    one pinning the salt key the blob records (the file is not from the bus:
    recipes/trust.py, select)."""
    def salt() -> bytes | None:
        stored = FileStore(args.blob).read()
        return stored.salt_key.name if stored is not None and stored.salt_key else None

    return record_of(args, profile, required=required,
                     salt_of=salt if sealed and not args.nv else None)


def _store(args: argparse.Namespace, profile: Profile, rec: TrustRecord | None,
           pcrs: PcrSelectionList | None, pin: bool = False,
           pcrs_option: str = "--pcrs") -> Store:
    if args.nv:
        return NvStore.for_profile(profile, pcrs, rec, pin,
                                   getattr(args, "accept_sealed_object", False), pcrs_option)
    return FileStore(args.blob)


def _verify_ek(tpm: Tpm, args: argparse.Namespace, public: Public | None,
               handle: int | None = None) -> None:
    if args.ek_ca:
        if public is None:
            raise UsageError("--ek-ca needs a pinned EK (run `tpmseal provision`)",
                             hint="run `tpmseal provision --ek-ca FILE` first, or drop --ek-ca")
        from tpmseal.recipes import ekcert  # X.509 support costs start-up time: load on use

        ekcert.verify_ek(tpm, public, args.ek_ca, handle)


def _report(blob: SealedBlob, store: Store, profile: Profile) -> dict[str, Any]:
    """The --json keys every command writing a sealed secret shares (README: JSON output)."""
    return {"store": store.describe(), "nv": isinstance(store, NvStore),
            "profile": profile.name, "pcrs": format_pcrs(blob.pcrs),
            "sealed_with": blob.sealed_with, "pin": blob.pin, "check_value": blob.check is not None,
            "object_name": blob.name.hex()}


# ---------------------------------------------------------------------------- handlers


def seal_policy(args: argparse.Namespace) -> SealPolicy:
    """The policy the seal options describe (recipes/policies.py)."""
    if args.authorized_by:
        return policies.signed_by(args.authorized_by, args.pcrs,
                                  min_version_nv=args.min_version_nv)
    if args.min_version_nv is not None:
        raise UsageError("--min-version-nv needs --authorized-by",
                         "add --authorized-by SIGNER.pub, or drop --min-version-nv")
    if args.pcr_values:
        return policies.any_of_states([read_values_file(f) for f in args.pcr_values],
                                      args.pcrs)
    return policies.pcr_policy(args.pcrs)


def run_seal(args: argparse.Namespace) -> int:
    profile = profile_of(args)
    policy = seal_policy(args)
    rec = _trust(args, profile, required=not args.legacy)
    refuse_downgrade(args.legacy, rec, args.allow_downgrade)
    secret = read_secret(args.input)
    pin = read_pin(args, needed=False, confirm=True)
    with contextlib.ExitStack() as stack:
        if args.nv:  # a blob file is created exclusively; NV indices have no such thing
            stack.enter_context(locked(_lock_target(args)))
        tpm = stack.enter_context(open_tpm(args))
        store = _store(args, profile, rec, args.pcrs, pin is not None)
        _verify_ek(tpm, args, rec.ek_public if rec else None, rec.ek_handle if rec else None)
        blob = seal_into(tpm, store, secret, policy, profile, rec, force=args.force,
                         legacy=args.legacy, allow_unmeasured=args.allow_unmeasured, pin=pin,
                         check=False if args.no_check_value else None)
    log.info("sealed %d bytes to %s (%s) in %s", len(secret), format_pcrs(blob.pcrs),
             blob.sealed_with, store.describe())
    if args.json:
        print_json({"command": "seal", **_report(blob, store, profile), "bytes": len(secret)})
    return 0


def _unseal_options(args: argparse.Namespace, rec: TrustRecord | None,
                    pin: bytes | None) -> UnsealOptions:
    offered: tuple[SignedPolicy, ...] = ()
    signer = None
    if getattr(args, "policy", None):
        from tpmseal.recipes import signed

        offered = tuple(signed.load_policies(args.policy))
    if getattr(args, "authorized_by", None):
        if not args.nv:
            raise UsageError("--authorized-by applies to --nv at unseal (a blob file records "
                             "its signer)", "drop --authorized-by")
        signer = policies.signed_by(args.authorized_by,
                                    min_version_nv=getattr(args, "min_version_nv", None))
    return UnsealOptions(legacy=args.legacy, allow_downgrade=args.allow_downgrade, pin=pin,
                         trust=rec, recover=not getattr(args, "no_recover", False),
                         policies=offered, nv_signer=signer)


def _pin_for(args: argparse.Namespace, store: Store, tpm: Tpm) -> bytes | None:
    needs = any(b.pin for b in store.candidates(tpm)) if isinstance(store, FileStore) else False
    return read_pin(args, needed=needs, confirm=False)


def run_unseal(args: argparse.Namespace) -> int:
    if args.pcrs is not None and not args.nv:
        raise UsageError("--pcrs applies to --nv only (a blob file records its PCRs)",
                         "drop --pcrs")
    json_needs_file(args)
    profile = profile_of(args)
    rec = _trust(args, profile, required=False, sealed=True)
    with open_tpm(args) as tpm:
        pin_given = bool(args.pin_file)
        store = _store(args, profile, rec, args.pcrs, pin_given)
        pin = _pin_for(args, store, tpm)
        if args.ek_ca:
            first = first_candidate(tpm, store)
            salt = first.salt_key if first else None
            _verify_ek(tpm, args, salt.public if salt else (rec.ek_public if rec else None),
                       salt.handle if salt else (rec.ek_handle if rec else None))
        secret = unseal_stored(tpm, store, _unseal_options(args, rec, pin))
    write_secret(args.output, secret)
    log.info("unsealed %d bytes from %s", len(secret), store.describe())
    if args.json:
        print_json({"command": "unseal", "store": store.describe(),
                    "nv": isinstance(store, NvStore), "profile": profile.name,
                    "output": args.output, "bytes": len(secret)})
    return 0


def _lock_target(args: argparse.Namespace) -> str:
    """What a rewrite locks: the blob file, or for NV the TPM's trust file."""
    return trust_of(args) if args.nv else str(args.blob)


def run_reseal(args: argparse.Namespace) -> int:
    profile = profile_of(args)
    add = [read_values_file(f) for f in args.add_state]
    drop = [read_values_file(f) for f in args.drop_state]

    def new_policy(old: SealPolicy) -> SealPolicy:
        return old.change_states(add, drop, args.pcrs) if add or drop else \
            old.renewed(args.pcrs)

    rec = _trust(args, profile, required=not args.legacy, sealed=True)
    refuse_downgrade(args.legacy, rec, args.allow_downgrade)
    with locked(_lock_target(args)), open_tpm(args) as tpm:
        pin_given = bool(args.pin_file)
        store = _store(args, profile, rec, args.old_pcrs, pin_given, "--old-pcrs")
        pin = _pin_for(args, store, tpm)
        target = FileStore(args.output) if args.output else None
        if target is not None and args.nv:
            raise UsageError("--output applies to blob files, not --nv",
                             hint="drop --output: reseal --nv rewrites the NV indices in place")
        in_place = target is not None and (
            os.path.realpath(args.output) == os.path.realpath(args.blob))
        if (target is not None and not args.force and not in_place
                and first_candidate(tpm, target) is not None):
            raise UsageError(f"{args.output} already holds a sealed secret",
                             "choose another --output, or pass --force to replace it (its "
                             "secret is then lost)")
        blob = reseal(tpm, store, new_policy, _unseal_options(args, rec, pin), profile,
                      allow_unmeasured=args.allow_unmeasured, target=target,
                      force=args.force or in_place)
    log.info("resealed to %s", format_pcrs(blob.pcrs))
    if args.json:
        print_json({"command": "reseal", **_report(blob, target or store, profile)})
    return 0


def _test_load(tpm: Tpm, srk: int, private: bytes, public: Public,
               args: argparse.Namespace) -> None:
    """TPM2_Load then TPM2_FlushContext: a blob is written only for an object that loads."""
    from tpmseal.wire import commands as cmds
    from tpmseal.wire.rc import TpmResponseError

    try:
        loaded = tpm.run(cmds.Load(srk, private, public))
    except TpmResponseError as e:
        raise BadInputError(f"the TPM refuses to load the object in {args.public} and "
                            f"{args.private} under the SRK {srk:#x} ({e.one_line()})",
                            "it was sealed under another parent or another TPM, or the files "
                            "are damaged or do not belong together") from None
    tpm.flush(loaded.object_handle)


def run_import(args: argparse.Namespace) -> int:
    profile = profile_of(args)
    rec = _trust(args, profile, required=False)
    try:
        public = Public.from_sized(read_input(args.public, "public", limit=4096))
    except DecodeError as e:
        raise BadInputError(f"--public {args.public} is not a TPM2B_PUBLIC: {e.message}",
                            "pass the file `tpm2_create -u` wrote") from None
    try:
        private = parse_exact(read_input(args.private, "private", limit=4096),
                              lambda r: Reader.tpm2b(r, "TPM2B_PRIVATE"), "TPM2B_PRIVATE")
    except DecodeError as e:
        raise BadInputError(f"--private {args.private} is not a TPM2B_PRIVATE: {e.message}",
                            "pass the file `tpm2_create -r` wrote") from None
    out = FileStore(args.output)
    with open_tpm(args) as tpm:
        if not args.force and first_candidate(tpm, out) is not None:
            raise UsageError(f"{args.output} already exists", "pass --force to replace it")
        srk = rec.srk_handle if rec else profile.srk
        _test_load(tpm, srk, private, public, args)
        values = tpm.pcr_read(args.pcrs)
        if compute_policy(sealing.policy_steps(args.pcrs, values, False)) != public.auth_policy:
            log.warning("the object's policy is not PolicyPCR over %s with the current values: "
                        "unseal will look for the PCR list it covers, and fails if the values "
                        "themselves differ", format_pcrs(args.pcrs))
            values = {}
        blob = SealedBlob(
            public, private, args.pcrs, {k: values[k] for k in args.pcrs.pairs() if values}, srk,
            rec.srk_name if rec else tpm.name_of(srk),
            SaltKey(rec.ek_handle, rec.ek_public) if rec else None,
            ENCRYPTED if rec and rec.aes_128_cfb else LEGACY)
        out.save(tpm, blob, exclusive=not args.force)
    log.info("imported %s as %s (%s)", args.public, args.output, blob.sealed_with)
    if args.json:
        print_json({"command": "import", **_report(blob, out, profile),
                    "policy_matches": bool(values)})
    return 0


_REGISTER = {"seal": _register_seal, "unseal": _register_unseal, "reseal": _register_reseal,
             "import": _register_import}
