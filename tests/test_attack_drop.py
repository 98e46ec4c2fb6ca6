"""Attack 15: drop the session that only carries the encryption.

A session that authorizes no handle is the caller's choice, not the TPM's
requirement. Where a secret's response encryption rides on such a session and
nothing the TPM checks covers it, the interposer (tests/attacks/drop.py) deletes
it from the command; the TPM still executes the command and answers in
plaintext. Two tpmseal paths had that shape:

* reseal's carrier: Unseal authorized by an unsalted policy session (no HMAC:
  its key is empty and there is no PIN), encrypted by the salted HMAC session
  next to it;
* vault-key's read of EVE's legacy plaintext key: NV_Read authorized by the
  (empty) owner password, encrypted by the salted session next to it.

Each test asserts that the interposer recovers nothing, that tpmseal exits 6 and
that nothing changed on disk or in NV.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attacks.bus import direct, expect_error, interposer, tpm, unchanged
from attacks.drop import SessionDropper
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes.stores import nv_define_write
from tpmseal.transport.simulator import Simulator

LEGACY_NV = 0x01700000


@pytest.mark.xfail(strict=True, reason="reseal's Unseal is authorized by an unsalted policy "
                   "session that has no HMAC; the salted carrier session that asks for "
                   "encrypt authorizes nothing, so deleting it leaves a command the TPM "
                   "executes, and it returns outData in plaintext")
@pytest.mark.parametrize("layout", ["blob", "nv"])
def test_dropping_the_carrier_of_a_reseal_gets_nothing(request: pytest.FixtureRequest,
                                                       tmp_path: Path, layout: str) -> None:
    sim: Simulator = request.getfixturevalue("tcg_sim" if layout == "blob" else "eve_sim")
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "b.json"
    key.write_bytes(secret)
    where = (["--input", str(blob)] if layout == "blob" else ["--profile", "eve", "--nv"])
    seal = (["--input", str(key), "--output", str(blob)] if layout == "blob"
            else ["--profile", "eve", "--nv", "--input", str(key)])
    assert direct(sim, "seal", *seal).rc == 0
    watch = unchanged(sim, blob, Path(os.environ["TPMSEAL_TRUST_FILE"]))
    atk = SessionDropper(("Unseal",))
    with interposer(sim, on_command=atk.on_command, on_response=atk.on_response) as p:
        r = tpm(p, "reseal", *where, "--pcrs", "sha256:0,4,7")
    expect_error(r, ExitCode.INTEGRITY)
    watch.check()
    atk.expect_nothing(secret)


@pytest.mark.xfail(strict=True, reason="the legacy vault key's NV_Read is authorized by the "
                   "owner password session; the salted session that asks for encrypt "
                   "authorizes nothing, so deleting it makes the TPM return the key in "
                   "plaintext")
def test_dropping_the_encryption_of_a_legacy_key_read_gets_nothing(eve_sim: Simulator) -> None:
    legacy = os.urandom(32)
    with Tpm.open(eve_sim.uri) as t:
        nv_define_write(t, LEGACY_NV, legacy)
    watch = unchanged(eve_sim, Path(os.environ["TPMSEAL_TRUST_FILE"]))
    atk = SessionDropper(("NV_Read",))
    with interposer(eve_sim, on_command=atk.on_command, on_response=atk.on_response) as p:
        r = tpm(p, "vault-key", "--profile", "eve")
    expect_error(r, ExitCode.INTEGRITY)
    watch.check()
    atk.expect_nothing(legacy)
