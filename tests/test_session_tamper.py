"""An active bus attacker flips response bytes: every flip is caught, nothing leaks out.

A wrapper in front of the real swtpm flips bytes of the response to one
authorized command. The client must raise — ResponseIntegrityError when the
response HMAC (Part 1 §19.6.16) or the echoed session attributes disagree,
DecodeError when the framing no longer parses — and must not return any part
of the (possibly attacker-chosen) result.
"""

from __future__ import annotations

import pytest

from test_session_support import (
    ENC,
    FaultyTransport,
    flip,
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
from tpmseal.client.tpm import Tpm
from tpmseal.errors import DecodeError, IntegrityError, ResponseIntegrityError, TpmsealError
from tpmseal.recipes.templates import sealed_template
from tpmseal.transport.base import open_transport
from tpmseal.transport.simulator import Simulator
from tpmseal.wire import commands as c
from tpmseal.wire.constants import TPM_CC, TPM_SE


class Flipper:
    """Flips byte *offset* (xor *mask*) of the next response to *code*, once."""

    def __init__(self, code: int, offset: int, mask: int = 0xFF) -> None:
        self.code, self.offset, self.mask = code, offset, mask
        self.armed = True
        self.length = 0

    def __call__(self, code: int, command: bytes, response: bytes) -> bytes:
        if not self.armed or code != self.code or response[6:10] != b"\0\0\0\0":
            return response  # swtpm sometimes answers TPM_RC_RETRY first: wait for success
        self.armed = False
        self.length = len(response)
        if self.offset >= len(response):
            return response
        return flip(response, self.offset, self.mask)


def test_flipped_byte_in_authorized_response(sim: Simulator) -> None:
    faulty = FaultyTransport(open_transport(sim.uri))
    with Tpm(faulty) as tpm:
        parent = srk(tpm)
        obj = seal(tpm, parent, new_secret(), user_sealed_template(), auth=b"pin")
        load(tpm, parent, obj)
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=ENC)
        s.auth_value = b"pin"
        faulty.tamper = Flipper(TPM_CC.Unseal, 20, 0x01)  # inside the encrypted outData
        result = None
        with pytest.raises(ResponseIntegrityError) as e:
            result = tpm.run(c.Unseal(obj.handle), s)
        assert result is None
        assert "HMAC" in e.value.message and e.value.hint is not None
        assert "interposer" in e.value.hint


def test_flipped_byte_in_password_session_response_is_not_checked(sim: Simulator) -> None:
    """Without an HMAC session nothing can be verified: why the unseal path uses one."""
    faulty = FaultyTransport(open_transport(sim.uri))
    with Tpm(faulty) as tpm:
        parent = srk(tpm)
        obj = seal(tpm, parent, new_secret(), user_sealed_template())
        load(tpm, parent, obj)
        faulty.tamper = Flipper(TPM_CC.Unseal, 20, 0x01)
        out = tpm.run(c.Unseal(obj.handle)).out_data
        differs = out != obj.secret
        assert differs and len(out) == len(obj.secret)


def _unseal_with_flip(tpm: Tpm, faulty: FaultyTransport, handle: int, step: object,
                      offset: int, mask: int) -> tuple[BaseException | None, int]:
    from tpmseal.session.policy import PcrStep

    assert isinstance(step, PcrStep)
    pol = salted(tpm, TPM_SE.POLICY, "rsa2048", attributes=ENC)  # the TPM ends it
    tpm.run_policy(pol, [step])
    flipper = Flipper(TPM_CC.Unseal, offset, mask)
    faulty.tamper = flipper
    try:
        out = tpm.run(c.Unseal(handle), pol)
    except TpmsealError as e:
        return e, flipper.length
    finally:
        faulty.tamper = None
    raise AssertionError(f"flip at {offset} (mask {mask:#x}) returned {len(out.out_data)} "
                         "bytes of data")


@pytest.mark.parametrize("mask", [0xFF, 0x01, 0x80])
def test_every_byte_of_encrypted_unseal_response(sim: Simulator, mask: int) -> None:
    faulty = FaultyTransport(open_transport(sim.uri))
    with Tpm(faulty, retry_delay=0) as tpm:
        parent = srk(tpm)
        step = pcr_step(tpm)
        obj = seal(tpm, parent, new_secret(), sealed_template(policy_for(step)))
        load(tpm, parent, obj)
        # learn the response length with an untouched run
        pol = salted(tpm, TPM_SE.POLICY, "rsa2048", attributes=ENC)
        tpm.run_policy(pol, [step])
        same(tpm.run(c.Unseal(obj.handle), pol).out_data, obj.secret)
        length = 10 + 4 + 2 + 32 + 2 + 32 + 1 + 2 + 32
        kinds: dict[str, int] = {}
        for offset in range(10, length):
            err, seen = _unseal_with_flip(tpm, faulty, obj.handle, step, offset, mask)
            assert seen == length
            assert isinstance(err, IntegrityError | DecodeError), (offset, err)
            kinds[type(err).__name__] = kinds.get(type(err).__name__, 0) + 1
        assert kinds.get("ResponseIntegrityError", 0) > 60
        # the session and the object still work afterwards
        pol = salted(tpm, TPM_SE.POLICY, "rsa2048", attributes=ENC)
        tpm.run_policy(pol, [step])
        same(tpm.run(c.Unseal(obj.handle), pol).out_data, obj.secret)


@pytest.mark.parametrize("offset", range(10))
def test_header_flips_never_return_data(sim: Simulator, offset: int) -> None:
    """Header bytes: tag, size or response code; any outcome but returned data is fine."""
    faulty = FaultyTransport(open_transport(sim.uri))
    with Tpm(faulty, retry_limit=0) as tpm:
        parent = srk(tpm)
        step = pcr_step(tpm)
        obj = seal(tpm, parent, new_secret(), sealed_template(policy_for(step)))
        load(tpm, parent, obj)
        err, _ = _unseal_with_flip(tpm, faulty, obj.handle, step, offset, 0x01)
        assert err is not None


def test_tampered_create_response_returns_no_blob(sim: Simulator) -> None:
    faulty = FaultyTransport(open_transport(sim.uri))
    with Tpm(faulty) as tpm:
        parent = srk(tpm)
        s = salted(tpm, TPM_SE.HMAC, "p256")
        faulty.tamper = Flipper(TPM_CC.Create, 60)
        with pytest.raises(ResponseIntegrityError):
            seal(tpm, parent, new_secret(), user_sealed_template(), s)


def test_dropped_session_in_response(sim: Simulator) -> None:
    """A response rebuilt without its auth area: the count mismatch is an integrity error."""
    from tpmseal.wire.frames import build_response, split_response

    def strip(code: int, command: bytes, response: bytes) -> bytes:
        if code != TPM_CC.GetRandom:
            return response
        f = split_response(response, 0, 1)
        return build_response(0, f.handles, f.params, [])

    faulty = FaultyTransport(open_transport(sim.uri))
    with Tpm(faulty) as tpm:
        s = salted(tpm, TPM_SE.HMAC, "rsa2048", attributes=ENC)
        faulty.tamper = strip
        with pytest.raises(ResponseIntegrityError, match="no sessions"):
            tpm.get_random(8, s)
