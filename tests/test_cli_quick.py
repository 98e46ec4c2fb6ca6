"""cli/quick.py reads a command line exactly as argparse does, or leaves it to argparse.

The quick reader runs the same ``register`` declarations as argparse; for every
line here its namespace must equal argparse's (values, defaults, handler), or it
must return None, and for help, errors and unusual spellings it must return None
so that argparse's own messages are printed.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys

import pytest

from tpmseal.cli import quick
from tpmseal.cli.main import COMMANDS, _declare, _quick_register, build_parser, main

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
    ["unseal", "--input=a=--"],  # the value a=--: only a bare "--" value is argparse's
    # the boot-time unlock: a nested sub-command and positional arguments
    ["luks", "passphrase", "/dev/sda2"],
    [*G, "luks", "passphrase", "/dev/sda2", "--token-id", "1", "--output", "-"],
    ["luks", "passphrase", "--token-type", "tpmseal", "img", "--pin-file", "-"],
    ["luks", "unlock", "img", "data", "--readonly"],
    ["luks", "unlock", "--allow-discards", "img", "--profile", "eve", "data"],
    ["luks", "test", "img", "--policy", "a", "--policy", "b", "--json"],
    ["luks", "list", "-"], ["luks", "passphrase", ""],
    ["luks", "remove", "img", "--token-id", "3"],
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
    # argparse 3.11 drops an explicit "--" value (the option becomes []): never read as "--"
    ["unseal", "--input", "a", "--output=--"], ["--tpm=--", "unseal", "--input", "a"],
    ["luks"], ["luks", "--help"], ["luks", "passphrase"], ["luks", "passphrase", "--help"],
    ["luks", "nosuch", "img"], ["luks", "passphrase", "a", "b"], ["luks", "unlock", "img"],
    ["luks", "passphrase", "-x"], ["luks", "passphrase", "-1"],
    ["luks", "--token-id", "1", "passphrase", "img"],  # an option before its sub-command
    ["luks", "passphrase", "img", "--token-id", "one"], ["luks", "remove", "img"],
    ["luks", "passphrase", "img", "--", "x"], ["luks", "passphrase", "--", "img"],
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


#: values for generated lines: options' values, choices, odd spellings argparse treats apart
_VALUES = ["x", "-", "", "--", "-x", "-1", "a=b", "=", "sha256:7", "eve", "tcg", "0x01500000",
           "5", "ecc", "auto", "a b", "-a b", "--input", "unseal", "1e3", " ", "x=--", "=--",
           "-h", "--version"]


def _commands() -> list[tuple[list[str], list[str], int, list[str]]]:
    """Each command as (its words, its flags, its positionals, the global flags), the
    sub-commands of a nested one (``luks passphrase``) each on its own."""
    out = []
    for name in COMMANDS:
        top = quick.Declared()
        commands = _declare(top)
        _quick_register(commands, name)
        parser = commands.parsers.get(name)
        if parser is None:
            continue
        nested = parser.commands.parsers.items() if parser.commands else [(None, parser)]
        for sub, p in nested:
            if p.flags:
                out.append(([name] if sub is None else [name, sub], list(p.flags),
                            len(p.positionals), list(top.flags)))
    return out


def _generated(rng: random.Random, words: list[str], flags: list[str], positionals: int,
               top: list[str]) -> list[str]:
    line: list[str] = []
    for _ in range(rng.randint(0, 2)):
        line.append(rng.choice(top))
        if line[-1] in ("--tpm", "--trust-file"):
            line.append(rng.choice(_VALUES))
    line += words
    free = rng.choice([positionals, positionals, max(0, positionals - 1), positionals + 1])
    for _ in range(rng.randint(0, 6) + free):
        if free and rng.random() < 0.4:
            free -= 1
            line.append(rng.choice(_VALUES))
            continue
        flag, r = rng.choice(flags), rng.random()
        if r < 0.1:
            flag = flag[:rng.randint(3, max(3, len(flag) - 1))]  # an abbreviation
        if r < 0.3:
            line.append(f"{flag}={rng.choice(_VALUES)}")
        elif r < 0.35:
            line.append(rng.choice(_VALUES))
        else:
            line += [flag, rng.choice(_VALUES)] if rng.random() < 0.7 else [flag]
    return line


def test_generated_lines_are_read_as_argparse_does_or_deferred() -> None:
    """Random lines over every command's own flags, abbreviations, ``--opt=value``,
    repeated and misplaced options and odd values: whatever the quick reader reads,
    argparse must accept with the same namespace (before the fix, ``--output=--``
    was the file "--" here and [] for argparse)."""
    rng, read, nested = random.Random(20261201), 0, 0
    for declared in _commands():
        for _ in range(400):
            argv = _generated(rng, *declared)
            got = quick.parse(argv, _declare, _quick_register)
            if got is None:
                continue
            read += 1
            nested += len(declared[0]) > 1
            with contextlib.redirect_stderr(io.StringIO()):
                assert vars(got) == _argparse(argv), argv
    assert read > 200, "the generator no longer makes lines the quick reader reads"
    assert nested > 100, "nor nested sub-commands with positional arguments"


@pytest.mark.parametrize("argv", [["unseal", "--input", "a", "--output=--"],
                                  ["unseal", "--inp", "a", "--output=--"],
                                  ["--tpm=--", "seal", "--output", "b"]], ids=" ".join)
def test_double_dash_as_an_explicit_value_is_a_usage_error(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """argparse would set the option to [] (read as absent: the default TPM, a reseal in
    place; or an internal error after the unseal): one line, exit 2, nothing run."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be an option's value" in err, err
