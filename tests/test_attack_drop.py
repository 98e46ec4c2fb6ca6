"""Attack 18: delete the session that only carries the encryption.

A session that authorizes no handle is the caller's choice, not the TPM's
requirement. Where a secret's response encryption rides on such a session and
no HMAC the TPM checks covers it, the interposer (tests/attacks/drop.py) deletes
it from the command; the TPM still executes the command and answers in
plaintext. Two tpmseal paths had that shape until the required-session rule
(session/auth.py):

* reseal's "carrier": Unseal authorized by an unsalted policy session (no HMAC:
  its key is empty and there is no PIN), encrypted by the salted HMAC session
  next to it;
* vault-key's read of EVE's legacy plaintext key: NV_Read authorized by the
  (empty) owner password, encrypted by the salted session next to it.

The controls run exactly those shapes with the rule switched off and recover the
secret; the rule refuses them; and tpmseal's own reseal and vault-key give the
interposer nothing to delete.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attacks.bus import assert_no_leak, direct, expect_ok, interposer, tpm
from attacks.drop import SessionDropper
from test_attack_strip import PATHS, Prepare
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ResponseIntegrityError, UsageError
from tpmseal.recipes import sealing
from tpmseal.recipes.blob import SealedBlob
from tpmseal.recipes.stores import nv_define_write
from tpmseal.recipes.trust import load, salted_session
from tpmseal.session import auth
from tpmseal.session.auth import PasswordSession
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_RH, TPM_SE, TPMA_SESSION
from tpmseal.wire.structures import SymDef

LEGACY_NV = 0x01700000


def _sealed(sim: Simulator, d: Path, secret: bytes) -> Path:
    (d / "key").write_bytes(secret)
    blob = d / "b.json"
    assert direct(sim, "seal", "--input", str(d / "key"), "--output", str(blob)).rc == 0
    return blob


def _carrier_unseal(p: Proxy, blob: SealedBlob) -> None:
    """The old reseal shape: unsalted policy session authorizes, a confirmed salted
    HMAC session next to it asks for encrypt."""
    trust = load(Path(os.environ["TPMSEAL_TRUST_FILE"]), "tcg")
    with Tpm.open(p.uri) as t:
        carrier = salted_session(t, trust)
        t.confirm(carrier)
        t.names[blob.parent_handle] = blob.parent_name
        loaded = t.run(cmds.Load(blob.parent_handle, blob.private, blob.public))
        pol = t.start_session(TPM_SE.POLICY, symmetric=SymDef(), attributes=0)
        t.run_policy(pol, sealing.policy_steps(blob.pcrs, blob.pcr_values, False))
        carrier.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.encrypt
        t.run(cmds.Unseal(loaded.object_handle), pol, carrier)


def _password_nv_read(p: Proxy, profile: str = "eve") -> None:
    """The old legacy-key read: owner password authorizes, a salted session encrypts."""
    trust = load(Path(os.environ["TPMSEAL_TRUST_FILE"]), profile)
    with Tpm.open(p.uri) as t:
        s = salted_session(t, trust)
        t.confirm(s)
        s.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.encrypt
        t.nv_read(LEGACY_NV, 32, TPM_RH.OWNER, PasswordSession(), s)


# ------------------------------------------------------------------ the attack works


def test_control_deleting_the_carrier_reads_the_unseal(tcg_sim: Simulator, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    secret = os.urandom(32)
    blob = SealedBlob.from_json(_sealed(tcg_sim, tmp_path, secret).read_bytes())
    monkeypatch.setattr(auth, "_check_required", lambda *a: None)  # the rule off
    atk = SessionDropper()
    with (interposer(tcg_sim, on_command=atk.on_command, on_response=atk.on_response) as p,
          pytest.raises(ResponseIntegrityError, match="malformed")):  # noticed, too late
        _carrier_unseal(p, blob)
    assert atk.dropped == 1, atk
    atk.expect_recovered(secret)


def test_control_deleting_the_encryption_of_a_password_nv_read(
        eve_sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = os.urandom(32)
    with Tpm.open(eve_sim.uri) as t:
        nv_define_write(t, LEGACY_NV, legacy)
    monkeypatch.setattr(auth, "_check_required", lambda *a: None)
    atk = SessionDropper()
    with (interposer(eve_sim, on_command=atk.on_command, on_response=atk.on_response) as p,
          pytest.raises(ResponseIntegrityError, match="malformed")):
        _password_nv_read(p)
    assert atk.dropped == 1, atk
    atk.expect_recovered(legacy)


def test_the_rule_refuses_both_shapes(tcg_sim: Simulator, tmp_path: Path) -> None:
    blob = SealedBlob.from_json(_sealed(tcg_sim, tmp_path, os.urandom(32)).read_bytes())
    with Tpm.open(tcg_sim.uri) as t:
        nv_define_write(t, LEGACY_NV, os.urandom(32))
    with interposer(tcg_sim) as p:
        with pytest.raises(UsageError, match="authorizes nothing"):
            _carrier_unseal(p, blob)
        with pytest.raises(UsageError, match="authorizes nothing"):
            _password_nv_read(p, "tcg")
        assert "Unseal" not in [e.name for e in p.exchanges]
        assert "NV_Read" not in [e.name for e in p.exchanges]


# ---------------------------------------------------------- and fails against tpmseal


@pytest.mark.parametrize("layout", ["blob", "nv"])
def test_reseal_leaves_nothing_to_delete(request: pytest.FixtureRequest, tmp_path: Path,
                                         layout: str) -> None:
    sim: Simulator = request.getfixturevalue("tcg_sim" if layout == "blob" else "eve_sim")
    secret = os.urandom(32)
    (tmp_path / "key").write_bytes(secret)
    if layout == "blob":
        blob = _sealed(sim, tmp_path, secret)
        where = ["--input", str(blob)]
    else:
        assert direct(sim, "seal", "--profile", "eve", "--nv", "--input",
                      str(tmp_path / "key")).rc == 0
        where = ["--profile", "eve", "--nv"]
    atk = SessionDropper()
    with interposer(sim, on_command=atk.on_command, on_response=atk.on_response) as p:
        expect_ok(tpm(p, "reseal", *where, "--pcrs", "sha256:0,4,7"))
        assert_no_leak(p.exchanges, secret)
    assert atk.dropped == 0, atk
    atk.expect_nothing(secret)
    expect_ok(direct(sim, "unseal", *where), secret)


def test_vault_key_migration_leaves_nothing_to_delete(eve_sim: Simulator) -> None:
    """The legacy key's NV_Read is authorized by the salted session itself. (The
    encrypted GetRandom of a fresh key could be deleted - GetRandom authorizes
    nothing - but the key mixes in the OS's bytes: lifecycle.fresh_key.)"""
    legacy = os.urandom(32)
    with Tpm.open(eve_sim.uri) as t:
        nv_define_write(t, LEGACY_NV, legacy)
    atk = SessionDropper()
    with interposer(eve_sim, on_command=atk.on_command, on_response=atk.on_response) as p:
        expect_ok(tpm(p, "vault-key", "--profile", "eve"), legacy)
        assert_no_leak(p.exchanges, legacy)
        assert "NV_Read" in [e.name for e in p.exchanges]
    assert atk.dropped == 0, atk
    atk.expect_nothing(legacy)



@pytest.mark.parametrize(("name", "profile", "prepare", "argv"), PATHS,
                         ids=[p[0] for p in PATHS])
def test_no_path_leaves_a_secret_to_delete(request: pytest.FixtureRequest, tmp_path: Path,
                                           name: str, profile: str, prepare: Prepare,
                                           argv: list[str]) -> None:
    """Every flow of the salt-stripping suite, under the dropper: the only encrypting
    session it can delete is vault-key's GetRandom, whose bytes are mixed with the OS's."""
    sim: Simulator = request.getfixturevalue(f"{profile}_sim")
    secret = os.urandom(32)
    extra, _, _ = prepare(sim, tmp_path, secret)
    if name.endswith("-pin") and not name.startswith("seal"):
        argv = [*argv, *extra]
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    vault = (tmp_path / "vault").read_bytes() if (tmp_path / "vault").exists() else None
    atk = SessionDropper()
    with interposer(sim, on_command=atk.on_command, on_response=atk.on_response) as p:
        r = tpm(p, *argv)
        printed = r.out
    atk.expect_nothing(secret)
    if vault is not None:
        atk.expect_nothing(vault)
    if name == "vault-first-boot":
        assert r.rc != 0 and [x.command for x in atk.recovered] == ["GetRandom"], atk
    else:
        assert atk.dropped == 0, atk
        expect_ok(r, what=name)
    if printed:
        atk.expect_nothing(printed)
