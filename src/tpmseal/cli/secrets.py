"""Reading secrets and PINs for the CLI — from files, pipes or a terminal, never argv."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from tpmseal.errors import UsageError
from tpmseal.files import read_input, write_output

if TYPE_CHECKING:  # argparse loads only when parsing needs it (cli/quick.py)
    import argparse


def _prompt(text: str, what: str, instead: str) -> bytes:
    """A no-echo terminal prompt; end of input (Ctrl-D) there is a usage error."""
    import getpass  # only for a terminal prompt

    try:
        return getpass.getpass(text).encode()
    except EOFError:
        raise UsageError(f"no {what} entered (end of input at the prompt)",
                         f"type the {what}, or pass {instead}") from None


def read_secret(path: str) -> bytes:
    """The secret from a file, a pipe, or (on a terminal) a no-echo prompt."""
    if path == "-" and sys.stdin.isatty():
        first = _prompt("secret to seal: ", "secret", "--input FILE")
        if _prompt("again: ", "secret", "--input FILE") != first:
            raise UsageError("the two entries differ",
                             hint="type the same secret twice")
        return first
    data = read_input(path, "secret", limit=4096)
    if not data:
        raise UsageError(f"the secret read from {'stdin' if path == '-' else path} is empty",
                         "pipe the secret in or pass --input FILE")
    return data


def add_pin_options(p: argparse.ArgumentParser, *, prompt: bool) -> None:
    p.add_argument("--pin-file", metavar="FILE",
                   help="PIN for PolicyAuthValue (file content; one trailing newline ignored)")
    if prompt:
        p.add_argument("--pin", action="store_true",
                       help="ask for a PIN on the terminal (no echo)")


def read_pin(args: argparse.Namespace, *, needed: bool, confirm: bool) -> bytes | None:
    """The PIN from --pin-file, or from a terminal prompt when asked for or needed."""
    if args.pin_file:
        pin = read_input(args.pin_file, "PIN", limit=1024)
        pin = pin[:-1] if pin.endswith(b"\n") else pin
    elif getattr(args, "pin", False) or needed:
        try:
            with open("/dev/tty"):
                pass
        except OSError:
            why = ("this secret is protected by a PIN" if needed
                   else "--pin asks for the PIN on a terminal")
            raise UsageError(f"{why}, and there is no terminal", "pass --pin-file FILE") from None
        pin = _prompt("PIN: ", "PIN", "--pin-file FILE")
        if confirm and _prompt("PIN again: ", "PIN", "--pin-file FILE") != pin:
            raise UsageError("the two PINs differ",
                             hint="type the same PIN twice")
    else:
        return None
    if not pin:
        raise UsageError("the PIN is empty",
                         hint="give a PIN of 1 to 32 bytes")
    return pin


def write_secret(path: str | None, data: bytes) -> None:
    """Raw secret bytes to a 0600 file (atomically) or stdout — never to a terminal by default."""
    if path is None:
        if sys.stdout.isatty():
            raise UsageError("refusing to print the secret on a terminal",
                             "pipe it (e.g. into cryptsetup --key-file=-) or pass --output FILE "
                             "(--output - forces stdout)")
        path = "-"
    write_output(path, data)
