"""The :class:`Tpm` client: runs registry commands with sessions over a transport.

Responsibilities (and nothing more):

* marshal a registry command, protect it with its sessions (HMAC, parameter
  encryption — :mod:`tpmseal.session.auth`), send it, check and decrypt the
  response, unmarshal it into the registry's response type;
* retry TPM_RC_RETRY / YIELDED / TESTING with bounded exponential backoff;
* track the Names of handles it learned (Load, CreatePrimary, ReadPublic,
  NV_ReadPublic...), verifying each Name the TPM reports against the public
  area it describes (TPM 2.0 Part 1 §16), and use them in cpHash;
* flush the transient objects and sessions it created when they are no longer
  needed, including when a later step fails (``close()`` / ``with``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tpmseal.digests import equal
from tpmseal.errors import (
    BUS_HINT,
    EK_MISMATCH,
    DecodeError,
    IntegrityError,
    ResponseIntegrityError,
    TpmsealError,
    TransportError,
    TrustError,
    UsageError,
)
from tpmseal.interrupt import deferred
from tpmseal.log import get_logger
from tpmseal.session.auth import (
    AuthSession,
    PasswordSession,
    Session,
    check_response,
    protect_command,
    session_key,
    trim_auth,
)
from tpmseal.session.policy import PolicyStep
from tpmseal.session.salt import make_salt
from tpmseal.transport.base import Transport, open_transport
from tpmseal.wire import commands as cmds
from tpmseal.wire.commands import Command, Response
from tpmseal.wire.constants import (
    HASH_SIZES,
    TPM_ALG,
    TPM_CAP,
    TPM_CC,
    TPM_HT,
    TPM_PT,
    TPM_RH,
    TPM_SE,
    TPMA_SESSION,
    enum_name,
    handle_type,
)
from tpmseal.wire.frames import build_command, parse_header, split_response
from tpmseal.wire.marshal import Reader, u32
from tpmseal.wire.rc import RETRYABLE, TpmResponseError, decode_rc
from tpmseal.wire.structures import (
    AES_128_CFB,
    PcrSelection,
    PcrSelectionList,
    Public,
    PublicParms,
    SymCipherParms,
    SymDef,
)

if TYPE_CHECKING:  # wire/structures_cold.py: loaded on use
    from tpmseal.wire.structures import NvPublic

log = get_logger("tpmseal.client")

R = TypeVar("R", bound=Response)

#: Handle types whose Name is the handle itself (Part 1 §16).
_SELF_NAMED = {TPM_HT.PCR, TPM_HT.HMAC_SESSION, TPM_HT.POLICY_SESSION, TPM_HT.PERMANENT}

#: Handle types FlushContext frees (Part 3 §28.4).
_FLUSHABLE = {TPM_HT.TRANSIENT, TPM_HT.HMAC_SESSION, TPM_HT.POLICY_SESSION}

#: PCR_Read returns at most this many digests per call (Part 3 §22.4, PC Client PTP).
PCR_READ_MAX = 8


class Tpm:
    """A TPM reached through a transport. Use as a context manager."""

    def __init__(self, transport: Transport, *, retry_limit: int = 8,
                 retry_delay: float = 0.01):
        self.transport = transport
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        self.names: dict[int, bytes] = {}
        self._nv: dict[int, NvPublic] = {}
        self._transients: set[int] = set()
        self._sessions: dict[int, AuthSession] = {}
        #: handles whose scope ended, flushed before the next command (or by the kernel
        #: resource manager when the connection closes first: see :meth:`scoped`)
        self._done: list[int] = []
        self.commands_sent = 0
        #: the transport error after which the connection is out of step (see run())
        self.broken: TransportError | None = None

    @classmethod
    def open(cls, uri: str | None = None, **kw: Any) -> Tpm:
        """Open the TPM at *uri* (see :mod:`tpmseal.transport.base`)."""
        return cls(open_transport(uri), **kw)

    def __enter__(self) -> Tpm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush what this client loaded or started and close the transport.

        SIGINT/SIGTERM arriving meanwhile wait until the flushes are done
        (:func:`tpmseal.interrupt.deferred`).
        """
        with deferred():
            try:
                if not self.flushed_on_close:
                    for h in sorted(self._transients | set(self._sessions)):
                        with contextlib.suppress(Exception):
                            self.flush(h)
            finally:
                self.transport.close()

    @property
    def flushed_on_close(self) -> bool:
        """Whether closing the transport flushes what this connection left loaded
        (/dev/tpmrmN: the kernel resource manager does, a raw device or socket does not)."""
        return bool(getattr(self.transport, "flushes_on_close", False))

    # ------------------------------------------------------------------ commands

    def run(self, cmd: Command[R], *sessions: Session) -> R:
        """Run *cmd* authorized/protected by *sessions*; return its typed response.

        A SIGINT/SIGTERM during the command is raised when it returns, after what
        it loaded is tracked for :meth:`close` (:func:`tpmseal.interrupt.deferred`).
        """
        if self._done:
            self._flush_done()
        with deferred():
            return self._run(cmd, *sessions)

    def _flush_done(self) -> None:
        """The FlushContexts :meth:`scoped` left for later. One that fails leaves its
        handle to the kernel, as one never sent would: its error (which carries no HMAC)
        must not become the next command's, whose error mapping would read it as its
        own (SECURITY.md row 33: "the endorsement key does not match")."""
        done, self._done = self._done, []
        for h in done:
            if h in self._transients or h in self._sessions:
                with contextlib.suppress(TpmsealError):
                    self.flush(h)

    def _run(self, cmd: Command[R], *sessions: Session) -> R:
        if self.broken is not None:
            # a response that timed out may still arrive and would be read as the answer
            # to this command; and a dead or stalled TPM must not cost one more time-out
            # per cleanup command
            raise TransportError(f"the connection to the TPM failed earlier "
                                 f"({self.broken.message})", "open a new connection")
        cls = type(cmd)
        lay = cls.layout()
        handles = cmd.handle_values()
        n_auth = sum(1 for h in lay.handles if h.auth)
        if n_auth and not sessions:
            sessions = tuple(PasswordSession() for _ in range(n_auth))
        resp_layout = cls.RESPONSE.layout()
        delay = self.retry_delay
        for attempt in range(self.retry_limit + 1):
            parts = cmd.param_parts()
            pending = None
            if sessions:
                names = (self._names_for(handles)
                         if any(isinstance(s, AuthSession) for s in sessions)
                         else [u32(h) for h in handles])
                params, auths, pending = protect_command(
                    int(cls.CC), names, n_auth, parts, list(sessions),
                    lay.first_param_encryptable)
            else:
                params, auths = b"".join(parts), []
            frame = build_command(int(cls.CC), handles, auths, params)
            self.commands_sent += 1
            try:
                raw = self.transport.send(frame)
            except TransportError as e:
                self.broken = e
                raise
            except BaseException:  # a second signal: the response may still come
                self.broken = TransportError("interrupted in the middle of a command",
                                             "open a new connection")
                raise
            header = parse_header(raw)
            if header.code == 0:
                break
            decoded = decode_rc(header.code)
            if decoded.name in RETRYABLE and attempt < self.retry_limit:
                log.debug("TPM2_%s: %s, retrying in %.0f ms", enum_name(TPM_CC, cls.CC),
                          decoded.name, delay * 1000)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            raise _first_use_error(header.code, enum_name(TPM_CC, cls.CC), sessions)
        try:
            frame_r = split_response(raw, len(resp_layout.handles), len(sessions))
        except DecodeError as e:
            raise _malformed(enum_name(TPM_CC, cls.CC), e, authorized=pending is not None) from None
        params_bytes = frame_r.params
        try:
            if pending is not None:
                params_bytes = check_response(pending, params_bytes, frame_r.auths,
                                              resp_layout.first_param_encryptable)
                for s in sessions:
                    if isinstance(s, AuthSession) and s.ended:
                        self._sessions.pop(s.handle, None)
            reader = Reader(params_bytes, base=frame_r.params_offset)
            try:
                response: R = cls.RESPONSE.from_wire(frame_r.handles, reader)
            except DecodeError as e:
                raise _malformed(enum_name(TPM_CC, cls.CC), e,
                                 authorized=pending is not None) from None
        except TpmsealError:
            # The TPM executed the command (it answered TPM_RC_SUCCESS) but the response
            # is rejected: flush any transient object it reports at close(), or a
            # tampered Load would leak one of the TPM's few object slots. Nothing of
            # the response is returned.
            for h in frame_r.handles:  # objects and sessions alike (a rejected
                if handle_type(h) in _FLUSHABLE:  # StartAuthSession still took a slot)
                    self._transients.add(h)
            raise
        self._after(cmd, response)
        return response

    def _names_for(self, handles: list[int]) -> list[bytes]:
        return [self.name_of(h) for h in handles]

    def name_of(self, handle: int) -> bytes:
        """The Name of *handle*, reading its public area if not yet known."""
        if handle_type(handle) in _SELF_NAMED:
            return u32(handle)
        name = self.names.get(handle)
        if name is None:
            if handle_type(handle) == TPM_HT.NV_INDEX:
                self.nv_read_public(handle)
            else:
                self.read_public(handle)
            name = self.names[handle]
        return name

    def _after(self, cmd: Command[Any], response: Response) -> None:
        """Bookkeeping of Names, transients and sessions after a successful command.

        Dispatched on the command code, not ``isinstance``: naming a class of the
        registry's cold half (wire/commands_cold.py) would define it on every command.
        """
        cc = type(cmd).CC
        if cc in (TPM_CC.Load, TPM_CC.LoadExternal):
            loaded = cast("cmds.Load", cmd)
            r = cast("cmds.LoadResponse", response)
            expected = loaded.in_public.name()
            if not equal(expected, r.name):
                self._transients.add(r.object_handle)
                raise IntegrityError("TPM returned a Name for the loaded object that does "
                                     "not match its public area: possible bus tampering",
                                     hint=BUS_HINT)
            self._track_object(r.object_handle, r.name)
        elif cc == TPM_CC.CreatePrimary:
            primary = cast("cmds.CreatePrimaryResponse", response)
            self._transients.add(primary.object_handle)
            if primary.out_public.name() != primary.name:
                raise IntegrityError("TPM returned a Name for the primary object that does "
                                     "not match its public area: possible bus tampering",
                                     hint=BUS_HINT)
            self._track_object(primary.object_handle, primary.name)
        elif cc == TPM_CC.ContextLoad:
            handle = cast("cmds.ContextLoadResponse", response).loaded_handle
            if handle_type(handle) == TPM_HT.TRANSIENT:
                self._transients.add(handle)
        elif cc == TPM_CC.FlushContext:
            flushed = cast("cmds.FlushContext", cmd).flush_handle
            self._transients.discard(flushed)
            self.names.pop(flushed, None)
            s = self._sessions.pop(flushed, None)
            if s is not None:
                s.ended = True
        elif cc == TPM_CC.EvictControl:
            evict = cast("cmds.EvictControl", cmd)
            if handle_type(evict.object_handle) == TPM_HT.PERSISTENT:
                self.names.pop(evict.object_handle, None)
            elif evict.object_handle in self.names:
                self.names[evict.persistent_handle] = self.names[evict.object_handle]
        elif cc in (TPM_CC.NV_Write, TPM_CC.NV_Increment):
            index = cast("cmds.NV_Write", cmd).nv_index
            if index in self._nv:
                self._track_nv(self._nv[index].written())
        elif cc == TPM_CC.NV_DefineSpace:
            self._track_nv(cast("cmds.NV_DefineSpace", cmd).public_info)
        elif cc == TPM_CC.NV_UndefineSpace:
            index = cast("cmds.NV_UndefineSpace", cmd).nv_index
            self._nv.pop(index, None)
            self.names.pop(index, None)

    def _track_object(self, handle: int, name: bytes) -> None:
        if handle_type(handle) == TPM_HT.TRANSIENT:
            self._transients.add(handle)
        self.names[handle] = name

    def _track_nv(self, pub: NvPublic) -> None:
        self._nv[pub.nv_index] = pub
        self.names[pub.nv_index] = pub.name()

    # ------------------------------------------------------------------ objects

    def flush(self, handle: int) -> None:
        """TPM2_FlushContext for a transient object or session."""
        self.run(cmds.FlushContext(handle))

    @contextlib.contextmanager
    def scoped(self, handle: int) -> Iterator[int]:
        """Flush *handle* when the block ends, unless something already did.

        When the block raised, a failing flush is ignored: the block's error is
        the one that explains what happened (e.g. a tampered response to a command
        that ended the session, after which the TPM answers TPM_RC_HANDLE).

        Through the kernel resource manager (:attr:`flushed_on_close`) a block that
        ends normally leaves the FlushContext for later: it is sent before the next
        command, or never, when the connection closes first and the kernel flushes
        the handle itself. That saves the last command of an unseal and the context
        swap the resource manager makes for it.
        """
        try:
            yield handle
        except BaseException:
            if handle in self._transients or handle in self._sessions:
                with contextlib.suppress(TpmsealError):
                    self.flush(handle)
            raise
        if handle in self._transients or handle in self._sessions:
            if self.flushed_on_close:
                self._done.append(handle)
            else:
                self.flush(handle)

    def read_public(self, handle: int, *sessions: Session) -> Public:
        """TPM2_ReadPublic, verifying that the Name matches the public area."""
        r = self.run(cmds.ReadPublic(handle), *sessions)
        if not equal(r.out_public.name(), r.name):
            raise IntegrityError(f"TPM returned a Name for {handle:#x} that does not match its "
                                 "public area: possible bus tampering",
                                 hint=BUS_HINT)
        self.names[handle] = r.name
        return r.out_public

    def nv_read_public(self, index: int, *sessions: Session) -> NvPublic:
        """TPM2_NV_ReadPublic, verifying that the public area is *index*'s and that the
        Name matches it (an answer without an HMAC could otherwise describe, and put
        into :attr:`names`, another index)."""
        r = self.run(cmds.NV_ReadPublic(index), *sessions)
        if r.nv_public.nv_index != index:
            raise IntegrityError(f"TPM returned the public area of NV {r.nv_public.nv_index:#x} "
                                 f"for NV {index:#x}: another index, possible bus tampering",
                                 hint=BUS_HINT)
        if not equal(r.nv_public.name(), r.nv_name):
            raise IntegrityError(f"TPM returned a Name for NV {index:#x} that does not match "
                                 "its public area: possible bus tampering",
                                 hint=BUS_HINT)
        self._track_nv(r.nv_public)
        return r.nv_public

    def nv_read(self, index: int, size: int, auth: int = TPM_RH.OWNER, *sessions: Session,
                chunk: int = 512) -> bytes:
        """Read *size* bytes of an NV index in chunks the TPM accepts."""
        out = b""
        while len(out) < size:
            n = min(chunk, size - len(out))
            got = self.run(cmds.NV_Read(auth, index, n, len(out)), *sessions).data
            if len(got) != n:
                raise IntegrityError(f"TPM2_NV_Read of {n} bytes of NV {index:#x} returned "
                                     f"{len(got)}: corrupted or altered in transit",
                                     hint=BUS_HINT)
            out += got
        return out

    def nv_write(self, index: int, data: bytes, auth: int = TPM_RH.OWNER, *sessions: Session,
                 chunk: int = 512) -> None:
        """Write *data* to an NV index from offset 0 in chunks the TPM accepts."""
        for off in range(0, len(data), chunk):
            self.run(cmds.NV_Write(auth, index, data[off : off + chunk], off), *sessions)

    # ---------------------------------------------------------------- sessions

    def start_session(self, kind: int = TPM_SE.HMAC, *, salt_key: Public | None = None,
                      salt_handle: int = TPM_RH.NULL, bind: int = TPM_RH.NULL,
                      bind_auth: bytes = b"", symmetric: SymDef = AES_128_CFB,
                      auth_hash: int = TPM_ALG.SHA256,
                      attributes: int = TPMA_SESSION.continueSession) -> AuthSession:
        """TPM2_StartAuthSession (Part 3 §11.1), optionally salted and/or bound.

        *salt_key* is the public area of *salt_handle* as the caller trusts it;
        the salt is encrypted to that key, so if the TPM's key differs the TPM
        cannot recover the salt and every later HMAC fails.
        """
        if (salt_key is None) != (salt_handle == TPM_RH.NULL):
            raise UsageError("a salted session needs both salt_key and salt_handle",
                             hint="pass both or neither")
        nonce_caller = os.urandom(HASH_SIZES[auth_hash])
        salt = make_salt(salt_key) if salt_key is not None else None
        bind_name = self.name_of(bind) if bind != TPM_RH.NULL else None  # before the session
        with deferred():  # a signal waits until the session is tracked for close()
            r = self.run(cmds.StartAuthSession(
                salt_handle, bind, nonce_caller, salt.encrypted if salt else b"", kind,
                symmetric, auth_hash))
            key = session_key(auth_hash, bind_auth, salt.value if salt else b"", r.nonce_tpm,
                              nonce_caller, bound=bind != TPM_RH.NULL)
            s = AuthSession(r.session_handle, kind, auth_hash, symmetric, key, r.nonce_tpm,
                            salted=salt is not None, bind_name=bind_name,
                            bind_secret=bind != TPM_RH.NULL and bool(trim_auth(bind_auth)),
                            attributes=attributes)
            self._sessions[s.handle] = s
        return s

    def confirm(self, session: AuthSession) -> None:
        """Confirm *session*'s key with one cheap command (session/auth.py, confirmation rule).

        TPM2_StirRandom (Part 3 §16.2) with the session as a ``decrypt`` session: it
        takes any session kind, changes nothing a caller relies on, and its response
        HMAC proves the TPM holds the same session key. A policy session's digest is
        reset by the use, so confirm it before its policy steps. Flows prefer to
        confirm with a command they need anyway (an audited PCR_Read, a Load).
        """
        keep = session.attributes
        session.attributes = TPMA_SESSION.continueSession | TPMA_SESSION.decrypt
        try:
            self.run(cmds.StirRandom(os.urandom(16)), session)
        finally:
            session.attributes = keep
        if not session.confirmed:
            raise UsageError(f"session {session.handle:#x} has no secret key to confirm",
                             "salt it, or bind it to an entity with an authValue")

    def run_policy(self, session: AuthSession, steps: list[PolicyStep]) -> None:
        """Execute policy *steps* in *session*, recording what changes its HMAC rules."""
        for step in steps:
            command = step.command(session.handle)
            self.run(command)
            cc = type(command).CC  # not isinstance: PolicyPassword is in the cold half
            if cc == TPM_CC.PolicyAuthValue:
                session.policy_auth_value, session.policy_password = True, False
            elif cc == TPM_CC.PolicyPassword:
                session.policy_password, session.policy_auth_value = True, False

    def policy_digest(self, session: AuthSession) -> bytes:
        return self.run(cmds.PolicyGetDigest(session.handle)).policy_digest

    # --------------------------------------------------------------- queries

    def get_random(self, n: int, *sessions: Session) -> bytes:
        """n random bytes from the TPM's RNG (several calls if the TPM returns fewer)."""
        out = b""
        while len(out) < n:
            got = self.run(cmds.GetRandom(min(n - len(out), 48)), *sessions).random_bytes
            if not got:
                raise IntegrityError("TPM2_GetRandom returned no bytes",
                                     hint=BUS_HINT)
            out += got
        return out

    def test_parms(self, sym: SymDef = AES_128_CFB, *sessions: Session) -> bool:
        """Whether TPM2_TestParms accepts a symmetric cipher (Part 3 §30.3)."""
        try:
            self.run(cmds.TestParms(PublicParms(TPM_ALG.SYMCIPHER, SymCipherParms(sym))),
                     *sessions)
        except TpmResponseError as e:
            if e.rc.warning:
                raise
            return False
        return True

    def capability(self, cap: int, prop: int = 0, count: int = 256,
                   *sessions: Session) -> list[tuple[int, ...]]:
        """All items of a capability, following moreData (an audit session authenticates them)."""
        items: list[tuple[int, ...]] = []
        for _ in range(64):  # a forged moreData must not keep us asking forever
            r = self.run(cmds.GetCapability(cap, prop, count), *sessions)
            new = list(r.capability_data.items)
            items += new
            if not r.more_data or not new:
                return items
            if new[-1][0] < prop:
                break
            prop = new[-1][0] + 1
        raise IntegrityError("TPM2_GetCapability kept reporting more data without progress: "
                             "corrupted or altered in transit",
                             hint=BUS_HINT)

    def properties(self, first: int = TPM_PT.FAMILY_INDICATOR, count: int = 64,
                   *sessions: Session) -> dict[int, int]:
        """TPM properties from *first* on (GetCapability TPM_PROPERTIES)."""
        r = self.run(cmds.GetCapability(TPM_CAP.TPM_PROPERTIES, first, count), *sessions)
        return {k: v for k, v in r.capability_data.items}

    def pcr_banks(self, *sessions: Session) -> PcrSelectionList:
        """Allocated PCR banks and their PCRs (GetCapability PCRS)."""
        return self.run(cmds.GetCapability(TPM_CAP.PCRS, 0, 1), *sessions).capability_data.pcrs

    def handles(self, first: int, *sessions: Session) -> list[int]:
        """Handles of the type of *first*, from *first* on."""
        return [h for (h,) in self.capability(TPM_CAP.HANDLES, first, 256, *sessions)
                if handle_type(h) == handle_type(first)]

    def pcr_read(self, selection: PcrSelectionList, *sessions: Session) -> dict[tuple[int, int],
                                                                                 bytes]:
        """Read PCR values, at most 8 per PCR_Read, in as few calls as possible.

        Returns {(bank, index): value}. If the TPM reports fewer values than asked
        (e.g. a bank not allocated), raises :class:`UsageError`.
        """
        wanted = selection.pairs()
        values: dict[tuple[int, int], bytes] = {}
        for start in range(0, len(wanted), PCR_READ_MAX):
            chunk = wanted[start : start + PCR_READ_MAX]
            sel = _group(chunk)
            r = self.run(cmds.PCR_Read(sel), *sessions)
            got = r.pcr_selection_out.pairs()
            if got != chunk or len(r.pcr_values.digests) != len(chunk):
                raise UsageError("the TPM did not return every requested PCR; is the bank "
                                 "allocated? (see `tpmseal probe`)",
                                 hint="choose PCRs of an allocated bank")
            values.update(zip(got, r.pcr_values.digests, strict=True))
        return values


def _first_use_error(code: int, command: str, sessions: tuple[Session, ...]) -> TpmsealError:
    """The error for a failed command; an HMAC rejected on a salted session's first use
    is the EK-mismatch diagnosis.

    The RSA salt of a session whose key is not at the handle fails at StartAuthSession
    (the TPM cannot decrypt it: TPM_RC_VALUE); an ECC salt "decrypts" to a different
    point, so the first HMAC keyed with it is what fails (Part 1 §19.6.8, Annex C.6.1).
    Either way the salt key at the handle is not the one the caller salted to, or the
    session was altered in transit.
    """
    e = TpmResponseError(code, command)
    index = e.rc.session
    if e.name in ("BAD_AUTH", "AUTH_FAIL") and index is not None and index <= len(sessions):
        s = sessions[index - 1]
        if isinstance(s, AuthSession) and s.salted and not s.confirmed:
            return TrustError(EK_MISMATCH, f"the TPM rejected the first HMAC of the salted "
                                           f"session in TPM2_{command}: the key at the salt "
                                           "handle cannot have recovered the salt, or the "
                                           "session was altered in transit")
    return e


def _malformed(command: str, e: DecodeError, *, authorized: bool) -> IntegrityError:
    """A response that does not parse: altered on the way (or a TPM bug)."""
    if authorized:  # its HMAC could not even be checked, or covered garbage
        return ResponseIntegrityError(
            f"TPM response to TPM2_{command} is malformed ({e.message}): modified in transit "
            "or session out of sync")
    return IntegrityError(f"TPM response to TPM2_{command} is malformed ({e.message}): "
                          "corrupted or altered in transit",
                          hint=BUS_HINT)


def _group(pairs: list[tuple[int, int]]) -> PcrSelectionList:
    banks: dict[int, list[int]] = {}
    for bank, i in pairs:
        banks.setdefault(bank, []).append(i)
    return PcrSelectionList(tuple(PcrSelection(b, tuple(ix)) for b, ix in banks.items()))
