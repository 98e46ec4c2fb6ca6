"""TPM 2.0 structures as frozen records (TPM 2.0 Part 2; :mod:`tpmseal.records`).

Each structure has ``marshal() -> bytes`` and ``unmarshal(r: Reader)``; the
reader consumes exactly the structure's bytes. Size-prefixed wrappers
(TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE...) are expressed with
:meth:`Reader.sized` and :func:`tpm2b` by the code that embeds them, so the inner
structure is the one that carries the fields.

The structures ``tpmseal unseal`` does not use (digest values, signatures, NV
public areas, contexts, capability data) are in
:mod:`tpmseal.wire.structures_cold`, defined the first time one of them is asked
for here; import every structure from this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tpmseal import digests
from tpmseal.errors import DecodeError
from tpmseal.records import record, replace
from tpmseal.wire.constants import (
    HASH_NAMES,
    TPM_ALG,
    TPM_ECC,
    enum_name,
)
from tpmseal.wire.marshal import Reader, parse_exact, tpm2b, u8, u16, u32


def digest(alg: int, data: bytes) -> bytes:
    """Hash *data* with a TPM hash algorithm (Part 2 §6.3)."""
    name = HASH_NAMES.get(alg)
    if name is None:
        raise ValueError(f"unsupported hash algorithm {enum_name(TPM_ALG, alg)}")
    return digests.digest(name, data)


# --------------------------------------------------------------------------- PCRs


@record
class PcrSelection:
    """TPMS_PCR_SELECTION (Part 2 §10.6.2): one bank and a set of PCR indices."""

    hash_alg: int
    pcrs: tuple[int, ...]
    size_of_select: int = 3

    def marshal(self) -> bytes:
        bits = bytearray(self.size_of_select)
        for i in self.pcrs:
            bits[i // 8] |= 1 << (i % 8)
        return u16(self.hash_alg) + u8(self.size_of_select) + bytes(bits)

    @classmethod
    def unmarshal(cls, r: Reader) -> PcrSelection:
        alg = r.u16("TPMS_PCR_SELECTION.hash")
        n = r.u8("TPMS_PCR_SELECTION.sizeofSelect")
        bits = r.raw(n, "TPMS_PCR_SELECTION.pcrSelect")
        pcrs = tuple(i for i in range(n * 8) if bits[i // 8] & (1 << (i % 8)))
        return cls(alg, pcrs, n)


@record
class PcrSelectionList:
    """TPML_PCR_SELECTION (Part 2 §10.9.7). Order of banks and indices matters."""

    selections: tuple[PcrSelection, ...] = ()

    def marshal(self) -> bytes:
        return u32(len(self.selections)) + b"".join(s.marshal() for s in self.selections)

    @classmethod
    def unmarshal(cls, r: Reader) -> PcrSelectionList:
        n = r.u32("TPML_PCR_SELECTION.count")
        if n > 16:
            raise DecodeError(f"TPML_PCR_SELECTION.count {n} exceeds 16", r.position - 4)
        return cls(tuple(PcrSelection.unmarshal(r) for _ in range(n)))

    def pairs(self) -> list[tuple[int, int]]:
        """(bank, index) pairs in the TPM's canonical order: bank order, then ascending."""
        return [(s.hash_alg, i) for s in self.selections for i in sorted(s.pcrs)]


@record
class DigestList:
    """TPML_DIGEST (Part 2 §10.9.3)."""

    digests: tuple[bytes, ...] = ()

    def marshal(self) -> bytes:
        return u32(len(self.digests)) + b"".join(tpm2b(d) for d in self.digests)

    @classmethod
    def unmarshal(cls, r: Reader) -> DigestList:
        n = r.u32("TPML_DIGEST.count")
        if n > 8:
            raise DecodeError(f"TPML_DIGEST.count {n} exceeds 8", r.position - 4)
        return cls(tuple(r.tpm2b("TPM2B_DIGEST") for _ in range(n)))


# --------------------------------------------------------------------------- algorithms


@record
class SymDef:
    """TPMT_SYM_DEF / TPMT_SYM_DEF_OBJECT (Part 2 §11.1.6, §11.1.7).

    ``algorithm`` NULL means no symmetric algorithm; XOR carries a hash
    algorithm in ``key_bits`` and no mode.
    """

    algorithm: int = TPM_ALG.NULL
    key_bits: int = 0
    mode: int = TPM_ALG.NULL

    def marshal(self) -> bytes:
        if self.algorithm == TPM_ALG.NULL:
            return u16(self.algorithm)
        if self.algorithm == TPM_ALG.XOR:
            return u16(self.algorithm) + u16(self.key_bits)
        return u16(self.algorithm) + u16(self.key_bits) + u16(self.mode)

    @classmethod
    def unmarshal(cls, r: Reader) -> SymDef:
        alg = r.u16("TPMT_SYM_DEF.algorithm")
        if alg == TPM_ALG.NULL:
            return cls()
        bits = r.u16("TPMT_SYM_DEF.keyBits")
        if alg == TPM_ALG.XOR:
            return cls(alg, bits)
        return cls(alg, bits, r.u16("TPMT_SYM_DEF.mode"))


AES_128_CFB = SymDef(TPM_ALG.AES, 128, TPM_ALG.CFB)
AES_256_CFB = SymDef(TPM_ALG.AES, 256, TPM_ALG.CFB)

#: UINT16 fields that follow each scheme identifier (Part 2 §11.2: TPMU_*_SCHEME).
_SCHEME_DETAILS: dict[int, tuple[str, ...]] = {
    TPM_ALG.NULL: (),
    TPM_ALG.RSAES: (),
    TPM_ALG.OAEP: ("hashAlg",),
    TPM_ALG.RSASSA: ("hashAlg",),
    TPM_ALG.RSAPSS: ("hashAlg",),
    TPM_ALG.ECDSA: ("hashAlg",),
    TPM_ALG.ECDH: ("hashAlg",),
    TPM_ALG.ECDAA: ("hashAlg", "count"),
    TPM_ALG.SM2: ("hashAlg",),
    TPM_ALG.ECSCHNORR: ("hashAlg",),
    TPM_ALG.ECMQV: ("hashAlg",),
    TPM_ALG.HMAC: ("hashAlg",),
    TPM_ALG.XOR: ("hashAlg", "kdf"),
    TPM_ALG.MGF1: ("hashAlg",),
    TPM_ALG.KDF1_SP800_56A: ("hashAlg",),
    TPM_ALG.KDF2: ("hashAlg",),
    TPM_ALG.KDF1_SP800_108: ("hashAlg",),
}


@record
class Scheme:
    """A TPMT_*_SCHEME: an algorithm id and its UINT16 details (Part 2 §11.2)."""

    scheme: int = TPM_ALG.NULL
    details: tuple[int, ...] = ()

    def marshal(self) -> bytes:
        return u16(self.scheme) + b"".join(u16(d) for d in self.details)

    @classmethod
    def unmarshal(cls, r: Reader) -> Scheme:
        alg = r.u16("TPMT_SCHEME.scheme")
        names = _SCHEME_DETAILS.get(alg)
        if names is None:
            raise DecodeError(f"unknown scheme {enum_name(TPM_ALG, alg)}", r.position - 2)
        return cls(alg, tuple(r.u16(f"TPMT_SCHEME.{n}") for n in names))


NULL_SCHEME = Scheme()


@record
class RsaParms:
    """TPMS_RSA_PARMS (Part 2 §12.2.3.5)."""

    symmetric: SymDef = SymDef()
    scheme: Scheme = NULL_SCHEME
    key_bits: int = 2048
    exponent: int = 0

    def marshal(self) -> bytes:
        return (self.symmetric.marshal() + self.scheme.marshal() + u16(self.key_bits)
                + u32(self.exponent))

    @classmethod
    def unmarshal(cls, r: Reader) -> RsaParms:
        return cls(SymDef.unmarshal(r), Scheme.unmarshal(r), r.u16("keyBits"), r.u32("exponent"))


@record
class EccParms:
    """TPMS_ECC_PARMS (Part 2 §12.2.3.6)."""

    symmetric: SymDef = SymDef()
    scheme: Scheme = NULL_SCHEME
    curve_id: int = TPM_ECC.NIST_P256
    kdf: Scheme = NULL_SCHEME

    def marshal(self) -> bytes:
        return (self.symmetric.marshal() + self.scheme.marshal() + u16(self.curve_id)
                + self.kdf.marshal())

    @classmethod
    def unmarshal(cls, r: Reader) -> EccParms:
        return cls(SymDef.unmarshal(r), Scheme.unmarshal(r), r.u16("curveID"),
                   Scheme.unmarshal(r))


@record
class KeyedHashParms:
    """TPMS_KEYEDHASH_PARMS (Part 2 §12.2.3.3)."""

    scheme: Scheme = NULL_SCHEME

    def marshal(self) -> bytes:
        return self.scheme.marshal()

    @classmethod
    def unmarshal(cls, r: Reader) -> KeyedHashParms:
        return cls(Scheme.unmarshal(r))


@record
class SymCipherParms:
    """TPMS_SYMCIPHER_PARMS (Part 2 §12.2.3.1)."""

    sym: SymDef = AES_128_CFB

    def marshal(self) -> bytes:
        return self.sym.marshal()

    @classmethod
    def unmarshal(cls, r: Reader) -> SymCipherParms:
        return cls(SymDef.unmarshal(r))


Parms = RsaParms | EccParms | KeyedHashParms | SymCipherParms

_PARMS_BY_TYPE: dict[int, type[RsaParms] | type[EccParms] | type[KeyedHashParms]
                      | type[SymCipherParms]] = {
    TPM_ALG.RSA: RsaParms,
    TPM_ALG.ECC: EccParms,
    TPM_ALG.KEYEDHASH: KeyedHashParms,
    TPM_ALG.SYMCIPHER: SymCipherParms,
}


def _parms_class(type_: int, at: int) -> type[Parms]:
    """The parameters class of a public type; *at* is the type field's offset."""
    cls = _PARMS_BY_TYPE.get(type_)
    if cls is None:
        raise DecodeError(f"unsupported public type {enum_name(TPM_ALG, type_)}", at)
    return cls


def _parms_for(type_: int, r: Reader) -> Parms:
    """Parse the parameters that immediately follow the type field."""
    return _parms_class(type_, r.position - 2).unmarshal(r)


@record
class PublicParms:
    """TPMT_PUBLIC_PARMS (Part 2 §12.2.3.8), the argument of TPM2_TestParms."""

    type: int
    parameters: Parms

    def marshal(self) -> bytes:
        return u16(self.type) + self.parameters.marshal()

    @classmethod
    def unmarshal(cls, r: Reader) -> PublicParms:
        t = r.u16("TPMT_PUBLIC_PARMS.type")
        return cls(t, _parms_for(t, r))


@record
class EccPoint:
    """TPMS_ECC_POINT (Part 2 §11.2.5.2)."""

    x: bytes
    y: bytes

    def marshal(self) -> bytes:
        return tpm2b(self.x) + tpm2b(self.y)

    @classmethod
    def unmarshal(cls, r: Reader) -> EccPoint:
        return cls(r.tpm2b("TPMS_ECC_POINT.x"), r.tpm2b("TPMS_ECC_POINT.y"))


Unique = bytes | EccPoint


def _name_alg(r: Reader, what: str) -> int:
    """A nameAlg this stack can hash with: the Name of the object depends on it (Part 1 §16)."""
    at = r.position
    alg = r.u16(what)
    if alg not in HASH_NAMES:
        raise DecodeError(f"{what} {enum_name(TPM_ALG, alg)} is not a supported hash", at)
    return alg


@record
class Public:
    """TPMT_PUBLIC (Part 2 §12.2.4): the public area of an object.

    ``unique`` is the RSA modulus / keyed-hash or symcipher digest as bytes, or an
    :class:`EccPoint` for ECC keys.
    """

    type: int
    name_alg: int
    object_attributes: int
    auth_policy: bytes
    parameters: Parms
    unique: Unique = b""

    def marshal(self) -> bytes:
        uniq = self.unique.marshal() if isinstance(self.unique, EccPoint) else tpm2b(self.unique)
        return (u16(self.type) + u16(self.name_alg) + u32(self.object_attributes)
                + tpm2b(self.auth_policy) + self.parameters.marshal() + uniq)

    @classmethod
    def unmarshal(cls, r: Reader) -> Public:
        at = r.position
        t = r.u16("TPMT_PUBLIC.type")
        parms_cls = _parms_class(t, at)
        name_alg = _name_alg(r, "TPMT_PUBLIC.nameAlg")
        attrs = r.u32("TPMT_PUBLIC.objectAttributes")
        policy = r.tpm2b("TPMT_PUBLIC.authPolicy")
        parms = parms_cls.unmarshal(r)
        unique: Unique = (EccPoint.unmarshal(r) if t == TPM_ALG.ECC
                          else r.tpm2b("TPMT_PUBLIC.unique"))
        return cls(t, name_alg, attrs, policy, parms, unique)

    def sized(self) -> bytes:
        """The TPM2B_PUBLIC encoding (what tpm2-tools writes with ``-u``)."""
        return tpm2b(self.marshal())

    @classmethod
    def from_sized(cls, data: bytes) -> Public:
        """Parse a complete TPM2B_PUBLIC."""
        return parse_exact(data, lambda r: r.sized(cls.unmarshal, "TPM2B_PUBLIC"), "TPM2B_PUBLIC")

    @classmethod
    def from_bytes(cls, data: bytes) -> Public:
        """Parse a complete TPMT_PUBLIC (no size prefix)."""
        return parse_exact(data, cls.unmarshal, "TPMT_PUBLIC")

    def name(self) -> bytes:
        """The object's Name: nameAlg ‖ H_nameAlg(TPMT_PUBLIC) (Part 1 §16)."""
        return u16(self.name_alg) + digest(self.name_alg, self.marshal())

    def with_unique(self, unique: Unique) -> Public:
        return replace(self, unique=unique)


@record
class SensitiveCreate:
    """TPMS_SENSITIVE_CREATE (Part 2 §11.1.15): the new object's authValue and data."""

    user_auth: bytes = b""
    data: bytes = b""

    def marshal(self) -> bytes:
        return tpm2b(self.user_auth) + tpm2b(self.data)

    @classmethod
    def unmarshal(cls, r: Reader) -> SensitiveCreate:
        return cls(r.tpm2b("TPMS_SENSITIVE_CREATE.userAuth"),
                   r.tpm2b("TPMS_SENSITIVE_CREATE.data"))

    def __repr__(self) -> str:  # never show the secret
        return (f"SensitiveCreate(user_auth=<{len(self.user_auth)} bytes>, "
                f"data=<{len(self.data)} bytes>)")


@record
class CreationData:
    """TPMS_CREATION_DATA (Part 2 §15.1)."""

    pcr_select: PcrSelectionList
    pcr_digest: bytes
    locality: int
    parent_name_alg: int
    parent_name: bytes
    parent_qualified_name: bytes
    outside_info: bytes

    def marshal(self) -> bytes:
        return (self.pcr_select.marshal() + tpm2b(self.pcr_digest) + u8(self.locality)
                + u16(self.parent_name_alg) + tpm2b(self.parent_name)
                + tpm2b(self.parent_qualified_name) + tpm2b(self.outside_info))

    @classmethod
    def unmarshal(cls, r: Reader) -> CreationData:
        return cls(PcrSelectionList.unmarshal(r), r.tpm2b("pcrDigest"), r.u8("locality"),
                   r.u16("parentNameAlg"), r.tpm2b("parentName"),
                   r.tpm2b("parentQualifiedName"), r.tpm2b("outsideInfo"))


@record
class Ticket:
    """TPMT_TK_CREATION and friends (Part 2 §10.7): tag, hierarchy, digest."""

    tag: int
    hierarchy: int
    digest: bytes

    def marshal(self) -> bytes:
        return u16(self.tag) + u32(self.hierarchy) + tpm2b(self.digest)

    @classmethod
    def unmarshal(cls, r: Reader) -> Ticket:
        return cls(r.u16("TPMT_TK.tag"), r.u32("TPMT_TK.hierarchy"), r.tpm2b("TPMT_TK.digest"))


# --------------------------------------------------------------------------- the cold half

if TYPE_CHECKING:
    # for type checkers (a star import re-exports under mypy --strict)
    from tpmseal.wire.structures_cold import *  # noqa: F403
else:
    def __getattr__(name: str) -> Any:
        """PEP 562: a name of wire/structures_cold.py defines that module."""
        if not name.startswith("__"):
            from tpmseal.wire import structures_cold

            globals().update({k: v for k, v in vars(structures_cold).items()
                              if isinstance(v, type) and v.__module__ == structures_cold.__name__})
            if name in globals():
                return globals()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
