"""Atomic file writes: temp file in the same directory, fsync, rename, fsync dir.

A crash at any instant leaves either the old file or the new one, never a torn
or empty file. Secrets are created with mode 0600 from the start (the temp file
is opened with that mode, so there is no window where others could read it).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path

from tpmseal.errors import BadInputError, UsageError


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace *path* with *data* atomically, with permissions *mode*."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"cannot write {target}: directory {directory} does not exist")
    if target.is_dir():
        raise UsageError(f"cannot write {target}: it is a directory", "name a file")
    import tempfile  # with shutil and random: not on a read-only run
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise UsageError(f"cannot write {target}: {e.strerror or e}",
                         "choose a writable location") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in *directory* durable."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_input(path: str, what: str, limit: int = 1 << 20) -> bytes:
    """Read a whole file, or stdin when *path* is ``-``, with clear errors."""
    try:
        if path == "-":
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
    if len(data) > limit:
        raise BadInputError(f"{what} is larger than {limit} bytes")
    return data


def write_output(path: str, data: bytes) -> None:
    """Write raw bytes to stdout (``-``), into an existing pipe or device (a FIFO,
    /dev/stdout), or atomically to a 0600 regular file.

    Replacing a FIFO or /dev/stdout with a regular file would put the secret on
    disk exactly where the user meant to avoid it, so those are written in place.
    """
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    if st is not None and (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)
                           or stat.S_ISSOCK(st.st_mode)):
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
        return
    write_atomic(path, data)
