"""Capture files are created private (mode 0600): the sniffer records key material."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Literal, overload

from tpmseal.errors import UsageError


@overload
def open_private(path: str | Path, binary: Literal[True]) -> IO[bytes]: ...


@overload
def open_private(path: str | Path, binary: Literal[False]) -> IO[str]: ...


def open_private(path: str | Path, binary: bool) -> IO[bytes] | IO[str]:
    """Create or truncate *path* with mode 0600 for streaming writes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise UsageError(f"cannot write capture file {path}: {e.strerror}",
                         hint="choose a writable path") from None
    if binary:
        return os.fdopen(fd, "wb")
    return os.fdopen(fd, "w", encoding="utf-8")
