"""cli/quick.py reads a command line exactly as argparse does, or leaves it to argparse.

The quick reader runs the same ``register`` declarations as argparse; for every
line here its namespace must equal argparse's (values, defaults, handler), or it
must return None, and for help, errors and unusual spellings it must return None
so that argparse's own messages are printed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tpmseal.cli import quick
from tpmseal.cli.main import _declare, _quick_register, build_parser

G = ["--tpm", "unix:/tmp/x.sock", "--trust-file", "/tmp/t.json"]

#: lines the quick reader must read, and read as argparse does
READ = [
    [*G, "unseal", "--input", "b.json", "--output", "-"],
    ["unseal", "--input", "b.json"],
    ["-v", "--debug", "unseal", "--nv", "--profile", "eve", "--pcrs", "sha256:0,7"],
    ["--tpm=sim:/tmp/s", "unseal", "--input=b.json", "--policy", "a", "--policy", "b"],
    [*G, "seal", "--input", "k", "--output", "b.json", "--force", "--json"],
    ["seal", "--output", "b.json", "--pcr-values", "v1", "--pcr-values", "v2"],
    ["seal", "--output", "b.json", "--authorized-by", "s.pub", "--min-version-nv",
     "0x01500000"],
    ["seal", "--nv", "--pcrs", "sha256:0,1+sha384:7", "--legacy", "--allow-downgrade"],
    [*G, "vault-key", "--profile", "eve"],
    ["vault-key", "--output", "k", "--legacy"],
    ["vault-key"],
    [*G, "provision"],
    ["provision", "--ek-type", "ecc", "--repin", "--json"],
    ["reseal", "--input", "b.json", "--add-state", "s1", "--drop-state", "s2"],
    ["import", "--public", "p", "--private", "q", "--pcrs", "sha256:7", "--output", "o"],
    ["unseal", "--input", ""],
]

#: lines argparse must handle: help, version, errors, abbreviations, odd spellings
DEFER = [
    [], ["--help"], ["-h"], ["--version"], ["unseal", "--help"], ["unseal", "-h"],
    ["unseal"],  # the required --input/--nv missing
    ["unseal", "--input", "a", "--nv"],  # mutually exclusive
    ["unseal", "--inp", "a"],  # an abbreviation
    ["unseal", "--input"], ["unseal", "--input", "--output"], ["unseal", "--input", "-x"],
    ["unseal", "--bogus"], ["unseal", "extra"], ["unseal", "--input", "a", "--", "b"],
    ["unseal", "--input", "a", "--tpm", "x"],  # a global option after the command
    ["unseal", "--profile", "nope", "--input", "a"],
    ["seal", "--pcrs", "nope:1", "--output", "x"], ["seal", "--min-version-nv", "5"],
    ["unseal", "--input", "a", "--json=1"], ["-vd", "unseal", "--input", "a"],
    ["nosuch"], ["--tpm"],
]


def _argparse(argv: list[str]) -> dict[str, object]:
    return vars(build_parser(argv).parse_args(argv))


@pytest.mark.parametrize("argv", READ, ids=" ".join)
def test_quick_reads_as_argparse_does(argv: list[str]) -> None:
    got = quick.parse(argv, _declare, _quick_register)
    assert got is not None, "the quick reader deferred a plain line"
    assert vars(got) == _argparse(argv)


@pytest.mark.parametrize("argv", DEFER, ids=lambda a: " ".join(a) or "(empty)")
def test_quick_leaves_help_errors_and_odd_lines_to_argparse(argv: list[str]) -> None:
    assert quick.parse(argv, _declare, _quick_register) is None


def test_every_command_is_read_or_deferred_consistently() -> None:
    """Each sub-command without options: the quick reader agrees, or defers where
    argparse reports an error (a required option, a nested sub-command)."""
    from tpmseal.cli.main import COMMANDS

    for name in COMMANDS:
        got = quick.parse([name], _declare, _quick_register)
        try:
            want = _argparse([name])
        except SystemExit:
            assert got is None, name
            continue
        assert got is None or vars(got) == want, name


def test_unseal_parses_without_argparse() -> None:
    code = ("import sys; from tpmseal.cli import quick; "
            "from tpmseal.cli.main import _declare, _quick_register; "
            "ns = quick.parse(sys.argv[1:], _declare, _quick_register); "
            "assert ns is not None and 'argparse' not in sys.modules, sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *G, "unseal", "--input", "b.json"],
                          capture_output=True, env=dict(os.environ), check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
