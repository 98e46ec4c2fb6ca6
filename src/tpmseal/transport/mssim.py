"""The Microsoft/IBM TPM 2.0 simulator's TCP protocol (tpm2-tss' ``mssim`` TCTI).

The data channel wraps each command: ``TPM_SEND_COMMAND`` (u32 8), the locality
(u8), the command's size (u32) and the command; the simulator answers with the
response's size (u32), the response and a u32 acknowledgement (0). Closing the
connection is announced with ``TPM_SESSION_END`` (u32 20). swtpm's data port
recognises this framing too, so ``mssim:`` reaches an swtpm as well.

The platform channel (port + 1) is not used: the simulator must already be
powered on (``MS_SIM_POWER_ON``, ``MS_SIM_NV_ON``), as its start-up scripts or
any tpm2-tools command over the mssim TCTI leave it (tpm2-tss' TCTI sends both
at every initialisation). A powered-off simulator answers with an empty
response, reported as such. tpmseal sends neither because port + 1 of an swtpm
is swtpm's own control channel (``--ctrl type=tcp``), whose commands share the
numbers with other meanings: 1 is CMD_GET_CAPABILITY there (swtpm answers with 8
bytes, not the 4 the platform protocol has), 11 is CMD_RESET_TPMESTABLISHED
(swtpm 0.7 drops the connection for the missing locality byte).
"""

from __future__ import annotations

import contextlib
import struct
import time

from tpmseal.errors import TransportError
from tpmseal.transport.base import TpmUri
from tpmseal.transport.stream import HEADER, MAX_FRAME, connect, recv_exact

TPM_SEND_COMMAND = 8
TPM_SESSION_END = 20
LOCALITY = 0


class MssimTransport:
    """One connection to a simulator's data port, speaking the mssim framing."""

    def __init__(self, uri: TpmUri, timeout: float):
        self.uri = str(uri)
        self._timeout = timeout
        self._sock = connect(TpmUri("tcp", host=uri.host, port=uri.port), timeout)

    def send(self, command: bytes) -> bytes:
        deadline = time.monotonic() + self._timeout
        try:
            self._sock.settimeout(self._timeout)
            self._sock.sendall(struct.pack(">IBI", TPM_SEND_COMMAND, LOCALITY, len(command))
                               + command)
        except OSError as e:
            raise TransportError(f"lost the connection to the TPM at {self.uri}: "
                                 f"{e.strerror or e}") from None
        size = int.from_bytes(recv_exact(self._sock, 4, "response size", self.uri,
                                         deadline=deadline), "big")
        if size == 0:
            raise TransportError(f"the simulator at {self.uri} returned an empty response",
                                 "it is probably powered off: power it on (platform port "
                                 "commands MS_SIM_POWER_ON and MS_SIM_NV_ON) and retry")
        if size < HEADER or size > MAX_FRAME:
            raise TransportError(f"TPM at {self.uri} sent a response with impossible size "
                                 f"{size}")
        response = recv_exact(self._sock, size, "response", self.uri, deadline=deadline)
        recv_exact(self._sock, 4, "acknowledgement", self.uri, deadline=deadline)
        if int.from_bytes(response[2:6], "big") != size:
            raise TransportError(f"TPM at {self.uri} sent a response whose header size "
                                 f"disagrees with its framing ({size} bytes)")
        return response

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(struct.pack(">I", TPM_SESSION_END))
        self._sock.close()
