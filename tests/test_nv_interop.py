"""EVE's NV layout both ways with tpm2-tools 5.4.

(a) The indices written exactly as EVE's legacy Go code does (go-tpm legacy
Seal: keyedHash, fixedTPM|fixedParent = 0x12, under the SRK 0x81000002, policy
PolicyPCR; NV_DefineSpace owner read/write, nameAlg SHA-1, TPM2B contents
without their size prefix) unseal with ``tpmseal unseal --profile eve --nv``.
(b) What tpmseal writes there loads and unseals with tpm2-tools.

EVE's real code runs against tpmseal in tests/test_eve_*.py (which also check that
EVE's legacy path writes exactly this: SHA-1-named indices, attributes 0x12); this
re-enactment stays because it needs neither ../shared nor Go, and it checks the
layout with a third implementation, tpm2-tools.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from test_seal_support import (
    EVE_PCRS,
    TpmLog,
    cli,
    flush_leftovers,
    read_pcrs,
    secret_bytes,
    tools,
    tools_flush,
    tools_unseal,
    write,
)
from tpmseal.client.tpm import Tpm
from tpmseal.recipes import sealing
from tpmseal.recipes.pcrspec import parse_pcrs
from tpmseal.recipes.stores import NV_ATTRS, nv_public
from tpmseal.session.policy import compute_policy
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_ALG, TPMA_NV
from tpmseal.wire.structures import Public

EVE_SRK, EVE_EK = "0x81000002", "0x81000001"
PRIV_NV, PUB_NV = 0x01800000, 0x01900000


def _software_policy(sim: Simulator, spec: str, path: Path) -> Path:
    """The PolicyPCR digest over the current values, from tpmseal's calculator."""
    sel = parse_pcrs(spec)
    values = read_pcrs(sim.uri, sel.selections[0].hash_alg, sel.selections[0].pcrs)
    path.write_bytes(compute_policy(sealing.policy_steps(sel, values, pin=False)))
    return path


def _eve_legacy_seal_with_tools(sim: Simulator, w: Path, secret: bytes, policy: Path) -> None:
    """go-tpm legacy Seal + EVE's NV writes, done with tpm2-tools."""
    write(w / "secret", secret)
    tools(sim, "tpm2_create", "-C", EVE_SRK, "-g", "sha256", "-a", "fixedtpm|fixedparent",
          "-L", str(policy), "-i", str(w / "secret"), "-u", str(w / "seal.pub"),
          "-r", str(w / "seal.priv"), cwd=w)
    tools_flush(sim)
    for index, sized in ((PRIV_NV, w / "seal.priv"), (PUB_NV, w / "seal.pub")):
        data = sized.read_bytes()
        assert struct.unpack(">H", data[:2])[0] == len(data) - 2
        raw = write(w / f"{index:x}.raw", data[2:])  # the contents, no size prefix
        tools(sim, "tpm2_nvdefine", hex(index), "-C", "o", "-s", str(len(raw.read_bytes())),
              "-a", "ownerread|ownerwrite", "-g", "sha1", cwd=w)
        tools(sim, "tpm2_nvwrite", hex(index), "-C", "o", "-i", str(raw), cwd=w)
    tools_flush(sim)


@pytest.mark.parametrize("how", ["calculator-14-pcrs", "createpolicy-7-pcrs"])
def test_eve_legacy_indices_unseal_with_tpmseal(eve_sim: Simulator, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                how: str) -> None:
    secret = secret_bytes()
    if how == "calculator-14-pcrs":
        # EVE's default list has 14 PCRs; tpm2_createpolicy 5.4 takes at most 8
        policy = _software_policy(eve_sim, EVE_PCRS, tmp_path / "pcr.policy")
    else:
        policy = tmp_path / "pcr.policy"
        tools(eve_sim, "tpm2_createpolicy", "--policy-pcr", "-l", "sha256:0,1,2,3,4,6,7",
              "-L", str(policy), cwd=tmp_path)
        tools_flush(eve_sim)  # createpolicy leaves its trial session loaded
        assert policy.read_bytes() == _software_policy(
            eve_sim, "sha256:0,1,2,3,4,6,7", tmp_path / "check.policy").read_bytes()
    _eve_legacy_seal_with_tools(eve_sim, tmp_path, secret, policy)
    pub = Public.from_sized((tmp_path / "seal.pub").read_bytes())
    assert pub.object_attributes == 0x12 and pub.type == TPM_ALG.KEYEDHASH

    log = TpmLog().install(monkeypatch)
    r = cli(["unseal", "--profile", "eve", "--nv"])
    assert (r.rc, r.out) == (0, secret), r.err
    if how == "calculator-14-pcrs":
        assert len(log.names()) <= 11, log.names()
    # also through the vault-key lifecycle (sealed key present -> unsealed)
    r = cli(["vault-key"])
    assert (r.rc, r.out) == (0, secret), r.err
    assert flush_leftovers(eve_sim.uri) == []


@pytest.mark.parametrize("salted", [False, True], ids=["plain-session", "salted-encrypt"])
def test_tpmseal_nv_unseals_with_tools(eve_sim: Simulator, tmp_path: Path, salted: bool) -> None:
    pcrs = "sha256:0,1,2,3,4,6,7,8"  # tpm2_policypcr 5.4 takes at most 8 PCRs
    key = write(tmp_path / "key", secret_bytes())
    assert cli(["seal", "--profile", "eve", "--nv", "--pcrs", pcrs, "--input", str(key)]).rc == 0

    with Tpm.open(eve_sim.uri) as t:
        for index in (PRIV_NV, PUB_NV):
            pub = nv_public(t, index)
            assert pub is not None
            assert pub.attributes & ~TPMA_NV.WRITTEN == NV_ATTRS == 0x00020002
            assert pub.attributes & TPMA_NV.WRITTEN
        assert nv_public(t, 0x01800001) is None and nv_public(t, 0x01900001) is None

    for index, name in ((PRIV_NV, "seal.priv"), (PUB_NV, "seal.pub")):
        tools(eve_sim, "tpm2_nvread", hex(index), "-C", "o", "-o", str(tmp_path / "raw"),
              cwd=tmp_path)
        raw = (tmp_path / "raw").read_bytes()
        write(tmp_path / name, struct.pack(">H", len(raw)) + raw)
    pub_area = Public.from_sized((tmp_path / "seal.pub").read_bytes())
    assert pub_area.object_attributes == 0x92  # fixedTPM|fixedParent|adminWithPolicy

    assert tools_unseal(eve_sim, tmp_path, EVE_SRK, EVE_EK, pcrs, salted) == key.read_bytes()
