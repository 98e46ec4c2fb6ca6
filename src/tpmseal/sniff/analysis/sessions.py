"""Session tracking: which "encrypted" parameters a bus observer can read anyway.

Parameter encryption (TPM 2.0 Part 1 §21.3) enciphers the first TPM2B
parameter with AES-CFB under key‖IV = KDFa(authHash, sessionKey ‖ authValue,
"CFB", nonceNewer, nonceOlder, keyBits + 128), where sessionKey (§19.6.8) is
KDFa over the bind entity's authValue ‖ salt — and is *empty* for a session
started neither salted nor bound (StartAuthSession with tpmKey and bind both
TPM_RH_NULL). For such a session every input of the key crossed the bus: the
nonces are in the clear in StartAuthSession and in every authorization area,
and the authValue of the authorized entity is often empty too. Its
"encryption" hides nothing from an observer who follows the sessions — which
this module does, the way the proxy and ``tpmseal decode`` see them: in order,
StartAuthSession command and response included.

:class:`SessionTracker` follows each session from StartAuthSession to its end
(FlushContext, ``continueSession`` clear, Startup), rolls its nonces exchange
by exchange, and for each exchange says what it could decrypt
(:class:`Deciphering`). A key is derived when it is certain — unsalted and
unbound, authorizing nothing — or confirmed: a guess (empty authValue; for a
bound session an empty bind authValue) is used only when the response HMAC
(§19.6.16, HMAC over rpHash ‖ nonceTPM ‖ nonceCaller ‖ attributes, which the
observer can recompute) verifies under it. Salted sessions are never
decrypted: their key holds a salt that crossed the bus only encrypted to a
TPM key.

The crypto is :mod:`tpmseal.session` (KDFa and the AES-CFB of parameter
encryption); this module only decides which inputs an observer knows.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from typing import Any

from tpmseal.errors import TpmsealError
from tpmseal.records import replace
from tpmseal.session.auth import cfb
from tpmseal.session.kdf import LABEL_ATH, kdfa
from tpmseal.sniff.analysis.record import (
    Deciphering,
    Exchange,
    safe_decode_command,
    safe_decode_response,
)
from tpmseal.wire.commands import REGISTRY
from tpmseal.wire.constants import (
    HASH_NAMES,
    HASH_SIZES,
    TPM_CC,
    TPM_RH,
    TPM_ST,
    TPMA_SESSION,
)
from tpmseal.wire.decode import Deciphered, DecodedCommand, DecodedField, DecodedResponse
from tpmseal.wire.frames import AuthCommand, AuthResponse
from tpmseal.wire.handles import shape
from tpmseal.wire.marshal import u8, u32
from tpmseal.wire.structures import SymDef, digest

#: The label of a parameter whose key an observer derives from what crossed the bus.
DERIVABLE = "encrypted with a key derivable from the bus"
_DERIVABLE_AUTH = (f"{DERIVABLE} (the authorized entity's authValue is empty: the response "
                   "HMAC verifies without one)")
_DERIVABLE_BIND = (f"{DERIVABLE} (the session is bound to an entity with an empty authValue: "
                   "the response HMAC verifies)")
_NEEDS_AUTH = (f"{DERIVABLE} and the authorized entity's authValue (not confirmed empty, so "
               "not decrypted)")


@dataclass
class _Session:
    """What the observer knows of one live session."""

    handle: int
    auth_hash: int
    symmetric: SymDef
    salted: bool
    bound: bool
    nonce_tpm: bytes
    #: sessionKey if the observer can compute it (a guess for a bound session until confirmed)
    session_key: bytes | None
    #: session_key is certain: unsalted and unbound, or a response HMAC confirmed the guess
    confirmed: bool


@dataclass(frozen=True)
class _Use:
    """A tracked session as used by one exchange."""

    session: _Session
    index: int
    authorizes: bool
    cmd_auth: AuthCommand
    resp_auth: AuthResponse | None


def _field(fields: list[DecodedField], name: str) -> Any:
    for f in fields:
        if f.name == name:
            return f.value
    return None


def _encryptable(code: int) -> tuple[int, bool, bool]:
    """(authorized handles, command first parameter TPM2B, response first parameter TPM2B)."""
    cls = REGISTRY.get(code)
    if cls is not None:
        lay = cls.layout()
        return (sum(1 for h in lay.handles if h.auth), lay.first_param_encryptable,
                cls.RESPONSE.layout().first_param_encryptable)
    s = shape(code)
    if s is None:
        return 0, False, False
    return s.auth_handles, s.decrypt, s.encrypt


def _response_hmac_ok(s: _Session, key: bytes, code: int, params: bytes, use: _Use) -> bool:
    """Does the response HMAC of *use* verify under *key* (Part 1 §19.6.16)?"""
    a = use.resp_auth
    if a is None or not a.hmac:
        return False  # an empty HMAC (policy session without authValue) proves nothing
    rp_hash = digest(s.auth_hash, u32(0) + u32(code) + params)
    msg = rp_hash + a.nonce + use.cmd_auth.nonce + u8(a.attributes)
    return hmac.compare_digest(hmac.new(key, msg, HASH_NAMES[s.auth_hash]).digest(), a.hmac)


def _response_params(frame: bytes | None, n_handles: int) -> bytes | None:
    """The parameter area of a successful response with sessions."""
    if frame is None or len(frame) < 10 + 4 * n_handles + 4:
        return None
    if int.from_bytes(frame[:2], "big") != TPM_ST.SESSIONS:
        return None
    start = 10 + 4 * n_handles + 4
    size = int.from_bytes(frame[start - 4 : start], "big")
    if start + size > len(frame):
        return None
    return frame[start : start + size]


class SessionTracker:
    """Follows sessions across exchanges; :meth:`observe` annotates each exchange.

    Feed it every exchange in the order the TPM saw them (the proxy does, under
    its bus lock; ``tpmseal decode`` does for a capture). Thread-safe.
    """

    def __init__(self) -> None:
        self._sessions: dict[int, _Session] = {}
        self._lock = threading.Lock()

    @property
    def live(self) -> dict[int, tuple[bool, bool]]:
        """Live sessions: handle → (salted, bound)."""
        with self._lock:
            return {h: (s.salted, s.bound) for h, s in self._sessions.items()}

    def observe(self, ex: Exchange) -> Exchange:
        """*ex* with :attr:`Exchange.deciphering` set when anything was readable."""
        with self._lock:
            try:
                found = self._decipher(ex)
            except (TpmsealError, ValueError, KeyError, IndexError):
                found = None
            self._update(ex)
        if found is not None and found.command is None and found.response is None:
            found = None
        return ex if found is None and ex.deciphering is None else replace(ex, deciphering=found)

    # ------------------------------------------------------------- deciphering

    def _uses(self, cmd: DecodedCommand, resp: DecodedResponse | None,
              n_auth: int) -> list[_Use]:
        out = []
        resp_auths = resp.sessions if resp is not None and resp.rc == 0 else []
        for i, a in enumerate(cmd.sessions):
            s = self._sessions.get(a.session_handle)
            if s is None:
                continue
            ra = resp_auths[i] if i < len(resp_auths) else None
            out.append(_Use(s, i, i < n_auth, a, ra))
        return out

    def _key(self, use: _Use, code: int,
             resp_params: bytes | None) -> tuple[bytes | None, str] | None:
        """The parameter-encryption key of *use* and why the observer has it.

        ``(None, why)`` when the key derives from the bus and an authValue that is
        not confirmed empty; ``None`` when the observer has no such key.
        """
        s = use.session
        if s.salted or s.session_key is None:
            return None
        if s.confirmed and not use.authorizes:
            return s.session_key, (_DERIVABLE_BIND if s.bound else DERIVABLE)
        # the guess: authValue empty (and, if bound, the bind entity's authValue empty)
        if resp_params is not None and _response_hmac_ok(s, s.session_key, code, resp_params,
                                                         use):
            s.confirmed = True
            if use.authorizes:
                return s.session_key, _DERIVABLE_AUTH
            return s.session_key, (_DERIVABLE_BIND if s.bound else DERIVABLE)
        if s.confirmed:
            return None, _NEEDS_AUTH
        return None

    def _decipher(self, ex: Exchange) -> Deciphering | None:
        cmd = safe_decode_command(ex.command)
        if cmd is None or not cmd.sessions:
            return None
        n_auth, cmd_2b, resp_2b = _encryptable(cmd.code)
        resp = safe_decode_response(ex.response, cmd) if ex.response is not None else None
        uses = self._uses(cmd, resp, n_auth)
        if not uses:
            return None
        n_rhandles = len(resp.handles) if resp is not None else 0
        resp_params = _response_params(ex.response, n_rhandles) if resp and resp.rc == 0 \
            else None
        out = Deciphering()
        dec = next((u for u in uses if u.cmd_auth.attributes & TPMA_SESSION.decrypt), None)
        first = cmd.params[0] if cmd.params else None
        if dec is not None and cmd_2b and first is not None and first.encrypted:
            got = self._key(dec, cmd.code, resp_params)
            if got is not None:
                key, how = got
                s = dec.session
                plain = (None if key is None else
                         self._cfb(s, key, dec.cmd_auth.nonce, s.nonce_tpm, first.value))
                out = replace(out, command=Deciphered(how, plain), command_offset=first.offset + 2)
        enc = next((u for u in uses if u.cmd_auth.attributes & TPMA_SESSION.encrypt), None)
        rfirst = resp.params[0] if resp is not None and resp.params else None
        if (enc is not None and enc.resp_auth is not None and resp_2b and rfirst is not None
                and rfirst.encrypted):
            got = self._key(enc, cmd.code, resp_params)
            if got is not None:
                key, how = got
                s = enc.session
                plain = (None if key is None else
                         self._cfb(s, key, enc.resp_auth.nonce, enc.cmd_auth.nonce, rfirst.value))
                out = replace(out, response=Deciphered(how, plain),
                              response_offset=rfirst.offset + 2)
        return out

    @staticmethod
    def _cfb(s: _Session, key: bytes, newer: bytes, older: bytes, data: Any) -> bytes | None:
        if not isinstance(data, bytes):
            return None
        try:
            return cfb(s.symmetric, s.auth_hash, key, newer, older, data, encrypt=False)
        except TpmsealError:  # not AES-CFB (XOR obfuscation is not followed)
            return None

    # ----------------------------------------------------------------- state

    def _update(self, ex: Exchange) -> None:
        """Advance the sessions as the TPM did: from what it received and answered."""
        command = ex.tpm_command if ex.tpm_command is not None else None
        response = ex.tpm_response
        if command is None or response is None:
            return
        cmd = safe_decode_command(command)
        if cmd is None:
            return
        resp = safe_decode_response(response, cmd)
        if resp is None or resp.rc != 0:
            return
        if cmd.code == TPM_CC.Startup:
            self._sessions.clear()
        for i, a in enumerate(cmd.sessions):
            s = self._sessions.get(a.session_handle)
            if s is None or i >= len(resp.sessions):
                continue
            ra = resp.sessions[i]
            s.nonce_tpm = ra.nonce
            if not ra.attributes & TPMA_SESSION.continueSession:
                del self._sessions[a.session_handle]
        if cmd.code == TPM_CC.FlushContext:
            flushed = _field(cmd.params, "flush_handle")
            if isinstance(flushed, int):
                self._sessions.pop(flushed, None)
        elif cmd.code == TPM_CC.StartAuthSession:
            self._start(cmd, resp)

    def _start(self, cmd: DecodedCommand, resp: DecodedResponse) -> None:
        handles = dict(cmd.handles)
        handle = dict(resp.handles).get("session_handle")
        nonce_tpm = _field(resp.params, "nonce_tpm")
        sym = _field(cmd.params, "symmetric")
        auth_hash = _field(cmd.params, "auth_hash")
        if not (isinstance(handle, int) and isinstance(nonce_tpm, bytes)
                and isinstance(sym, SymDef) and auth_hash in HASH_SIZES):
            return
        salted = handles.get("tpm_key", TPM_RH.NULL) != TPM_RH.NULL
        bound = handles.get("bind", TPM_RH.NULL) != TPM_RH.NULL
        nonce_field = cmd.params[0] if cmd.params else None
        key: bytes | None = None
        if not salted and not bound:
            key = b""
        elif not salted and nonce_field is not None and not nonce_field.encrypted:
            # a guess, confirmed later by a response HMAC: the bind entity's authValue is empty
            key = kdfa(auth_hash, b"", LABEL_ATH, nonce_tpm, nonce_field.value,
                       HASH_SIZES[auth_hash] * 8)
        self._sessions[handle] = _Session(handle, auth_hash, sym, salted, bound, nonce_tpm,
                                          key, confirmed=not salted and not bound)


def decipher_all(exchanges: list[Exchange]) -> list[Exchange]:
    """Annotate a capture's exchanges, in order, with what a session tracker reads."""
    tracker = SessionTracker()
    return [tracker.observe(ex) for ex in exchanges]
