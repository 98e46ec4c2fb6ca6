"""The sniffing proxy: a TPM socket in front of another, recording every exchange.

Threat model and purpose: the proxy *is* the TPM bus. Everything a passive
observer could read crosses it and is recorded (:class:`~tpmseal.sniff.analysis.record.Exchange`);
everything an active interposer could do is available as hooks
(:mod:`tpmseal.sniff.capture.hooks`). Tests put it between a client and swtpm to assert
on the exact bytes; ``tpmseal sniff`` puts it in front of a simulator for humans.

Mechanics: one thread accepts data-channel clients, one the control channel;
each client gets a thread that frames its byte stream with a
:class:`~tpmseal.sniff.analysis.framing.FrameReader`. swtpm serves one data connection
at a time, so all clients share one upstream connection and a lock makes each
command and its response one atomic exchange. The control channel (see
:mod:`tpmseal.sniff.capture.sockets`) is relayed byte for byte, one upstream connection
per client connection, so tpm2-tools' ``swtpm:path=`` TCTI works through the
proxy.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

from tpmseal.errors import TpmsealError, TransportError
from tpmseal.sniff.analysis.framing import MAX_FRAME, FrameReader, FramingError
from tpmseal.sniff.analysis.record import Exchange
from tpmseal.sniff.analysis.sessions import SessionTracker
from tpmseal.sniff.capture.hooks import (
    CLOSE,
    WAIT,
    CommandHook,
    HookContext,
    Outcome,
    ResponseHook,
    Verdict,
    check_verdict,
    resolve,
)
from tpmseal.sniff.capture.sockets import (
    Upstream,
    bound_uri,
    ctrl_uri,
    drain,
    listen,
    parse_listen,
    relay,
    resolve_upstream,
    unlink_socket,
)
from tpmseal.transport.base import DEFAULT_TIMEOUT, TpmUri, parse_uri
from tpmseal.transport.stream import connect

log = logging.getLogger("tpmseal.sniff")

Observer = Callable[[Exchange], None]

class HookError(RuntimeError):
    """An interposer hook raised; the first such exception is the ``__cause__``."""


class Proxy:
    """A recording, interposable TPM proxy.

    *listen* is ``unix:PATH`` or ``tcp:HOST:PORT`` (port 0 picks a free pair of
    ports); *upstream* is any TPM URI (``unix:``, ``tcp:``, ``sim:``, ``device:``).
    Use as a context manager; :attr:`exchanges` lists what crossed. Each
    exchange is recorded and handed to the *observers* (callables taking an
    :class:`Exchange`: printers, writers, scanners) before its response reaches
    the client, so a client's next step always finds it recorded.
    """

    def __init__(self, listen: str, upstream: str, *, on_command: CommandHook | None = None,
                 on_response: ResponseHook | None = None, observers: Sequence[Observer] = (),
                 control: bool = True, timeout: float = DEFAULT_TIMEOUT,
                 max_frame: int = MAX_FRAME, keep: int | None = None,
                 on_error: Callable[[str], None] | None = None):
        self._listen_req = parse_listen(listen)
        if control:
            ctrl_uri(self._listen_req)  # a TCP port must leave room for the control port
        self._upstream_req = upstream
        self.on_command = on_command
        self.on_response = on_response
        self.observers: list[Observer] = list(observers)
        self.control = control
        self.timeout = timeout
        self.max_frame = max_frame
        #: Keep at most this many exchanges in :attr:`exchanges` (None: all).
        self.keep = keep
        #: Framing errors, upstream failures and observer failures, as sentences.
        self.errors: list[str] = []
        #: Called with each of :attr:`errors` as it happens (default: a logged warning).
        self.on_error = on_error
        #: Exceptions raised by hooks (each also closed its client's connection).
        self.hook_errors: list[BaseException] = []
        self._exchanges: list[Exchange] = []
        #: follows sessions across exchanges, decrypting what a bus observer can
        self.sessions = SessionTracker()
        self._cond = threading.Condition()
        self._bus = threading.Lock()
        self._state = threading.Lock()
        self._stopping = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._conns: set[socket.socket] = set()
        self._listeners: list[tuple[socket.socket, TpmUri]] = []
        self._next_index = 0
        self._next_client = 1
        self._upstream: Upstream | None = None
        self._upstream_ctrl: TpmUri | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.uri = str(self._listen_req)
        self.ctrl_uri: str | None = None
        self.upstream = upstream

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Proxy:
        """Connect upstream and listen; returns once clients can connect."""
        if self._wake_r is not None:
            raise RuntimeError("proxy already started")
        try:
            up = resolve_upstream(self._upstream_req)
            self.upstream = str(up)
            self._upstream_ctrl = ctrl_uri(up) if self.control else None
            self._upstream = Upstream(up, self.timeout)
            self._upstream.open()
        except TpmsealError as e:
            raise upstream_error(e) from None
        try:
            self._bind()
        except BaseException:
            self._upstream.close()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        with self._state:
            for sock, kind_uri in self._listeners:
                is_ctrl = str(kind_uri) == self.ctrl_uri
                self._spawn(self._accept_loop, sock, is_ctrl,
                            name="accept-ctrl" if is_ctrl else "accept")
        log.info("sniffing on %s (control %s), upstream %s", self.uri, self.ctrl_uri,
                 self.upstream)
        return self

    def _bind(self) -> None:
        req = self._listen_req
        for _ in range(32):  # tcp port 0: find P with P+1 also free
            data = listen(req)
            uri = bound_uri(data, req)
            self._listeners = [(data, uri)]
            self.uri = str(uri)
            ctrl = ctrl_uri(uri) if self._upstream_ctrl is not None else None
            if ctrl is None:
                return
            try:
                self._listeners.append((listen(ctrl), ctrl))
            except TpmsealError:
                data.close()
                unlink_socket(uri)
                if req.scheme == "tcp" and req.port == 0:
                    continue
                raise
            self.ctrl_uri = str(ctrl)
            return
        raise TransportError("found no free pair of TCP ports for the data and control channels")

    def stop(self) -> None:
        """Close every connection, join every thread, remove the unix sockets."""
        if self._wake_w is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_w.send(b"\0")
        with self._state:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        if self._upstream is not None:
            self._upstream.abort()
        try:
            self._join_all()
        finally:
            for sock, uri in self._listeners:
                sock.close()
                unlink_socket(uri)
            if self._upstream is not None:
                self._upstream.close()
            self._wake_w.close()
            if self._wake_r is not None:
                self._wake_r.close()

    def _join_all(self) -> None:
        while True:
            with self._state:
                threads = [t for t in self._threads if t is not threading.current_thread()]
            if not threads:
                return
            for t in threads:
                t.join(timeout=10)
                with self._state:
                    self._threads.discard(t)

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if exc_type is None:
            self.check()

    def check(self) -> None:
        """Raise :class:`HookError` if a hook raised (tests: surface assertion failures)."""
        if self.hook_errors:
            raise HookError(f"{len(self.hook_errors)} interposer hook call(s) raised") \
                from self.hook_errors[0]

    @property
    def tools_tcti(self) -> str:
        """The tpm2-tools TCTI string (``TPM2TOOLS_TCTI``) that reaches the proxy."""
        uri = parse_uri(self.uri)
        if uri.scheme == "unix":
            return f"swtpm:path={uri.path}"
        return f"swtpm:host={uri.host},port={uri.port}"

    # ----------------------------------------------------------------- records

    @property
    def exchanges(self) -> list[Exchange]:
        """A snapshot of the exchanges recorded so far, in the order the TPM saw them."""
        with self._cond:
            return list(self._exchanges)

    def clear(self) -> None:
        """Forget the recorded exchanges (indices keep counting)."""
        with self._cond:
            self._exchanges.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Exchange]:
        """Wait until at least *count* exchanges are recorded; return them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._exchanges) >= count, timeout):
                raise TimeoutError(f"{len(self._exchanges)} of {count} exchanges after "
                                   f"{timeout:g}s")
            return list(self._exchanges)

    @contextlib.contextmanager
    def interpose(self, on_command: CommandHook | None = None,
                  on_response: ResponseHook | None = None) -> Iterator[Proxy]:
        """Install hooks for the duration of a ``with`` block."""
        saved = self.on_command, self.on_response
        self.on_command, self.on_response = on_command, on_response
        try:
            yield self
        finally:
            self.on_command, self.on_response = saved

    # ----------------------------------------------------------------- threads

    def _spawn(self, target: Callable[..., None], *args: object, name: str) -> None:
        """Start a tracked thread; the caller holds ``_state`` so stop() sees it or none."""
        t = threading.Thread(target=target, args=args, name=f"tpmseal-sniff-{name}",
                             daemon=True)
        t.start()
        self._threads.add(t)

    def _forget(self) -> None:
        with self._state:
            self._threads.discard(threading.current_thread())

    def _accept_loop(self, listener: socket.socket, is_ctrl: bool) -> None:
        assert self._wake_r is not None
        try:
            while not self._stopping.is_set():
                ready, _, _ = select.select([listener, self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                with self._state:
                    if self._stopping.is_set():
                        conn.close()
                        return
                    self._conns.add(conn)
                    if is_ctrl:
                        self._spawn(self._serve_ctrl, conn, name="ctrl")
                    else:
                        client = self._next_client
                        self._next_client += 1
                        self._spawn(self._serve_data, conn, client, name=f"client-{client}")
        finally:
            self._forget()

    def _drop_conn(self, conn: socket.socket) -> None:
        with self._state:
            self._conns.discard(conn)
        conn.close()

    def _serve_ctrl(self, conn: socket.socket) -> None:
        assert self._upstream_ctrl is not None and self._wake_r is not None
        try:
            up = connect(self._upstream_ctrl, self.timeout)
        except TransportError as e:
            self._report(f"control channel: {e.message}")
            self._drop_conn(conn)
            self._forget()
            return
        try:
            relay(conn, up, self._wake_r)
        finally:
            up.close()
            self._drop_conn(conn)
            self._forget()

    def _serve_data(self, conn: socket.socket, client: int) -> None:
        framer = FrameReader(self.max_frame, "command")
        conn.settimeout(self.timeout)
        try:
            while not self._stopping.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    self._ended(framer, client)
                    return
                for frame in framer.feed(data):
                    after = self._exchange(conn, client, frame)
                    if after == CLOSE:
                        return
                    if after == WAIT:
                        drain(conn, self._stopping)
                        return
            self._ended(framer, client)
        except FramingError as e:
            self._report(f"client {client}: {e.message}")
        except OSError:
            if framer.pending and self._stopping.is_set():
                self._ended(framer, client)
        finally:
            self._drop_conn(conn)
            self._forget()

    def _ended(self, framer: FrameReader, client: int) -> None:
        """The client's stream ended (or the proxy stops): a half-sent command is an error,
        unless it was the proxy that cut the client off."""
        if framer.pending and self._stopping.is_set():
            self._report(f"client {client}: the sniffer stopped while the client was still "
                         f"sending a command ({framer.pending} bytes received); it was not "
                         "forwarded")
            return
        framer.close()  # raises FramingError for a command the client left unfinished

    def _report(self, message: str) -> None:
        self.errors.append(message)
        if self.on_error is None:
            log.warning("%s", message)
            return
        try:
            self.on_error(message)
        except Exception as e:  # reporting must never break the bus
            log.warning("%s (and reporting it failed: %s)", message, e)

    # --------------------------------------------------------------- exchanges

    def _history(self) -> tuple[Exchange, ...]:
        if self.on_command is None and self.on_response is None:
            return ()  # nobody looks: spare the copy
        with self._cond:
            return tuple(self._exchanges)

    def _hook(self, hook: CommandHook | ResponseHook | None, ctx: HookContext) -> Verdict:
        """Call *hook*; a hook that raises closes the client's connection."""
        if hook is None:
            return None
        try:
            return check_verdict(hook(ctx))
        except Exception as e:
            self.hook_errors.append(e)
            log.warning("interposer hook raised %r", e)
            raise _HookFailed(f"hook raised {type(e).__name__}: {e}") from e

    def _exchange(self, conn: socket.socket, client: int, frame: bytes) -> str:
        """Run one exchange under the bus lock; say what to do with the connection next."""
        with self._bus:
            if self._stopping.is_set():
                return CLOSE
            index = self._next_index
            self._next_index += 1
            started = time.time()
            ctx = HookContext(index, client, frame, self._history(), stopping=self._stopping)
            tpm_command: bytes | None = frame
            tpm_response: bytes | None = None
            tpm_seconds: float | None = None
            notes: list[str] = []
            try:
                verdict = self._hook(self.on_command, ctx)
                if isinstance(verdict, bytes):
                    notes.append("command rewritten by hook")
                    tpm_command = verdict
                    out = Outcome(None)
                else:
                    out = resolve(verdict, None, "command")
                    if verdict is not None:
                        tpm_command = None
                if tpm_command is not None:
                    assert self._upstream is not None
                    t0 = time.perf_counter()
                    tpm_response = self._upstream.exchange(tpm_command)
                    tpm_seconds = time.perf_counter() - t0
                    rctx = dataclasses.replace(ctx, response=tpm_response,
                                               tpm_command=tpm_command)
                    out = resolve(self._hook(self.on_response, rctx), tpm_response, "response")
            except _HookFailed as e:
                out = Outcome(None, CLOSE, str(e))
            except TransportError as e:
                self._report(f"client {client}: {e.message}")
                out = Outcome(None, CLOSE, f"upstream failed: {e.message}")
            reply, after = out.reply, out.then
            notes += [out.note] if out.note else []
            ex = self.sessions.observe(Exchange(
                index, client, frame, reply, started, time.time(), tpm_seconds, tpm_command,
                tpm_response, "; ".join(notes)))
            with self._cond:
                self._exchanges.append(ex)
                if self.keep is not None and len(self._exchanges) > 2 * self.keep:
                    del self._exchanges[: len(self._exchanges) - self.keep]
                self._cond.notify_all()
            self._notify(ex)  # before the client hears back: its next step sees the record
            if reply:
                try:
                    conn.sendall(reply)
                except OSError:
                    after = CLOSE
            return after

    def _notify(self, ex: Exchange) -> None:
        for observe in list(self.observers):
            try:
                observe(ex)
            except Exception as e:  # a full disk or a closed pipe must not stop the bus
                with contextlib.suppress(ValueError):
                    self.observers.remove(observe)
                self._report(f"{observer_name(observe)} failed and was removed: "
                             f"{failure_text(e)}")


def observer_name(observe: Observer) -> str:
    """How to name an observer to a human: its ``label``, else its function or class name."""
    label = getattr(observe, "label", None)
    if isinstance(label, str) and label:
        return label
    name = getattr(observe, "__qualname__", None) or type(observe).__name__
    return f"observer {name}"


def failure_text(e: BaseException) -> str:
    """``Broken pipe`` for an OSError, ``ValueError: ...`` otherwise."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def upstream_error(e: TpmsealError) -> TpmsealError:
    """*e*, from opening the upstream TPM, re-worded for the sniffer's ``--upstream``.

    The transports word their hints for ``--tpm``; the sniffer has no such option.
    """
    out = copy.copy(e)
    out.hint = e.hint.replace("--tpm", "--upstream") if e.hint else "check --upstream"
    out.message = e.message.replace("bad TPM URI", "bad --upstream URI")
    out.args = (out.message,)
    return out


class _HookFailed(Exception):
    """Internal: a hook raised (recorded in ``hook_errors``)."""
