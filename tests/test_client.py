"""The Tpm client: Names, bookkeeping of what it loads, cleanup, multi-call helpers."""

from __future__ import annotations

import pytest

from test_session_support import (
    ENC,
    RSA_EK,
    FaultyTransport,
    load,
    new_secret,
    salted,
    same,
    seal,
    srk,
    user_sealed_template,
)
from tpmseal.client.tpm import Tpm
from tpmseal.errors import IntegrityError, UsageError
from tpmseal.recipes.templates import EK_ECC_TEMPLATE, SRK_RSA_TEMPLATE
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.transport.base import open_transport
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as c
from tpmseal.wire.constants import (
    TPM_ALG,
    TPM_CAP,
    TPM_CC,
    TPM_PT,
    TPM_RH,
    TPM_SE,
    TPMA_NV,
    TPMA_SESSION,
)
from tpmseal.wire.frames import build_response, split_response
from tpmseal.wire.marshal import Reader, tpm2b, u32
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import (
    AES_128_CFB,
    AES_256_CFB,
    NvPublic,
    PcrSelection,
    PcrSelectionList,
    SensitiveCreate,
    SymDef,
)


def _flushed(bus: CapturingTransport) -> list[int]:
    return [int.from_bytes(e.command[10:14], "big") for e in bus.exchanges
            if e.code == TPM_CC.FlushContext]


def test_names_of_permanent_and_session_handles(tpm: Tpm, bus: CapturingTransport) -> None:
    for h in (TPM_RH.OWNER, TPM_RH.ENDORSEMENT, TPM_RH.NULL, 0x00000007, 0x02000000,
              0x03000001):
        assert tpm.name_of(h) == u32(h)
    assert bus.exchanges == []  # no TPM traffic for self-named handles


def test_name_of_reads_once_and_checks(tpm: Tpm, bus: CapturingTransport) -> None:
    name = tpm.name_of(RSA_EK)
    assert name == tpm.read_public(RSA_EK).name()
    bus.clear()
    assert tpm.name_of(RSA_EK) == name
    assert bus.exchanges == []  # cached


def test_read_public_name_mismatch(sim: Simulator) -> None:
    def forge(code: int, command: bytes, response: bytes) -> bytes:
        if code != TPM_CC.ReadPublic:
            return response
        f = split_response(response, 0, 0)
        r = c.ReadPublicResponse.from_wire([], Reader(f.params))
        bad = r.name[:-1] + bytes([r.name[-1] ^ 1])
        params = r.out_public.sized() + tpm2b(bad) + tpm2b(r.qualified_name)
        return build_response(0, [], params, [])

    with Tpm(FaultyTransport(open_transport(sim.uri), forge)) as tpm:
        with pytest.raises(IntegrityError, match="does not match its public area"):
            tpm.read_public(RSA_EK)
        assert RSA_EK not in tpm.names


def test_create_primary_tracked_and_flushed(sim: Simulator) -> None:
    bus = CapturingTransport(open_transport(sim.uri))
    with Tpm(bus) as tpm:
        r = tpm.run(c.CreatePrimary(TPM_RH.ENDORSEMENT, SensitiveCreate(), EK_ECC_TEMPLATE))
        assert tpm.names[r.object_handle] == r.name == r.out_public.name()
        bus.clear()
    assert _flushed(bus) == [r.object_handle]


def test_close_flushes_after_a_failing_step(sim: Simulator) -> None:
    bus = CapturingTransport(open_transport(sim.uri))
    handles: list[int] = []
    with pytest.raises(TpmResponseError), Tpm(bus) as tpm:
        parent = srk(tpm)
        obj = seal(tpm, parent, new_secret(), user_sealed_template(), auth=b"pin")
        handles.append(load(tpm, parent, obj))
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=TPMA_SESSION.audit | 1)
        handles.append(s.handle)
        tpm.get_random(8, s)  # an audited response confirms the session key
        s.attributes = ENC | 1
        s.auth_value = b"wrong"
        bus.clear()
        tpm.run(c.Unseal(obj.handle), s)  # BAD_AUTH: the with block unwinds
    assert sorted(_flushed(bus)) == sorted(handles)
    assert all(e.rc == 0 for e in bus.exchanges if e.code == TPM_CC.FlushContext)


def test_scoped_flushes_once(tpm: Tpm, bus: CapturingTransport) -> None:
    parent = srk(tpm)
    obj = seal(tpm, parent, new_secret(), user_sealed_template())
    bus.clear()
    with tpm.scoped(load(tpm, parent, obj)) as h:
        same(tpm.run(c.Unseal(h)).out_data, obj.secret)
    assert _flushed(bus) == [obj.handle]
    with tpm.scoped(load(tpm, parent, obj)) as h:
        tpm.flush(h)  # flushed inside: not flushed again
    assert _flushed(bus) == [obj.handle, obj.handle]


def test_evict_control_moves_the_name(tpm: Tpm) -> None:
    r = tpm.run(c.CreatePrimary(TPM_RH.OWNER, SensitiveCreate(), SRK_RSA_TEMPLATE))
    tpm.run(c.EvictControl(TPM_RH.OWNER, r.object_handle, 0x81000005))
    assert tpm.names[0x81000005] == r.name
    tpm.flush(r.object_handle)
    assert r.object_handle not in tpm.names
    assert tpm.read_public(0x81000005).name() == r.name
    tpm.run(c.EvictControl(TPM_RH.OWNER, 0x81000005, 0x81000005))
    assert 0x81000005 not in tpm.names
    with pytest.raises(TpmResponseError) as e:
        tpm.read_public(0x81000005)
    assert e.value.name == "HANDLE" and e.value.rc.handle == 1


def test_nv_names_follow_define_write_undefine(tpm: Tpm, bus: CapturingTransport) -> None:
    pub = NvPublic(0x01500001, TPM_ALG.SHA256,
                   TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.NO_DA, b"", 100)
    tpm.run(c.NV_DefineSpace(TPM_RH.OWNER, b"", pub))
    assert tpm.names[pub.nv_index] == pub.name()
    assert tpm.nv_read_public(pub.nv_index) == pub
    data = bytes(range(100))
    bus.clear()
    tpm.nv_write(pub.nv_index, data, chunk=32)
    assert [e.code for e in bus.exchanges] == [TPM_CC.NV_Write] * 4
    assert tpm.names[pub.nv_index] == pub.written().name()
    assert tpm.nv_read_public(pub.nv_index) == pub.written()  # the TPM agrees
    assert tpm.nv_read(pub.nv_index, 100, chunk=48) == data
    # an HMAC session over the written index uses the new Name in its cpHash
    s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=ENC | 1)
    assert tpm.nv_read(pub.nv_index, 100, TPM_RH.OWNER, s) == data
    tpm.run(c.NV_UndefineSpace(TPM_RH.OWNER, pub.nv_index))
    assert pub.nv_index not in tpm.names


def test_nv_define_twice_is_nv_defined(tpm: Tpm) -> None:
    pub = NvPublic(0x01500002, TPM_ALG.SHA256, TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD, b"", 8)
    tpm.run(c.NV_DefineSpace(TPM_RH.OWNER, b"", pub))
    with pytest.raises(TpmResponseError) as e:
        tpm.run(c.NV_DefineSpace(TPM_RH.OWNER, b"", pub))
    assert e.value.name == "NV_DEFINED" and "already defined" in e.value.message


def test_ek_cert_indices(tpm: Tpm) -> None:
    nv = tpm.handles(0x01000000)
    assert 0x01C00002 in nv and 0x01C00016 in nv
    cert_pub = tpm.nv_read_public(0x01C00002)
    cert = tpm.nv_read(0x01C00002, cert_pub.data_size, 0x01C00002)
    assert cert[:1] == b"\x30"  # DER SEQUENCE


def test_queries(tpm: Tpm, bus: CapturingTransport) -> None:
    assert tpm.test_parms(AES_128_CFB) and tpm.test_parms(AES_256_CFB)
    assert not tpm.test_parms(SymDef(TPM_ALG.AES, 192, TPM_ALG.CFB))
    props = tpm.properties()
    assert props[TPM_PT.FAMILY_INDICATOR] == 0x322E3000  # "2.0"
    banks = tpm.pcr_banks()
    assert any(s.hash_alg == TPM_ALG.SHA256 and len(s.pcrs) == 24 for s in banks.selections)
    algs = tpm.capability(TPM_CAP.ALGS, 0, 4)  # small pages: follows moreData
    assert {TPM_ALG.RSA, TPM_ALG.AES, TPM_ALG.SHA256, TPM_ALG.ECC} <= {a[0] for a in algs}
    assert sorted(tpm.handles(0x81000000)) == [0x81010001, 0x81010016]
    bus.clear()
    assert len(tpm.get_random(100)) == 100
    assert len(bus.exchanges) >= 3  # at most 48 bytes per GetRandom


def test_pcr_read_more_than_eight(tpm: Tpm, bus: CapturingTransport) -> None:
    sel = PcrSelectionList((PcrSelection(TPM_ALG.SHA256, tuple(range(24))),))
    bus.clear()
    values = tpm.pcr_read(sel)
    assert len(values) == 24 and [e.code for e in bus.exchanges] == [TPM_CC.PCR_Read] * 3
    with pytest.raises(UsageError, match="allocated"):
        tpm.pcr_read(PcrSelectionList((PcrSelection(TPM_ALG.SHA1, (0,)),)))


def test_context_save_load(tpm: Tpm, bus: CapturingTransport) -> None:
    parent = srk(tpm)
    obj = seal(tpm, parent, new_secret(), user_sealed_template())
    load(tpm, parent, obj)
    ctx = tpm.run(c.ContextSave(obj.handle)).context
    tpm.flush(obj.handle)
    again = tpm.run(c.ContextLoad(ctx)).loaded_handle
    same(tpm.run(c.Unseal(again)).out_data, obj.secret)
    bus.clear()
    tpm.close()
    assert again in _flushed(bus)


def test_open_by_uri(sim: Simulator) -> None:
    with Tpm.open(sim.uri, retry_limit=1) as tpm:
        assert tpm.retry_limit == 1
        assert len(tpm.get_random(8)) == 8
        assert tpm.commands_sent == 1
        assert tpm.name_of(RSA_EK) == tpm.read_public(RSA_EK).name()
