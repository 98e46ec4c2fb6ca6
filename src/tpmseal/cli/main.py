"""``tpmseal`` command-line entry point: global options, sub-commands, exit codes.

Every failure ends as one line on stderr — ``tpmseal: error: <what happened>;
<what to do>`` — and the exit code of its error class (README: exit codes). A
traceback is printed only with ``--debug``. Nothing here prints key material.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from tpmseal.errors import ExitCode, TpmsealError, UsageError

#: Modules that each define ``register(subparsers)``; imported lazily by name.
COMMAND_MODULES = (
    "tpmseal.cli.sim",
    "tpmseal.cli.probe",
    "tpmseal.cli.provision",
    "tpmseal.cli.seal",
    "tpmseal.cli.pcrs",
    "tpmseal.cli.vault",
    "tpmseal.cli.demo",
    "tpmseal.cli.sniff",
)

Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and the usage exit code."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}; see `{self.prog} --help`\n")
        raise SystemExit(ExitCode.USAGE)


def build_parser() -> Parser:
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
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


def require(condition: bool, message: str, hint: str | None = None) -> None:
    """Raise a :class:`UsageError` unless *condition* holds."""
    if not condition:
        raise UsageError(message, hint)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
