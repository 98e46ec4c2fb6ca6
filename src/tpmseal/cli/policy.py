"""``tpmseal policy keygen | sign``: a vendor's signing key and signed PCR policies."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tpmseal.cli.common import add_json, add_profile, open_tpm, print_json, profile_of, record_of
from tpmseal.cli.seal import _nv_index, _pcr_spec
from tpmseal.errors import BadInputError, UsageError
from tpmseal.files import write_atomic
from tpmseal.log import get_logger
from tpmseal.recipes import pcrspec, revocation, signed, signer, trust
from tpmseal.recipes.blob import read_values_file
from tpmseal.recipes.policies import PcrValues
from tpmseal.session.policy import pcr_digest
from tpmseal.wire.constants import TPM_ALG, TPMA_SESSION
from tpmseal.wire.structures import PcrSelectionList

log = get_logger("tpmseal.cli")


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="signing keys and signed PCR policies (PolicyAuthorize)")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    kg = psub.add_parser("keygen", help="make a policy signing key",
                         description="Write a private key (PEM, mode 0600) and its public key "
                                     "next to it (NAME.pub), for `seal --authorized-by`.")
    kg.add_argument("--output", required=True, metavar="KEY.pem", help="private key file")
    kg.add_argument("--type", choices=("ecc", "rsa"), default="ecc",
                    help="ecc: ECDSA P-256 (default); rsa: RSA-2048 (needed by systemd)")
    kg.add_argument("--force", action="store_true", help="replace existing key files")
    add_json(kg, 'print {"command", "private", "public", "type", "fingerprint"}')
    kg.set_defaults(handler=run_keygen)
    sg = psub.add_parser("sign", help="sign the PCR values of a release",
                         description="Sign approvedPolicy = PolicyPCR over the given PCR "
                                     "values; a secret sealed with --authorized-by the key "
                                     "then unseals in that state with no reseal.")
    add_profile(sg)
    sg.add_argument("--key", required=True, metavar="KEY.pem", help="private signing key")
    sg.add_argument("--pcrs", required=True, metavar="SPEC", type=_pcr_spec,
                    help="the PCRs the policy covers, e.g. sha256:0,4,7")
    src = sg.add_mutually_exclusive_group(required=True)
    src.add_argument("--pcr-values", metavar="FILE",
                     help="expected values as `pcrs show --json` prints them")
    src.add_argument("--current", action="store_true",
                     help="this TPM's current values (read authenticated when provisioned)")
    sg.add_argument("--version", type=int, default=None, metavar="N",
                    help="release version (newest tried first); with --nv-index the policy "
                         "holds only while the device's counter is at most N")
    sg.add_argument("--nv-index", type=_nv_index, metavar="INDEX",
                    help="revocation counter the devices seal with (--min-version-nv)")
    sg.add_argument("--output", required=True, metavar="POLICY.json")
    sg.add_argument("--format", choices=("tpmseal", "systemd"), default="tpmseal",
                    help="systemd: systemd-measure's tpm2-pcr-signature.json shape (sha256 "
                         "PCRs, no --nv-index), which tpmseal reads too")
    add_json(sg, 'print {"command", "output", "pcrs", "approved_policy", "version", '
                         '"nv_index", "format"}')
    sg.set_defaults(handler=run_sign)
    rv = psub.add_parser("revoke-below", help="revoke every signed policy older than N",
                         description="Increment the revocation counter to N: policies signed "
                                     "with a version below N then fail PolicyNV on this TPM.")
    add_profile(rv)
    rv.add_argument("version", type=int, metavar="N")
    rv.add_argument("--nv-index", type=_nv_index, required=True, metavar="INDEX",
                    help="the counter given to seal --min-version-nv")
    add_json(rv, 'print {"command", "nv_index", "counter", "authenticated"}')
    rv.set_defaults(handler=run_revoke)


def run_keygen(args: argparse.Namespace) -> int:
    out = Path(args.output)
    pub = signer.public_path(out)
    if out.suffix == ".pub":
        raise UsageError("--output names the private key; the public key goes to NAME.pub",
                         "pass e.g. --output signer.pem")
    for f in (out, pub):
        if f.exists() and not args.force:
            raise UsageError(f"{f} already exists", "pass --force to replace it")
    key = signer.generate_key(args.type)
    signer.write_keypair(key, out)
    fp = signer.fingerprint(key.public_key()).hex()
    log.info("wrote %s (private, 0600) and %s (public, fingerprint %s)", out, pub, fp)
    if args.json:
        print_json({"command": "policy keygen", "private": str(out), "public": str(pub),
                    "type": args.type, "fingerprint": fp})
    return 0


def values_digest(sel: PcrSelectionList, values: PcrValues, where: str) -> bytes:
    missing = [f"{pcrspec.bank_name(b)}:{i}" for b, i in sel.pairs() if (b, i) not in values]
    if missing:
        raise BadInputError(f"{where} has no value for {', '.join(missing)}",
                            "read the values with the same --pcrs")
    return pcr_digest(TPM_ALG.SHA256, [values[k] for k in sel.pairs()])


def run_sign(args: argparse.Namespace) -> int:
    key = signer.load_private(args.key)
    if args.version is not None and args.version < 0:
        raise UsageError("--version must be 0 or more", "give the release number, e.g. --version 7")
    if args.current:
        profile = profile_of(args)
        rec = record_of(args, profile, required=False)
        with open_tpm(args) as tpm:
            if rec is None:
                log.warning("no pinned EK: reading the PCR values without authentication")
                values = tpm.pcr_read(args.pcrs)
            else:
                s = trust.salted_session(tpm, rec, TPMA_SESSION.continueSession
                                         | TPMA_SESSION.audit)
                with tpm.scoped(s.handle):
                    values = tpm.pcr_read(args.pcrs, s)
        where = "the TPM"
    else:
        values, where = read_values_file(args.pcr_values), args.pcr_values
    if args.nv_index is not None and args.version is None:
        raise UsageError("--nv-index needs --version", "give the release's --version N")
    pol = signed.sign(key, args.pcrs, values_digest(args.pcrs, values, where),
                      version=args.version, nv_index=args.nv_index)
    text = pol.to_systemd_json() if args.format == "systemd" else pol.to_json()
    write_atomic(args.output, text.encode(), 0o644)
    log.info("signed %s (approvedPolicy %s)", pcrspec.format_pcrs(args.pcrs),
             pol.approved_policy.hex())
    if args.json:
        print_json({"command": "policy sign", "output": args.output,
                    "pcrs": pcrspec.format_pcrs(args.pcrs),
                    "approved_policy": pol.approved_policy.hex(), "version": args.version,
                    "nv_index": None if args.nv_index is None else f"{args.nv_index:#010x}",
                    "format": args.format})
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    profile = profile_of(args)
    rec = record_of(args, profile, required=False)
    if rec is None:  # NV_Increment's index joins no HMAC: only an audited read tells
        raise UsageError("revoke-below verifies the counter through the pinned endorsement "
                         "key, and there is no trust record for this profile",
                         "run `tpmseal provision` first, or pass the right --trust-file "
                         "and --profile")
    with open_tpm(args) as tpm:
        s = trust.salted_session(tpm, rec)
        with tpm.scoped(s.handle):
            final = revocation.revoke_below(tpm, args.nv_index, args.version, s)
    log.info("NV %#x is at %d: policies with a version below %d are revoked", args.nv_index,
             final, final)
    if args.json:
        print_json({"command": "policy revoke-below", "nv_index": f"{args.nv_index:#010x}",
                    "counter": final, "authenticated": True})
    return 0
