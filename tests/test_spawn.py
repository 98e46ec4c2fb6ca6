"""recipes/cryptsetup.py spawn: what cryptsetup runs under instead of subprocess.

Each property is one subprocess would give it: stdin and the named pipes
delivered, stdin, stdout and stderr in full even beyond a pipe buffer,
no descriptor of ours inherited but the pipes, SIGPIPE back at its default, the
C locale, a child past its time-out killed and reaped, and an interrupted one given
subprocess's moment to finish, then killed and reaped, even when the signal arrives
as posix_spawn returns.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tpmseal import interrupt
from tpmseal.errors import MissingToolError
from tpmseal.recipes.cryptsetup import run, spawn

SH = "/bin/sh"


def test_stdin_pipes_and_exit_code() -> None:
    done = spawn(SH, ["-c", 'cat; printf "|"; cat "$0"; printf "|"; cat "$1"; exit 3', 0, 1],
                 b"in", [b"first", b"second"], 10)
    assert done == (3, b"in|first|second", b"")


def test_stdin_beyond_a_pipe_buffer() -> None:
    data = os.urandom(300_000)  # a LUKS2 token as JSON may exceed the 64 KiB buffer
    assert spawn(SH, ["-c", "cat"], data, [], 30) == (0, data, b"")
    # a child that exits without reading it all: no hang, no error of ours
    done = spawn(SH, ["-c", "head -c 10 >/dev/null; exit 4"], data, [], 30)
    assert done is not None and done[0] == 4


def test_large_stdout_and_stderr_together() -> None:
    big = 200_000  # each beyond a 64 KiB pipe buffer: read both at once or deadlock
    script = f"head -c {big} /dev/zero; head -c {big} /dev/zero >&2; head -c {big} /dev/zero"
    done = spawn(SH, ["-c", script], b"", [], 30)
    assert done is not None
    rc, out, err = done
    assert (rc, len(out), len(err)) == (0, 2 * big, big)


def test_only_the_pipes_are_inherited() -> None:
    mine = os.open(os.devnull, os.O_RDONLY)  # close-on-exec, as Python opens everything
    given = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(given, True)  # as one inherited from this process's parent
    try:
        done = spawn(SH, ["-c", 'echo "$0"; exec ls /proc/self/fd', 0], b"", [b"x"], 10)
    finally:
        os.close(mine)
        os.close(given)
    assert done is not None and done[0] == 0, done
    named, *fds = done[1].split()
    piped = int(named.removeprefix(b"/dev/fd/"))
    # 0-2, the named pipe, and the descriptor ls opens to read /proc/self/fd
    assert sorted(int(n) for n in fds if int(n) not in (0, 1, 2, piped)) == [3], fds


def test_signals_and_locale_as_subprocess_leaves_them() -> None:
    done = spawn(SH, ["-c", 'grep SigIgn /proc/self/status; echo "$LC_ALL"'], b"", [], 10)
    assert done is not None
    ignored = int(done[1].split()[1], 16)
    assert not ignored & (1 << (13 - 1)), "SIGPIPE is still ignored in the child"
    assert done[1].split()[-1] == b"C"


def test_time_out_kills_and_reaps(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    t = time.monotonic()
    assert spawn(SH, ["-c", f'echo $$ > "{pid_file}"; exec sleep 30'], b"", [], 1) is None
    assert time.monotonic() - t < 10
    with pytest.raises(ChildProcessError):  # killed, and reaped: no zombie is left
        os.waitpid(int(pid_file.read_text()), os.WNOHANG)


def test_a_signal_as_the_child_starts_kills_and_reaps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT arriving while posix_spawn runs is raised by Python as the call returns,
    before its caller holds the pid: the child (cryptsetup opening the volume) must not
    run on, unkilled and unreaped, after tpmseal reported the interrupt."""
    started: list[int] = []
    real = os.posix_spawn

    def spawn_then_signal(*args: Any, **kwargs: Any) -> int:
        pid = real(*args, **kwargs)
        started.append(pid)
        os.kill(os.getpid(), signal.SIGINT)  # a real signal, handled as the call returns
        return pid

    monkeypatch.setattr(os, "posix_spawn", spawn_then_signal)
    with interrupt.installed(), pytest.raises(interrupt.Interrupted):
        spawn(SH, ["-c", "exec sleep 30"], b"", [], 10)
    with pytest.raises(ChildProcessError):  # killed and reaped
        os.waitpid(started[0], os.WNOHANG)


def test_an_interrupted_child_may_finish_first(tmp_path: Path) -> None:
    """As subprocess does: on SIGINT/SIGTERM the child, which a terminal's Ctrl-C reaches
    too, gets a moment to finish (cryptsetup half way through creating a mapping) before
    it is killed, its stdout and stderr still open (closed, its report of the outcome
    would kill it with SIGPIPE); the interrupt is raised all the same."""
    done = tmp_path / "finished"
    with interrupt.installed(), pytest.raises(interrupt.Interrupted):
        spawn(SH, ["-c", 'kill -INT "$PPID"; sleep 0.02; echo out; echo err >&2; echo > "$0"; '
                         "exec sleep 30", str(done)], b"", [], 10)
    assert done.exists(), "the child was killed at once"


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polled"])
def test_a_child_that_closes_its_output_is_still_timed_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pidfd: bool) -> None:
    """The time-out covers the whole run, not only the reading: a child that closes
    stdout and stderr and runs on (or a cryptsetup whose output ends before it does) is
    killed and reaped at its time-out, as subprocess.run's wait does, not waited for;
    through a pidfd, or polled where there is none."""
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open")
    assert spawn(SH, ["-c", "exec >&- 2>&-; exit 5"], b"", [], 10) == (5, b"", b"")
    pid_file = tmp_path / "pid"
    t = time.monotonic()
    done = spawn(SH, ["-c", f'echo $$ > "{pid_file}"; exec >&- 2>&-; exec sleep 30'],
                 b"", [], 1)
    assert done is None
    assert time.monotonic() - t < 10
    with pytest.raises(ChildProcessError):
        os.waitpid(int(pid_file.read_text()), os.WNOHANG)


def test_stdin_is_fed_after_the_child_closes_its_output() -> None:
    """stdin beyond a pipe buffer is still written once stdout and stderr have ended
    (their end stopped the feeding: the child waited for the rest of its stdin, this
    process for the child, for ever, past any time-out)."""
    data = os.urandom(300_000)
    t = time.monotonic()
    done = spawn(SH, ["-c", "exec >&- 2>&-; exec cat >/dev/null"], data, [], 10)
    assert done == (0, b"", b"")
    assert time.monotonic() - t < 10


@pytest.fixture
def sigchld_ignored() -> Any:
    """SIGCHLD ignored, as a parent that lets the kernel reap its children leaves it
    (an ignored signal stays ignored across exec): no child's exit status can be had."""
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, old)


@pytest.mark.usefixtures("sigchld_ignored")
def test_the_cli_learns_exit_codes_with_sigchld_ignored() -> None:
    """subprocess reported every child of such a process as exit 0 (a wrong key 'opens'
    the volume); spawn's waitpid failed with ECHILD, 'cannot run cryptsetup'. The CLI's
    signal set-up (interrupt.installed) puts SIGCHLD back at its default for the run."""
    with interrupt.installed():
        assert spawn(SH, ["-c", "echo out; exit 3"], b"", [], 10) == (3, b"out\n", b"")
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN  # and restores it


@pytest.mark.usefixtures("sigchld_ignored")
def test_an_api_caller_ignoring_sigchld_is_told_so(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    fake = tmp_path / "cryptsetup"
    fake.write_text("#!/bin/sh\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError) as e:
        run(["open", "--test-passphrase", "--key-file=-", "/dev/null"], stdin=b"wrong")
    assert "SIGCHLD" in str(e.value) and "exit status" in str(e.value), e.value


@pytest.mark.usefixtures("sigchld_ignored")
def test_time_out_with_sigchld_ignored(tmp_path: Path) -> None:
    """Killed at its time-out, and spawn returns: the kernel reaps it."""
    t = time.monotonic()
    assert spawn(SH, ["-c", "exec sleep 30"], b"", [], 0.5) is None
    assert time.monotonic() - t < 10


def test_near_the_descriptor_limit() -> None:
    """A caller with its descriptors up to near RLIMIT_NOFILE (a server's sockets) can
    still run cryptsetup, as under subprocess: the child's copies of the pipes took the
    numbers above every one of them, past the limit (dup2 failed: 'cannot run')."""
    script = f"""
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
while os.open(os.devnull, os.O_RDONLY) < 64 - 10:
    pass
from tpmseal.recipes.cryptsetup import spawn
print(spawn({SH!r}, ["-c", 'cat; cat "$0"', 0], b"in", [b"named"], 10))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.stdout.strip() == "(0, b'innamed', b'')", r.stderr


def test_no_descriptor_leaks_when_descriptors_run_out() -> None:
    """Descriptors running out (EMFILE) as spawn makes its pipes is 'cannot run
    cryptsetup' (run's OSError), and the pipes already made are closed: stdin's pair was
    left open when stdout's failed, both pairs when stderr's did, at every retry of a
    caller that goes on (a daemon unlocking volumes)."""
    script = f"""
import os, resource
from tpmseal.recipes.cryptsetup import spawn
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
for free in range(1, 7):  # 7 run it: the named pipe's read end, stdin, stdout, stderr
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    for fd in held[-free:]:
        os.close(fd)
    del held[-free:]
    before = sorted(os.listdir("/proc/self/fd"))
    try:
        spawn({SH!r}, ["-c", "cat", 0], b"in", [b"named"], 10)
    except OSError:
        pass
    else:
        raise SystemExit(f"ran with {{free}} descriptors free")
    after = sorted(os.listdir("/proc/self/fd"))
    assert after == before, (free, before, after)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.stdout.strip() == "ok", r.stderr


FOREIGN = """P=$$
( while kill -0 $P 2>/dev/null; do :; done  # until the kernel has reaped it (SIGCHLD ignored)
  echo $((P - 1)) >/proc/sys/kernel/ns_last_pid
  sleep 30 </dev/null >/dev/null 2>&1 &  # a process not spawn's child takes its pid
  echo $! >"$0" ) &
exit 0
"""


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/unshare").exists(),
                    reason="a pid namespace whose next pid is chosen needs root and unshare")
def test_a_reaped_childs_pid_taken_by_another_process(tmp_path: Path) -> None:
    """SIGCHLD ignored (an API caller): the kernel reaps the child, and here another
    process gets its pid before spawn waits (in a pid namespace, ns_last_pid). The wait
    slept on a pidfd of that process, to the time-out (10 minutes under run), and said
    'did not finish'; it is told the exit status is lost, at once, the process untouched."""
    script = f"""
import os, signal, sys, time
from tpmseal.recipes.cryptsetup import spawn
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
t = time.monotonic()
try:
    done = repr(spawn({SH!r}, ["-c", {FOREIGN!r}, {str(tmp_path / "pid")!r}], b"", [], 8))
except ChildProcessError:
    done = "lost"
foreign = int(open({str(tmp_path / "pid")!r}).read())
print(done, os.path.exists(f"/proc/{{foreign}}"), time.monotonic() - t < 4)
os.kill(foreign, signal.SIGKILL)
"""
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", SH, "-c",
                        '"$0" -c "$1"; :', sys.executable, script], capture_output=True,
                       text=True, timeout=60, check=False)
    if "unshare failed" in r.stderr or "unshare:" in r.stderr:
        pytest.skip(f"no pid namespace here: {r.stderr.strip()}")
    assert r.stdout.split() == ["lost", "True", "True"], (r.stdout, r.stderr)


def test_a_signal_as_the_pidfd_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT arriving as pidfd_open returns was raised before the pidfd was kept: a
    descriptor left open by every interrupted wait (an API caller's process goes on)."""
    real = os.pidfd_open

    def open_then_signal(pid: int, flags: int = 0) -> int:
        fd = real(pid, flags)
        os.kill(os.getpid(), signal.SIGINT)  # a real signal, handled as the call returns
        return fd

    monkeypatch.setattr(os, "pidfd_open", open_then_signal)
    before = sorted(os.listdir("/proc/self/fd"))
    with interrupt.installed(), pytest.raises(interrupt.Interrupted):
        spawn(SH, ["-c", "exec <&- >&- 2>&- sleep 30"], b"", [], 10)
    assert sorted(os.listdir("/proc/self/fd")) == before
