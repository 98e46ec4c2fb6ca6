"""TPM command counts of the flows that take a policy value (README: Performance).

Pinned so they cannot grow: the NV record lives in the trust file and costs no
TPM command; a seal to given states or to a signer reads no PCRs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from luks_support import make_image, needs_cryptsetup
from test_seal_support import TpmLog, cli, secret_bytes, write
from tpmseal.transport.simulator import Simulator

PCRS = "sha256:0,4,7"
NV_READ_PAIR = ["NV_Read", "NV_Read"]  # the trust file keeps the pair's public areas
NV_WRITE_PAIR = ["NV_DefineSpace", "NV_Write", "NV_DefineSpace", "NV_Write"]
SIGNED_UNSEAL = ["StartAuthSession", "Load", "PolicyPCR", "LoadExternal", "VerifySignature",
                 "FlushContext", "PolicyAuthorize", "Unseal", "FlushContext"]


def _run(log: TpmLog, argv: list[str]) -> list[str]:
    log.clear()
    r = cli(argv)
    assert r.rc == 0, r.err
    return log.names()


def _states(sim: Simulator, d: Path) -> list[str]:
    shown = cli(["pcrs", "show", "--pcrs", PCRS, "--json"])
    write(d / "a.json", shown.out)
    write(d / "b.json", json.dumps({"sha256": {i: "55" * 32 for i in ("0", "4", "7")}}).encode())
    return ["--pcr-values", str(d / "a.json"), "--pcr-values", str(d / "b.json")]


def test_nv_policy_or_and_signed_counts(eve_sim: Simulator, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    key = write(tmp_path / "key", secret_bytes())
    states = _states(eve_sim, tmp_path)
    log = TpmLog().install(monkeypatch)
    nv = ["--profile", "eve", "--nv"]
    seal = _run(log, ["seal", *nv, "--pcrs", PCRS, "--input", str(key), *states])
    # one salted session lists the layout (audited) and creates; 4 NV writes; no PCR_Read
    assert seal == ["StartAuthSession", "GetCapability", "Create", *NV_WRITE_PAIR]
    assert _run(log, ["unseal", *nv]) == [
        *NV_READ_PAIR, "StartAuthSession", "Load", "PolicyPCR", "PolicyOR", "Unseal",
        "FlushContext"]
    signer = tmp_path / "s.pem"
    assert cli(["policy", "keygen", "--output", str(signer)]).rc == 0
    seal = _run(log, ["seal", *nv, "--force", "--pcrs", PCRS, "--input", str(key),
                      "--authorized-by", str(signer.with_suffix(".pub"))])
    # replacing the pair (--force): the listing audits both public areas, then staging,
    # the main pair rewritten in place, staging removed; a signer needs no PCR_Read
    assert seal == ["StartAuthSession", "GetCapability", "NV_ReadPublic", "NV_ReadPublic",
                    "Create", *NV_WRITE_PAIR, "NV_Write", "NV_Write", "NV_UndefineSpace",
                    "NV_UndefineSpace"]
    assert cli(["policy", "sign", "--key", str(signer), "--pcrs", PCRS, "--current",
                "--output", str(tmp_path / "p.json")]).rc == 0
    assert _run(log, ["unseal", *nv, "--policy", str(tmp_path / "p.json")]) == [
        *NV_READ_PAIR, *SIGNED_UNSEAL]


@needs_cryptsetup
def test_luks_signed_counts(tcg_sim: Simulator, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    img, pw = make_image(tmp_path)
    signer = tmp_path / "s.pem"
    assert cli(["policy", "keygen", "--output", str(signer)]).rc == 0
    log = TpmLog().install(monkeypatch)
    enroll = _run(log, ["luks", "enroll", str(img), "--unlock-key-file", str(pw), "--pcrs",
                        PCRS, "--authorized-by", str(signer.with_suffix(".pub"))])
    assert enroll == ["StartAuthSession", "Create"]
    assert cli(["policy", "sign", "--key", str(signer), "--pcrs", PCRS, "--current",
                "--output", str(tmp_path / "p.json")]).rc == 0
    assert _run(log, ["luks", "test", str(img), "--policy", str(tmp_path / "p.json")]) == \
        SIGNED_UNSEAL
