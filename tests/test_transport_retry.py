"""TPM_RC_RETRY / YIELDED / TESTING: the client resends with bounded backoff.

A wrapper in front of the real swtpm answers the first N commands (or the
first N of one command code) with a warning, as a busy TPM would, and only then
lets them through. A TPM that answers with such a warning has not executed the
command, so session nonces have not rolled: the resent command carries a fresh
nonceCaller and everything must still verify.
"""

from __future__ import annotations

import pytest

from test_session_support import (
    CONT,
    DEC,
    ENC,
    absent,
    load,
    new_secret,
    pcr_step,
    policy_for,
    salted,
    same,
    seal,
    srk,
    user_sealed_template,
)
from tpmseal.client import tpm as client_mod
from tpmseal.client.tpm import Tpm
from tpmseal.recipes.templates import sealed_template
from tpmseal.sniff.capture.tap import CapturingTransport
from tpmseal.transport.base import Transport, open_transport
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as c
from tpmseal.wire.constants import TPM_CC, TPM_SE
from tpmseal.wire.frames import build_response
from tpmseal.wire.rc import TpmResponseError

WARNINGS = {"RETRY": 0x922, "YIELDED": 0x908, "TESTING": 0x90A}


class BusyTpm:
    """Answers the first *count* commands (of *code*, if given) with *rc*."""

    def __init__(self, inner: Transport, rc: int, count: int, code: int | None = None) -> None:
        self.inner, self.rc, self.count, self.code = inner, rc, count, code
        self.refused = 0
        self.forwarded: list[int] = []

    @property
    def uri(self) -> str:
        return self.inner.uri

    def send(self, command: bytes) -> bytes:
        code = int.from_bytes(command[6:10], "big")
        if self.refused < self.count and self.code in (None, code):
            self.refused += 1
            return build_response(self.rc, [], b"", [])
        self.forwarded.append(code)
        return self.inner.send(command)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's backoff sleeps instead of sleeping."""
    seen: list[float] = []
    monkeypatch.setattr(f"{client_mod.__name__}.time.sleep", seen.append)
    return seen


@pytest.mark.parametrize("warning", list(WARNINGS))
@pytest.mark.parametrize("count", [1, 3, 8])
def test_retries_then_succeeds(sim: Simulator, sleeps: list[float], warning: str,
                               count: int) -> None:
    busy = BusyTpm(open_transport(sim.uri), WARNINGS[warning], count)
    with Tpm(busy, retry_limit=8, retry_delay=0.01) as tpm:
        assert len(tpm.get_random(16)) == 16
        assert tpm.commands_sent == count + 1
    assert busy.refused == count
    assert busy.forwarded[0] == TPM_CC.GetRandom
    expected = [min(0.01 * 2**i, 1.0) for i in range(count)]
    assert sleeps == pytest.approx(expected)


def test_gives_up_after_retry_limit(sim: Simulator, sleeps: list[float]) -> None:
    busy = BusyTpm(open_transport(sim.uri), WARNINGS["RETRY"], 100)
    tpm = Tpm(busy, retry_limit=4, retry_delay=0.01)
    with pytest.raises(TpmResponseError) as e:
        tpm.get_random(8)
    assert e.value.name == "RETRY" and e.value.rc.warning
    assert "retry" in e.value.message.lower()
    assert busy.refused == 5 and busy.forwarded == []  # 1 try + 4 retries, none reached it
    assert len(sleeps) == 4
    busy.count = 0
    tpm.close()


def test_backoff_is_capped(sim: Simulator, sleeps: list[float]) -> None:
    busy = BusyTpm(open_transport(sim.uri), WARNINGS["YIELDED"], 5)
    with Tpm(busy, retry_limit=5, retry_delay=0.4) as tpm:
        tpm.get_random(8)
    assert sleeps == pytest.approx([0.4, 0.8, 1.0, 1.0, 1.0])


def test_real_sleep_is_bounded(sim: Simulator) -> None:
    """Without the monkeypatch: three retries at 1 ms cost milliseconds, not seconds."""
    import time

    busy = BusyTpm(open_transport(sim.uri), WARNINGS["TESTING"], 3)
    with Tpm(busy, retry_delay=0.001) as tpm:
        t0 = time.monotonic()
        tpm.get_random(8)
        assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("rc", [0x921, 0x902, 0x9A2, 0x101])  # LOCKOUT, OBJECT_MEMORY, ...
def test_other_codes_are_not_retried(sim: Simulator, sleeps: list[float], rc: int) -> None:
    busy = BusyTpm(open_transport(sim.uri), rc, 1)
    with Tpm(busy) as tpm:
        with pytest.raises(TpmResponseError):
            tpm.get_random(8)
        assert sleeps == [] and busy.refused == 1
        assert len(tpm.get_random(8)) == 8


def test_sessions_survive_retries(sim: Simulator, sleeps: list[float]) -> None:
    """RETRY on encrypted Create, Load and Unseal: nonces stay in step, secrets stay hidden."""
    inner = CapturingTransport(open_transport(sim.uri))
    busy = BusyTpm(inner, WARNINGS["RETRY"], 0)
    with Tpm(busy) as tpm:
        parent = srk(tpm)
        step = pcr_step(tpm)
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | DEC | ENC)
        secret = new_secret()
        busy.code, busy.count, busy.refused = TPM_CC.Create, 2, 0
        obj = seal(tpm, parent, secret, sealed_template(policy_for(step)), s)
        busy.code, busy.count, busy.refused = TPM_CC.Load, 3, 0
        load(tpm, parent, obj, s)
        pol = salted(tpm, TPM_SE.POLICY, "p256", attributes=ENC)
        busy.code, busy.count, busy.refused = TPM_CC.PolicyPCR, 1, 0
        tpm.run_policy(pol, [step])
        busy.code, busy.count, busy.refused = TPM_CC.Unseal, 2, 0
        same(tpm.run(c.Unseal(obj.handle), pol).out_data, secret)
        # the long-lived HMAC session is still in step after its retried commands
        s.attributes = CONT | ENC
        busy.code, busy.count, busy.refused = TPM_CC.GetRandom, 1, 0
        assert len(tpm.get_random(16, s)) == 16
        assert len(sleeps) >= 2 + 3 + 1 + 2 + 1  # swtpm may add a RETRY of its own
    for e in inner.exchanges:
        absent(secret, e.command)
        absent(secret, e.response or b"")


def test_retry_resends_with_fresh_nonce(sim: Simulator, sleeps: list[float]) -> None:
    """Each attempt is protected anew: a new nonceCaller, a new ciphertext."""
    sent: list[bytes] = []

    class Recorder(BusyTpm):
        def send(self, command: bytes) -> bytes:
            sent.append(command)
            return super().send(command)

    busy = Recorder(open_transport(sim.uri), WARNINGS["RETRY"], 0)
    with Tpm(busy) as tpm:
        parent = srk(tpm)
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=CONT | DEC)
        busy.code, busy.count, busy.refused = TPM_CC.Create, 1, 0
        sent.clear()
        obj = seal(tpm, parent, new_secret(), user_sealed_template(), s)
        first, second = sent[0], sent[1]
        assert first != second and len(first) == len(second)
        load(tpm, parent, obj)
        same(tpm.run(c.Unseal(obj.handle)).out_data, obj.secret)
