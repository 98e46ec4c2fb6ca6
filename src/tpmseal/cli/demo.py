"""``tpmseal demo``: seal and unseal on both paths with a sniffer on the bus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tpmseal.cli.common import add_json, print_json
from tpmseal.recipes import demo
from tpmseal.sniff.analysis.record import safe_decode_command
from tpmseal.sniff.analysis.render import color_enabled, command_lines, response_lines, secret_spans
from tpmseal.wire.constants import TPM_CC

_TITLES = {
    "legacy": "Legacy path: password session, no parameter encryption "
              "(what a TPM without AES-128-CFB allows)",
    "encrypted": "Encrypted path: EK-salted sessions, AES-128-CFB on Create and Unseal, "
                 "response HMACs checked",
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="seal/unseal a key on a simulator with the bus sniffed, both paths",
        description="Start an swtpm simulator with the sniffer in front, provision it (EK "
                    "certificate checked against its CA), seal and unseal a random 32-byte "
                    "key on the legacy and the encrypted path, and show the bus bytes with "
                    "the key highlighted wherever it appears.")
    p.add_argument("--state", metavar="DIR", type=Path,
                   help="keep the simulator state here (default: a temporary directory)")
    add_json(p, "machine-readable summary")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    result = demo.run(args.state)
    if args.json:
        print_json({
            "ek": {"handle": f"{result.provisioned.ek.handle:#010x}",
                   "certificate": result.provisioned.ek_certificate},
            "paths": [{"path": r.path, "leaked_in": r.leaked_in, "verdict": r.verdict,
                       "seal_commands": [e.name for e in r.seal],
                       "unseal_commands": [e.name for e in r.unseal]} for r in result.runs],
        })
        return 0
    color = color_enabled(args.color, sys.stdout)
    p = result.provisioned
    print(f"simulator provisioned: EK {p.ek.handle:#010x} (certificate {p.ek_certificate}), "
          f"SRK {p.srk.handle:#010x}; AES-128-CFB "
          f"{'supported' if p.aes_128_cfb else 'not supported'}")
    print("sealing one random 32-byte key to sha256:0,1,2,3,4,6,7 on each path; the key's "
          "bytes are highlighted wherever they cross the bus\n")
    for r in result.runs:
        print("#" * 78)
        print(f"# {_TITLES[r.path]}")
        print(f"# seal: {', '.join(e.name for e in r.seal)}")
        print(f"# unseal: {', '.join(e.name for e in r.unseal)}")
        print("#" * 78)
        secrets = [result.secret]
        create, unseal = r.exchange(TPM_CC.Create), r.exchange(TPM_CC.Unseal)
        print("\n".join(command_lines(create.command, secret_spans(create.command, secrets),
                                       color=color)))
        print()
        print("\n".join(command_lines(unseal.command, color=color)))
        if unseal.response is not None:
            print("\n".join(response_lines(unseal.response, safe_decode_command(unseal.command),
                                            secret_spans(unseal.response, secrets),
                                            color=color)))
        print()
    for r in result.runs:
        print(r.verdict)
    return 0
