"""Attacks 2, 3, 7, 8: an interposer flips, replays, strips, truncates and stalls messages.

Each run goes through the CLI (``tpmseal --tpm PROXY ...`` in-process). The
properties asserted every time: the run never succeeds with wrong data and
never crashes (one error line, the documented exit code), the secret is on no
exchange the proxy saw, and the blob file, the trust file and the TPM's NV and
persistent objects are byte-identical afterwards.

Between attacked runs the test flushes what a dead client left loaded, as the
kernel resource manager (/dev/tpmrm0) does when a process closes the device:
a forged *error* response leaves the object the TPM really loaded unknown to
the client (errors carry no HMAC, TPM 2.0 Part 1 §18.8).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
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
from test_seal_support import flush_leftovers
from tpmseal.errors import ExitCode
from tpmseal.sniff.analysis.leaks import scan
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.capture.hooks import (
    HANG,
    Close,
    CommandHook,
    HookContext,
    Verdict,
    flip,
    set_session_attributes,
)
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.constants import TPM_CC, TPM_ST, TPMA_SESSION, members

HMAC_SIZE = 32
HEADER_TAG, HEADER_SIZE_LSB, HEADER_RC_LSB = 1, 5, 9


@pytest.fixture
def sealed(tcg_sim: Simulator, tmp_path: Path) -> tuple[bytes, Path]:
    """A 32-byte secret sealed (on a clean bus) to a blob file."""
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    r = direct(tcg_sim, "seal", "--input", str(key), "--output", str(blob))
    assert r.rc == 0, r.err
    key.unlink()
    return secret, blob


@dataclass
class FlipNth:
    """Flip byte *offset* of the *k*-th response of the next run (counted from arming)."""

    k: int = -1
    offset: int = 0
    seen: int = 0
    flipped: bool = False

    def arm(self, k: int, offset: int) -> None:
        self.k, self.offset, self.seen, self.flipped = k, offset, 0, False

    def __call__(self, ctx: HookContext) -> Verdict:
        assert ctx.response is not None
        n, self.seen = self.seen, self.seen + 1
        if n != self.k:
            return None
        self.flipped = True
        return flip(ctx.response, self.offset)


def offsets(ex: Exchange) -> dict[int, str]:
    """Where to flip a response: header fields, handle, parameters, nonce, HMAC."""
    resp = ex.response or b""
    n = len(resp)
    where = {HEADER_TAG: "tag", HEADER_SIZE_LSB: "size", HEADER_RC_LSB: "rc"}
    if n > 10:
        where |= {10: "first body byte", n // 2: "middle", n - 1: "last byte"}
        if resp[:2] == TPM_ST.SESSIONS.to_bytes(2, "big") and ex.code == TPM_CC.Unseal:
            where |= {16: "encrypted outData", 16 + 31: "encrypted outData (last)",
                      n - HMAC_SIZE: "HMAC (first)", n - HMAC_SIZE // 2: "HMAC"}
    return where


def test_flip_a_byte_in_every_response_of_an_unseal(
        tcg_sim: Simulator, sealed: tuple[bytes, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every exchange k, several offsets each: integrity error, or a clean failure."""
    secret, blob = sealed
    # a flipped size field makes the client wait for bytes that never come
    monkeypatch.setenv("TPMSEAL_TIMEOUT", "0.3")
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    flipper = FlipNth()
    outcomes: Counter[int] = Counter()
    with interposer(tcg_sim) as p:
        expect_ok(tpm(p, "unseal", "--input", str(blob)), secret)
        clean = p.exchanges
        assert names(clean) == ["StartAuthSession", "Load", "PolicyPCR", "Unseal",
                                "FlushContext"]
        for k, ex in enumerate(clean):
            for offset, field in offsets(ex).items():
                flipper.arm(k, offset)
                with p.interpose(on_response=flipper):
                    r = tpm(p, "unseal", "--input", str(blob))
                case = f"response {k} ({ex.name}) {field} @{offset}"
                assert flipper.flipped, case
                flush_leftovers(p.uri)
                outcomes[r.rc] += 1
                if r.rc == 0:  # only a byte nothing depends on: the data must be right
                    expect_ok(r, secret, what=case)
                    continue
                expect_error(r, r.rc, what=case)
                if field == "rc":  # a forged error: no HMAC covers it (DoS only)
                    assert r.rc == ExitCode.TPM_ERROR, (case, r.err)
                elif ex.code == TPM_CC.Unseal or (ex.code == TPM_CC.Load and offset >= 14):
                    # everything after the header of an authorized response is checked
                    assert r.rc == ExitCode.INTEGRITY, (case, r.err)
                else:
                    assert r.rc in (ExitCode.INTEGRITY, ExitCode.BAD_INPUT,
                                    ExitCode.TPM_UNREACHABLE, ExitCode.TPM_ERROR), (case, r.err)
        assert_no_leak(p.exchanges, secret)
    assert outcomes[ExitCode.INTEGRITY] >= 15, outcomes
    assert outcomes[ExitCode.INTERNAL] == 0
    watch.check()


def test_flip_create_response_writes_no_blob(tcg_sim: Simulator, tmp_path: Path) -> None:
    """The seal side: a tampered Create response (private, public, HMAC) is rejected."""
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    watch = unchanged(tcg_sim, blob)
    with interposer(tcg_sim) as p:
        for offset in (20, 100, 300, -HMAC_SIZE, -1):
            def attack(ctx: HookContext, offset: int = offset) -> Verdict:
                assert ctx.response is not None
                return flip(ctx.response, offset) if ctx.code == TPM_CC.Create else None

            with p.interpose(on_response=attack):
                r = tpm(p, "seal", "--input", str(key), "--output", str(blob))
            expect_error(r, ExitCode.INTEGRITY, "HMAC")
        assert_no_leak(p.exchanges, secret)
    watch.check()
    assert not blob.exists()


def test_replayed_unseal_response_is_rejected(tcg_sim: Simulator,
                                              sealed: tuple[bytes, Path]) -> None:
    """Answer a later Unseal with the bytes of an earlier one (same object, same TPM)."""
    secret, blob = sealed
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    with interposer(tcg_sim) as p:
        expect_ok(tpm(p, "unseal", "--input", str(blob)), secret)
        old = next(e.response for e in p.exchanges if e.code == TPM_CC.Unseal)
        assert old is not None

        def replay(ctx: HookContext) -> Verdict:
            return old if ctx.code == TPM_CC.Unseal else None

        with p.interpose(on_response=replay):
            r = tpm(p, "unseal", "--input", str(blob))
        expect_error(r, ExitCode.INTEGRITY, "TPM response failed its HMAC check")
        replayed = [e for e in p.exchanges if e.code == TPM_CC.Unseal][-1]
        assert replayed.response == old and replayed.tpm_response != old
        assert_no_leak(p.exchanges, secret)
    watch.check()


def _clear_attribute(code: int, bit: int) -> CommandHook:
    def attack(ctx: HookContext) -> Verdict:
        if ctx.code != code:
            return None
        decoded = ctx.decoded
        assert decoded is not None and decoded.sessions
        attrs = decoded.sessions[0].attributes
        assert attrs & bit
        return set_session_attributes(ctx.command, attrs & ~bit)
    return attack


def test_dropping_encrypt_from_unseal_breaks_the_hmac(tcg_sim: Simulator,
                                                      sealed: tuple[bytes, Path]) -> None:
    """Without ``encrypt`` the TPM would return outData in clear — if it accepted the HMAC."""
    secret, blob = sealed
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    with interposer(tcg_sim) as p:
        attack = _clear_attribute(TPM_CC.Unseal, TPMA_SESSION.encrypt)
        with p.interpose(on_command=attack):
            r = tpm(p, "unseal", "--input", str(blob))
        expect_error(r, ExitCode.INTEGRITY, "rejected the HMAC of TPM2_Unseal",
                              "interposer")
        unseal = [e for e in p.exchanges if e.code == TPM_CC.Unseal][-1]
        assert unseal.tpm_command != unseal.command and unseal.rc != 0  # no outData at all
        assert_no_leak(p.exchanges, secret)
    watch.check()


def test_dropping_decrypt_from_create_breaks_the_hmac(tcg_sim: Simulator,
                                                      tmp_path: Path) -> None:
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    with interposer(tcg_sim) as p:
        attack = _clear_attribute(TPM_CC.Create, TPMA_SESSION.decrypt)
        with p.interpose(on_command=attack):
            r = tpm(p, "seal", "--input", str(key), "--output", str(blob))
        expect_error(r, ExitCode.INTEGRITY, "the TPM rejected our HMAC",
                              "altered in transit")
        assert_no_leak(p.exchanges, secret)
    watch.check()
    assert not blob.exists()


@pytest.mark.parametrize("command", ["Load", "StartAuthSession", "PolicyPCR", "Unseal"])
def test_truncated_response_is_a_transport_error(tcg_sim: Simulator,
                                                 sealed: tuple[bytes, Path],
                                                 command: str) -> None:
    secret, blob = sealed
    watch = unchanged(tcg_sim, blob)
    code = members(TPM_CC)[command]

    def truncate(ctx: HookContext) -> Verdict:
        assert ctx.response is not None
        return Close(ctx.response[: len(ctx.response) // 2]) if ctx.code == code else None

    with interposer(tcg_sim) as p:
        t0 = time.monotonic()
        with p.interpose(on_response=truncate):
            r = tpm(p, "unseal", "--input", str(blob))
        assert time.monotonic() - t0 < 5
        expect_error(r, ExitCode.TPM_UNREACHABLE, "closed the connection")
        flush_leftovers(p.uri)
        assert_no_leak(p.exchanges, secret)
    watch.check()


def test_delay_past_the_time_out(tcg_sim: Simulator, sealed: tuple[bytes, Path],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled bus: TPMSEAL_TIMEOUT=1 ends the unseal with exit 3 in about a second."""
    secret, blob = sealed
    monkeypatch.setenv("TPMSEAL_TIMEOUT", "1")
    watch = unchanged(tcg_sim, blob)

    def stall(ctx: HookContext) -> Verdict:
        if ctx.code == TPM_CC.Unseal:
            ctx.delay(1.5)
        return None

    with interposer(tcg_sim) as p:
        t0 = time.monotonic()
        with p.interpose(on_response=stall):
            r = tpm(p, "unseal", "--input", str(blob))
        elapsed = time.monotonic() - t0
        expect_error(r, ExitCode.TPM_UNREACHABLE, "did not answer in time")
        assert 1.0 <= elapsed < 2.0, elapsed
        p.wait_for(len(p.exchanges))
        flush_leftovers(p.uri)
        assert_no_leak(p.exchanges, secret)
    watch.check()


def test_a_tpm_that_never_answers_costs_one_time_out(tcg_sim: Simulator,
                                                     sealed: tuple[bytes, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The interposer swallows Unseal: one time-out, not one more per cleanup command."""
    secret, blob = sealed
    monkeypatch.setenv("TPMSEAL_TIMEOUT", "1")

    def swallow(ctx: HookContext) -> Verdict:
        return HANG if ctx.code == TPM_CC.Unseal else None

    with interposer(tcg_sim) as p:
        t0 = time.monotonic()
        with p.interpose(on_command=swallow):
            r = tpm(p, "unseal", "--input", str(blob))
        elapsed = time.monotonic() - t0
        expect_error(r, ExitCode.TPM_UNREACHABLE, "did not answer in time")
        assert 1.0 <= elapsed < 1.5, elapsed
        assert names(p.exchanges)[-1] == "Unseal"  # no flush was sent into the void
        flush_leftovers(p.uri)
        assert_no_leak(p.exchanges, secret)


def test_dropping_audit_from_pcr_read_stops_the_seal(tcg_sim: Simulator,
                                                     tmp_path: Path) -> None:
    """Without ``audit`` the PCR_Read response would carry no HMAC over the values."""
    secret = os.urandom(32)
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(secret)
    watch = unchanged(tcg_sim, blob, tcg_sim.state / "trust.json")
    with interposer(tcg_sim) as p:
        attack = _clear_attribute(TPM_CC.PCR_Read, TPMA_SESSION.audit)
        with p.interpose(on_command=attack):
            r = tpm(p, "seal", "--input", str(key), "--output", str(blob))
        assert r.rc in (ExitCode.INTEGRITY, ExitCode.TPM_ERROR), r.err
        expect_error(r, r.rc)
        assert "Create" not in names(p.exchanges)
        assert_no_leak(p.exchanges, secret)
    watch.check()


def test_check_value_catches_tampered_plaintext_on_a_downgraded_unseal(
        tcg_sim: Simulator, sealed: tuple[bytes, Path]) -> None:
    """``--legacy --allow-downgrade`` has no response HMAC (and puts the secret on the
    bus: the user asked for it); the blob's check value still rejects altered data."""
    secret, blob = sealed
    assert json.loads(blob.read_text())["check"] is not None
    watch = unchanged(tcg_sim, blob)

    def alter(ctx: HookContext) -> Verdict:  # first byte of outData, in clear here
        assert ctx.response is not None
        return flip(ctx.response, 16) if ctx.code == TPM_CC.Unseal else None

    with interposer(tcg_sim) as p:
        r = tpm(p, "unseal", "--legacy", "--input", str(blob))
        expect_error(r, ExitCode.USAGE, "--allow-downgrade")  # never silently
        with p.interpose(on_response=alter):
            r = tpm(p, "unseal", "--legacy", "--allow-downgrade", "--input", str(blob))
        expect_error(r, ExitCode.INTEGRITY, "check value")
        # and why the flag is needed: untouched, the downgraded unseal shows the secret
        p.clear()
        expect_ok(tpm(p, "unseal", "--legacy", "--allow-downgrade", "--input", str(blob)),
                  secret)
        assert [leak.command for leak in scan(p.exchanges, [secret])] == ["Unseal"]
    watch.check()


def test_no_check_value_for_a_passphrase(tcg_sim: Simulator, tmp_path: Path) -> None:
    """A check value would let anyone holding the blob test passphrase guesses offline."""
    key, blob = tmp_path / "key", tmp_path / "blob.json"
    key.write_bytes(b"correct horse battery staple")
    r = direct(tcg_sim, "seal", "--input", str(key), "--output", str(blob))
    assert r.rc == 0, r.err
    assert json.loads(blob.read_text())["check"] is None
