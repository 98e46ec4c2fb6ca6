"""``tpmseal`` command-line entry point: global options, sub-commands, exit codes.

Every failure ends as one line on stderr — ``tpmseal: error: <what happened>;
<what to do>`` — and the exit code of its error class (README: exit codes). A
traceback is printed only with ``--debug``. Nothing here prints key material.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from tpmseal.errors import ExitCode, TpmsealError

#: Each sub-command, the module whose ``register(subparsers)`` defines it, and a summary.
#: Only the module of the command being run is imported: start-up time is part of every
#: ``tpmseal unseal`` in a boot script.
COMMANDS: dict[str, tuple[str, str]] = {
    "sim": ("tpmseal.cli.sim", "start, stop or inspect an swtpm simulator"),
    "probe": ("tpmseal.cli.probe", "describe the TPM: vendor, PCR banks, AES-CFB, keys"),
    "provision": ("tpmseal.cli.provision",
                  "create the EK and SRK if missing and pin them in the trust file"),
    "seal": ("tpmseal.cli.seal", "seal a secret under a PCR policy"),
    "unseal": ("tpmseal.cli.seal", "unseal a secret to stdout or a file"),
    "reseal": ("tpmseal.cli.seal", "move a sealed secret to a new PCR policy, crash-safely"),
    "import": ("tpmseal.cli.seal", "wrap a tpm2-tools sealed object into a tpmseal blob"),
    "pcrs": ("tpmseal.cli.pcrs", "show PCR values or recover a sealed object's PCR list"),
    "policy": ("tpmseal.cli.policy", "signing keys and signed PCR policies (PolicyAuthorize)"),
    "vault-key": ("tpmseal.cli.vault",
                  "get the vault key: generate+seal, migrate a legacy key, or unseal"),
    "demo": ("tpmseal.cli.demo", "seal/unseal a key on a simulator with the bus sniffed"),
    "sniff": ("tpmseal.cli.sniff", "TPM bus sniffer: proxy, decoder, leak scanner"),
    "decode": ("tpmseal.cli.sniff", "decode a saved capture (JSON lines, pcap, raw)"),
}
_GLOBAL_WITH_VALUE = ("--tpm", "--trust-file")

Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and the usage exit code."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}; see `{self.prog} --help`\n")
        raise SystemExit(ExitCode.USAGE)


def _command_in(argv: Sequence[str]) -> str | None:
    """The sub-command named in *argv* (the first word that is not a global option)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _GLOBAL_WITH_VALUE:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """The parser; with *argv*, only the named command's module is imported."""
    parser = Parser(
        prog="tpmseal",
        description="Seal a secret into a TPM 2.0 under a PCR policy and unseal it, "
                    "with the secret never crossing the TPM bus in plaintext.")
    parser.add_argument("--tpm", metavar="URI",
                        help="TPM to use: device:/dev/tpmrm0 (default), unix:PATH, tcp:HOST:PORT "
                             "or sim:STATE_DIR; also $TPMSEAL_TPM")
    parser.add_argument("--trust-file", metavar="PATH",
                        help="pinned EK record written by provision (default "
                             "$TPMSEAL_TRUST_FILE or /var/lib/tpmseal/trust.json)")
    parser.add_argument("--debug", action="store_true",
                        help="debug logging and tracebacks (never prints key material)")
    parser.add_argument("-v", "--verbose", action="store_true", help="informational logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    wanted = _command_in(argv) if argv is not None else None
    modules = ([COMMANDS[wanted][0]] if wanted in COMMANDS
               else list(dict.fromkeys(m for m, _ in COMMANDS.values())))
    for name in modules:
        importlib.import_module(name).register(sub)
    for name, (_, summary) in COMMANDS.items():
        if name not in sub.choices:  # listed in --help, loaded when used
            sub.add_parser(name, help=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        sys.stderr.write("tpmseal: interrupted\n")
        return 130
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="tpmseal: %(message)s", stream=sys.stderr)
    handler: Handler = args.handler
    try:
        return handler(args)
    except TpmsealError as e:
        if args.debug:
            logging.exception("failed")
        sys.stderr.write(f"tpmseal: error: {e.one_line()}\n")
        return int(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("tpmseal: interrupted\n")
        return 130
    except BrokenPipeError:
        # the reader of our stdout went away; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.INTERNAL)
    except Exception as e:
        if args.debug:
            raise
        sys.stderr.write(f"tpmseal: internal error: {type(e).__name__}; rerun with --debug "
                         "and report it\n")
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
