"""SIGINT and SIGTERM as an exception that ends the operation cleanly.

:func:`install` makes both signals raise :class:`Interrupted` (a
``KeyboardInterrupt``), so ``with`` blocks unwind: the Tpm client flushes what it
loaded, temp files are removed, and the CLI exits 128 + signal number (130, 143).

A signal arriving inside :func:`deferred` (one TPM exchange, the few instructions
that give a file its name) is held and raised when the block ends: unwinding in
the middle of an exchange would leave the connection out of step (the late
response would be read as the answer to the cleanup's FlushContext), and
unwinding between ``linkat`` and bookkeeping would forget what to remove. A
deferred block is bounded by the transport time-out; a second signal ends it at
once (the Tpm client then treats its connection as broken and flushes nothing:
the resource manager or the next run cleans up, as after SIGKILL).
"""

from __future__ import annotations

import contextlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (cli/main.py: main)
if TYPE_CHECKING:
    import signal
    from collections.abc import Iterator
    from types import FrameType
    from typing import Any
else:  # the C module itself: signal.py only wraps it in IntEnums (~0.5 ms of start-up)
    import _signal as signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    depth = 0  #: nesting of deferred() blocks
    pending: int | None = None  #: the signal held until the outermost block ends


_state = _State()


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.depth and _state.pending is None:
        _state.pending = signum
        return
    # not deferring, or a second signal: stop now (the caller of a deferred
    # exchange then knows its connection is out of step)
    _state.pending = None
    raise Interrupted(signum)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Route SIGINT and SIGTERM to :class:`Interrupted` for the block, then restore.

    SIGCHLD is put back at its default for the block if it is ignored (a parent that
    ignores it leaves it so across exec): the kernel then reaps every child itself and
    no exit status of cryptsetup can be learnt (``waitpid`` fails with ECHILD;
    subprocess reported each as 0). Off the main thread (where Python cannot set
    handlers) the block runs as is.

    A signal while the handlers are set or restored is held (:func:`deferred`) and
    raised once all are set, or all restored: raised half way, it left the rest as
    they were (the caller's SIGTERM raising :class:`Interrupted` ever after). While
    they are restored SIGINT and SIGTERM are blocked, so that one arriving after its
    caller's handler is back reaches that handler once all are.
    """
    saved: dict[int, Any] = {}
    try:
        with deferred():
            try:
                for s in SIGNALS:
                    saved[s] = signal.signal(s, _handler)
            except ValueError:  # signal.signal() refuses off the main thread (no threading)
                pass
            else:
                if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
                    saved[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        yield
    finally:
        if saved:
            _restore(saved)


def _restore(saved: dict[int, Any]) -> None:
    """Put back each handler of *saved* (see :func:`installed`)."""
    with deferred():
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # as it is: changes nothing
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
            for s, old in saved.items():
                signal.signal(s, old)
        finally:  # one that arrived meanwhile reaches its restored handler here
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then raise :class:`Interrupted`."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0 and _state.pending is not None:
            signum, _state.pending = _state.pending, None
            raise Interrupted(signum)
