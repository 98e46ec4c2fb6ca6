"""Loggers that import :mod:`logging` only when a record could be shown.

Importing :mod:`logging` (with :mod:`traceback`, :mod:`threading`, :mod:`string`...)
costs several milliseconds of every ``tpmseal unseal``, which by default logs
nothing. A :class:`Logger` here drops debug and info records while no one has
imported :mod:`logging` (then no handler could be configured to show them) and
hands everything else to the real logger of the same name. Warnings therefore
still reach whoever configured logging, or the CLI's handler, installed on first
use through :func:`on_first_use`.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (cli/main.py: main)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DEBUG, INFO, WARNING = 10, 20, 30

_setup: list[Callable[[], None]] = []


def on_first_use(setup: Callable[[], None]) -> None:
    """Run *setup* (e.g. ``logging.basicConfig``) before the first record is emitted."""
    _setup.append(setup)


class Logger:
    """The ``debug``/``info``/``warning`` subset of :class:`logging.Logger`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def _log(self, level: int, msg: str, args: tuple[Any, ...]) -> None:
        if level < WARNING and "logging" not in sys.modules:
            return
        import logging
        while _setup:
            _setup.pop(0)()
        logging.getLogger(self.name).log(level, msg, *args, stacklevel=3)

    def debug(self, msg: str, *args: Any) -> None:
        self._log(DEBUG, msg, args)

    def info(self, msg: str, *args: Any) -> None:
        self._log(INFO, msg, args)

    def warning(self, msg: str, *args: Any) -> None:
        self._log(WARNING, msg, args)


def get_logger(name: str) -> Logger:
    return Logger(name)
