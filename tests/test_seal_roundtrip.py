"""Seal/unseal round trips on both paths, the compatibility matrix, bus contents, budget.

EVE's tests this mirrors (pkg/pillar/evetpm/tpm_test.go): TestSealUnseal,
TestSealUnsealWithParamEnc, TestSealUnsealLegacy, TestSealLegacyUnsealModern,
TestSealModernUnsealLegacy. Every test runs on a private swtpm copy.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from test_seal_support import (
    EVE_PCRS,
    TpmLog,
    cc_name,
    cli,
    flush_leftovers,
    leftover_handles,
    pinned_json,
    secret_bytes,
    write,
)
from tpmseal.client.tpm import Tpm
from tpmseal.errors import UsageError
from tpmseal.recipes import sealing, trust
from tpmseal.recipes.blob import ENCRYPTED, LEGACY, SealedBlob
from tpmseal.recipes.pcrspec import parse_pcrs
from tpmseal.recipes.profiles import EVE, TCG
from tpmseal.recipes.templates import SEALED_ATTRS
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.transport.base import open_transport
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_CC

UNSEAL_5 = ["StartAuthSession", "Load", "PolicyPCR", "Unseal", "FlushContext"]


def _windows(secret: bytes, width: int = 8) -> list[bytes]:
    return [secret[i : i + width] for i in range(len(secret) - width + 1)]


def _leaks(cap: CapturingTransport, secret: bytes) -> list[str]:
    """Which exchanges carry the secret, or any 8-byte piece of it, in either direction."""
    found = []
    for e in cap.exchanges:
        for side, data in (("command", e.command), ("response", e.response or b"")):
            if any(w in data for w in _windows(secret)):
                found.append(f"{cc_name(e.code)} {side}")
    return found


# ----------------------------------------------------------------------- Python API


@pytest.mark.parametrize("legacy", [False, True], ids=["encrypted", "legacy"])
def test_api_round_trip(tcg_sim: Simulator, legacy: bool) -> None:
    rec = trust.load(tcg_sim.state / "trust.json", "tcg")
    secret = secret_bytes()
    with Tpm.open(tcg_sim.uri) as t:
        blob = sealing.seal(t, secret, trust=rec, legacy=legacy)
        assert blob.sealed_with == (LEGACY if legacy else ENCRYPTED)
        assert blob.public.object_attributes == SEALED_ATTRS
        assert blob.pcrs == TCG.default_pcrs
        again = SealedBlob.from_json(blob.to_json())
        assert sealing.unseal(t, again, legacy=legacy, trust=rec) == secret
    assert leftover_handles(tcg_sim.uri) == []


# (seal legacy?, unseal legacy?) named after EVE's tests
MATRIX = {
    "TestSealUnsealWithParamEnc": (False, False),
    "TestSealUnsealLegacy": (True, True),
    "TestSealLegacyUnsealModern": (True, False),
    "TestSealModernUnsealLegacy": (False, True),
}


@pytest.mark.parametrize("case", list(MATRIX))
def test_api_compatibility_matrix(eve_sim: Simulator, case: str) -> None:
    seal_legacy, unseal_legacy = MATRIX[case]
    rec = trust.load(eve_sim.state / "trust.json", "eve")
    secret = secret_bytes()
    with Tpm.open(eve_sim.uri) as t:
        blob = sealing.seal(t, secret, profile=EVE, trust=rec, legacy=seal_legacy)
        # the object has the same form whichever path made it
        assert blob.public.object_attributes == SEALED_ATTRS
        got = sealing.unseal(t, blob, legacy=unseal_legacy, allow_downgrade=True, trust=rec)
    assert got == secret


def test_api_downgrade_refused(tcg_sim: Simulator) -> None:
    rec = trust.load(tcg_sim.state / "trust.json", "tcg")
    with Tpm.open(tcg_sim.uri) as t:
        blob = sealing.seal(t, secret_bytes(), trust=rec)
        with pytest.raises(UsageError, match="cross the bus in plaintext"):
            sealing.unseal(t, blob, legacy=True, trust=rec)


def test_seal_log_lines(tcg_sim: Simulator, tmp_path: Path,
                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tpmseal")
    key = write(tmp_path / "key", secret_bytes())
    assert cli(["seal", "--input", str(key), "--output", str(tmp_path / "b.json")]).rc == 0
    assert sealing.MSG_AES in caplog.messages
    # a TPM whose TestParms rejected AES-128-CFB at provisioning: legacy path, with a warning
    tf = tcg_sim.state / "trust.json"
    doc = json.loads(tf.read_text())
    pinned_json(doc, "tcg")["aes_128_cfb"] = False
    tf.write_text(json.dumps(doc))
    caplog.clear()
    assert cli(["seal", "--input", str(key), "--output", str(tmp_path / "c.json")]).rc == 0
    assert sealing.MSG_NO_AES in caplog.messages
    assert json.loads((tmp_path / "c.json").read_text())["sealed_with"] == LEGACY
    r = cli(["unseal", "--input", str(tmp_path / "c.json")])
    assert (r.rc, r.out) == (0, key.read_bytes())


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("case", ["TestSealUnseal", *MATRIX])
def test_cli_compatibility_matrix_blob(tcg_sim: Simulator, tmp_path: Path, case: str) -> None:
    seal_legacy, unseal_legacy = MATRIX.get(case, (False, False))
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    r = cli(["seal", "--input", str(key), "--output", str(blob),
             *(["--legacy", "--allow-downgrade"] if seal_legacy else [])])
    assert (r.rc, r.out, r.err) == (0, b"", "")
    assert json.loads(blob.read_text())["sealed_with"] == (LEGACY if seal_legacy else ENCRYPTED)
    r = cli(["unseal", "--input", str(blob),
             *(["--legacy", "--allow-downgrade"] if unseal_legacy else [])])
    assert (r.rc, r.out) == (0, key.read_bytes()), r.err


@pytest.mark.parametrize("case", ["TestSealUnseal", *MATRIX])
def test_cli_compatibility_matrix_nv(eve_sim: Simulator, tmp_path: Path, case: str) -> None:
    seal_legacy, unseal_legacy = MATRIX.get(case, (False, False))
    key = write(tmp_path / "key", secret_bytes())
    r = cli(["seal", "--profile", "eve", "--nv", "--input", str(key),
             *(["--legacy", "--allow-downgrade"] if seal_legacy else [])])
    assert r.rc == 0, r.err
    r = cli(["unseal", "--profile", "eve", "--nv",
             *(["--legacy", "--allow-downgrade"] if unseal_legacy else [])])
    assert (r.rc, r.out) == (0, key.read_bytes()), r.err


def test_cli_legacy_unseal_of_encrypted_blob_refused(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    assert cli(["seal", "--input", str(key), "--output", str(blob)]).rc == 0
    r = cli(["unseal", "--legacy", "--input", str(blob)])
    assert r.rc == 2 and r.out == b""
    assert r.err.startswith("tpmseal: error: refusing to unseal on the legacy path")
    assert "--allow-downgrade" in r.err


# ----------------------------------------------------------------------------- bus


def test_bus_encrypted_path_never_carries_the_secret(tcg_sim: Simulator) -> None:
    rec = trust.load(tcg_sim.state / "trust.json", "tcg")
    secret, pin = secret_bytes(), b"correct horse battery staple"
    cap = CapturingTransport(open_transport(tcg_sim.uri))
    with Tpm(cap) as t:
        blob = sealing.seal(t, secret, trust=rec)
        seal_codes = cap.codes()
        assert sealing.unseal(t, blob, trust=rec) == secret
        pinned = sealing.seal(t, secret, trust=rec, pin=pin)
        assert sealing.unseal(t, pinned, trust=rec, pin=pin) == secret
    assert TPM_CC.Create in seal_codes and TPM_CC.Unseal in cap.codes()
    assert _leaks(cap, secret) == []
    assert _leaks(cap, pin) == []


def test_bus_legacy_path_carries_the_secret_in_create_and_unseal(tcg_sim: Simulator) -> None:
    rec = trust.load(tcg_sim.state / "trust.json", "tcg")
    secret = secret_bytes()
    cap = CapturingTransport(open_transport(tcg_sim.uri))
    with Tpm(cap) as t:
        blob = sealing.seal(t, secret, trust=rec, legacy=True)
        assert sealing.unseal(t, blob, legacy=True, trust=rec) == secret
    assert _leaks(cap, secret) == ["Create command", "Unseal response"]
    create = next(e for e in cap.exchanges if e.code == TPM_CC.Create)
    assert secret in create.command


def test_bus_cli_encrypted_round_trip_no_secret(tcg_sim: Simulator, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    log = TpmLog().install(monkeypatch)
    key = write(tmp_path / "key", secret_bytes())
    assert cli(["seal", "--input", str(key), "--output", str(tmp_path / "b.json")]).rc == 0
    assert cli(["unseal", "--input", str(tmp_path / "b.json")]).out == key.read_bytes()
    assert all(not any(w in c or w in r for w in _windows(key.read_bytes()))
               for c, r in log.exchanges())


# -------------------------------------------------------------------------- budget


def test_budget_unseal_from_blob_is_five_commands(tcg_sim: Simulator, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    log = TpmLog().install(monkeypatch)
    assert cli(["seal", "--input", str(key), "--output", str(blob)]).rc == 0
    # TCG default: 7 PCRs incl. the anchors 0 and 4 -> one PCR_Read
    assert log.names() == ["StartAuthSession", "PCR_Read", "Create"]
    log.clear()
    r = cli(["unseal", "--input", str(blob)])
    assert r.out == key.read_bytes()
    assert log.names() == UNSEAL_5
    assert len(log.captures) == 1  # one connection, no probe on the side
    assert leftover_handles(tcg_sim.uri) == []


def test_budget_legacy_unseal(tcg_sim: Simulator, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    log = TpmLog().install(monkeypatch)
    assert cli(["seal", "--legacy", "--allow-downgrade", "--input", str(key), "--output",
                str(blob)]).rc == 0
    assert log.names() == ["PCR_Read", "Create"]
    log.clear()
    assert cli(["unseal", "--input", str(blob)]).out == key.read_bytes()
    assert log.names() == UNSEAL_5


def test_budget_eve_nv(eve_sim: Simulator, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    key = write(tmp_path / "key", secret_bytes())
    log = TpmLog().install(monkeypatch)
    assert cli(["seal", "--profile", "eve", "--nv", "--input", str(key)]).rc == 0
    names = log.names()
    # one salted session: the NV listing that confirms the layout is empty (audited),
    # then 14 PCRs -> two PCR_Read, then Create; the rest is the NV reads and writes
    assert names[names.index("StartAuthSession"):][:5] == [
        "StartAuthSession", "GetCapability", "PCR_Read", "PCR_Read", "Create"]
    assert names.count("StartAuthSession") == 1
    assert names.count("PCR_Read") == 2 and "ReadPublic" not in names
    log.clear()
    r = cli(["unseal", "--profile", "eve", "--nv"])
    assert r.out == key.read_bytes()
    names = log.names()
    assert len(names) <= 11, names  # the budget; we need 7:
    # each index read whole once (no chunking), its size from the trust file's nv_public
    # (no NV_ReadPublic), staging untouched while the main pair unseals
    assert names == ["NV_Read", "NV_Read", *UNSEAL_5]


def test_budget_eve_blob_seal_uses_two_pcr_reads(eve_sim: Simulator, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key = write(tmp_path / "key", secret_bytes())
    log = TpmLog().install(monkeypatch)
    r = cli(["seal", "--profile", "eve", "--input", str(key), "--output",
             str(tmp_path / "b.json")])
    assert r.rc == 0, r.err
    assert log.names() == ["StartAuthSession", "PCR_Read", "PCR_Read", "Create"]
    blob = SealedBlob.from_json((tmp_path / "b.json").read_bytes())
    assert blob.pcrs == parse_pcrs(EVE_PCRS)
    log.clear()
    assert cli(["unseal", "--profile", "eve", "--input", str(tmp_path / "b.json")]).rc == 0
    assert log.names() == UNSEAL_5


def test_failed_unseal_leaves_nothing_loaded(tcg_sim: Simulator, tmp_path: Path) -> None:
    from test_seal_support import extend

    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    assert cli(["seal", "--input", str(key), "--output", str(blob)]).rc == 0
    extend(tcg_sim.uri, 3)
    assert cli(["unseal", "--input", str(blob)]).rc == 5
    assert flush_leftovers(tcg_sim.uri) == []


def test_budget_reseal_uses_two_salted_sessions(tcg_sim: Simulator, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """8 commands: the unseal's salted policy session carries its own encryption (a
    salted session next to an unsalted policy session could be deleted:
    test_attack_drop.py), then the seal's salted HMAC session."""
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    assert cli(["seal", "--input", str(key), "--output", str(blob)]).rc == 0
    log = TpmLog().install(monkeypatch)
    assert cli(["reseal", "--input", str(blob), "--pcrs", "sha256:0,4,7"]).rc == 0
    assert log.names() == ["StartAuthSession", "Load", "PolicyPCR", "Unseal", "FlushContext",
                           "StartAuthSession", "PCR_Read", "Create"]
    starts = [c for c, _ in log.exchanges() if c[6:10] == bytes.fromhex("00000176")]
    salted = [c for c in starts if c[10:14] != bytes.fromhex("40000007")]  # tpmKey != NULL
    assert len(salted) == 2
    assert cli(["unseal", "--input", str(blob)]).out == key.read_bytes()
