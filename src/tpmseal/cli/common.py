"""Helpers shared by the sub-commands: opening the TPM, common options, output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tpmseal.client.tpm import Tpm
from tpmseal.recipes.profiles import PROFILES, Profile, get_profile
from tpmseal.recipes.trust import trust_path


def open_tpm(args: argparse.Namespace) -> Tpm:
    """The TPM named by --tpm / $TPMSEAL_TPM / the default device."""
    return Tpm.open(args.tpm)


def add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=sorted(PROFILES), default="tcg",
                   help="handle layout: tcg (TCG conventions, default) or eve (LF Edge EVE)")


def profile_of(args: argparse.Namespace) -> Profile:
    return get_profile(args.profile)


def trust_of(args: argparse.Namespace) -> Any:
    return trust_path(args.trust_file)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def add_accept_sealed_object(p: argparse.ArgumentParser) -> None:
    """--accept-sealed-object: re-pin the object in EVE's NV layout (recipes/stores.py)."""
    p.add_argument("--accept-sealed-object", action="store_true",
                   help="with --nv / vault-key: accept the sealed object now in NV although "
                        "the trust file pins another one (after other software such as EVE "
                        "re-sealed it), and pin it")
