"""Linux TPM character devices: /dev/tpmrm0 (with the kernel resource manager) or /dev/tpm0.

The kernel driver takes one whole command per write() and returns one whole
response per read() (drivers/char/tpm/tpm-dev-common.c),
so the response is read with a single read after poll() signals it is ready.
The suite runs this transport through a pty relay to swtpm (tests/ptyrelay.py),
hence O_NOCTTY: a terminal standing in for the device never becomes ours.

Through ``/dev/tpmrmN`` the kernel flushes every object and session the connection
left when it is closed (drivers/char/tpm/tpm2-space.c, ``tpm2_del_space``):
:attr:`DeviceTransport.flushes_on_close` tells the client so, and it then leaves
its last FlushContexts to the kernel. A raw ``/dev/tpmN`` keeps whatever was left
until the TPM is reset: there the client flushes everything itself.
"""

from __future__ import annotations

import os
import select

from tpmseal.errors import TransportError

MAX_RESPONSE = 8192


class DeviceTransport:
    """A TPM reached through a character device."""

    def __init__(self, path: str, timeout: float):
        self.uri = f"device:{path}"
        self._timeout = timeout
        #: the kernel resource manager's device: it flushes what we leave on close
        self.flushes_on_close = os.path.basename(os.path.realpath(path)).startswith("tpmrm")
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            raise TransportError(
                f"no TPM device at {path}",
                "this machine has no TPM (or its driver is not loaded); use --tpm sim:DIR "
                "for a simulator") from None
        except PermissionError:
            raise TransportError(f"permission denied opening {path}",
                                 "run as root or add your user to the 'tss' group") from None
        except OSError as e:
            raise TransportError(f"cannot open {path}: {e.strerror}") from None

    def send(self, command: bytes) -> bytes:
        try:
            os.write(self._fd, command)
            ready, _, _ = select.select([self._fd], [], [], self._timeout)
            if not ready:
                raise TransportError(f"TPM at {self.uri} did not answer in {self._timeout:g}s")
            data = os.read(self._fd, MAX_RESPONSE)
        except OSError as e:
            raise TransportError(f"TPM device I/O failed at {self.uri}: {e.strerror}") from None
        if len(data) < 10 or int.from_bytes(data[2:6], "big") != len(data):
            raise TransportError(f"TPM at {self.uri} returned a truncated response "
                                 f"({len(data)} bytes)",
                                 "check that the path is a TPM device such as /dev/tpmrm0")
        return data

    def close(self) -> None:
        os.close(self._fd)
