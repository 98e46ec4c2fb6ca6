"""interrupt.installed: the handlers it sets are the caller's again afterwards, even when
a signal arrives while it sets or restores them (real signals to this process)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest

from tpmseal import interrupt

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


@pytest.fixture
def callers_handlers() -> Iterator[tuple[list[int], dict[int, Any]]]:
    """A caller's own handlers (a recorder for SIGINT and SIGTERM, SIGCHLD ignored),
    put back after the test whatever it left."""
    got: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    before = {s: signal.getsignal(s) for s in HANDLED}
    mine: dict[int, Any] = {signal.SIGINT: record, signal.SIGTERM: record,
                            signal.SIGCHLD: signal.SIG_IGN}
    for s, h in mine.items():
        signal.signal(s, h)
    try:
        yield got, mine
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def _signal_on_call(nth: int, signum: int) -> Callable[..., None]:
    """A profile function sending *signum* to this process as the *nth* call of
    signal.signal begins: Python runs a signal's handler as such a call starts."""
    calls = [0]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and (getattr(arg, "__module__", None), getattr(
                arg, "__name__", None)) == ("_signal", "signal"):  # signal.signal's C part
            calls[0] += 1
            if calls[0] == nth:
                os.kill(os.getpid(), signum)

    return profile


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("nth", [1, 2, 3, 4, 5, 6])
def test_a_signal_while_handlers_are_set_or_restored(
        callers_handlers: tuple[list[int], dict[int, Any]], nth: int, signum: int) -> None:
    """Calls 1-3 set SIGINT's, SIGTERM's and SIGCHLD's handlers, 4-6 restore them. A
    signal there used to leave the rest as they were: SIGTERM raising Interrupted in the
    caller ever after, SIGCHLD at its default (its children's zombies unreaped)."""
    got, mine = callers_handlers
    ended = False
    sys.setprofile(_signal_on_call(nth, signum))
    try:
        with interrupt.installed():
            if nth > 3:
                sys.setprofile(_signal_on_call(nth - 3, signum))
            ended = True
    except interrupt.Interrupted as e:
        assert e.signum == signum
        got.append(signum)
    finally:
        sys.setprofile(None)
    assert {s: signal.getsignal(s) for s in HANDLED} == mine
    assert got == [signum]  # seen once: as Interrupted, or by the caller's handler
    assert ended or nth <= 3
