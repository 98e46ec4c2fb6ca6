"""The TPM structures ``tpmseal unseal`` does not use (TPM 2.0 Part 2).

Declared exactly as in :mod:`tpmseal.wire.structures` (frozen records with
``marshal()`` and ``unmarshal(r)``, Part 2 sections cited), which re-exports
every name here and defines this module the first time one of them is asked for
(PEP 562 ``__getattr__``), the way :mod:`tpmseal.wire.commands_cold` completes
the command registry: PCR_Extend's digest values, signatures, NV public areas,
saved contexts and capability data. Import the names from
:mod:`tpmseal.wire.structures`.
"""

from __future__ import annotations

from tpmseal.errors import DecodeError
from tpmseal.records import field, record, replace
from tpmseal.wire.constants import HASH_SIZES, TPM_ALG, TPM_CAP, TPMA_NV, enum_name
from tpmseal.wire.marshal import Reader, tpm2b, u16, u32, u64
from tpmseal.wire.structures import PcrSelectionList, _name_alg, digest

# --------------------------------------------------------------------------- PCRs


@record
class DigestValues:
    """TPML_DIGEST_VALUES (Part 2 §10.9.5): (hashAlg, digest) pairs for PCR_Extend."""

    values: tuple[tuple[int, bytes], ...] = ()

    def marshal(self) -> bytes:
        out = u32(len(self.values))
        for alg, d in self.values:
            out += u16(alg) + d
        return out

    @classmethod
    def unmarshal(cls, r: Reader) -> DigestValues:
        n = r.u32("TPML_DIGEST_VALUES.count")
        vals = []
        for _ in range(n):
            alg = r.u16("TPMT_HA.hashAlg")
            size = HASH_SIZES.get(alg)
            if size is None:
                raise DecodeError(f"TPMT_HA: unknown hash {alg:#x}", r.position - 2)
            vals.append((alg, r.raw(size, "TPMT_HA.digest")))
        return cls(tuple(vals))


# --------------------------------------------------------------------------- signatures


@record
class Signature:
    """TPMT_SIGNATURE (Part 2 §11.3.4) for RSASSA/RSAPSS (*sig*) and ECDSA (*r*, *s*)."""

    sig_alg: int
    hash_alg: int
    sig: bytes = b""
    r: bytes = b""
    s: bytes = b""

    def marshal(self) -> bytes:
        if self.sig_alg in (TPM_ALG.RSASSA, TPM_ALG.RSAPSS):
            return u16(self.sig_alg) + u16(self.hash_alg) + tpm2b(self.sig)
        if self.sig_alg == TPM_ALG.ECDSA:
            return u16(self.sig_alg) + u16(self.hash_alg) + tpm2b(self.r) + tpm2b(self.s)
        raise ValueError(f"unsupported signature scheme {enum_name(TPM_ALG, self.sig_alg)}")

    @classmethod
    def unmarshal(cls, r: Reader) -> Signature:
        alg = r.u16("TPMT_SIGNATURE.sigAlg")
        if alg in (TPM_ALG.RSASSA, TPM_ALG.RSAPSS):
            return cls(alg, r.u16("TPMS_SIGNATURE_RSA.hash"), r.tpm2b("TPMS_SIGNATURE_RSA.sig"))
        if alg == TPM_ALG.ECDSA:
            h = r.u16("TPMS_SIGNATURE_ECC.hash")
            return cls(alg, h, r=r.tpm2b("signatureR"), s=r.tpm2b("signatureS"))
        raise DecodeError(f"unsupported signature scheme {enum_name(TPM_ALG, alg)}",
                          r.position - 2)


# --------------------------------------------------------------------------- NV indices


@record
class NvPublic:
    """TPMS_NV_PUBLIC (Part 2 §13.5)."""

    nv_index: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    data_size: int

    def marshal(self) -> bytes:
        return (u32(self.nv_index) + u16(self.name_alg) + u32(self.attributes)
                + tpm2b(self.auth_policy) + u16(self.data_size))

    @classmethod
    def unmarshal(cls, r: Reader) -> NvPublic:
        return cls(r.u32("nvIndex"), _name_alg(r, "nameAlg"), r.u32("attributes"),
                   r.tpm2b("authPolicy"), r.u16("dataSize"))

    def name(self) -> bytes:
        """The index's Name: nameAlg ‖ H(TPMS_NV_PUBLIC) (Part 1 §16)."""
        return u16(self.name_alg) + digest(self.name_alg, self.marshal())

    def written(self) -> NvPublic:
        """This public area as it reads after the first write (TPMA_NV_WRITTEN set)."""
        return replace(self, attributes=self.attributes | TPMA_NV.WRITTEN)


# --------------------------------------------------------------------------- contexts


@record
class Context:
    """TPMS_CONTEXT (Part 2 §14.5): a saved object or session context."""

    sequence: int
    saved_handle: int
    hierarchy: int
    blob: bytes

    def marshal(self) -> bytes:
        return u64(self.sequence) + u32(self.saved_handle) + u32(self.hierarchy) + tpm2b(self.blob)

    @classmethod
    def unmarshal(cls, r: Reader) -> Context:
        return cls(r.u64("sequence"), r.u32("savedHandle"), r.u32("hierarchy"),
                   r.tpm2b("contextBlob"))


# --------------------------------------------------------------------------- capabilities


@record
class CapabilityData:
    """TPMS_CAPABILITY_DATA (Part 2 §10.10.2) for the capabilities tpmseal reads.

    ``items`` holds, by capability: ALGS (alg, attributes); HANDLES, COMMANDS
    (value,); PCRS (hash alg, pcr indices...); TPM_PROPERTIES (property, value);
    ECC_CURVES (curve,).
    """

    capability: int
    items: tuple[tuple[int, ...], ...] = field(default=())
    pcrs: PcrSelectionList = PcrSelectionList()

    def marshal(self) -> bytes:
        c = self.capability
        if c == TPM_CAP.PCRS:
            return u32(c) + self.pcrs.marshal()
        out = u32(c) + u32(len(self.items))
        for item in self.items:
            if c == TPM_CAP.ALGS:
                out += u16(item[0]) + u32(item[1])
            elif c == TPM_CAP.TPM_PROPERTIES:
                out += u32(item[0]) + u32(item[1])
            elif c == TPM_CAP.ECC_CURVES:
                out += u16(item[0])
            else:
                out += u32(item[0])
        return out

    @classmethod
    def unmarshal(cls, r: Reader) -> CapabilityData:
        c = r.u32("TPMS_CAPABILITY_DATA.capability")
        if c == TPM_CAP.PCRS:
            return cls(c, pcrs=PcrSelectionList.unmarshal(r))
        if c not in (TPM_CAP.ALGS, TPM_CAP.HANDLES, TPM_CAP.COMMANDS, TPM_CAP.TPM_PROPERTIES,
                     TPM_CAP.ECC_CURVES, TPM_CAP.PP_COMMANDS, TPM_CAP.AUDIT_COMMANDS):
            raise DecodeError(f"unsupported capability {c:#x}", r.position - 4)
        n = r.u32("TPML.count")
        if n > 1024:
            raise DecodeError(f"capability list count {n} is implausible", r.position - 4)
        items: list[tuple[int, ...]] = []
        for _ in range(n):
            if c == TPM_CAP.ALGS:
                items.append((r.u16("alg"), r.u32("algProperties")))
            elif c == TPM_CAP.TPM_PROPERTIES:
                items.append((r.u32("property"), r.u32("value")))
            elif c == TPM_CAP.ECC_CURVES:
                items.append((r.u16("curve"),))
            else:
                items.append((r.u32("handle"),))
        return cls(c, tuple(items))
