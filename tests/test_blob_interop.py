"""The blob file both ways with tpm2-tools 5.4.

``public``/``private`` are TPM2B_PUBLIC/TPM2B_PRIVATE with their size prefixes,
byte-identical to tpm2-tools' ``-u``/``-r`` files: tpm2-tools unseals what
tpmseal sealed, and ``tpmseal import`` wraps what tpm2-tools sealed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from test_seal_support import (
    TCG_PCRS,
    TpmLog,
    assert_one_line_error,
    cli,
    extend,
    load_blob,
    secret_bytes,
    tools,
    tools_flush,
    tools_unseal,
    write,
)
from tpmseal.recipes.blob import ENCRYPTED
from tpmseal.transport.simulator import Simulator

TCG_SRK, TCG_EK = "0x81000001", "0x81010001"
UNSEAL_5 = ["StartAuthSession", "Load", "PolicyPCR", "Unseal", "FlushContext"]


@pytest.mark.parametrize("salted", [False, True], ids=["plain-session", "salted-encrypt"])
def test_tools_unseal_tpmseal_blob(tcg_sim: Simulator, tmp_path: Path, salted: bool) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    assert cli(["seal", "--input", str(key), "--output", str(blob)]).rc == 0
    doc = json.loads(blob.read_text())
    write(tmp_path / "seal.pub", base64.b64decode(doc["public"]))
    write(tmp_path / "seal.priv", base64.b64decode(doc["private"]))
    out = tools_unseal(tcg_sim, tmp_path, TCG_SRK, TCG_EK, TCG_PCRS, salted)
    assert out == key.read_bytes()


def _tools_seal(sim: Simulator, w: Path, secret: bytes, pcrs: str, encrypted: bool) -> None:
    """tpm2_tools_flow.sh's seal step (PolicyPCR from a trial session; optionally an EK-salted
    HMAC session with decrypt for Create)."""
    write(w / "secret.bin", secret)
    tools(sim, "tpm2_createpolicy", "--policy-pcr", "-l", pcrs, "-L", "pcr.policy", cwd=w)
    tools_flush(sim)
    auth: list[str] = []
    if encrypted:
        tools(sim, "tpm2_startauthsession", "--hmac-session", "--tpmkey-context", TCG_EK,
              "-g", "sha256", "-G", "aes", "-S", "hmac.ctx", cwd=w)
        tools(sim, "tpm2_sessionconfig", "--enable-decrypt", "hmac.ctx", cwd=w)
        auth = ["-P", "session:hmac.ctx"]
    tools(sim, "tpm2_create", "-C", TCG_SRK, *auth, "-g", "sha256", "-a",
          "fixedtpm|fixedparent|noda", "-L", "pcr.policy", "-i", "secret.bin",
          "-u", "seal.pub", "-r", "seal.priv", cwd=w)
    tools_flush(sim)


@pytest.mark.parametrize("encrypted", [False, True], ids=["password", "salted-decrypt"])
def test_import_tools_sealed_object(tcg_sim: Simulator, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, encrypted: bool) -> None:
    secret = secret_bytes()
    _tools_seal(tcg_sim, tmp_path, secret, TCG_PCRS, encrypted)
    blob = tmp_path / "b.json"
    r = cli(["import", "--public", str(tmp_path / "seal.pub"), "--private",
             str(tmp_path / "seal.priv"), "--pcrs", TCG_PCRS, "--output", str(blob)])
    assert (r.rc, r.out, r.err) == (0, b"", ""), r.err
    assert blob.stat().st_mode & 0o777 == 0o600
    doc = json.loads(blob.read_text())
    assert base64.b64decode(doc["public"]) == (tmp_path / "seal.pub").read_bytes()
    assert base64.b64decode(doc["private"]) == (tmp_path / "seal.priv").read_bytes()
    assert doc["sealed_with"] == ENCRYPTED
    assert load_blob(blob).pcr_values  # the policy matched: values kept for reports
    log = TpmLog().install(monkeypatch)
    r = cli(["unseal", "--input", str(blob)])
    assert (r.rc, r.out) == (0, secret), r.err
    assert log.names() == UNSEAL_5
    # refuses to overwrite
    r = cli(["import", "--public", str(tmp_path / "seal.pub"), "--private",
             str(tmp_path / "seal.priv"), "--pcrs", TCG_PCRS, "--output", str(blob)])
    assert_one_line_error(r, 2, "already exists", "--force")
    # a PCR change is named from the values recorded at import
    extend(tcg_sim.uri, 6)
    assert_one_line_error(cli(["unseal", "--input", str(blob)]), 5, "sha256 PCR 6 changed")


def test_import_with_wrong_pcrs(tcg_sim: Simulator, tmp_path: Path,
                                caplog: pytest.LogCaptureFixture) -> None:
    secret = secret_bytes()
    _tools_seal(tcg_sim, tmp_path, secret, "sha256:0,4,7", encrypted=False)
    blob = tmp_path / "b.json"
    r = cli(["import", "--public", str(tmp_path / "seal.pub"), "--private",
             str(tmp_path / "seal.priv"), "--pcrs", "sha256:0,4", "--output", str(blob)])
    assert r.rc == 0
    assert any("unseal will look for the PCR list it covers" in m for m in caplog.messages)
    assert load_blob(blob).pcr_values == {}
    # without seal-time values the right selection is recovered from the object's policy
    assert cli(["pcrs", "recover", "--input", str(blob)]).out == b"sha256:0,4,7\n"
    caplog.clear()
    assert cli(["unseal", "--input", str(blob)]).out == secret
    assert any("recovered PCRs sha256:0,4,7" in m for m in caplog.messages)
    r = cli(["unseal", "--no-recover", "--input", str(blob)])
    assert_one_line_error(r, 5, "PCR policy check failed")


def test_import_bad_files(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = secret_bytes()
    _tools_seal(tcg_sim, tmp_path, secret, TCG_PCRS, encrypted=False)
    out = str(tmp_path / "b.json")
    write(tmp_path / "short.pub", (tmp_path / "seal.pub").read_bytes()[:-3])
    r = cli(["import", "--public", str(tmp_path / "short.pub"), "--private",
             str(tmp_path / "seal.priv"), "--pcrs", TCG_PCRS, "--output", out])
    assert_one_line_error(r, 7)
    # public and private swapped
    r = cli(["import", "--public", str(tmp_path / "seal.priv"), "--private",
             str(tmp_path / "seal.pub"), "--pcrs", TCG_PCRS, "--output", out])
    assert_one_line_error(r, 7)
    r = cli(["import", "--public", str(tmp_path / "nope.pub"), "--private",
             str(tmp_path / "seal.priv"), "--pcrs", TCG_PCRS, "--output", out])
    assert_one_line_error(r, 2, "does not exist")
    assert not (tmp_path / "b.json").exists()
