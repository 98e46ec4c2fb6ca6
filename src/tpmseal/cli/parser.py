"""argparse as tpmseal uses it: one-line errors with the usage exit code, a cheap formatter.

Loaded only when cli/quick.py leaves a command line to argparse (``--help``, an
error, an unusual spelling) and by tools/cli_docs.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from tpmseal.errors import ExitCode


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without :mod:`shutil` (and its bz2, lzma, fnmatch).

    argparse makes a formatter for every ``add_argument``, and the stock one
    imports shutil for the terminal width; this reads it as shutil does.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         width if width is not None else _columns() - 2)


def _columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    out = sys.__stdout__
    try:
        return (os.get_terminal_size(out.fileno()).columns if out else 0) or 80
    except (AttributeError, ValueError, OSError):
        return 80


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, the usage exit code and a cheap formatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """argparse's, refusing ``--name=--``: Python 3.11's argparse removes a ``--``
        given as an option's explicit value and sets the option to ``[]``: ``--tpm=--``
        would open the default TPM, ``reseal --output=--`` reseal in place."""
        words = sys.argv[1:] if args is None else list(args)
        for word in words:
            if word == "--":  # what follows is positional
                break
            if word.startswith("-") and word.partition("=")[2] == "--":
                self.error(f"{word}: '--' cannot be an option's value; for a file named "
                           "'--' write ./--")
        return super().parse_known_args(words, namespace)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}; see `{self.prog} --help`\n")
        raise SystemExit(ExitCode.USAGE)


