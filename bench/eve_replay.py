"""LF Edge EVE's vault-key TPM traffic, replayed command for command with tpmseal's client.

Read from EVE's pkg/pillar/evetpm (lf-edge/eve 2c6b4154, as in
../shared/peers/eve/evetpm): tpm.go's FetchSealedVaultKey, UnsealDiskKey and
SealDiskKey, and enc_seal.go's encrypted seal/unseal with go-tpm v0.9.1 (whose
PolicySession sets continueSession and flushes the session when closed, and
whose legacy NVReadEx asks for TPM_PT_NV_BUFFER_MAX first). Each ``Tpm.open``
below is one of EVE's ``OpenTPM`` calls, i.e. one /dev/tpmrm0 connection.
Each function returns the command names it meant to send, so the bench checks
them against what crossed the proxy. Used by bench/bench_chip.py only.
"""

from __future__ import annotations

import hashlib

from tpmseal.client.tpm import Tpm
from tpmseal.recipes.profiles import EVE
from tpmseal.recipes.templates import sealed_template
from tpmseal.recipes.trust import TrustRecord
from tpmseal.session.auth import AuthSession
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_ALG, TPM_CAP, TPM_PT, TPM_RH, TPM_SE, TPMA_NV, TPMA_SESSION
from tpmseal.wire.rc import TpmResponseError
from tpmseal.wire.structures import (
    NvPublic,
    PcrSelection,
    PcrSelectionList,
    Public,
    SensitiveCreate,
    SymDef,
)

NV = EVE.nv
assert NV is not None
PRIV, PUB, LEGACY_KEY = NV.private, NV.public, NV.legacy_key
#: EVE's DefaultDiskKeySealingPCRs: 0-14 without 5 (sha256); criticalFirmwarePCRs: 0, 4
EVE_PCRS = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14]
CRITICAL = [0, 4]
NONCE = 16  # go-tpm sessions here use 16-byte nonces
NO_SYM = SymDef()


def _sel(pcrs: list[int]) -> PcrSelectionList:
    return PcrSelectionList((PcrSelection(TPM_ALG.SHA256, tuple(pcrs)),))


def _read_pcr(tpm: Tpm, pcr: int) -> bytes:
    return tpm.run(cmds.PCR_Read(_sel([pcr]))).pcr_values.digests[0]


def _nv_read_ex(tpm: Tpm, index: int) -> bytes | None:
    """go-tpm legacy NVReadEx: GetCapability(NV_BUFFER_MAX), NV_ReadPublic, NV_Read(s)."""
    tpm.run(cmds.GetCapability(TPM_CAP.TPM_PROPERTIES, TPM_PT.NV_BUFFER_MAX, 1))
    try:
        pub = tpm.nv_read_public(index)
    except TpmResponseError:
        return None
    return tpm.nv_read(index, pub.data_size)


def _nv_read_all(tpm: Tpm, index: int) -> bytes:
    """enc_seal.go nvReadAll: NV_ReadPublic, then one NV_Read of dataSize."""
    pub = tpm.nv_read_public(index)
    return tpm.run(cmds.NV_Read(TPM_RH.OWNER, index, pub.data_size)).data


def _salted(tpm: Tpm, trust: TrustRecord, kind: int, attrs: int) -> AuthSession:
    """go-tpm's Salted(EK) session with AES-128-CFB (ReadPublic of the EK came first).

    EVE asks for an encrypted response in a session no response HMAC has confirmed
    yet, which tpmseal's session layer refuses (session/auth.py, confirmation rule):
    the replay marks the session confirmed so that it sends exactly EVE's commands.
    """
    s = tpm.start_session(kind, salt_key=trust.ek_public, salt_handle=trust.ek_handle,
                          attributes=attrs)
    s.confirmed = True  # EVE's behaviour, replayed for its timing: not a tpmseal flow
    return s


def _test_parms(uri: str) -> None:
    """tpmSupportsAES128CFB: its own connection, one TestParms."""
    with Tpm.open(uri) as tpm:
        tpm.test_parms()


def unseal_disk_key(uri: str, trust: TrustRecord) -> tuple[bytes, list[str]]:
    """UnsealDiskKey, AES-128-CFB path: TestParms, then unsealDiskKeyEncrypted."""
    _test_parms(uri)
    with Tpm.open(uri) as tpm:
        tpm.read_public(trust.ek_handle)  # readEKPublic
        tpm.read_public(trust.srk_handle)  # readSRKName
        priv = _nv_read_all(tpm, PRIV)
        pub = _nv_read_all(tpm, PUB)
        loaded = tpm.run(cmds.Load(trust.srk_handle, priv, Public.from_bytes(pub)))
        sess = _salted(tpm, trust, TPM_SE.POLICY,
                       TPMA_SESSION.continueSession | TPMA_SESSION.encrypt)
        tpm.run(cmds.PolicyPCR(sess.handle, b"", _sel(EVE_PCRS)))
        key = tpm.run(cmds.Unseal(loaded.object_handle), sess).out_data
        tpm.flush(sess.handle)  # the session closer (deferred last, runs first)
        tpm.flush(loaded.object_handle)
    return key, ["TestParms", "ReadPublic", "ReadPublic", "NV_ReadPublic", "NV_Read",
                 "NV_ReadPublic", "NV_Read", "Load", "StartAuthSession", "PolicyPCR",
                 "Unseal", "FlushContext", "FlushContext"]


def fetch_sealed_vault_key(uri: str, trust: TrustRecord) -> tuple[bytes, list[str]]:
    """FetchSealedVaultKey on a boot with the key already sealed (the every-boot path)."""
    with Tpm.open(uri) as tpm:  # PCRBankSHA256Enabled: ReadPCR(0, sha256)
        _read_pcr(tpm, 0)
    with Tpm.open(uri) as tpm:  # isSealedKeyPresent
        present = _nv_read_ex(tpm, PRIV) is not None
    with Tpm.open(uri) as tpm:  # isLegacyKeyPresent
        legacy = _nv_read_ex(tpm, LEGACY_KEY) is not None
    if not present or legacy:
        raise SystemExit("EVE replay: expected a sealed vault key and no legacy key")
    key, seq = unseal_disk_key(uri, trust)
    return key, ["PCR_Read", "GetCapability", "NV_ReadPublic", "NV_Read", "GetCapability",
                 "NV_ReadPublic", *seq]


def seal_disk_key(uri: str, trust: TrustRecord, key: bytes) -> list[str]:
    """SealDiskKey, AES-128-CFB path, over an existing sealed key (a re-seal)."""
    seq: list[str] = []
    with Tpm.open(uri) as tpm:  # unextendedCriticalPCRs
        for pcr in CRITICAL:
            _read_pcr(tpm, pcr)
            seq.append("PCR_Read")
    _test_parms(uri)
    seq.append("TestParms")
    with Tpm.open(uri) as tpm:  # sealDiskKeyEncrypted
        for index in (PUB, PRIV):  # nvUndefine
            try:
                tpm.nv_read_public(index)
            except TpmResponseError:
                seq.append("NV_ReadPublic")
                continue
            tpm.run(cmds.NV_UndefineSpace(TPM_RH.OWNER, index))
            seq += ["NV_ReadPublic", "NV_UndefineSpace"]
        tpm.read_public(trust.ek_handle)
        tpm.read_public(trust.srk_handle)
        values = b"".join(_read_pcr(tpm, pcr) for pcr in EVE_PCRS)  # getExpectedPCRDigest
        seq += ["ReadPublic", "ReadPublic", *["PCR_Read"] * len(EVE_PCRS)]
        trial = tpm.start_session(TPM_SE.TRIAL, symmetric=NO_SYM)
        tpm.run(cmds.PolicyPCR(trial.handle, hashlib.sha256(values).digest(), _sel(EVE_PCRS)))
        policy = tpm.policy_digest(trial)
        hmac_s = _salted(tpm, trust, TPM_SE.HMAC, TPMA_SESSION.decrypt)  # one-shot
        r = tpm.run(cmds.Create(trust.srk_handle, SensitiveCreate(b"", key),
                                sealed_template(policy)), hmac_s)
        seq += ["StartAuthSession", "PolicyPCR", "PolicyGetDigest", "StartAuthSession",
                "Create"]
        for index, data in ((PRIV, r.out_private), (PUB, r.out_public.marshal())):
            tpm.run(cmds.NV_DefineSpace(TPM_RH.OWNER, b"", NvPublic(
                index, TPM_ALG.SHA256, TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD,
                b"", len(data))))
            tpm.nv_read_public(index)
            tpm.run(cmds.NV_Write(TPM_RH.OWNER, index, data))
            seq += ["NV_DefineSpace", "NV_ReadPublic", "NV_Write"]
        tpm.flush(trial.handle)  # trialCloser, deferred
        seq.append("FlushContext")
    with Tpm.open(uri) as tpm:  # saveDiskKeySealingPCRs: ReadPCR one by one
        for pcr in EVE_PCRS:
            _read_pcr(tpm, pcr)
            seq.append("PCR_Read")
    return seq
