"""Authorization sessions: password, HMAC and policy (TPM 2.0 Part 1 §19, §21).

Theory, in the order a command uses it:

* **Session key** (§19.6.8): ``sessionKey = KDFa(authHash, bind.authValue ‖ salt,
  "ATH", nonceTPM, nonceCaller, digestBits)`` where the nonces are the ones
  exchanged by StartAuthSession. Empty when the session is neither salted nor
  bound — such a session proves nothing to a bus observer, so this module
  refuses to use it for parameter encryption.
* **Parameter encryption** (§21.3): key‖IV = KDFa(authHash, sessionKey ‖
  authValue, "CFB", nonceNewer, nonceOlder, keyBits + 128), where authValue is
  that of the entity the session authorizes (none for a session that only
  encrypts) — always, even when the HMAC key leaves it out (bound entity, policy
  session without PolicyAuthValue). Commands use
  (nonceCaller, nonceTPM), responses (nonceTPM, nonceCaller). Only the data
  bytes of the first parameter, and only when it is a TPM2B, are enciphered with
  AES in CFB mode (full-block feedback).
* **HMAC** (§19.6.12-17): ``HMAC(sessionKey ‖ authValue, pHash ‖ nonceNewer ‖
  nonceOlder ‖ [nonceDecrypt] ‖ [nonceEncrypt] ‖ sessionAttributes)`` where
  cpHash = H(commandCode ‖ Names ‖ parameters as sent) and rpHash = H(0 ‖
  commandCode ‖ parameters as received). nonceDecrypt/nonceEncrypt are the
  nonceTPM of a *different* session that carries the decrypt/encrypt attribute,
  and appear only in the first session's command HMAC, and only when that
  session authorizes a handle (reference ComputeCommandHMAC(): a command
  without authorization handles, e.g. GetRandom, gets no extra nonces).

Threat model: a passive bus observer learns nothing from salted sessions; an
active one cannot change a response without breaking its HMAC, which this
module checks on every authorized response and reports as
:class:`~tpmseal.errors.ResponseIntegrityError`.

**Confirmation rule.** StartAuthSession carries no HMAC (Part 3 §11.1), so an
interposer can strip its salt (tpmKey = TPM_RH_NULL, no encryptedSalt) or answer
with a session it started itself: the TPM's session key is then one the
interposer knows, while the caller still computes its own salted key. The
caller only learns of it at the first response HMAC it checks. Therefore a
session is *unconfirmed* until a response HMAC computed with its key has
verified (:attr:`AuthSession.confirmed`), and :func:`protect_command` refuses to
set ``encrypt`` (ask the TPM to encrypt a response parameter under the session
key) on an unconfirmed session. Nothing else has to wait: ``decrypt`` is
encrypted by the caller under its own key (a stripped salt only makes the TPM
decrypt garbage), command HMACs keyed with the salted key reveal nothing, and
no response datum is used before its HMAC has verified.

**Required-session rule.** The TPM needs only the sessions that authorize a
handle; one that only encrypts, decrypts or audits is the caller's choice, and
an interposer can delete it from the command. Where nothing the TPM checks
covers it, the TPM still executes the command — and answers in plaintext. So
:func:`protect_command` sets ``encrypt`` only on a session the TPM cannot be
made to skip: an authorizing session (its own HMAC covers the attribute), or an
extra session whose nonceTPM joins the command HMAC of a first, authorizing,
confirmed session with a secret key (Part 1 §19.6.12, nonceEncrypt). A password
session or an unsalted policy session without a PIN has no such HMAC. A command
that authorizes no handle (GetRandom, PCR_Read...) returns nothing an interposer
could not ask the TPM for itself, so there ``encrypt`` only hides the response
from a passive observer: an active one can delete the session, and a caller must
not rely on it (recipes/lifecycle.py's fresh_key mixes GetRandom's bytes with the
OS's).

This module is sans-I/O: the client feeds it bytes and gets bytes back.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 47 keeps CFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from tpmseal.digests import equal, hmac_digest
from tpmseal.errors import ResponseIntegrityError, UsageError
from tpmseal.records import field, mutable_record
from tpmseal.session.kdf import LABEL_ATH, LABEL_CFB, kdfa
from tpmseal.wire.constants import HASH_NAMES, HASH_SIZES, TPM_ALG, TPM_RH, TPM_SE, TPMA_SESSION
from tpmseal.wire.frames import AuthCommand, AuthResponse
from tpmseal.wire.marshal import tpm2b, u8, u32
from tpmseal.wire.structures import SymDef, digest


def trim_auth(value: bytes) -> bytes:
    """Remove trailing zero bytes from an authValue (Part 1 §19.6.4.3).

    The TPM strips them when an authValue is set, so HMAC keys and password
    comparisons must use the trimmed form.
    """
    return value.rstrip(b"\0")


def session_key(auth_hash: int, bind_auth: bytes, salt: bytes, nonce_tpm: bytes,
                nonce_caller: bytes, *, bound: bool | None = None) -> bytes:
    """sessionKey of a new session (Part 1 §19.6.8); empty if unsalted and unbound.

    *bound* says whether StartAuthSession named a bind entity (default: whether
    *bind_auth* is non-empty). A bound session has a sessionKey even when the
    bind entity's authValue is empty: KDFa over an empty key, as the reference
    implementation's SessionCreate() computes it whenever bind is not
    TPM_RH_NULL or a salt was sent.
    """
    secret = trim_auth(bind_auth) + salt
    if bound is None:
        bound = bool(bind_auth)
    if not salt and not bound:
        return b""
    return kdfa(auth_hash, secret, LABEL_ATH, nonce_tpm, nonce_caller,
                HASH_SIZES[auth_hash] * 8)


def cfb(sym: SymDef, auth_hash: int, key: bytes, nonce_newer: bytes, nonce_older: bytes,
        data: bytes, *, encrypt: bool) -> bytes:
    """AES-CFB parameter en/decryption (Part 1 §21.3)."""
    if sym.algorithm != TPM_ALG.AES or sym.mode != TPM_ALG.CFB:
        raise UsageError("parameter encryption is supported only with AES in CFB mode",
                         hint="use a session with AES-128-CFB")
    nbytes = sym.key_bits // 8
    material = kdfa(auth_hash, key, LABEL_CFB, nonce_newer, nonce_older, sym.key_bits + 128)
    cipher = Cipher(algorithms.AES(material[:nbytes]), CFB(material[nbytes:]))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


class Session:
    """What every session has: a handle and the attributes for the next command."""

    handle: int
    attributes: int
    auth_value: bytes


class PasswordSession(Session):
    """The password pseudo-session TPM_RS_PW (Part 1 §19.8.4): the authValue in clear."""

    def __init__(self, auth_value: bytes = b"") -> None:
        self.handle = TPM_RH.RS_PW
        self.attributes = TPMA_SESSION.continueSession
        self.auth_value = auth_value

    def __repr__(self) -> str:
        return "PasswordSession()"


@mutable_record
class AuthSession(Session):
    """An HMAC, policy or trial session started with TPM2_StartAuthSession.

    ``attributes`` are those sent with the next command: set ``decrypt`` /
    ``encrypt`` to ask for parameter encryption and clear ``continueSession`` to
    let the TPM end the session after the command.
    """

    handle: int
    kind: int
    auth_hash: int
    symmetric: SymDef
    session_key: bytes = field(repr=False)
    nonce_tpm: bytes = field(repr=False)
    salted: bool = False
    bind_name: bytes | None = None
    #: the bind entity's authValue was non-empty, so an unsalted sessionKey is secret
    bind_secret: bool = False
    attributes: int = TPMA_SESSION.continueSession
    auth_value: bytes = field(default=b"", repr=False)
    nonce_caller: bytes = field(default=b"", repr=False)
    #: set by PolicyAuthValue / PolicyPassword (Part 3 §23.17, §23.18)
    policy_auth_value: bool = False
    policy_password: bool = False
    ended: bool = False
    #: a response HMAC computed with this session's key has verified, and that key is
    #: secret (salted, or bound to an entity with an authValue): module docstring
    confirmed: bool = False

    @property
    def is_policy(self) -> bool:
        return self.kind in (TPM_SE.POLICY, TPM_SE.TRIAL)

    def _entity_auth(self, entity_name: bytes | None) -> bytes:
        """The authValue that joins sessionKey in the HMAC key (Part 1 §19.6.12)."""
        if entity_name is None:
            return b""
        if self.is_policy:
            return trim_auth(self.auth_value) if self.policy_auth_value else b""
        if self.bind_name is not None and entity_name == self.bind_name:
            return b""
        return trim_auth(self.auth_value)

    def hmac_key(self, entity_name: bytes | None) -> bytes:
        return self.session_key + self._entity_auth(entity_name)

    def cfb_key(self, entity_name: bytes | None) -> bytes:
        """sessionValue for parameter encryption (Part 1 §21.3).

        Unlike the HMAC key, this always appends the (trimmed) authValue of the
        entity the session authorizes, whatever the session kind: also for a
        policy session without PolicyAuthValue and for a bound session
        authorizing its bind entity. The reference implementation does the same
        (SessionProcess.c, ParseSessionBuffer/BuildResponseSession: "authValue is
        concatenated with sessionKey ... no matter if the handle is the session
        bound entity or not"); swtpm confirms it (tests/test_session_cfb_key.py).
        So ``auth_value`` must be set on a policy session that encrypts for an
        entity with a non-empty authValue, even when its HMAC does not use it.
        A session that authorizes nothing (*entity_name* None) uses sessionKey.
        """
        if entity_name is None:
            return self.session_key
        return self.session_key + trim_auth(self.auth_value)

    def check_can_encrypt(self) -> None:
        if self.symmetric.algorithm == TPM_ALG.NULL:
            raise UsageError("this session was started without a symmetric algorithm, so it "
                             "cannot encrypt parameters; start it with AES-128-CFB",
                             hint="start the session with symmetric=AES_128_CFB")
        if not self.session_key or not (self.salted or self.bind_secret):
            raise UsageError("refusing parameter encryption on a session that is neither "
                             "salted nor bound to an entity with an authValue: its key would "
                             "derive from public nonces only; salt the session with the "
                             "TPM's endorsement key",
                             hint="salt the session with the TPM's endorsement key")

    def check_can_encrypt_response(self) -> None:
        """The confirmation rule (module docstring): ``encrypt`` needs a confirmed key."""
        self.check_can_encrypt()
        if not self.confirmed:
            raise UsageError(f"refusing to let the TPM encrypt a response under session "
                             f"{self.handle:#x} before a response HMAC has confirmed its key "
                             "(an interposer that stripped the salt would read it)",
                             "first use the session in a command whose response carries its "
                             "HMAC, e.g. as an audit or decrypt session")


def unconfirmed_message(s: AuthSession) -> str | None:
    """Why the first HMAC of a salted session can fail: its salt did not reach the TPM."""
    if not s.salted:
        return None
    return ("the TPM's first response in a salted session failed its HMAC check: the session "
            "was altered in transit (salt stripped or session swapped by an interposer), or "
            "the key at the salt handle is not the pinned one; nothing was encrypted under it")


@mutable_record
class Pending:
    """What a protected command must remember to check its response."""

    code: int
    sessions: list[Session]
    names: list[bytes | None]
    encrypt_session: AuthSession | None
    encrypt_name: bytes | None


def _hash(alg: int, *parts: bytes) -> bytes:
    return digest(alg, b"".join(parts))


def _check_required(e: AuthSession, sessions: list[Session], names: list[bytes | None],
                    n_auth: int) -> None:
    """The required-session rule (module docstring) for the ``encrypt`` session *e*."""
    if sessions.index(e) < n_auth or not n_auth:
        return
    first = sessions[0]
    if (isinstance(first, AuthSession) and first.confirmed and not first.policy_password
            and (first.salted or first.bind_secret) and first.hmac_key(names[0])):
        return
    raise UsageError(f"refusing to let the TPM encrypt a response under session {e.handle:#x}: "
                     "it authorizes nothing and no HMAC the TPM checks covers it, so an "
                     "interposer could delete it and the TPM would answer in plaintext",
                     "let the encrypting session authorize the command, or pair it with a "
                     "confirmed salted authorizing session")


def protect_command(code: int, handle_names: list[bytes], n_auth: int, params: list[bytes],
                    sessions: list[Session], first_param_2b: bool) -> tuple[
                        bytes, list[AuthCommand], Pending]:
    """Encrypt the first parameter if asked and compute each session's authorization.

    *handle_names* are the Names of all handles; the first *n_auth* handles are
    authorized by the first *n_auth* sessions, further sessions only
    encrypt/decrypt/audit. Returns the parameter area as sent, the auth area
    entries and the state needed by :func:`check_response`.
    """
    if len(sessions) < n_auth:
        raise UsageError(f"command needs {n_auth} authorization session(s), got {len(sessions)}",
                         hint="pass one session per handle that needs authorization")
    if len(sessions) > 3:
        raise UsageError("a command carries at most three sessions",
                         hint="pass at most three sessions")
    names: list[bytes | None] = [
        handle_names[i] if i < n_auth else None for i in range(len(sessions))]
    auth_sessions = [s for s in sessions if isinstance(s, AuthSession)]
    dec = [s for s in auth_sessions if s.attributes & TPMA_SESSION.decrypt]
    enc = [s for s in auth_sessions if s.attributes & TPMA_SESSION.encrypt]
    if len(dec) > 1 or len(enc) > 1:
        raise UsageError("at most one session may set decrypt, and one encrypt",
                         hint="set decrypt on one session and encrypt on one")
    for s in sessions:
        if not isinstance(s, AuthSession) and s.attributes & (TPMA_SESSION.decrypt |
                                                              TPMA_SESSION.encrypt):
            raise UsageError("a password session cannot encrypt parameters",
                             hint="use an HMAC or policy session for parameter encryption")
        if isinstance(s, AuthSession):
            if s.ended:
                raise UsageError(f"session {s.handle:#x} has already ended",
                                 hint="start a new session")
            s.nonce_caller = os.urandom(max(16, HASH_SIZES[s.auth_hash]))
    params = list(params)
    if dec:
        if not (params and first_param_2b):
            raise UsageError("decrypt attribute set, but the command's first parameter "
                             "is not a sized buffer",
                             hint="do not set decrypt for this command")
        d = dec[0]
        d.check_can_encrypt()
        data = params[0][2:]
        ct = cfb(d.symmetric, d.auth_hash, d.cfb_key(names[sessions.index(d)]),
                 d.nonce_caller, d.nonce_tpm, data, encrypt=True)
        params[0] = tpm2b(ct)
    for s in enc:
        s.check_can_encrypt_response()
        _check_required(s, sessions, names, n_auth)
    param_bytes = b"".join(params)
    cp_hashes: dict[int, bytes] = {}
    auths: list[AuthCommand] = []
    for i, s in enumerate(sessions):
        if not isinstance(s, AuthSession):
            auths.append(AuthCommand(s.handle, b"", s.attributes, s.auth_value))
            continue
        if s.policy_password:
            auths.append(AuthCommand(s.handle, s.nonce_caller, s.attributes,
                                     trim_auth(s.auth_value)))
            continue
        alg = s.auth_hash
        if alg not in cp_hashes:
            cp_hashes[alg] = _hash(alg, u32(code), *handle_names, param_bytes)
        extra = b""
        if i == 0 and n_auth:  # only an *authorizing* first session (reference code)
            if dec and dec[0] is not s:
                extra += dec[0].nonce_tpm
            if enc and enc[0] is not s and enc[0] is not (dec[0] if dec else None):
                extra += enc[0].nonce_tpm
        key = s.hmac_key(names[i])
        mac = b""
        if key or not s.is_policy:
            msg = cp_hashes[alg] + s.nonce_caller + s.nonce_tpm + extra + u8(s.attributes)
            mac = hmac_digest(key, msg, HASH_NAMES[alg])
        auths.append(AuthCommand(s.handle, s.nonce_caller, s.attributes, mac))
    enc_session = enc[0] if enc else None
    enc_name = names[sessions.index(enc_session)] if enc_session else None
    return param_bytes, auths, Pending(code, sessions, names, enc_session, enc_name)


def check_response(pending: Pending, params: bytes, auths: list[AuthResponse],
                   first_param_2b: bool) -> bytes:
    """Verify each session's response HMAC, roll nonces, and decrypt the first parameter.

    Raises :class:`ResponseIntegrityError` on any mismatch; nothing is decrypted
    or returned unless every HMAC verifies.
    """
    if len(auths) != len(pending.sessions):
        raise ResponseIntegrityError(
            f"TPM response carries {len(auths)} session(s), the command sent "
            f"{len(pending.sessions)}: modified in transit")
    rp_hashes: dict[int, bytes] = {}
    verified: list[AuthSession] = []  # sessions whose key keyed a checked HMAC
    for s, a, name in zip(pending.sessions, auths, pending.names, strict=True):
        if not isinstance(s, AuthSession):
            if a.nonce or a.hmac:
                raise ResponseIntegrityError("password session response carries data: "
                                             "modified in transit")
            continue
        sent = s.attributes & ~(TPMA_SESSION.auditExclusive | TPMA_SESSION.auditReset)
        got = a.attributes & ~(TPMA_SESSION.auditExclusive | TPMA_SESSION.auditReset)
        if got != sent:
            raise ResponseIntegrityError()
        alg = s.auth_hash
        if alg not in rp_hashes:
            rp_hashes[alg] = _hash(alg, u32(0), u32(pending.code), params)
        key = s.hmac_key(name)
        if s.policy_password or (s.is_policy and not key):
            expected = b""
        else:
            msg = rp_hashes[alg] + a.nonce + s.nonce_caller + u8(a.attributes)
            expected = hmac_digest(key, msg, HASH_NAMES[alg])
        if not equal(expected, a.hmac):
            raise ResponseIntegrityError(unconfirmed_message(s) if not s.confirmed else None)
        if expected and (s.salted or s.bind_secret):  # a key from public nonces proves nothing
            verified.append(s)
    for s in verified:
        s.confirmed = True
    for s, a in zip(pending.sessions, auths, strict=True):
        if isinstance(s, AuthSession):
            s.nonce_tpm = a.nonce
            if not a.attributes & TPMA_SESSION.continueSession:
                s.ended = True
    e = pending.encrypt_session
    if e is None:
        return params
    if not first_param_2b or len(params) < 2:
        raise ResponseIntegrityError("encrypt attribute set, but the response has no sized "
                                     "first parameter to decrypt")
    size = int.from_bytes(params[:2], "big")
    if size > len(params) - 2:
        raise ResponseIntegrityError("encrypted response parameter overruns the response")
    plain = cfb(e.symmetric, e.auth_hash, e.cfb_key(pending.encrypt_name), e.nonce_tpm,
                e.nonce_caller, params[2 : 2 + size], encrypt=False)
    return params[:2] + plain + params[2 + size :]
