"""Fault injection on file output: concurrent writers, kills mid-write, full disks, closed stdio.

Real processes throughout: two ``tpmseal seal`` racing for one path, an
``unseal --output`` SIGKILLed or SIGTERMed at every file system call, writes
onto a full tmpfs, past RLIMIT_FSIZE, onto /dev/full, and with stdin or
stdout closed. After each, no file anywhere in the directory holds the
plaintext except a complete output, and failures are one documented line.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tpmseal.files
from test_seal_support import CliResult, assert_one_line_error, cli, write
from tpmseal.errors import ExitCode, UsageError
from tpmseal.files import locked, write_atomic
from tpmseal.transport.simulator import Simulator

SECRET = bytes.fromhex("6b3a9f00d1c2e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3")


def _run(argv: list[str], *, stdin: bytes = b"", shell_redirect: str = "",
         preexec: Callable[[], object] | None = None) -> CliResult:
    cmd = [sys.executable, "-m", "tpmseal.cli.main", *argv]
    if shell_redirect:
        done = subprocess.run(["bash", "-c", f'exec "$@" {shell_redirect}', "bash", *cmd],
                              input=stdin, capture_output=True, timeout=60, check=False)
    else:
        done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60, check=False,
                              preexec_fn=preexec)
    return CliResult(done.returncode, done.stdout, done.stderr.decode())


def _holders(directory: Path, secret: bytes) -> list[str]:
    """Names of files in *directory* whose content contains *secret*."""
    return sorted(p.name for p in directory.iterdir()
                  if p.is_file() and secret in p.read_bytes())


def _seal(tmp_path: Path, secret: bytes = SECRET) -> Path:
    blob = tmp_path / "blob.json"
    r = cli(["seal", "--input", str(write(tmp_path / "s.bin", secret)), "--output", str(blob)])
    assert r.rc == 0, r.err
    (tmp_path / "s.bin").unlink()
    return blob


# ----------------------------------------------------------------------- exclusivity


def test_exclusive_write_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_atomic(target, b"first", exclusive=True)
    with pytest.raises(UsageError, match="appeared while tpmseal was working"):
        write_atomic(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_exclusive_race_between_processes(tmp_path: Path) -> None:
    """Twenty processes create one file at the same instant: exactly one wins."""
    target = tmp_path / "race.bin"
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import os, sys, time
        from tpmseal.errors import UsageError
        from tpmseal.files import write_atomic
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        try:
            write_atomic({str(target)!r}, sys.argv[1].encode(), exclusive=True)
        except UsageError:
            sys.exit(2)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, f"writer {i}"]) for i in range(20)]
    go.touch()
    codes = [p.wait(60) for p in procs]
    assert sorted(codes) == [0] + [2] * 19
    winner = codes.index(0)
    assert target.read_bytes() == f"writer {winner}".encode()


def test_two_concurrent_seals_one_wins_and_its_key_survives(tcg_sim: Simulator,
                                                            tmp_path: Path) -> None:
    """Two real `seal --output same.json` with different secrets: one exits 0, the other 2,
    and the blob unseals to the winner's secret (before: both exited 0, one key lost)."""
    out = tmp_path / "same.json"
    secrets = [os.urandom(32), os.urandom(32)]
    inputs = [write(tmp_path / f"s{i}", s) for i, s in enumerate(secrets)]
    procs = [subprocess.Popen([sys.executable, "-m", "tpmseal.cli.main", "seal", "--input",
                               str(inp), "--output", str(out)], stderr=subprocess.PIPE)
             for inp in inputs]
    results = [(p.wait(60), p.stderr.read().decode() if p.stderr else "") for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    winner = next(i for i, (rc, _) in enumerate(results) if rc == 0)
    loser_err = results[1 - winner][1]
    assert loser_err.count("\n") == 1 and ("appeared" in loser_err
                                           or "already holds" in loser_err), loser_err
    assert cli(["unseal", "--input", str(out), "--output", "-"]).out == secrets[winner]


def test_lock_serializes_processes(tmp_path: Path) -> None:
    target = tmp_path / "trust.json"
    code = textwrap.dedent(f"""
        import sys, time
        from tpmseal.files import locked
        with locked({str(target)!r}):
            print("in", flush=True)
            time.sleep(0.5)
    """)
    with locked(target):
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(1.0)  # blocked on our lock
    out, err = p.communicate(timeout=30)
    assert out == b"in\n" and "waiting for another tpmseal" in err.decode()


# ------------------------------------------------------------------ kills mid-write

_KILLER = textwrap.dedent("""
    import os, signal, sys
    import tpmseal.files as files
    from tpmseal.cli.main import main

    class Os:
        # tpmseal.files' view of os: the k-th file system call kills the process
        steps = ("open", "fchmod", "write", "fsync", "link", "replace", "close")

        def __init__(self, k, sig):
            self.k, self.sig, self.n = k, sig, 0

        def __getattr__(self, name):
            real = getattr(os, name)
            if name not in self.steps:
                return real

            def step(*a, **kw):
                self.n += 1
                if self.n == self.k:
                    os.kill(os.getpid(), self.sig)
                return real(*a, **kw)
            return step

    files.os = Os(int(sys.argv[1]), int(sys.argv[2]))
    if sys.argv[3] == "named":
        files._unnamed = lambda directory, mode: None
    sys.exit(main(sys.argv[4:]))
""")


def _kill_unseal_at_every_step(tmp_path: Path, sig: int, mode: str) -> set[int]:
    blob = _seal(tmp_path)
    out = tmp_path / "key.bin"
    codes: set[int] = set()
    for k in range(1, 40):
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        p = subprocess.run([sys.executable, "-c", _KILLER, str(k), str(sig), mode,
                            "unseal", "--input", str(blob), "--output", str(out)],
                           capture_output=True, timeout=60, check=False)
        codes.add(p.returncode)
        holders = _holders(tmp_path, SECRET)
        if p.returncode == 0:
            assert holders == ["key.bin"] and out.read_bytes() == SECRET
            assert out.stat().st_mode & 0o777 == 0o600
            return codes
        if sig == signal.SIGTERM:
            assert p.returncode == 143, (k, p.returncode, p.stderr)
            assert p.stderr.decode().count("\n") == 1, p.stderr
        leftovers = [n for n in holders if n != "key.bin"]
        if mode == "unnamed" or sig == signal.SIGTERM:
            assert leftovers == [], (k, leftovers)  # no plaintext under any other name
        if "key.bin" in holders:
            assert out.read_bytes() == SECRET  # never a torn output
        for name in leftovers:
            (tmp_path / name).unlink()
    raise AssertionError("the unseal never completed")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_kill_during_unseal_output_leaves_no_plaintext(tcg_sim: Simulator, tmp_path: Path,
                                                       sig: int) -> None:
    codes = _kill_unseal_at_every_step(tmp_path, sig, "unnamed")
    assert codes >= {0, -sig if sig == signal.SIGKILL else 143}


def test_sigterm_without_o_tmpfile_removes_the_named_temp(tcg_sim: Simulator,
                                                          tmp_path: Path) -> None:
    """The fallback path (no O_TMPFILE): SIGTERM at any step leaves no temp file behind
    (only SIGKILL during the write can: the documented residual)."""
    assert 143 in _kill_unseal_at_every_step(tmp_path, signal.SIGTERM, "named")


def test_replacing_an_output_keeps_old_or_new(tcg_sim: Simulator, tmp_path: Path) -> None:
    out = tmp_path / "key.bin"
    blob = _seal(tmp_path)
    write(out, b"old content")
    assert cli(["unseal", "--input", str(blob), "--output", str(out)]).rc == 0
    assert out.read_bytes() == SECRET
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.json", "key.bin"]


# ---------------------------------------------------------------- full disk, stdio


@contextlib.contextmanager
def _full_tmpfs() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tpmseal-full-", dir="/tmp"))
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(d)],
                              capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs: {done.stderr.decode().strip()}")
        try:
            with contextlib.suppress(OSError), open(d / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            (d / "filler").chmod(0o644)
            yield d
        finally:
            subprocess.run(["umount", str(d)], check=False)
    finally:
        d.rmdir()


def test_unseal_onto_a_full_filesystem(tcg_sim: Simulator, tmp_path: Path) -> None:
    blob = _seal(tmp_path)
    with _full_tmpfs() as full:
        r = cli(["unseal", "--input", str(blob), "--output", str(full / "key.bin")])
        assert_one_line_error(r, ExitCode.USAGE, "No space left on device", "free some space")
        assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_seal_onto_a_full_filesystem(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = write(tmp_path / "s", SECRET)
    with _full_tmpfs() as full:
        r = cli(["seal", "--input", str(secret), "--output", str(full / "blob.json")])
        assert_one_line_error(r, ExitCode.USAGE, "No space left on device")
        assert sorted(p.name for p in full.iterdir()) == ["filler"]


def _small_fsize() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


def test_seal_past_the_file_size_limit(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = write(tmp_path / "s", SECRET)
    r = _run(["seal", "--input", str(secret), "--output", str(tmp_path / "blob.json")],
             preexec=_small_fsize)
    assert_one_line_error(r, ExitCode.USAGE, "cannot write", "File too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_unseal_to_dev_full_stdout(tcg_sim: Simulator, tmp_path: Path) -> None:
    blob = _seal(tmp_path)
    r = _run(["unseal", "--input", str(blob)], shell_redirect=">/dev/full")
    assert_one_line_error(r, ExitCode.USAGE, "cannot write stdout", "No space left")


def test_closed_stdout_is_refused_not_lost(tcg_sim: Simulator, tmp_path: Path) -> None:
    blob = _seal(tmp_path)
    r = _run(["unseal", "--input", str(blob)], shell_redirect=">&-")
    assert_one_line_error(r, ExitCode.USAGE, "stdout is closed", "--output")


def test_closed_stdin_is_refused(tcg_sim: Simulator, tmp_path: Path) -> None:
    r = _run(["seal", "--output", str(tmp_path / "b.json")], shell_redirect="<&-")
    assert_one_line_error(r, ExitCode.USAGE, "stdin is closed", "--input")
    assert not (tmp_path / "b.json").exists()


def test_closed_stdout_for_printing_commands(tcg_sim: Simulator) -> None:
    r = _run(["pcrs"], shell_redirect=">&-")
    assert r.rc in (0, ExitCode.USAGE), r.err
    assert "Traceback" not in r.err and len(r.err_lines) <= 1


def test_stdio_guard_keeps_fds_off_0_1_2(tmp_path: Path) -> None:
    """With stdout closed, the next file opened must not become fd 1."""
    code = ("import os; from tpmseal.files import guard_stdio, CLOSED_STDIO; guard_stdio(); "
            "fd = os.open(os.devnull, os.O_RDONLY); print(fd, sorted(CLOSED_STDIO), "
            "file=open(2, 'w', closefd=False))")
    done = subprocess.run(["bash", "-c", 'exec "$0" -c "$1" >&-', sys.executable, code],
                          capture_output=True, timeout=30, check=False)
    fd, closed = done.stderr.decode().split(" ", 1)
    assert int(fd) > 2 and closed.strip() == "[1]"


def test_module_docstring_names_the_residual() -> None:
    doc = tpmseal.files.__doc__ or ""
    assert "O_TMPFILE" in doc and "residual" in doc


@pytest.mark.parametrize("command", ["reseal", "provision"])
def test_rewriting_commands_take_the_lock(tcg_sim: Simulator, tmp_path: Path,
                                          command: str) -> None:
    """reseal locks the blob, provision the trust file: a second writer waits its turn."""
    blob = _seal(tmp_path)
    trust_file = tcg_sim.state / "trust.json"
    argv, target = ((["reseal", "--input", str(blob)], blob) if command == "reseal"
                    else (["provision"], trust_file))
    with locked(target):
        p = subprocess.Popen([sys.executable, "-m", "tpmseal.cli.main", *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(1.5)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "waiting for another tpmseal" in err.decode()


def test_unseal_into_a_pipe_nobody_reads(tcg_sim: Simulator, tmp_path: Path) -> None:
    """EPIPE: the reader of stdout is gone before the secret is written."""
    blob = _seal(tmp_path)
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        done = subprocess.run([sys.executable, "-m", "tpmseal.cli.main", "unseal", "--input",
                               str(blob)], stdout=w_fd, stderr=subprocess.PIPE, timeout=60,
                              check=False)
    finally:
        os.close(w_fd)
    r = CliResult(done.returncode, b"", done.stderr.decode())
    assert_one_line_error(r, ExitCode.USAGE, "cannot write stdout", "Broken pipe")


def test_unseal_to_a_read_only_stdout(tcg_sim: Simulator, tmp_path: Path) -> None:
    """EBADF: fd 1 is open, but for reading."""
    blob = _seal(tmp_path)
    r = _run(["unseal", "--input", str(blob)], shell_redirect="1</dev/null")
    assert_one_line_error(r, ExitCode.USAGE, "cannot write stdout", "Bad file descriptor")
