"""``tpmseal`` command-line entry point: global options, sub-commands, exit codes.

Every failure ends as one line on stderr — ``tpmseal: error: <what happened>;
<what to do>`` — and the exit code of its error class (README: exit codes). A
traceback is printed only with ``--debug``. Nothing here prints key material.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import sys

from tpmseal import __version__, interrupt, log
from tpmseal.cli import quick
from tpmseal.errors import ExitCode, TpmsealError, TrustError
from tpmseal.files import guard_stdio
from tpmseal.interrupt import Interrupted

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (cli/main.py: main)
if TYPE_CHECKING:  # argparse loads only when the command line needs it (cli/quick.py)
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    from tpmseal.cli.parser import Parser

    Handler = Callable[[argparse.Namespace], int]

#: Each sub-command and the module whose ``register(subparsers)`` defines it (its help
#: text lives there). Only the module of the command being run is imported, and only that
#: command's parser is built: start-up time is part of every ``tpmseal unseal`` in a boot
#: script.
COMMANDS: dict[str, str] = {
    "sim": "tpmseal.cli.sim",
    "probe": "tpmseal.cli.probe",
    "provision": "tpmseal.cli.provision",
    "seal": "tpmseal.cli.seal",
    "unseal": "tpmseal.cli.seal",
    "reseal": "tpmseal.cli.seal",
    "import": "tpmseal.cli.seal",
    "pcrs": "tpmseal.cli.pcrs",
    "policy": "tpmseal.cli.policy",
    "vault-key": "tpmseal.cli.vault",
    "demo": "tpmseal.cli.demo",
    "sniff": "tpmseal.cli.sniff",
    "decode": "tpmseal.cli.sniff",
    "luks": "tpmseal.cli.luks",
}
_GLOBAL_WITH_VALUE = ("--tpm", "--trust-file")

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


def _declare(parser: Any) -> Any:
    """Declare the global options on *parser*; its sub-command parsers' ``add_subparsers``.

    For argparse's parser and for cli/quick.py's recorder alike: declared once."""
    parser.add_argument("--tpm", metavar="URI",
                        help="TPM to use: device:/dev/tpmrm0 (default), unix:PATH, tcp:HOST:PORT, "
                             "sim:STATE_DIR, or a tpm2-tools TCTI (swtpm:path=P, "
                             "swtpm:host=H,port=N, mssim:..., device:PATH); default "
                             "$TPMSEAL_TPM, else $TPM2TOOLS_TCTI, else $TCTI")
    parser.add_argument("--trust-file", metavar="PATH",
                        help="pinned EK record written by provision (default "
                             "$TPMSEAL_TRUST_FILE or /var/lib/tpmseal/trust.json)")
    parser.add_argument("--debug", action="store_true",
                        help="debug logging and tracebacks (never prints key material)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log the flow: TPM commands, counts, timing (never secrets)")
    parser.add_argument("--version", action="version", version=f"tpmseal {__version__}")
    return parser.add_subparsers(dest="command", metavar="COMMAND", required=True)


def _module(name: str) -> Any:
    """The module *name*, imported with the built-in ``__import__``: the ``importlib``
    package is ~0.15 ms of start-up that nothing else on the unseal path imports."""
    __import__(name)
    return sys.modules[name]


def _register(sub: Any, wanted: str) -> None:
    """Declare the sub-command *wanted* (only its parser: each costs start-up time)."""
    module = _module(COMMANDS[wanted])
    one = getattr(module, "register_one", None)
    if one is not None:
        one(sub, wanted)
    else:
        module.register(sub)


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """The argparse parser; with *argv*, only the named command's module is imported."""
    from tpmseal.cli.parser import Parser

    parser = Parser(
        prog="tpmseal",
        description="Seal a secret into a TPM 2.0 under a PCR policy and unseal it, "
                    "with the secret never crossing the TPM bus in plaintext.")
    sub = _declare(parser)
    wanted = _command_in(argv) if argv is not None else None
    if wanted in COMMANDS:
        # gettext looks for translations on disk for every message of every parser
        _register(sub, wanted)
        return parser
    if argv is not None and "--version" in argv:
        return parser  # answered before any command is looked at
    for name in dict.fromkeys(COMMANDS.values()):
        _module(name).register(sub)
    return parser


def _quick_register(sub: Any, wanted: str) -> None:
    if wanted in COMMANDS:
        _register(sub, wanted)


def _interrupted(e: KeyboardInterrupt) -> int:
    import signal  # only to name it: its IntEnums cost start-up (interrupt.py)

    code = e.exit_code if isinstance(e, Interrupted) else 130
    name = signal.Signals(code - 128).name
    sys.stderr.write(f"tpmseal: error: interrupted by {name}; run the command again to "
                     "complete it\n")
    return code


def _flush_stdout() -> int:
    """Flush what the command printed; a full or vanished stdout is a one-line error."""
    try:
        sys.stdout.flush()
    except OSError as e:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if e.errno != errno.EPIPE:
            sys.stderr.write(f"tpmseal: error: cannot write stdout: {e.strerror or e}; "
                             "free space or connect stdout to a writable file\n")
        return int(ExitCode.USAGE)
    return 0


def _configure_logging(level: int) -> None:
    import logging
    logging.basicConfig(level=level, format="tpmseal: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; its exit code (README: exit codes).

    The cyclic garbage collector is off while the command's modules load. Its
    thresholds trip every few hundred allocations, and then it walks the tracked
    objects of its generations: the ~15,000 that loading an unseal's ~120 modules
    creates, all of which live until exit; its collections took 3-5 ms of a ~50 ms
    unseal. Once they are loaded they are frozen (:func:`gc.freeze`: left out of every
    later collection) and the collector runs again for the command itself, which may be
    a long capture; on return they are unfrozen, for a caller that goes on. A caller
    that keeps the collector off, or has frozen objects of its own, finds both as it
    left them.
    """
    guard_stdio()
    collecting = gc.isenabled()
    freezing = collecting and gc.get_freeze_count() == 0
    gc.disable()
    try:
        with interrupt.installed():
            rc = _main(sys.argv[1:] if argv is None else list(argv), collecting, freezing)
            return rc or _flush_stdout()
    except KeyboardInterrupt as e:  # a second signal while unwinding the first
        return _interrupted(e)
    finally:
        if freezing:
            gc.unfreeze()
        if collecting:
            gc.enable()


def _main(argv: list[str], collecting: bool, freezing: bool) -> int:
    try:
        args = quick.parse(argv, _declare, _quick_register)
        if args is None:  # help, an error, or an unusual line: argparse decides
            args = build_parser(argv).parse_args(argv)
    except KeyboardInterrupt as e:
        return _interrupted(e)
    if freezing:  # the command's modules are loaded (main's docstring)
        gc.freeze()
    if collecting:
        gc.enable()
    level = log.DEBUG if args.debug else log.INFO if args.verbose else log.WARNING
    if level < log.WARNING:
        _configure_logging(level)
    else:  # most runs log nothing: import logging only for a warning
        log.on_first_use(lambda: _configure_logging(level))
    handler: Handler = args.handler
    try:
        return handler(args)
    except TpmsealError as e:
        if args.debug:
            import logging
            logging.exception("failed")
        if isinstance(e, TrustError):  # raised below the layer that knows the file
            from tpmseal.recipes.trust import name_file, trust_path

            name_file(e, trust_path(getattr(args, "trust_file", None)))
        sys.stderr.write(f"tpmseal: error: {e.one_line()}\n")
        return int(e.exit_code)
    except KeyboardInterrupt as e:
        return _interrupted(e)
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `tpmseal pcrs | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.USAGE)
    except Exception as e:
        if args.debug:
            raise
        sys.stderr.write(f"tpmseal: internal error: {type(e).__name__}; rerun with --debug "
                         "and report it\n")
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
