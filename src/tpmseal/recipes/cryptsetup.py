"""Driving the real ``cryptsetup`` (2.6) on a LUKS2 device, with keys only on pipes.

Every key or passphrase reaches cryptsetup through a pipe — its stdin
(``--key-file=-``) or an inherited pipe named ``/dev/fd/N`` — never through
argv (visible in /proc to every user) and never through a file. Nothing read
from cryptsetup is secret: its metadata dump holds keyslot salts and tokens,
not keys.

Exit codes of cryptsetup (cryptsetup(8), "RETURN CODES"): 1 wrong parameters,
2 no permission (bad passphrase), 3 out of memory, 4 wrong device specified,
5 device already exists or device is busy.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tpmseal.errors import (
    AuthFailedError,
    BadInputError,
    MissingToolError,
    UsageError,
)
from tpmseal.interrupt import deferred
from tpmseal.records import record

if TYPE_CHECKING:
    from signal import SIGKILL, SIGPIPE, SIGXFSZ
else:  # the C module itself: signal.py only wraps it in IntEnums (interrupt.py)
    from _signal import SIGKILL, SIGPIPE, SIGXFSZ

#: LUKS2 has 32 keyslots and 32 tokens (LUKS2 on-disk format, §3.1).
LUKS2_SLOTS = 32

#: A keyslot holding a random 256-bit key needs no slow KDF: guessing the key is
#: hopeless anyway, so the minimum PBKDF2 cost keeps unlocking fast (systemd-cryptenroll
#: does the same for its TPM2 keyslots).
FAST_KDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")

EXIT_BAD_PASSPHRASE = 2


class CryptsetupError(UsageError):
    """cryptsetup refused (bad device, busy, wrong parameters); the message carries its
    last line of stderr (never a key). Exit code 2, like any refused operation."""

    def __init__(self, message: str, hint: str | None = None, returncode: int = 1):
        super().__init__(message, hint)
        self.returncode = returncode


def binary() -> str:
    """cryptsetup on $PATH (empty entries, the current directory, skipped), else in
    /usr/sbin or /sbin, which a user's or an initramfs' PATH may lack."""
    for d in (*os.get_exec_path(), "/usr/sbin", "/sbin"):
        path = os.path.join(d, "cryptsetup")
        if d and os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    raise MissingToolError("cryptsetup is not installed",
                           "install it (Debian/Ubuntu: apt-get install cryptsetup-bin)")


@contextlib.contextmanager
def _pipes(extra: Sequence[bytes]) -> Iterator[list[int]]:
    """Read ends of pipes pre-filled with each of *extra* (each a key or passphrase, which
    fits the pipe buffer)."""
    fds: list[int] = []
    try:
        for data in extra:
            r, w = os.pipe()
            fds.append(r)
            try:
                os.write(w, data)  # small (a key or passphrase): fits the 64 KiB buffer
            finally:
                os.close(w)
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def spawn(program: str, args: Sequence[str | int], stdin: bytes, pipes: Sequence[bytes],
          timeout: float) -> tuple[int, bytes, bytes] | None:
    """Run *program* with *args* (an int *i* naming the pipe holding ``pipes[i]``) and
    *stdin* on its stdin; its exit code, stdout and stderr, or None once *timeout*
    seconds have passed (it is then killed).

    :func:`os.posix_spawn` rather than :mod:`subprocess`, whose import (threading,
    selectors, signal's enums) is ~5 ms of every boot-time unlock. As subprocess
    does, the child gets SIGPIPE and SIGXFSZ back at their defaults (Python ignores
    them, and an ignored signal stays ignored across exec) and no descriptor but its
    pipes: those this process inherited are closed in the child (subprocess's
    ``close_fds``), Python opens the rest close-on-exec, and the pipes are handed over
    by dup2, whose copies are not, in the child only (another thread's child cannot
    inherit them). Each is first copied to a number no source has (:func:`_free_numbers`),
    so no dup2 overwrites a source still to be copied, whatever numbers the pipes got. *stdin*
    is written as the child reads it, stdout and stderr read as it writes them.

    Whatever ends the wait, the child does not outlive it: a time-out or an error kills
    it, and an interrupt (:mod:`tpmseal.interrupt`) once it has had
    :data:`INTERRUPT_GRACE` seconds to finish, as subprocess allows (a terminal's Ctrl-C
    reaches it too: cryptsetup half way through creating a mapping). A signal while
    posix_spawn runs is held until its pid is noted (:func:`~tpmseal.interrupt.deferred`):
    raised as the call returns, it would lose the only handle on the child.
    """
    pid, grace = 0, 0.0
    ours: list[int] = []  # this process's ends: stdin's write end, stdout's, stderr's read ends
    try:
        with _pipes(pipes) as named:
            theirs: list[int] = []  # the child's: stdin's read end, stdout's, stderr's write ends
            try:
                for writes in (True, False, False):  # each kept as made: EMFILE may end it
                    r, w = os.pipe()
                    ours.append(w if writes else r)
                    theirs.append(r if writes else w)
                in_r, out_w, err_w = theirs
                sources = [in_r, *named, out_w, err_w]  # stdin, the named pipes, stdout, stderr
                high = _free_numbers(sources)
                names = [f"/dev/fd/{fd}" for fd in high[1:1 + len(named)]]
                argv = [program, *(names[a] if isinstance(a, int) else a for a in args)]
                actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_CLOSE, fd)
                                                  for fd in _inherited()]
                actions += [(os.POSIX_SPAWN_DUP2, fd, to) for fd, to in zip(sources, high,
                                                                            strict=True)]
                actions += [(os.POSIX_SPAWN_DUP2, high[0], 0),
                            (os.POSIX_SPAWN_DUP2, high[-2], 1),
                            (os.POSIX_SPAWN_DUP2, high[-1], 2)]
                actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in (high[0], high[-2], high[-1])]
                with deferred():
                    pid = os.posix_spawn(argv[0], argv, {**os.environ, "LC_ALL": "C"},
                                         file_actions=actions, setsigdef=(SIGPIPE, SIGXFSZ))
            finally:
                for fd in theirs:
                    os.close(fd)
        deadline = time.monotonic() + timeout
        outputs = _exchange(stdin, ours, deadline)
        try:
            status = _wait(pid, deadline) if outputs is not None else None
        except ChildProcessError:  # reaped by the kernel: its pid, free, is not to be killed
            pid = 0
            raise
        if outputs is None or status is None:
            return None  # killed below
        pid = 0
        return (os.waitstatus_to_exitcode(status), *outputs)
    except KeyboardInterrupt:
        grace = INTERRUPT_GRACE
        raise
    finally:
        if pid:  # its pipes still open: what it reports meanwhile does not kill it (SIGPIPE)
            _end(pid, grace)
        for fd in ours:
            os.close(fd)


def _free_numbers(sources: Sequence[int]) -> list[int]:
    """One descriptor number per source for its copy in the child: the lowest above 2
    that none of *sources* has (not above them all: that can pass RLIMIT_NOFILE for a
    caller with many descriptors open). A copy may land on another descriptor of this
    process in the child: it is close-on-exec there, or closed before (_inherited)."""
    taken, n = set(sources), 3
    out: list[int] = []
    while len(out) < len(sources):
        if n not in taken:
            out.append(n)
        n += 1
    return out


#: How long an interrupted child may take to finish before it is killed (subprocess's).
INTERRUPT_GRACE = 0.25


def _end(pid: int, grace: float) -> None:
    """Reap the child *pid*, killed unless it exits within *grace* seconds."""
    reaped = False
    try:
        end = time.monotonic() + grace
        try:  # looked at once even without a grace: a pid the kernel reaped is not killed
            reaped = os.waitpid(pid, os.WNOHANG)[0] == pid
            while not reaped and time.monotonic() < end:
                time.sleep(0.01)
                reaped = os.waitpid(pid, os.WNOHANG)[0] == pid
        except ChildProcessError:  # reaped by the kernel (SIGCHLD ignored): its pid is free
            reaped = True
    finally:  # also when a second signal cuts the grace short
        if not reaped:
            with contextlib.suppress(OSError):
                os.kill(pid, SIGKILL)
                os.waitpid(pid, 0)


def _wait(pid: int, deadline: float) -> int | None:
    """The wait status of *pid*, or None at *deadline* (its output can end before it
    does: a child that closes stdout and stderr and runs on). Through a pidfd (Linux
    5.3), readable once the child has exited; else polled as subprocess's
    ``wait(timeout)`` does, from 0.5 ms up to 50 ms apart. ChildProcessError if the
    kernel reaped it (SIGCHLD ignored)."""
    pidfd = -1
    try:
        # an interrupt as it returns is raised once it is kept (and closed below); an
        # older kernel or Python build has none: poll
        with deferred(), contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(pid)
        if pidfd >= 0:
            # still this process's child once the pidfd is open (ECHILD: reaped), so the
            # pidfd is of it, not of another process given its freed pid meanwhile
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return status
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                if time.monotonic() >= deadline:
                    return None
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    delay = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.05)


def _inherited() -> list[int]:
    """This process's descriptors above 2 that a child would inherit (from its own parent:
    Python opens everything close-on-exec)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: nothing to close, as before subprocess's close_fds
        return []
    out = []
    for name in names:
        fd = int(name)
        with contextlib.suppress(OSError):  # the descriptor listdir read them through
            if fd > 2 and os.get_inheritable(fd):
                out.append(fd)
    return out


def _exchange(stdin: bytes, ours: list[int], deadline: float) -> tuple[bytes, bytes] | None:
    """Feed *stdin* to the write end ``ours[0]`` (closed and removed once written), read
    stdout and stderr from ``ours[1:]`` to their end (see :func:`spawn`), all three to
    the end whichever ends first; None at *deadline* (:func:`time.monotonic`)."""
    in_w, out_r, err_r = ours
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    pending = memoryview(stdin)
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    os.set_blocking(in_w, False)
    poller.register(in_w, select.POLLOUT)
    open_ = len(chunks) + 1  # stdout, stderr and stdin's write end
    while open_:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        for fd, _ in poller.poll(left * 1000):
            if fd == in_w:
                try:
                    pending = pending[os.write(in_w, pending[:65536]):] if pending else pending
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # it exited or closed stdin without reading all
                    pending = pending[:0]
                if not pending:
                    poller.unregister(in_w)
                    ours.remove(in_w)
                    os.close(in_w)
                    open_ -= 1
                continue
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                poller.unregister(fd)
                open_ -= 1
    return b"".join(chunks[out_r]), b"".join(chunks[err_r])


def run(args: Sequence[str | int], *, stdin: bytes | None = None,
        pipes: Sequence[bytes] = (), what: str = "cryptsetup") -> str:
    """Run ``cryptsetup ARGS``; an int *i* in *args* names the pipe holding ``pipes[i]``
    (a path such as ``/dev/fd/5``; only those: a device path may hold any character).

    Returns stdout. A failure raises :class:`CryptsetupError` (an
    :class:`AuthFailedError` for a rejected passphrase).
    """
    program = binary()
    try:
        done = spawn(program, args, stdin or b"", pipes, 600)
    except ChildProcessError:  # it ran, and the kernel reaped it (interrupt.installed)
        raise MissingToolError(f"{what}: cryptsetup's exit status is lost, this process "
                               "ignores SIGCHLD",
                               "set SIGCHLD to its default (SIG_DFL) before calling tpmseal"
                               ) from None
    except OSError as e:  # not a program, not permitted, or no process/descriptor to spare
        raise MissingToolError(f"cannot run {program}: {e.strerror or e}",
                               "check that `cryptsetup --version` runs (reinstall "
                               "cryptsetup-bin) and that processes and memory are to spare"
                               ) from None
    if done is None:
        raise CryptsetupError(f"{what} did not finish within 10 minutes",
                              hint="check that the device is not busy, then retry")
    returncode, stdout, stderr = done
    if returncode == 0:
        return stdout.decode(errors="replace")
    lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else f"exit code {returncode}"
    if returncode == EXIT_BAD_PASSPHRASE:
        if not lines:  # --batch-mode says nothing
            last = "no key available with this passphrase"
        raise AuthFailedError(f"{what}: {last}", "check the passphrase or key file")
    raise CryptsetupError(f"{what} failed: {last}", None, returncode)


# ------------------------------------------------------------------------- metadata


@record
class Header:
    """The parts of a LUKS2 header's JSON metadata tpmseal uses."""

    keyslots: frozenset[int]
    tokens: Mapping[int, dict[str, Any]]

    def free_slot(self) -> int:
        return _first_free(self.keyslots, "keyslot")

    def free_token(self) -> int:
        return _first_free(frozenset(self.tokens), "token")

    def tokens_of_type(self, kind: str) -> dict[int, dict[str, Any]]:
        return {i: t for i, t in sorted(self.tokens.items()) if t.get("type") == kind}


def _first_free(used: frozenset[int], what: str) -> int:
    for i in range(LUKS2_SLOTS):
        if i not in used:
            return i
    raise UsageError(f"the LUKS2 header has no free {what}", f"remove an unused {what} first")


def token_keyslots(token: Mapping[str, Any]) -> list[int]:
    """The keyslots a token is assigned to (strings in LUKS2 JSON)."""
    slots = token.get("keyslots", [])
    if not isinstance(slots, list) or not all(isinstance(s, str) and s.isdigit() for s in slots):
        raise BadInputError("a LUKS2 token has a malformed keyslots list",
                            "the LUKS2 token is corrupted; restore the header from a backup")
    return [int(s) for s in slots]


def header(device: str) -> Header:
    """The LUKS2 metadata of *device* (``luksDump --dump-json-metadata``); only when
    that fails, ``isLuks`` tells a device that is not LUKS2 from one cryptsetup cannot
    read (one cryptsetup process fewer on every unlock)."""
    try:
        text = run(["luksDump", "--dump-json-metadata", device],
                   what=f"reading {device}'s header")
    except CryptsetupError:
        if not os.path.exists(device):
            raise UsageError(f"{device} does not exist",
                             "give the LUKS2 block device or image file") from None
        try:
            run(["isLuks", "--type", "luks2", device], what=f"checking {device}")
        except CryptsetupError:
            raise UsageError(f"{device} is not a LUKS2 device",
                             "give a LUKS2 device or image (cryptsetup luksFormat --type "
                             "luks2)") from None
        raise
    try:
        doc = json.loads(text)
        slots = frozenset(int(k) for k in doc["keyslots"])
        tokens = {int(k): v for k, v in doc["tokens"].items() if isinstance(v, dict)}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInputError(f"cannot parse the LUKS2 metadata of {device} ({type(e).__name__})",
                            "check the device with `cryptsetup luksDump`") from None
    return Header(slots, tokens)


# ------------------------------------------------------------------------- operations


def add_key(device: str, new_key: bytes, slot: int, *, key_file: str | None = None,
            passphrase: bytes | None = None) -> None:
    """``luksAddKey``: *new_key* into *slot*, authorised by *key_file* or *passphrase*."""
    if (key_file is None) == (passphrase is None):
        raise UsageError("adding a keyslot needs exactly one existing passphrase or key file",
                         "pass --unlock-key-file FILE, or answer the passphrase prompt")
    auth = ["--key-file", key_file] if key_file is not None else ["--key-file=-"]
    run(["luksAddKey", "--batch-mode", *FAST_KDF, *auth, "--new-keyfile", 0,
         "--new-key-slot", str(slot), device], stdin=passphrase, pipes=[new_key],
        what=f"adding a keyslot to {device}")


def import_token(device: str, token_id: int, token: Mapping[str, Any], slot: int) -> None:
    """``token import`` of *token* (JSON, not secret) as *token_id*, assigned to *slot*."""
    run(["token", "import", "--json-file=-", "--token-id", str(token_id), "--key-slot",
         str(slot), device], stdin=json.dumps(token, separators=(",", ":")).encode(),
        what=f"storing token {token_id} in {device}")


def remove_token(device: str, token_id: int) -> None:
    run(["token", "remove", "--token-id", str(token_id), device],
        what=f"removing token {token_id} from {device}")


def kill_slot(device: str, slot: int) -> None:
    """``luksKillSlot`` in batch mode (the caller checked that another keyslot remains)."""
    run(["luksKillSlot", "--batch-mode", device, str(slot)],
        what=f"removing keyslot {slot} from {device}")


def test_key(device: str, key: bytes, slot: int | None = None) -> None:
    """``open --test-passphrase``: does *key* open (*slot* of) *device*? Raises if not."""
    where = ["--key-slot", str(slot)] if slot is not None else []
    run(["open", "--test-passphrase", "--disable-external-tokens", "--key-file=-", *where,
         device], stdin=key, what=f"testing the key on {device}")


def open_volume(device: str, name: str, key: bytes, slot: int | None = None,
                options: Sequence[str] = ()) -> None:
    """``open DEVICE NAME`` with *key* on stdin: maps /dev/mapper/NAME."""
    where = ["--key-slot", str(slot)] if slot is not None else []
    run(["open", "--disable-external-tokens", "--key-file=-", *where, *options, device, name],
        stdin=key, what=f"opening {device} as {name}")
