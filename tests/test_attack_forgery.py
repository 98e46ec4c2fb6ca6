"""Attacks 4, 5, 6: the interposer forges what the client reads to choose its protection.

* 4 — ReadPublic(EK) answered with the attacker's RSA key (matching Name), at
  provision (pinned TPM, with and without ``--ek-ca``) and at seal.
* 5 — forged *error* responses (no HMAC covers an error, Part 1 §18.8):
  TestParms at provision, StartAuthSession at seal. No silent downgrade.
* 6 — forged PCR_Read values at seal time, which would steer the policy to PCR
  values of the attacker's choosing; the audit session's response HMAC
  (Part 1 §19.6.16, audit: Part 1 §19.6.?/Part 3 §11.1) catches them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from attacks.bus import (
    assert_no_leak,
    direct,
    expect_error,
    expect_ok,
    interposer,
    names,
    tpm,
    unchanged,
)
from attacks.mitm import ManInTheMiddle, attacker_key, qualified_name, substituted
from test_seal_support import pinned_json
from tpmseal.client.tpm import Tpm
from tpmseal.errors import ExitCode
from tpmseal.recipes.blob import ENCRYPTED, SealedBlob
from tpmseal.recipes.trust import EK_MISMATCH
from tpmseal.records import replace
from tpmseal.sniff.analysis.leaks import scan
from tpmseal.sniff.capture.hooks import (
    CommandHook,
    HookContext,
    Respond,
    Verdict,
    error_response,
    parse_response,
    success_response,
)
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as cmds
from tpmseal.wire.constants import TPM_CC, TPMA_NV
from tpmseal.wire.structures import DigestList, Public, digest

EK = 0x81010001
#: format-one response codes (Part 2 §6.6.3): RC_FMT1 | P | parameter number << 8
RC_SYMMETRIC_P1 = 0x1D6  # TestParms: parameter 1 (the algorithm set) unsupported
RC_SYMMETRIC_P4 = 0x4D6  # StartAuthSession: parameter 4 (symmetric)
RC_VALUE_P2 = 0x2C4  # StartAuthSession: parameter 2 (encryptedSalt) does not decrypt
RC_HANDLE_H1 = 0x18B  # handle 1 (tpmKey) is not loaded
RC_FAILURE = 0x101  # TPM_RC_FAILURE: the TPM is in failure mode
RC_SESSION_MEMORY = 0x903  # warning: no session slot


def _real_ek(sim: Simulator, handle: int = EK) -> Public:
    with Tpm.open(sim.uri) as t:
        return t.read_public(handle)


def _every_read_public(ctx: HookContext) -> Verdict:
    """Answer every ReadPublic, whatever the handle, with the attacker's key."""
    if ctx.code != TPM_CC.ReadPublic or ctx.response is None or ctx.response[6:10] != bytes(4):
        return None
    real, _ = parse_response(ctx.response, ctx.command)
    assert isinstance(real, cmds.ReadPublicResponse)
    fake = substituted(real.out_public, attacker_key()) if real.out_public.type == 0x0001 \
        else real.out_public
    return success_response(cmds.ReadPublicResponse(fake, fake.name(),
                                                    qualified_name(fake.name())))


# ------------------------------------------------------------------- 4: key substitution


def test_substituted_ek_at_provision_of_a_pinned_tpm(tcg_sim: Simulator,
                                                     tmp_path: Path) -> None:
    trust, bus = tcg_sim.state / "trust.json", tmp_path / "bus.sock"
    with interposer(tcg_sim, at=bus) as p:
        expect_ok(tpm(p, "provision"))  # records the proxy's address for this TPM too
    watch = unchanged(tcg_sim, trust)
    mitm = ManInTheMiddle(_real_ek(tcg_sim), EK)
    with interposer(tcg_sim, at=bus, on_response=mitm.on_response) as p:
        r = tpm(p, "provision")
        expect_error(r, ExitCode.INTEGRITY, EK_MISMATCH, "--repin", str(trust))
        assert mitm.read_publics_substituted == 1
        assert names(p.exchanges).count("ReadPublic") >= 1
    watch.check()


@pytest.mark.parametrize("profile", ["tcg", "eve"])
def test_seal_never_reads_the_ek_and_substitution_has_no_effect(
        request: pytest.FixtureRequest, tmp_path: Path, profile: str) -> None:
    sim: Simulator = request.getfixturevalue(f"{profile}_sim")
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    ek_handle = 0x81010001 if profile == "tcg" else 0x81000001
    real = _real_ek(sim, ek_handle)
    with interposer(sim) as p:
        with p.interpose(on_response=_every_read_public):
            r = tpm(p, "seal", "--profile", profile, "--input", str(key), "--output", str(blob))
            assert (r.rc, r.err) == (0, "")
            assert "ReadPublic" not in names(p.exchanges)
            expect_ok(tpm(p, "unseal", "--profile", profile, "--input", str(blob)), secret)
        assert "ReadPublic" not in names(p.exchanges)
        assert_no_leak(p.exchanges, secret)
    b = SealedBlob.from_json(blob.read_bytes())
    assert b.sealed_with == ENCRYPTED
    assert b.salt_key is not None and b.salt_key.handle == ek_handle
    assert b.salt_key.name == _real_ek(sim, ek_handle).name() == real.name()


# --------------------------------------------------------------------- 5: forged errors


def _forge_error(code: int, rc: int) -> CommandHook:
    def attack(ctx: HookContext) -> Verdict:
        return Respond(error_response(rc)) if ctx.code == code else None
    return attack


def test_forged_testparms_error_at_provision_is_caught(tcg_sim: Simulator,
                                                       tmp_path: Path) -> None:
    """The double check: an EK-salted AES-128-CFB session works, so the error was forged."""
    fresh = tmp_path / "trust.json"
    pinned = tcg_sim.state / "trust.json"
    watch = unchanged(tcg_sim, pinned, fresh)
    with interposer(tcg_sim, on_command=_forge_error(
            TPM_CC.TestParms, RC_SYMMETRIC_P1)) as p:
        for trust in (pinned, fresh):
            r = tpm(p, "--trust-file", str(trust), "provision")
            expect_error(r, ExitCode.INTEGRITY, "TestParms", "forged response",
                                  "interposer")
        forged = [e for e in p.exchanges if e.code == TPM_CC.TestParms]
        assert len(forged) == 2 and all(e.tpm_command is None for e in forged)
    watch.check()


def test_forged_errors_for_testparms_and_the_double_check_pin_legacy(
        tcg_sim: Simulator, tmp_path: Path) -> None:
    """Provisioning under an active attacker who forges *both* the TestParms error and
    an error for the confirming encrypted session.

    Errors carry no HMAC, so nothing can tell this from a TPM that really lacks
    AES, and --ek-ca does not help (the certificate says nothing about
    algorithms). So provision refuses to pin "no AES" unless told to with
    --allow-legacy; only then do later seals take the plaintext path.
    """
    trust = tmp_path / "trust.json"
    forge: dict[int, int] = {TPM_CC.TestParms: RC_SYMMETRIC_P1,
                             TPM_CC.StartAuthSession: RC_SYMMETRIC_P4}

    def attack(ctx: HookContext) -> Verdict:
        rc = forge.get(ctx.code)
        return None if rc is None else Respond(error_response(rc))

    with interposer(tcg_sim, on_command=attack) as p:
        r = tpm(p, "--trust-file", str(trust), "provision", "--ek-ca", str(tcg_sim.ca_dir))
        expect_error(r, ExitCode.USAGE, "no AES-128-CFB", "--allow-legacy")
        assert not trust.exists()
        r = tpm(p, "--trust-file", str(trust), "provision", "--ek-ca", str(tcg_sim.ca_dir),
                "--allow-legacy")
        assert r.rc == 0, r.err
        assert b"NOT supported" in r.out
        assert pinned_json(json.loads(trust.read_text()), "tcg")["aes_128_cfb"] is False
        # from now on seal takes the plaintext path, attacker or not
        secret = os.urandom(32)
        (tmp_path / "key").write_bytes(secret)
        p.clear()
        with p.interpose():
            r = tpm(p, "--trust-file", str(trust), "seal", "--input", str(tmp_path / "key"),
                    "--output", str(tmp_path / "blob.json"))
        assert r.rc == 0, r.err
        assert [leak.command for leak in scan(p.exchanges, [secret])] == ["Create"]


def test_seal_sends_no_testparms(tcg_sim: Simulator, tmp_path: Path) -> None:
    """The trust file records AES support: seal asks nothing it could be lied to about."""
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    with interposer(tcg_sim, on_command=_forge_error(
            TPM_CC.TestParms, RC_SYMMETRIC_P1)) as p:
        r = tpm(p, "seal", "--input", str(key), "--output", str(blob))
        assert (r.rc, r.err) == (0, "")
        assert names(p.exchanges) == ["StartAuthSession", "PCR_Read", "Create"]
        assert_no_leak(p.exchanges, secret)
    assert SealedBlob.from_json(blob.read_bytes()).sealed_with == ENCRYPTED


@pytest.mark.parametrize(("rc", "code", "needle"), [
    (RC_SYMMETRIC_P4, ExitCode.TPM_ERROR, "TPM_RC_SYMMETRIC"),
    (RC_VALUE_P2, ExitCode.INTEGRITY, EK_MISMATCH),
    (RC_HANDLE_H1, ExitCode.TPM_ERROR, "TPM_RC_HANDLE"),
    (RC_FAILURE, ExitCode.TPM_ERROR, "TPM_RC_FAILURE"),
    (RC_SESSION_MEMORY, ExitCode.TPM_ERROR, "SESSION_MEMORY"),
], ids=["symmetric", "salt-value", "handle", "failure", "session-memory"])
def test_forged_start_auth_session_error_at_seal_never_falls_back(
        tcg_sim: Simulator, tmp_path: Path, rc: int, code: int, needle: str) -> None:
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    with interposer(tcg_sim, on_command=_forge_error(
            TPM_CC.StartAuthSession, rc)) as p:
        r = tpm(p, "seal", "--input", str(key), "--output", str(blob))
        expect_error(r, code, needle)
        sent = names(p.exchanges)
        assert sent == ["StartAuthSession"], sent  # no PCR_Read, no Create, no retry in clear
        assert_no_leak(p.exchanges, secret)
    watch.check()


# ------------------------------------------------------------------ 6: forged PCR values


def _forge_pcr_values(ctx: HookContext) -> Verdict:
    """Rewrite every PCR value of a successful PCR_Read, keeping the frame well formed."""
    if ctx.code != TPM_CC.PCR_Read or ctx.response is None or ctx.response[6:10] != bytes(4):
        return None
    resp, auths = parse_response(ctx.response, ctx.command)
    assert isinstance(resp, cmds.PCR_ReadResponse)
    forged = tuple(digest(0x000B, b"attacker's choice %d" % i)[: len(d)]
                   for i, d in enumerate(resp.pcr_values.digests))
    return success_response(replace(resp, pcr_values=DigestList(forged)), auths)


def test_forged_pcr_values_at_seal_are_caught_by_the_audit_hmac(tcg_sim: Simulator,
                                                                tmp_path: Path) -> None:
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    with interposer(tcg_sim, on_response=_forge_pcr_values) as p:
        r = tpm(p, "seal", "--input", str(key), "--output", str(blob))
        expect_error(r, ExitCode.INTEGRITY, "failed its HMAC check")
        assert "Create" not in names(p.exchanges)  # the secret was never sent
        assert_no_leak(p.exchanges, secret)
    watch.check()
    assert not blob.exists()


def test_forged_pcr_values_at_nv_seal_leave_nv_untouched(eve_sim: Simulator,
                                                         tmp_path: Path) -> None:
    secret = os.urandom(32)
    key = tmp_path / "key"
    key.write_bytes(secret)
    watch = unchanged(eve_sim, eve_sim.state / "trust.json")
    with interposer(eve_sim, on_response=_forge_pcr_values) as p:
        r = tpm(p, "seal", "--profile", "eve", "--nv", "--input", str(key))
        expect_error(r, ExitCode.INTEGRITY, "HMAC")
        assert not {"Create", "NV_DefineSpace", "NV_Write"} & set(names(p.exchanges))
        r = tpm(p, "vault-key")
        expect_error(r, ExitCode.INTEGRITY, "HMAC")
        assert_no_leak(p.exchanges, secret)
    watch.check()


def test_control_forged_pcr_values_steer_a_legacy_seal(tcg_sim: Simulator,
                                                       tmp_path: Path) -> None:
    """Positive control: without the audit session the forged values are sealed to."""
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(os.urandom(32))
    with interposer(tcg_sim, on_response=_forge_pcr_values) as p:
        r = tpm(p, "seal", "--legacy", "--allow-downgrade", "--input", str(key), "--output",
                str(blob))
        assert r.rc == 0, r.err
    values = SealedBlob.from_json(blob.read_bytes()).pcr_values
    assert values[(0x000B, 0)] == digest(0x000B, b"attacker's choice 0")


# ------------------------------------------------------- 5: forged absence of the sealed key

EVE_SEALED = (0x01800000, 0x01900000, 0x01800001, 0x01900001)  # main and staging pairs
RC_HANDLE_NV = 0x18B  # TPM_RC_HANDLE, handle 1: "no such NV index"
RC_HANDLE_NV_2 = 0x28B  # the same for NV_Read's second handle, the index
RC_NV_UNINITIALIZED = 0x14A  # TPM_RC_NV_UNINITIALIZED: "never written"


def _read_of(ctx: HookContext) -> int | None:
    """The NV index an NV_ReadPublic or NV_Read reads, else None. A trust file that
    keeps the pair's public areas reads it with NV_Read alone; the reader falls back
    to NV_ReadPublic when that fails, so forging absence takes both."""
    if ctx.code == TPM_CC.NV_ReadPublic:
        return int.from_bytes(ctx.command[10:14], "big")
    if ctx.code == TPM_CC.NV_Read:
        return int.from_bytes(ctx.command[14:18], "big")
    return None


def _hide(ctx: HookContext, indices: tuple[int, ...]) -> Verdict:
    """'No such index' for a read of *indices*."""
    if _read_of(ctx) in indices:
        return Respond(error_response(RC_HANDLE_NV if ctx.code == TPM_CC.NV_ReadPublic
                                      else RC_HANDLE_NV_2))
    return None


def test_forged_absence_does_not_replace_the_sealed_vault_key(eve_sim: Simulator) -> None:
    """Two forged 'no such index' answers on the every-boot path of vault-key.

    Before generating a key into an apparently empty layout, vault-key lists the NV
    indices in an EK-salted audit session (an HMAC-checked answer) and refuses.
    """
    with interposer(eve_sim) as p:
        first = tpm(p, "vault-key")
        expect_ok(first, size=32)
    watch = unchanged(eve_sim)
    forged = {"left": 2}

    def hide(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.NV_Read:
            return _hide(ctx, EVE_SEALED)
        if ctx.code == TPM_CC.NV_ReadPublic and forged["left"] and \
                _read_of(ctx) in EVE_SEALED:
            forged["left"] -= 1
            return _hide(ctx, EVE_SEALED)
        return None

    with interposer(eve_sim, on_command=hide) as p:
        r = tpm(p, "vault-key")
        assert_no_leak(p.exchanges, first.out)
        expect_error(r, ExitCode.INTEGRITY, "could not be read: possible interposer")
    watch.check()  # the sealed vault key in NV is the one from before
    with interposer(eve_sim) as p:
        expect_ok(tpm(p, "vault-key"), first.out, what="the next boot's vault key")


def test_forged_absence_does_not_let_seal_overwrite_nv(eve_sim: Simulator,
                                                        tmp_path: Path) -> None:
    """`seal --nv` without --force refuses when the layout only *looks* empty."""
    key, other = tmp_path / "key", tmp_path / "other"
    key.write_bytes(os.urandom(32))
    other.write_bytes(os.urandom(32))
    with interposer(eve_sim) as p:
        assert tpm(p, "seal", "--profile", "eve", "--nv", "--input", str(key)).rc == 0
    watch = unchanged(eve_sim)

    def hide(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.NV_ReadPublic and \
                int.from_bytes(ctx.command[10:14], "big") in EVE_SEALED[:2]:
            return Respond(error_response(RC_HANDLE_NV))
        return None

    with interposer(eve_sim, on_command=hide) as p:
        r = tpm(p, "seal", "--profile", "eve", "--nv", "--input", str(other))
        expect_error(r, ExitCode.INTEGRITY, "could not be read", "possible interposer")
    watch.check()


def test_forged_unwritten_public_index_makes_vault_key_refuse_not_replace(
        eve_sim: Simulator) -> None:
    """NV_ReadPublic answers carry no HMAC unless audited: forging "never written" for
    0x1900000 on every read (and NV_UNINITIALIZED on NV_Read, which the trust file's
    size hint reads it with first) hides the pair from the plain reads. The listing's
    GetCapability is audited, so the indices cannot vanish; the layout then looked torn
    (exit 12: "a seal was interrupted ... seal a new key the same way", advice that
    has the admin overwrite the real key, attack matrix row 37). An index listed as
    never written is now read again in the audit session, whose HMAC the forged answer
    fails (exit 6), and nothing is written: never a new key over the old."""
    with interposer(eve_sim) as p:
        first = tpm(p, "vault-key")
        expect_ok(first, size=32)
    watch = unchanged(eve_sim)

    def unwritten(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.NV_ReadPublic or ctx.response is None or \
                int.from_bytes(ctx.command[10:14], "big") != 0x01900000 or \
                ctx.response[6:10] != bytes(4):
            return None
        real, auths = parse_response(ctx.response, ctx.command)
        assert isinstance(real, cmds.NV_ReadPublicResponse)
        fake = replace(real.nv_public, attributes=real.nv_public.attributes & ~TPMA_NV.WRITTEN)
        return success_response(cmds.NV_ReadPublicResponse(fake, fake.name()), auths)

    def uninitialized(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.NV_Read and _read_of(ctx) == 0x01900000:
            return Respond(error_response(RC_NV_UNINITIALIZED))
        return None

    with interposer(eve_sim, on_command=uninitialized, on_response=unwritten) as p:
        r = tpm(p, "vault-key")
        expect_error(r, ExitCode.INTEGRITY, "NV 0x1900000", "possible interposer",
                     "nothing was changed")
        assert not {"Create", "NV_Write", "NV_DefineSpace", "NV_UndefineSpace"} & set(
            names(p.exchanges))
        assert_no_leak(p.exchanges, first.out)
    watch.check()
    with interposer(eve_sim) as p:
        expect_ok(tpm(p, "vault-key"), first.out, what="the next boot's vault key")


def test_forged_nv_read_public_is_not_asked_with_the_pinned_public_areas(
        eve_sim: Simulator) -> None:
    """With the pair's public areas in the trust file (nv_public), vault-key's every boot
    sends no NV_ReadPublic: the same "never written" forger finds nothing to answer, and
    the pinned key unseals. A pair forged through NV_Read alone is still an object
    whose Name is not pinned (test_attack_substitute.py)."""
    with interposer(eve_sim) as p:
        first = tpm(p, "vault-key")
        expect_ok(first, size=32)
    watch = unchanged(eve_sim, eve_sim.state / "trust.json")

    def unwritten(ctx: HookContext) -> Verdict:
        if ctx.code != TPM_CC.NV_ReadPublic or ctx.response is None or \
                ctx.response[6:10] != bytes(4):
            return None
        real, auths = parse_response(ctx.response, ctx.command)
        assert isinstance(real, cmds.NV_ReadPublicResponse)
        fake = replace(real.nv_public, attributes=real.nv_public.attributes & ~TPMA_NV.WRITTEN,
                       data_size=1)
        return success_response(cmds.NV_ReadPublicResponse(fake, fake.name()), auths)

    with interposer(eve_sim, on_response=unwritten) as p:
        expect_ok(tpm(p, "vault-key"), first.out, what="the vault key")
        assert names(p.exchanges)[:3] == ["NV_Read", "NV_Read", "StartAuthSession"]
        assert "NV_ReadPublic" not in names(p.exchanges)
        assert_no_leak(p.exchanges, first.out)
    watch.check()


def test_forged_error_on_the_hinted_read_falls_back_to_the_ordinary_reads(
        eve_sim: Simulator) -> None:
    """A forged error on the NV_Read that uses the trust file's sizes only costs the
    ordinary reads (NV_ReadPublic, NV_Read): the pinned key still unseals, and the
    trust file is not rewritten (its hint was right)."""
    with interposer(eve_sim) as p:
        first = tpm(p, "vault-key")
        expect_ok(first, size=32)
    watch = unchanged(eve_sim, eve_sim.state / "trust.json")
    forged = {"left": 1}

    def once(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.NV_Read and forged["left"]:
            forged["left"] -= 1
            return _hide(ctx, EVE_SEALED)
        return None

    with interposer(eve_sim, on_command=once) as p:
        expect_ok(tpm(p, "vault-key"), first.out, what="the vault key")
        assert names(p.exchanges)[:5] == ["NV_Read", "NV_ReadPublic", "NV_ReadPublic",
                                          "NV_Read", "NV_Read"]
        assert_no_leak(p.exchanges, first.out)
    watch.check()


@pytest.mark.parametrize("rc", [RC_SYMMETRIC_P4, RC_VALUE_P2, RC_FAILURE],
                         ids=["symmetric", "salt-value", "failure"])
def test_forged_start_auth_session_error_at_unseal_never_falls_back(
        tcg_sim: Simulator, tmp_path: Path, rc: int) -> None:
    """Unseal has no plaintext fallback to be pushed into: the blob says how it was sealed."""
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    with interposer(tcg_sim) as p:
        assert tpm(p, "seal", "--input", str(key), "--output", str(blob)).rc == 0
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    with interposer(tcg_sim, on_command=_forge_error(TPM_CC.StartAuthSession, rc)) as p:
        r = tpm(p, "unseal", "--input", str(blob))
        if rc == RC_VALUE_P2:  # "the salt does not decrypt": what a substituted EK causes
            expect_error(r, ExitCode.INTEGRITY, EK_MISMATCH)
        else:
            expect_error(r, ExitCode.TPM_ERROR, "StartAuthSession")
        assert "Unseal" not in names(p.exchanges)
        assert_no_leak(p.exchanges, secret)
    watch.check()


def test_forged_absence_of_the_legacy_key_does_not_replace_it(eve_sim: Simulator) -> None:
    """First boot with a legacy key: a forged "no such index" for 0x01700000 must not make
    vault-key generate a new key (the vault encrypted with the legacy key would be lost).
    Whether the legacy index exists is read from the audited NV listing, so the forgery
    contradicts an authenticated answer and is reported; nothing changes."""
    from tpmseal.recipes.stores import nv_define_write

    legacy = os.urandom(32)
    with Tpm.open(eve_sim.uri) as t:
        nv_define_write(t, 0x01700000, legacy)

    def hide(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.NV_ReadPublic and \
                int.from_bytes(ctx.command[10:14], "big") == 0x01700000:
            return Respond(error_response(RC_HANDLE_NV))
        return None

    watch = unchanged(eve_sim)
    with interposer(eve_sim, on_command=hide) as p:
        r = tpm(p, "vault-key")
        expect_error(r, ExitCode.INTEGRITY, "NV 0x1700000 is listed", "possible interposer")
        assert_no_leak(p.exchanges, legacy)
        assert "Create" not in names(p.exchanges)
    watch.check()
    with interposer(eve_sim) as p:  # without the attacker the legacy key migrates
        expect_ok(tpm(p, "vault-key"), legacy, what="the migrated legacy key")


def test_forged_empty_nv_read_fails_fast(eve_sim: Simulator) -> None:
    """An NV_Read answered with no data must not make the reader ask forever."""
    with interposer(eve_sim) as p:
        first = tpm(p, "vault-key")
        expect_ok(first, size=32)

    def empty(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.NV_Read and ctx.response is not None:
            _, auths = parse_response(ctx.response, ctx.command)
            return success_response(cmds.NV_ReadResponse(b""), auths)
        return None

    with interposer(eve_sim, on_response=empty) as p:
        r = tpm(p, "vault-key")
        expect_error(r, ExitCode.INTEGRITY, "NV_Read")
        assert len(names(p.exchanges)) < 40


def _hide_sealed(ctx: HookContext) -> Verdict:
    return _hide(ctx, EVE_SEALED)


@pytest.mark.parametrize("command", ["unseal", "reseal"])
def test_forged_absence_at_unseal_nv_is_not_reported_as_nothing_sealed(
        eve_sim: Simulator, tmp_path: Path, command: str) -> None:
    """'No sealed secret; seal one first' on the word of forged errors would steer the
    admin to a seal --nv --force that destroys the real key: the listing is asked."""
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    assert direct(eve_sim, "seal", "--profile", "eve", "--nv", "--input", str(key)).rc == 0
    watch = unchanged(eve_sim, eve_sim.state / "trust.json")
    with interposer(eve_sim, on_command=_hide_sealed) as p:
        r = tpm(p, command, "--profile", "eve", "--nv")
    expect_error(r, ExitCode.INTEGRITY, "could not be read", "possible interposer")
    assert "seal one first" not in r.err
    watch.check()
    expect_ok(direct(eve_sim, "unseal", "--profile", "eve", "--nv"), key.read_bytes())


RC_NV_SPACE = 0x14B  # TPM_RC_NV_SPACE: "no room" - any error will do


def test_forged_reread_during_reseal_nv_cannot_lose_the_secret(eve_sim: Simulator,
                                                                tmp_path: Path) -> None:
    """save() used to re-read the main pair (unauthenticated) to decide whether to stage
    the new copy first: a forged 'no such index' made it skip staging, and a forged
    error on the new main pair then left no copy. It now knows where the copy that
    unsealed came from."""
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    assert direct(eve_sim, "seal", "--profile", "eve", "--nv", "--input", str(key)).rc == 0
    seen = {"unsealed": False}

    def attack(ctx: HookContext) -> Verdict:
        seen["unsealed"] |= ctx.code == TPM_CC.Unseal
        if ctx.code == TPM_CC.NV_ReadPublic and seen["unsealed"]:
            return _hide(ctx, EVE_SEALED[:1])  # save's re-read, after the unseal
        if ctx.code == TPM_CC.NV_DefineSpace:
            cmd, _ = ctx.parse()
            assert isinstance(cmd, cmds.NV_DefineSpace)
            if cmd.public_info.nv_index == EVE_SEALED[0]:  # the new main pair: "crash"
                return Respond(error_response(RC_NV_SPACE))
        return None

    with interposer(eve_sim, on_command=attack) as p:
        r = tpm(p, "reseal", "--profile", "eve", "--nv", "--pcrs", "sha256:0,4,7")
    assert r.rc != 0
    # whatever the interposer did, one complete copy is left, and it unseals (with the
    # PCRs its record gives: naming the old or the new list would refuse the other copy)
    expect_ok(direct(eve_sim, "unseal", "--profile", "eve", "--nv"), key.read_bytes())
