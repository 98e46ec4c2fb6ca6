"""Field codecs: how one command or response field is marshaled.

The command registry (:mod:`tpmseal.wire.commands`) declares each field with a
codec. A codec knows its TPM type name, how to write and read the value, and
whether it is a TPM2B — the property that makes a first parameter eligible for
session-based encryption (TPM 2.0 Part 1 §21.1: only a first parameter that is a
sized buffer is encrypted, and only its data bytes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tpmseal.records import record
from tpmseal.wire.marshal import Reader, tpm2b, u8, u16, u32

if TYPE_CHECKING:
    from typing import Generic as Parametric
else:  # no typing aliases at run time (start-up time)
    from tpmseal.records import Parametric

class Marshalable(Protocol):
    """A structure with ``marshal()`` and a ``unmarshal(reader)`` class method."""

    def marshal(self) -> bytes: ...

    @classmethod
    def unmarshal(cls, r: Reader) -> Any: ...


T = TypeVar("T")
#: bound to the class, not its name: a string bound makes typing compile() it (~1 ms)
S = TypeVar("S", bound=Marshalable)


class Codec(Parametric[T]):
    """Writes and reads one field; ``is_2b`` marks size-prefixed buffers."""

    tpm_type: str = "?"
    is_2b: bool = False

    def put(self, value: T) -> bytes:
        raise NotImplementedError

    def get(self, r: Reader) -> T:
        raise NotImplementedError


@record
class UInt(Codec[int]):
    """An unsigned integer of 1, 2 or 4 bytes (UINT8/16/32 and the typedefs on them)."""

    width: int
    tpm_type: str = "UINT32"

    def put(self, value: int) -> bytes:
        return {1: u8, 2: u16, 4: u32}[self.width](value)

    def get(self, r: Reader) -> int:
        if self.width == 1:
            return r.u8(self.tpm_type)
        if self.width == 2:
            return r.u16(self.tpm_type)
        return r.u32(self.tpm_type)


@record
class Buffer(Codec[bytes]):
    """A TPM2B of opaque bytes (TPM2B_DIGEST, TPM2B_DATA, TPM2B_NONCE...)."""

    tpm_type: str = "TPM2B"
    is_2b: bool = True

    def put(self, value: bytes) -> bytes:
        return tpm2b(value)

    def get(self, r: Reader) -> bytes:
        return r.tpm2b(self.tpm_type)


@record
class Sized(Codec[S]):
    """A TPM2B that wraps a structure (TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE...)."""

    struct: type[S]
    tpm_type: str = "TPM2B"
    is_2b: bool = True

    def put(self, value: S) -> bytes:
        return tpm2b(value.marshal())

    def get(self, r: Reader) -> S:
        parsed: S = r.sized(self.struct.unmarshal, self.tpm_type)
        return parsed


@record
class Struct(Codec[S]):
    """A structure marshaled in place, without a size prefix."""

    struct: type[S]
    tpm_type: str = "TPMS"

    def put(self, value: S) -> bytes:
        return value.marshal()

    def get(self, r: Reader) -> S:
        parsed: S = self.struct.unmarshal(r)
        return parsed


U16 = UInt(2, "UINT16")
U32 = UInt(4, "UINT32")
YES_NO = UInt(1, "TPMI_YES_NO")
ALG_ID = UInt(2, "TPM_ALG_ID")
DIGEST = Buffer("TPM2B_DIGEST")
DATA = Buffer("TPM2B_DATA")
AUTH = Buffer("TPM2B_AUTH")
NONCE = Buffer("TPM2B_NONCE")
NAME = Buffer("TPM2B_NAME")
PRIVATE = Buffer("TPM2B_PRIVATE")
MAX_NV_BUFFER = Buffer("TPM2B_MAX_NV_BUFFER")
SENSITIVE_DATA = Buffer("TPM2B_SENSITIVE_DATA")
ENCRYPTED_SECRET = Buffer("TPM2B_ENCRYPTED_SECRET")
