"""``tpmseal pcrs show | recover``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tpmseal.cli.common import add_json, add_profile, open_tpm, print_json, profile_of, record_of
from tpmseal.cli.probe import UNAUTHENTICATED
from tpmseal.cli.seal import _pcr_spec
from tpmseal.errors import PolicyMismatchError
from tpmseal.recipes import recovery, trust
from tpmseal.recipes.pcrspec import bank_name, format_pcrs
from tpmseal.recipes.stores import FileStore, NvStore, Store, require_candidates
from tpmseal.wire.constants import TPM_ALG, TPMA_SESSION


def register(sub: Any) -> None:
    p = sub.add_parser("pcrs", help="show PCR values or recover a sealed object's PCR list")
    psub = p.add_subparsers(dest="pcrs_command", metavar="ACTION", required=True)
    show = psub.add_parser("show", help="print the current values of PCRs")
    add_profile(show)
    show.add_argument("--pcrs", metavar="SPEC", type=_pcr_spec,
                      help="PCRs to show (default: the profile's list)")
    add_json(show, 'one JSON object: {BANK: {INDEX: HEX}}, plus "authenticated"')
    show.add_argument("--authenticated", action="store_true",
                      help="read through an audit session salted with the pinned EK (needs "
                           "`tpmseal provision`), so an interposer cannot change the values")
    show.set_defaults(handler=run_show)
    rec = psub.add_parser("recover", help="find which PCRs a sealed object's policy covers",
                          description="Match the sealed object's authPolicy against the "
                                      "profile's default PCRs, then every subset of PCRs 0-15, "
                                      "with the current PCR values.")
    add_profile(rec)
    g = rec.add_mutually_exclusive_group(required=True)
    g.add_argument("--input", metavar="BLOB.json", dest="blob")
    g.add_argument("--nv", action="store_true", help="EVE's NV layout")
    add_json(rec, 'print {"pcrs": SPEC, "pin": bool} as one JSON object')
    rec.set_defaults(handler=run_recover)


def run_show(args: argparse.Namespace) -> int:
    profile = profile_of(args)
    sel = args.pcrs or profile.default_pcrs
    rec = record_of(args, profile, required=True) if args.authenticated else None
    with open_tpm(args) as tpm:
        if rec is None:
            values = tpm.pcr_read(sel)
        else:  # the PCR_Read responses carry HMACs keyed with the salt
            s = trust.salted_session(tpm, rec, TPMA_SESSION.continueSession
                                     | TPMA_SESSION.audit)
            with tpm.scoped(s.handle):
                values = tpm.pcr_read(sel, s)
    if args.json:
        out: dict[str, Any] = {}
        for (bank, i), v in values.items():
            out.setdefault(bank_name(bank), {})[str(i)] = v.hex()
        print_json(out | {"authenticated": rec is not None})
    else:
        for (bank, i), v in values.items():
            print(f"{bank_name(bank)}:{i:<2} {v.hex()}")
        if rec is None:
            print(f"(not authenticated: {UNAUTHENTICATED})", file=sys.stderr)
    return 0


def run_recover(args: argparse.Namespace) -> int:
    profile = profile_of(args)
    rec = record_of(args, profile, required=False)
    with open_tpm(args) as tpm:
        store: Store = (NvStore.for_profile(profile, None, rec) if args.nv
                        else FileStore(Path(args.blob)))
        blob = next(require_candidates(tpm, store))
        if rec is None or not rec.aes_128_cfb:
            found = recovery.recover(tpm, blob.public, blob.pcrs)
        else:  # "no match" reports a change: only on values that carried an HMAC
            s = trust.salted_session(tpm, rec, TPMA_SESSION.continueSession
                                     | TPMA_SESSION.audit)
            with tpm.scoped(s.handle):
                found = recovery.recover(tpm, blob.public, blob.pcrs, TPM_ALG.SHA256, s)
    if found is None:
        raise PolicyMismatchError(
            "no selection of PCRs 0-15 with their current values matches the sealed object's "
            "policy: the PCR values themselves changed since sealing"
            + ("" if rec is not None and rec.aes_128_cfb
               else " (values read without bus protection: no trust record)"),
            hint=("if the change is expected, reseal with `tpmseal reseal --pcrs SPEC` from a "
                 "trusted boot"))
    sel, pin = found
    if args.json:
        print_json({"pcrs": format_pcrs(sel), "pin": pin})
    else:
        print(format_pcrs(sel) + (" (with PIN)" if pin else ""))
    return 0

