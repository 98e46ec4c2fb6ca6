"""Attacks through rewritten LUKS2 tokens: the header is not authenticated.

Anyone who can write the disk can rewrite a token; an interposer on the bus at
the next unlock then acts on what the token made tpmseal send. A tpmseal token
carries a whole blob document, salt key included. A blob *file* is trusted
(root-owned), so :func:`tpmseal.recipes.sealing.unseal` salts to its key when no
trust file is given; a token's salt key must never be trusted that way.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from attacks.bus import direct, expect_error, interposer, tpm
from attacks.mitm import ManInTheMiddle
from luks_support import cryptsetup, make_image, needs_cryptsetup, opens
from test_seal_support import cli, extend
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes import cryptsetup as cs
from tpmseal.recipes import luks, sealing
from tpmseal.transport.simulator import Simulator

pytestmark = needs_cryptsetup

EK = 0x81010001


def _enrolled(tmp_path: Path) -> tuple[Path, bytes]:
    """A LUKS2 image with a tpmseal token in keyslot 1, and that keyslot's key."""
    img, pw = make_image(tmp_path)
    r = cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw)])
    assert r.rc == 0, r.err
    out = tmp_path / "key"
    r = cli(["luks", "passphrase", str(img), "--output", str(out)])
    assert r.rc == 0, r.err
    key = out.read_bytes()
    out.unlink()
    assert opens(img, key, 1)
    return img, key


def _rewrite_token(img: Path, token_id: int, token: dict[str, Any]) -> None:
    """What an attacker with write access to the disk does to the header."""
    assert cryptsetup("token", "remove", "--token-id", str(token_id), str(img)).returncode == 0
    cs.import_token(str(img), token_id, token, 1)


def _salt_to(token: dict[str, Any], mitm: ManInTheMiddle) -> dict[str, Any]:
    """*token* with its blob's salt key replaced by the attacker's (same handle)."""
    fake = mitm.fake_ek
    doc: dict[str, Any] = json.loads(json.dumps(token))
    doc[luks.BLOB_FIELD]["salt_key"] = {"handle": f"{EK:#010x}", "name": fake.name().hex(),
                                        "public": base64.b64encode(fake.sized()).decode()}
    return doc


def test_control_a_token_salt_key_robs_an_unseal_that_trusts_it(tcg_sim: Simulator,
                                                                 tmp_path: Path) -> None:
    """The attack works where the token's blob is trusted like a blob file: no trust
    record, so the session is salted to the key the header names."""
    img, key = _enrolled(tmp_path)
    with Tpm.open(tcg_sim.uri) as t:
        mitm = ManInTheMiddle(t.read_public(EK), EK)
    token = _salt_to(cs.header(str(img)).tokens[0], mitm)
    with (interposer(tcg_sim, on_command=mitm.on_command, on_response=mitm.on_response) as p,
          Tpm.open(p.uri) as t):
        got = sealing.unseal(t, luks.blob_of(token, 0), trust=None)
    assert got == key  # every HMAC verified: the TPM holds the same salt
    assert mitm.salts_unwrapped == 1
    mitm.expect_recovered(key, "Unseal salted to the token's key")


@pytest.mark.parametrize("trust", ["absent", "other profile"])
def test_a_token_salt_key_is_never_trusted(tcg_sim: Simulator, tmp_path: Path,
                                           trust: str) -> None:
    """``luks test``/``unlock`` without this TPM's trust record (a missing trust file,
    as in an initramfs built before `provision`) refuses a tpmseal token instead of
    salting to the key in the unauthenticated header."""
    img, key = _enrolled(tmp_path)
    with Tpm.open(tcg_sim.uri) as t:
        mitm = ManInTheMiddle(t.read_public(EK), EK)
    _rewrite_token(img, 0, _salt_to(cs.header(str(img)).tokens[0], mitm))
    trust_file = tmp_path / "none.json"
    profile = ["--profile", "eve"] if trust == "other profile" else []
    if trust == "other profile":
        trust_file.write_bytes((tcg_sim.state / "trust.json").read_bytes())
    with interposer(tcg_sim, on_command=mitm.on_command, on_response=mitm.on_response) as p:
        for cmd in ("test", "passphrase"):
            out = tmp_path / "got"
            extra = ["--output", str(out)] if cmd == "passphrase" else []
            r = tpm(p, "--trust-file", str(trust_file), "luks", cmd, str(img), *profile, *extra)
            expect_error(r, ExitCode.USAGE, "pinned endorsement key")
            assert not out.exists()
        assert not p.exchanges  # refused before any command
    mitm.expect_nothing(key)
    # with the trust record the rewritten salt key is refused as another TPM's
    r = direct(tcg_sim, "luks", "test", str(img))
    expect_error(r, ExitCode.BAD_INPUT, "salt key is not the pinned endorsement key")


def test_forged_pcr_read_is_not_reported_as_a_pcr_change(tcg_sim: Simulator,
                                                          tmp_path: Path) -> None:
    """A systemd-tpm2 token's PCRs are pre-checked with a PCR_Read nothing authenticates.
    An interposer that alters its answer while the PCRs hold their sealed values must not
    make tpmseal report "sha256:7 changed ... enrol again" (exit 5), the false diagnosis
    SECURITY.md's authenticated diagnostics rule out: the values are read again in an
    audited session and the forgery is reported as tampering."""
    from tpmseal.sniff.capture.hooks import HookContext, Verdict
    from tpmseal.wire.constants import TPM_CC, TPM_ST

    img, pw = make_image(tmp_path)
    r = cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw), "--token-type",
             "systemd-tpm2", "--pcrs", "sha256:7"])
    assert r.rc == 0, r.err

    def forge(ctx: HookContext) -> Verdict:
        # only the unaudited read: an audited one (ST_SESSIONS) carries a response HMAC
        if (ctx.code != TPM_CC.PCR_Read or ctx.response is None
                or int.from_bytes(ctx.command[:2], "big") != TPM_ST.NO_SESSIONS):
            return None
        return ctx.response[:-1] + bytes([ctx.response[-1] ^ 1])  # PCR 7's last byte

    with interposer(tcg_sim, on_response=forge) as p:
        r = tpm(p, "luks", "test", str(img))
    expect_error(r, ExitCode.INTEGRITY, "PCR_Read", "interposer")
    assert cli(["luks", "test", str(img)]).rc == 0  # without the interposer it unlocks
    extend(tcg_sim.uri, 7)  # a real change is still a PCR mismatch
    expect_error(direct(tcg_sim, "luks", "test", str(img)), ExitCode.PCR_MISMATCH, "sha256:7")


def test_forged_policy_failure_at_unseal_is_tampering(tcg_sim: Simulator,
                                                      tmp_path: Path) -> None:
    """TPM_RC_POLICY_FAIL from Unseal is an error response, without an HMAC. For a
    systemd-tpm2 token (no seal-time values) it used to read "the PCR values ... differ"
    (exit 5); the PCRs read through the pinned EK satisfy the policy, so it is tampering."""
    from tpmseal.sniff.capture.hooks import HookContext, Respond, Verdict, error_response
    from tpmseal.wire.constants import TPM_CC

    img, pw = make_image(tmp_path)
    r = cli(["luks", "enroll", str(img), "--unlock-key-file", str(pw), "--token-type",
             "systemd-tpm2", "--pcrs", "sha256:7"])
    assert r.rc == 0, r.err

    def policy_fail(ctx: HookContext) -> Verdict:
        return Respond(error_response(0x99D)) if ctx.code == TPM_CC.Unseal else None

    with interposer(tcg_sim, on_command=policy_fail) as p:
        r = tpm(p, "luks", "test", str(img))
    expect_error(r, ExitCode.INTEGRITY, "interposer")
