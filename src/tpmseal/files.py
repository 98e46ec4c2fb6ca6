"""File output and input: unnamed temp files, exclusive creation, locks, size caps.

Writes go to an unnamed file (``O_TMPFILE``) in the target's directory, are
fsynced, and only then get a name with ``linkat`` through ``/proc/self/fd``. So a
kill at any moment (SIGKILL, power loss) leaves the old file or the new one, and
never a plaintext secret under a temporary name.

* A new file (:func:`write_atomic` with ``exclusive=True``) is the ``linkat``
  itself, which fails with EEXIST if the name appeared meanwhile: of two
  concurrent writers exactly one succeeds, the other gets a :class:`UsageError`.
* Replacing a file needs a name to ``rename`` from: the unnamed file is linked
  as ``.NAME.XXXXXXXX.tmp`` and renamed over the target at once, with SIGINT and
  SIGTERM held for those two system calls. That is the residual where the
  filesystem allows O_TMPFILE: a SIGKILL or crash between two system calls.
* Where ``O_TMPFILE`` is not supported (some network and FUSE filesystems, no
  /proc), a named 0600 temp file is written instead and removed on any error or
  signal; a SIGKILL or crash during the write leaves it behind (documented in
  docs/SECURITY.md).

Files are created with their final mode (0600 for secrets and blobs), so no
other user can read them at any moment. ENOSPC, EIO, a closed or full stdout
are :class:`UsageError` with one line, and nothing partial stays behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys

from tpmseal.errors import BadInputError, UsageError
from tpmseal.interrupt import deferred
from tpmseal.log import get_logger

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (cli/main.py: main)
if TYPE_CHECKING:
    from collections.abc import Iterator

log = get_logger("tpmseal.files")

#: errno values meaning "this filesystem has no O_TMPFILE" (open(2))
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT}
#: standard streams that were closed when tpmseal started (see :func:`guard_stdio`)
CLOSED_STDIO: set[int] = set()


def _write_error(target: object, e: OSError) -> UsageError:
    what = e.strerror or str(e)
    hint = {errno.ENOSPC: "free some space or write elsewhere",
            errno.EDQUOT: "free some space or write elsewhere",
            errno.EROFS: "choose a writable location",
            errno.EACCES: "run as a user that may write there or choose another location",
            errno.EPERM: "run as a user that may write there or choose another location",
            errno.EFBIG: "raise the file size limit or write elsewhere",
            }.get(e.errno or 0, "check the disk and the path, or write elsewhere")
    return UsageError(f"cannot write {target}: {what}; nothing was written", hint)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _check_directory(target: str) -> str:
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        raise UsageError(f"cannot write {target}: directory {directory} does not exist",
                         "create the directory or choose another path")
    if os.path.isdir(target):
        raise UsageError(f"cannot write {target}: it is a directory", "name a file")
    return directory


def _tmp_name(directory: str, target: str) -> str:
    return os.path.join(directory, f".{os.path.basename(target)}.{os.urandom(4).hex()}.tmp")


def _unnamed(directory: str, mode: int) -> int | None:
    """An fd on an unnamed regular file in *directory*, or None if not supported."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno in _NO_TMPFILE:
            return None
        raise


def _link_fd(fd: int, directory: str, name: str) -> None:
    """linkat(/proc/self/fd/FD, DIR/NAME, AT_SYMLINK_FOLLOW): name the unnamed file *fd*.

    ``os.link`` calls plain link(2), which would try to link the /proc symlink
    itself, unless a directory fd is given: then it is linkat(2) with the flag.
    """
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", name, src_dir_fd=dfd, dst_dir_fd=dfd,
                follow_symlinks=True)
    finally:
        os.close(dfd)


def _name_unnamed(fd: int, directory: str, target: str, exclusive: bool) -> None:
    """Give the unnamed file *fd* the name *target* (exclusively, or replacing it)."""
    if exclusive:
        _link_fd(fd, directory, os.path.basename(target))
        return
    with deferred():
        while True:
            tmp = _tmp_name(directory, target)
            try:
                _link_fd(fd, directory, os.path.basename(tmp))
                break
            except FileExistsError:
                continue
        try:
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _write_named(directory: str, target: str, data: bytes, mode: int,
                 exclusive: bool) -> None:
    """The fallback without O_TMPFILE: a named 0600 temp file, removed on any failure."""
    with deferred():
        while True:
            tmp = _tmp_name(directory, target)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
                break
            except FileExistsError:
                continue
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600, *,
                 exclusive: bool = False) -> None:
    """Write *data* to *path* with permissions *mode*, atomically.

    With *exclusive* the file must not exist: if another process created it
    meanwhile, :class:`UsageError` (exit 2) and nothing is changed.
    """
    target = os.fspath(path)
    directory = _check_directory(target)
    try:
        fd = _unnamed(directory, mode)
        if fd is None:
            log.debug("no O_TMPFILE in %s: writing through a named temp file", directory)
            _write_named(directory, target, data, mode, exclusive)
        else:
            try:
                os.fchmod(fd, mode)
                _write_all(fd, data)
                os.fsync(fd)
                _name_unnamed(fd, directory, target, exclusive)
            finally:
                os.close(fd)
    except FileExistsError:
        raise UsageError(f"{target} appeared while tpmseal was working (another process "
                         "created it); nothing was written",
                         "check who else writes it, then retry (or pass --force to replace it)"
                         ) from None
    except OSError as e:
        raise _write_error(target, e) from None
    with contextlib.suppress(OSError):
        fsync_dir(directory)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in *directory* durable."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``.NAME.lock`` next to *path* for the block.

    Serializes read-modify-write of *path* (reseal, provision, vault-key) between
    processes. The lock file is never removed (removing it would let two processes
    lock two different files). If the directory does not exist or is not writable,
    the block runs unlocked: the write itself will fail or is not ours to protect.
    """
    import fcntl  # only the commands that rewrite a file lock it

    target = os.fspath(path)
    head, name = os.path.split(target)
    lock = os.path.join(head, f".{name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        log.debug("not locking %s: %s", target, e.strerror)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another tpmseal working on %s", target)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def guard_stdio() -> None:
    """Put /dev/null on standard streams that are closed, and remember which were.

    Otherwise the next file or socket opened would become fd 0, 1 or 2, and
    a secret "written to stdout" would go into it. Reading or writing a stream
    recorded here is then refused (:func:`read_input`, :func:`write_output`).
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        CLOSED_STDIO.add(fd)
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def _closed(fd: int, flag: str) -> UsageError:
    name = "stdin" if fd == 0 else "stdout"
    return UsageError(f"{name} is closed", f"pass {flag} FILE or connect {name}")


def read_input(path: str, what: str, limit: int = 1 << 20) -> bytes:
    """Read a whole file, or stdin when *path* is ``-``, at most *limit* bytes.

    A larger input is a :class:`UsageError` found after reading ``limit + 1``
    bytes, so ``/dev/zero`` or an endless pipe fails fast.
    """
    try:
        if path == "-":
            if 0 in CLOSED_STDIO or sys.stdin is None:
                raise _closed(0, "--input")
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"{what} file {path} does not exist", "check the path") from None
    except PermissionError:
        raise UsageError(f"permission denied reading {what} file {path}",
                         "run as a user that may read it") from None
    except IsADirectoryError:
        raise UsageError(f"{what} path {path} is a directory", "name a file") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} from {'stdin' if path == '-' else path}: "
                         f"{e.strerror or e}", "check the file or pipe") from None
    except ValueError:  # a NUL byte in the path
        raise UsageError(f"the {what} path {path[:60]!r} is not a valid path",
                         "name an existing file") from None
    if len(data) > limit:
        raise UsageError(f"the {what} in {'stdin' if path == '-' else path} is larger than "
                         f"{limit} bytes", f"pass a {what} of at most {limit} bytes")
    return data


def read_capped(path: str | os.PathLike[str], what: str, limit: int) -> bytes | None:
    """The bytes of the input file *path* (None if it does not exist), at most *limit*.

    For files tpmseal itself wrote (blob, trust file, capture): too large is a
    :class:`BadInputError`; unreadable is a :class:`UsageError`.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory", "name a file") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror or e}",
                         "check the path and its permissions") from None
    except ValueError:  # a NUL byte in the path
        raise UsageError(f"the {what} path {str(path)[:60]!r} is not a valid path",
                         "name an existing file") from None
    if len(data) > limit:
        raise BadInputError(f"{what} {path} is larger than {limit} bytes: not a file tpmseal "
                            "wrote", f"pass the right {what}")
    return data


def write_output(path: str, data: bytes) -> None:
    """Write raw bytes to stdout (``-``), into an existing pipe or device (a FIFO,
    /dev/stdout), or atomically to a 0600 regular file.

    Replacing a FIFO or /dev/stdout with a regular file would put the secret on
    disk exactly where the user meant to avoid it, so those are written in place.
    """
    if path == "-":
        if 1 in CLOSED_STDIO or sys.stdout is None:
            raise _closed(1, "--output")
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as e:
            raise _write_error("stdout", e) from None
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _write_error(path, e) from None
    if st is not None and (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)
                           or stat.S_ISSOCK(st.st_mode)):
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            raise _write_error(path, e) from None
        return
    if st is None:
        try:
            write_atomic(path, data, exclusive=True)
            return
        except UsageError:
            if not os.path.lexists(path):
                raise
        # created meanwhile: an output file is replaced, as if it had existed
    write_atomic(path, data)
