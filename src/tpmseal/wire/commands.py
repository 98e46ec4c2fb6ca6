"""The declarative command registry (docs/ARCHITECTURE.md, principle 1).

Each TPM command is one frozen record (:mod:`tpmseal.records`, a dataclass to
type checkers) whose fields are its handles and parameters, in wire order, with a
codec per parameter; its response is another.
Everything else reads these declarations: the client marshals commands and
parses responses from them, computes cpHash from the handles' Names and the
parameter bytes, decides whether the first parameter can be encrypted (it can
when it is a TPM2B), and the sniffer decodes captured traffic with them.

Adding a command is one entry here, or in :mod:`tpmseal.wire.commands_cold`
for one ``tpmseal unseal`` does not send (plus a round-trip vector in the
tests). That module is the second half of this registry, defined on first use:
the first time one of its names, or ``REGISTRY`` (every command), is asked for
here (PEP 562 ``__getattr__``), since defining its ~37 records is about 0.75 ms
of an unseal's start-up. Each record's :class:`Layout` is built on its first use.
Sections refer to TPM 2.0 Library Specification Part 3 ("Commands").
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tpmseal.records import MISSING, fields, record
from tpmseal.records import field as _field
from tpmseal.wire import codecs as c
from tpmseal.wire.codecs import Codec
from tpmseal.wire.constants import TPM_CC
from tpmseal.wire.marshal import Reader
from tpmseal.wire.structures import (
    CreationData,
    DigestList,
    PcrSelectionList,
    Public,
    SensitiveCreate,
    SymDef,
    Ticket,
)

if TYPE_CHECKING:
    from typing import Generic as Parametric
else:  # no typing aliases at run time (start-up time)
    from tpmseal.records import Parametric


def handle(*, auth: bool = False, default: int | None = None) -> Any:
    """Declare a handle-area field; *auth* marks handles that need a session."""
    meta = {"kind": "handle", "auth": auth}
    if default is None:
        return _field(metadata=meta)
    return _field(default=default, metadata=meta)


def param(codec: Codec[Any], default: Any = MISSING) -> Any:
    """Declare a parameter-area field marshaled with *codec*."""
    return _field(default=default, metadata={"kind": "param", "codec": codec})


@record
class FieldSpec:
    name: str
    codec: Codec[Any] | None  # None for handles
    auth: bool = False


@record
class Layout:
    """The handle and parameter fields of a command or response, in wire order."""

    handles: tuple[FieldSpec, ...]
    params: tuple[FieldSpec, ...]

    @property
    def first_param_encryptable(self) -> bool:
        """True when the first parameter is a TPM2B (Part 1 §21.1)."""
        return bool(self.params) and bool(self.params[0].codec and self.params[0].codec.is_2b)


def _layout(cls: type) -> Layout:
    hs: list[FieldSpec] = []
    ps: list[FieldSpec] = []
    for f in fields(cls):
        if f.metadata.get("kind") == "handle":
            hs.append(FieldSpec(f.name, None, bool(f.metadata["auth"])))
        elif f.metadata.get("kind") == "param":
            ps.append(FieldSpec(f.name, f.metadata["codec"]))
    return Layout(tuple(hs), tuple(ps))


class Declared:
    """What commands and responses share: fields read from their record declaration."""

    @classmethod
    @cache
    def layout(cls) -> Layout:
        return _layout(cls)

    @classmethod
    def from_wire(cls, handles: list[int], params: Reader) -> Any:
        """Build an instance from its handle values and a reader over the parameters,
        which must be consumed exactly."""
        lay = cls.layout()
        values: dict[str, Any] = dict(zip((h.name for h in lay.handles), handles, strict=True))
        for p in lay.params:
            assert p.codec is not None
            values[p.name] = p.codec.get(params)
        params.done(f"{cls.__name__} parameters")
        return cls(**values)

    def handle_values(self) -> list[int]:
        return [getattr(self, h.name) for h in self.layout().handles]

    def param_parts(self) -> list[bytes]:
        """Each parameter marshaled on its own, in order."""
        out = []
        for p in self.layout().params:
            assert p.codec is not None
            out.append(p.codec.put(getattr(self, p.name)))
        return out


class Response(Declared):
    """Base of response declarations."""

    def param_bytes(self) -> bytes:
        """The response parameter area as the TPM would marshal it."""
        return b"".join(self.param_parts())


R = TypeVar("R", bound=Response)

#: The command classes defined so far, by code; ``REGISTRY`` and :func:`registry`
#: give every one.
_REGISTRY: dict[int, type[Command[Any]]] = {}


class Command(Declared, Parametric[R]):
    """Base of command declarations; subclasses register themselves."""

    CC: ClassVar[int]
    SECTION: ClassVar[str]
    RESPONSE: ClassVar[type[Any]]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _REGISTRY[int(cls.CC)] = cls


@record
class Empty(Response):
    """A response with no handles and no parameters."""


# ----------------------------------------------------------------------------- sessions


@record
class StartAuthSessionResponse(Response):
    session_handle: int = handle()
    nonce_tpm: bytes = param(c.NONCE)


@record
class StartAuthSession(Command[StartAuthSessionResponse]):
    """TPM2_StartAuthSession (Part 3 §11.1): *tpm_key* decrypts the salt, *bind* binds."""

    CC = TPM_CC.StartAuthSession
    SECTION = "Part 3 §11.1"
    RESPONSE = StartAuthSessionResponse
    tpm_key: int = handle()
    bind: int = handle()
    nonce_caller: bytes = param(c.NONCE)
    encrypted_salt: bytes = param(c.ENCRYPTED_SECRET)
    session_type: int = param(c.UInt(1, "TPM_SE"))
    symmetric: SymDef = param(c.Struct(SymDef, "TPMT_SYM_DEF"))
    auth_hash: int = param(c.ALG_ID)


# ------------------------------------------------------------------------------ objects


@record
class CreateResponse(Response):
    out_private: bytes = param(c.PRIVATE)
    out_public: Public = param(c.Sized(Public, "TPM2B_PUBLIC"))
    creation_data: CreationData = param(c.Sized(CreationData, "TPM2B_CREATION_DATA"))
    creation_hash: bytes = param(c.DIGEST)
    creation_ticket: Ticket = param(c.Struct(Ticket, "TPMT_TK_CREATION"))


@record
class Create(Command[CreateResponse]):
    """TPM2_Create (Part 3 §12.1): a new object under *parent_handle*."""

    CC = TPM_CC.Create
    SECTION = "Part 3 §12.1"
    RESPONSE = CreateResponse
    parent_handle: int = handle(auth=True)
    in_sensitive: SensitiveCreate = param(c.Sized(SensitiveCreate, "TPM2B_SENSITIVE_CREATE"))
    in_public: Public = param(c.Sized(Public, "TPM2B_PUBLIC"))
    outside_info: bytes = param(c.DATA, b"")
    creation_pcr: PcrSelectionList = param(
        c.Struct(PcrSelectionList, "TPML_PCR_SELECTION"), PcrSelectionList())


@record
class LoadResponse(Response):
    object_handle: int = handle()
    name: bytes = param(c.NAME)


@record
class Load(Command[LoadResponse]):
    """TPM2_Load (Part 3 §12.2): load an object's private and public parts."""

    CC = TPM_CC.Load
    SECTION = "Part 3 §12.2"
    RESPONSE = LoadResponse
    parent_handle: int = handle(auth=True)
    in_private: bytes = param(c.PRIVATE)
    in_public: Public = param(c.Sized(Public, "TPM2B_PUBLIC"))


@record
class UnsealResponse(Response):
    out_data: bytes = param(c.SENSITIVE_DATA)

    def __repr__(self) -> str:  # never show the secret
        return f"UnsealResponse(out_data=<{len(self.out_data)} bytes>)"


@record
class Unseal(Command[UnsealResponse]):
    """TPM2_Unseal (Part 3 §12.7): return a sealed data object's data."""

    CC = TPM_CC.Unseal
    SECTION = "Part 3 §12.7"
    RESPONSE = UnsealResponse
    item_handle: int = handle(auth=True)


# --------------------------------------------------------------------- context management


@record
class FlushContext(Command[Empty]):
    """TPM2_FlushContext (Part 3 §28.4); the handle travels in the parameter area."""

    CC = TPM_CC.FlushContext
    SECTION = "Part 3 §28.4"
    RESPONSE = Empty
    flush_handle: int = param(c.UInt(4, "TPMI_DH_CONTEXT"))


# ------------------------------------------------------------------------------- policy


@record
class PolicyPCR(Command[Empty]):
    """TPM2_PolicyPCR (Part 3 §23.7): gate on PCR values."""

    CC = TPM_CC.PolicyPCR
    SECTION = "Part 3 §23.7"
    RESPONSE = Empty
    policy_session: int = handle()
    pcr_digest: bytes = param(c.DIGEST)
    pcrs: PcrSelectionList = param(c.Struct(PcrSelectionList, "TPML_PCR_SELECTION"))


@record
class PolicyAuthValue(Command[Empty]):
    """TPM2_PolicyAuthValue (Part 3 §23.17): require the object's authValue in the HMAC."""

    CC = TPM_CC.PolicyAuthValue
    SECTION = "Part 3 §23.17"
    RESPONSE = Empty
    policy_session: int = handle()


# --------------------------------------------------------------------------------- PCRs


@record
class PCR_ReadResponse(Response):
    pcr_update_counter: int = param(c.U32)
    pcr_selection_out: PcrSelectionList = param(c.Struct(PcrSelectionList, "TPML_PCR_SELECTION"))
    pcr_values: DigestList = param(c.Struct(DigestList, "TPML_DIGEST"))


@record
class PCR_Read(Command[PCR_ReadResponse]):
    """TPM2_PCR_Read (Part 3 §22.4): at most 8 digests per call."""

    CC = TPM_CC.PCR_Read
    SECTION = "Part 3 §22.4"
    RESPONSE = PCR_ReadResponse
    pcr_selection_in: PcrSelectionList = param(c.Struct(PcrSelectionList, "TPML_PCR_SELECTION"))


# ----------------------------------------------------------------------------------- NV


@record
class NV_ReadResponse(Response):
    data: bytes = param(c.MAX_NV_BUFFER)

    def __repr__(self) -> str:  # NV may hold a legacy plaintext key
        return f"NV_ReadResponse(data=<{len(self.data)} bytes>)"


@record
class NV_Read(Command[NV_ReadResponse]):
    """TPM2_NV_Read (Part 3 §31.13)."""

    CC = TPM_CC.NV_Read
    SECTION = "Part 3 §31.13"
    RESPONSE = NV_ReadResponse
    auth_handle: int = handle(auth=True)
    nv_index: int = handle()
    size: int = param(c.U16)
    offset: int = param(c.U16, 0)


def registry() -> dict[int, type[Command[Any]]]:
    """Every registered command class by command code (the cold ones defined first)."""
    if "REGISTRY" not in globals():
        from tpmseal.wire import commands_cold

        globals().update({name: value for name, value in vars(commands_cold).items()
                          if isinstance(value, type) and issubclass(value, Declared)
                          and value.__module__ == commands_cold.__name__})
        globals()["REGISTRY"] = _REGISTRY
    return _REGISTRY


if TYPE_CHECKING:
    #: Every registered command class, by command code.
    REGISTRY: dict[int, type[Command[Any]]] = _REGISTRY
    # the cold half, for type checkers (a star import re-exports under mypy --strict)
    from tpmseal.wire.commands_cold import *  # noqa: F403
else:
    def __getattr__(name: str) -> Any:
        """PEP 562: a name of the cold half, or REGISTRY, defines the cold half."""
        if not name.startswith("__"):
            registry()
            if name in globals():
                return globals()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def response_class(cc: int) -> type[Response] | None:
    """The response declaration of a registered command code, if any."""
    cmd = registry().get(cc)
    return None if cmd is None else cmd.RESPONSE
