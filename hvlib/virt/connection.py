"""A libvirt connection that survives its daemon: keepalive, close callback, reconnect, retries,
and a deadline on every call.

:class:`Connection` owns the raw libvirt connection of a :class:`hvlib.Host`. When libvirtd
restarts (the close callback fires, or a call fails because the connection is dead) the
connection is marked lost; the next use reconnects (retried with a deadline) and re-registers
the lifecycle event callback, bumping :attr:`Connection.generation` so that Domains re-look-up
their handles. :meth:`Connection.call` runs a block of libvirt calls with hvlib's error
translation, retries it on transient errors only when the caller says it is safe to repeat,
and bounds it: every call, the open included, has a deadline (``call_timeout``, by default
:data:`DEFAULT_CALL_TIMEOUT`; a call may bring its own). Past it hvlib cuts the connection's
socket, the call raises :class:`hvlib.CallTimeout` naming the libvirt call and the domain,
other calls waiting on the same connection fail with HostError (safe ones are retried after
the reconnect), and the next use reconnects. The call runs in its caller's thread: no worker
is abandoned per timeout and concurrent calls are not serialised (:mod:`hvlib.virt.deadline`
says why this design). The URI is checked by :func:`hvlib.model.uri.check_uri` when the
Connection is made, so nothing opens a URI that the guard did not pass. After :meth:`close`
every use fails at once with :class:`HostClosed` (never retried, never reconnected). This is
part of the Host layer; it holds no policy about domains.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from hvlib.errors import CallTimeout, HostClosed, HostError, HvlibError, SpecError
from hvlib.model.uri import check_uri, transport_of
from hvlib.virt import _virt, deadline
from hvlib.virt.deadline import DEFAULT_CALL_TIMEOUT, SocketWatch, Ticket

log = logging.getLogger("hvlib")
T = TypeVar("T")

OPEN_ATTEMPTS = 3
"""Opens made when another thread opened a socket at the same moment (then hvlib cannot tell
which socket is the connection's)."""
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
TRANSIENT_MESSAGES = (
    "cannot acquire state change lock",
    "client socket is closed",
    "end of file while reading data",
    "connection reset",
    # a storage pool refresh while a volume of the pool is being made (libvirt's asyncjobs):
    # seen with 20 volumes made at once in one pool under load (integration/test_load.py)
    "has asynchronous jobs running",
)


def keepalive_for(uri: str) -> tuple[int, int]:
    """(interval s, count) of libvirt keepalive for ``uri``. Over ``+libssh`` a reply of ~10 KB
    stalls for exactly one keepalive interval (measured with libvirt 9.0: 5 s at 5, 1 s at 1),
    so those connections ping every second, still giving up on a dead peer after 15 s."""
    if (transport_of(uri) or "").startswith("libssh"):  # libssh and libssh2, any case
        return 1, 15
    return KEEPALIVE_INTERVAL, KEEPALIVE_COUNT


MAX_TIMEOUT = 10 * 365 * 86400.0
"""The largest timeout hvlib takes (ten years): finite, and within what Python's waits
accept (``threading.TIMEOUT_MAX``)."""


def check_timeout(field: str, value: object, *, optional: bool, zero: bool = False) -> None:
    """Check a timeout in seconds: a finite int or float (not a bool), above 0 (at least 0
    with ``zero``), at most :data:`MAX_TIMEOUT`; or None when ``optional``.

    Raises:
        SpecError: naming ``field``.
    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a number of seconds" + (" or None" if optional else "")
        raise SpecError(field, f"must be {kind}", value)
    in_range = value >= 0 if zero else value > 0
    if value != value or not in_range or value > MAX_TIMEOUT:  # NaN is not equal to itself
        low = "at least 0" if zero else "above 0"
        raise SpecError(field, f"must be {low} and at most {MAX_TIMEOUT:g} s", value)


def is_transient(exc: BaseException) -> bool:
    """True for failures that may pass if the same safe call is made again: a lost
    connection, a daemon restarting, libvirt's "cannot acquire state change lock". A call
    timeout and a closed Host are not."""
    if isinstance(exc, CallTimeout | HostClosed):
        return False
    if isinstance(exc, HostError):
        return True
    text = str(exc).lower()
    return isinstance(exc, HvlibError) and any(m in text for m in TRANSIENT_MESSAGES)


class Connection:
    """The raw libvirt connection of one Host, kept alive across daemon restarts."""

    def __init__(
        self,
        uri: str,
        *,
        readonly: bool,
        on_lifecycle: Callable[..., None],
        on_lost: Callable[[], None],
        reconnect_timeout: float = 30.0,
        call_timeout: float | None = None,
        allow_uri_options: Iterable[str] = (),
    ) -> None:
        """Check ``uri`` and the timeouts, then open the connection. ``call_timeout`` None is
        :data:`DEFAULT_CALL_TIMEOUT`.

        Raises:
            SpecError: the URI was refused (see :func:`hvlib.model.uri.check_uri`), or a timeout
                is not a finite positive number of seconds.
            HostError: the daemon cannot be reached or refused the connection.
            CallTimeout: the daemon accepted the connection but did not answer in time.
        """
        check_timeout("reconnect_timeout", reconnect_timeout, optional=False, zero=True)
        check_timeout("call_timeout", call_timeout, optional=True)
        self._uri = check_uri(uri, allow_uri_options)
        self.readonly = readonly
        self.reconnect_timeout = reconnect_timeout
        self.call_timeout: float = DEFAULT_CALL_TIMEOUT if call_timeout is None else call_timeout
        """Seconds any call on this connection may take (unless it brings its own bound)."""
        self._on_lifecycle, self._on_lost = on_lifecycle, on_lost
        self._lock = threading.RLock()
        self._conn: Any = None
        self._watch: SocketWatch | None = None
        self._callback_id: int | None = None
        self._lost: list[tuple[Any, int | None]] = []
        """Lost connections (with their event callback id) not yet released."""
        self._closed = False
        self._closed_why = ""
        self.generation = 0
        """Bumped on every (re)connect: handles from an older generation are stale."""
        self._open()

    @property
    def uri(self) -> str:
        """The URI, as checked by :func:`hvlib.model.uri.check_uri` (it cannot be changed)."""
        return self._uri

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # -- opening, losing, closing --------------------------------------------------------

    def _open(self) -> None:
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            conn, watch = self._open_once()
            if watch is not None and watch.ambiguous and attempt < OPEN_ATTEMPTS:
                log.info("%s: another socket was opened meanwhile; opening again", self.uri)
                self._close_quietly(conn, watch)
                continue
            break
        if watch is not None and watch.ambiguous:
            log.warning("%s: the connection's socket was not found: calls are unbounded", self.uri)
            watch = None
        try:
            with self._guard(conn, watch, None, self.call_timeout):
                self._callback_id = conn.domainEventRegisterAny(
                    None, _virt.C.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
                )
        except BaseException:
            self._close_quietly(conn, watch)
            raise
        self._optional(conn.setKeepAlive, *keepalive_for(self.uri))
        self._optional(conn.registerCloseCallback, self._closed_by_libvirt, None)
        self._conn, self._watch = conn, watch
        self.generation += 1

    def _open_once(self) -> tuple[Any, SocketWatch | None]:
        """Open, bounded by ``call_timeout``; (conn, the watch on its socket, None for an
        in-process driver).

        Raises:
            HostError: libvirt refused. CallTimeout: the daemon did not answer in time.
        """
        if not _has_socket(self.uri):
            return _virt.open_connection(self.uri, readonly=self.readonly), None
        with deadline.OPEN_LOCK:
            watch = SocketWatch(deadline.families_of(self.uri))
            ticket = deadline.arm(watch, self.call_timeout)
            try:
                conn = _virt.open_connection(self.uri, readonly=self.readonly)
            except HostError as e:
                watch.close()
                if ticket is not None and ticket.fired:
                    raise self._timed_out(ticket, None) from e
                raise
            finally:
                deadline.disarm(ticket)
            found = watch.attach()
        return conn, watch if found or watch.ambiguous else None

    def _close_quietly(self, conn: Any, watch: SocketWatch | None) -> None:
        try:
            with self._guard(conn, watch, None, self.call_timeout):
                conn.close()
        except Exception as e:  # closing a broken connection must not mask the real error
            log.debug("closing %s: %s", self.uri, e)
        if watch is not None:
            watch.close()

    def _optional(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # the in-process test driver has no keepalive, no close callback
            log.debug("%s: %s not available: %s", self.uri, getattr(fn, "__name__", fn), e)

    def _closed_by_libvirt(self, conn: Any, reason: int, _opaque: Any) -> None:
        if self._closed:
            return  # our own close()
        log.warning(
            "connection to %s closed (reason %d); will reconnect on next use", self.uri, reason
        )
        self.mark_lost(conn)

    def mark_lost(self, conn: Any) -> None:
        """Forget ``conn`` if it is still the current one (the next use reconnects)."""
        with self._lock:
            if conn is not self._conn or conn is None:
                return
            watch, self._conn, self._watch = self._watch, None, None
            self._lost.append((conn, self._callback_id))
        if watch is not None:
            watch.close()
        self._on_lost()

    def _release_lost(self) -> None:
        """Let go of lost connections: their callbacks hold references that would keep
        libvirt's client (and its descriptors) alive. Not done in :meth:`mark_lost`, which
        runs in libvirt's close callback."""
        with self._lock:
            lost, self._lost = self._lost, []
        for conn, callback_id in lost:
            self._release(conn, callback_id)

    def _release(
        self, conn: Any, callback_id: int | None, watch: SocketWatch | None = None
    ) -> None:
        steps: list[Callable[[], object]] = [conn.unregisterCloseCallback, conn.close]
        if callback_id is not None:
            steps.insert(0, lambda: conn.domainEventDeregisterAny(callback_id))
        for step in steps:
            try:
                with self._guard(conn, watch, None, self.call_timeout):
                    step()
            except Exception as e:  # a dead connection: libvirt frees what it can
                log.debug("releasing a lost connection to %s: %s", self.uri, e)

    def get(self) -> Any:
        """The live libvirt connection, reconnecting first if it was lost.

        Raises:
            HostClosed: closed by the caller (at once; also when it was closed while this
                call waited for a reconnect).
            HostError: the daemon did not come back within ``reconnect_timeout`` s.
        """
        self._raise_if_closed()
        with self._lock:
            conn = self._get_locked()
        self._release_lost()  # outside the lock (measured: closing under it deadlocked)
        return conn

    def _get_locked(self) -> Any:
        """:meth:`get`'s work, the lock held; lost connections are released by the caller,
        once it has let go of the lock: closing one can wait for libvirt's event loop, whose
        close callback (:meth:`mark_lost`) takes the lock (175 of 200 operations hung so in
        integration/test_load.py)."""
        self._raise_if_closed()
        if self._conn is None:
            self._reconnect()
            self._raise_if_closed()  # closed meanwhile: close() takes the new one
        return self._conn

    def check_open(self) -> None:
        """Raise unless the connection is open (or to be reopened on next use).

        Raises:
            HostClosed: :meth:`close` was called.
        """
        self._raise_if_closed()

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise HostClosed(
                f"{self.uri}: this Host was closed{self._closed_why}; calls on it and on its "
                "domains fail: open a new one with hvlib.connect()"
            )

    def _reconnect(self) -> None:
        import tenacity  # only retries need it: a faster ``import hvlib``

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda e: (
                    isinstance(e, HostError) and not isinstance(e, CallTimeout) and not self._closed
                )
            ),
            stop=tenacity.stop_after_delay(self.reconnect_timeout),
            wait=tenacity.wait_exponential(multiplier=0.1, max=2.0),
            before_sleep=lambda rs: log.warning(
                "reconnecting to %s (attempt %d): %s",
                self.uri,
                rs.attempt_number,
                rs.outcome.exception() if rs.outcome else "",
            ),
            reraise=True,
        )
        retrying(self._open)
        log.warning("reconnected to %s", self.uri)

    def close(self, reason: str = "") -> None:
        """Deregister events and close (idempotent; bounded by ``call_timeout``). Every use
        after this raises :class:`HostClosed` at once; ``reason`` (e.g. "by ensure_all") goes
        in its message. A reconnect under way in another thread stops at its next attempt."""
        if not self._closed:
            self._closed_why = f" ({reason})" if reason else ""
            self._closed = True  # seen at once by a reconnect loop holding the lock
        with self._lock:
            conn, watch, self._conn, self._watch = self._conn, self._watch, None, None
        self._release_lost()
        if conn is not None:
            self._release(conn, self._callback_id, watch)
        if watch is not None:
            watch.close()

    # -- calls ---------------------------------------------------------------------------

    def call(
        self,
        fn: Callable[[Any], T],
        *,
        name: str | None = None,
        safe: bool = False,
        timeout: float | None = None,
    ) -> T:
        """Run ``fn(conn)`` (libvirt calls) with hvlib's error translation, in this thread,
        bounded by ``timeout`` s (else the connection's ``call_timeout``).

        ``safe``: the calls only read, or are idempotent, so on a transient error (lost
        connection, "cannot acquire state change lock") they are made again, after a
        reconnect if needed, until ``reconnect_timeout``; each retry is logged. Unsafe calls
        are never repeated, and a call that timed out is not either. ``name`` is the domain
        (or other object) the calls are about, for errors.

        Raises:
            SpecError: ``timeout`` is not a positive number of seconds.
            HostClosed: the connection was closed (at once, never retried).
            CallTimeout: libvirt did not answer within the deadline (the connection was cut;
                the next use reconnects).
            HvlibError: the translated libvirt error.
        """
        if timeout is not None:
            check_timeout("timeout", timeout, optional=False)
        if not safe:
            return self._attempt(fn, name, timeout)
        try:
            return self._attempt(fn, name, timeout)  # the common case, without tenacity
        except HvlibError as e:
            if not is_transient(e):
                raise
            log.warning("retrying a call on %s after: %s", self.uri, e)
        return self._retrying(fn, name, timeout)

    def _retrying(self, fn: Callable[[Any], T], name: str | None, timeout: float | None) -> T:
        """Retry a safe call that failed transiently, until ``reconnect_timeout``."""
        import tenacity  # only retries need it: a faster ``import hvlib``

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: is_transient(e) and not self._closed),
            stop=tenacity.stop_after_delay(self.reconnect_timeout),
            wait=tenacity.wait_exponential(multiplier=0.1, max=2.0),
            before_sleep=lambda rs: log.warning(
                "retrying a call on %s after: %s",
                self.uri,
                rs.outcome.exception() if rs.outcome else "",
            ),
            reraise=True,
        )
        result: T = retrying(self._attempt, fn, name, timeout)
        return result

    def _attempt(self, fn: Callable[[Any], T], name: str | None, timeout: float | None) -> T:
        conn, watch = self._current(name)
        if watch is None:  # an in-process driver: no socket, no deadline (a faster path)
            try:
                with _virt.translated(name):
                    return fn(conn)
            except HostError:
                if not self._alive(conn):
                    self.mark_lost(conn)
                raise
        with self._guard(conn, watch, name, self.call_timeout if timeout is None else timeout):
            return fn(conn)

    @contextlib.contextmanager
    def bounded(
        self, *, name: str | None = None, timeout: float | None = None, reconnect: bool = True
    ) -> Iterator[Any]:
        """A block of libvirt calls on the current connection (yielded), translated and bounded
        like :meth:`call` (never retried): for calls that cannot be one function, such as the
        messages of a stream, each in a block of its own. With ``reconnect=False`` a lost or
        closed connection is not reopened: the block then runs unbounded with None (for
        clean-ups of objects of the old connection, which fail at once).

        Raises:
            SpecError: ``timeout`` is not a positive number of seconds.
            HostClosed, CallTimeout, HvlibError: as :meth:`call`.
        """
        if timeout is not None:
            check_timeout("timeout", timeout, optional=False)
        if not reconnect:
            with self._lock:
                conn, watch = self._conn, self._watch
            if conn is None:
                yield None
                return
        else:
            conn, watch = self._current(name)
        with self._guard(conn, watch, name, self.call_timeout if timeout is None else timeout):
            yield conn

    def _current(self, name: str | None) -> tuple[Any, SocketWatch | None]:
        """The live connection (reconnected if needed) and the watch on its socket; a
        reconnect that timed out names ``name``."""
        try:
            self._raise_if_closed()
            with self._lock:
                conn, watch = self._get_locked(), self._watch
            self._release_lost()
            return conn, watch
        except CallTimeout as e:
            if name and e.name is None:
                e.name = name
                e.args = (f"{e.args[0]} (domain {name})",)
            raise

    @contextlib.contextmanager
    def _guard(
        self, conn: Any, watch: SocketWatch | None, name: str | None, seconds: float
    ) -> Iterator[None]:
        """Translate libvirt's errors of the block; cut the connection if the block is still
        running after ``seconds`` and then raise CallTimeout; forget a dead connection."""
        ticket = deadline.arm(watch, seconds)
        try:
            with _virt.translated(name):
                yield
        except HvlibError as e:
            if ticket is not None and ticket.fired:
                raise self._timed_out(ticket, name) from e
            if isinstance(e, HostError):
                if not self._alive(conn):
                    self.mark_lost(conn)
            elif not isinstance(e, SpecError) and not self._alive(conn):
                # a call cut off by the daemon's death fails with whatever libvirt's client
                # had at hand: no error set ("virDomainGetState() failed", code 0) or an
                # internal error ("client socket is closed", code 1, seen under load with
                # libvirtd killed). On a dead connection it is a HostError, so safe calls are
                # retried after the reconnect and a wait keeps waiting, not a LibvirtError
                self.mark_lost(conn)
                raise HostError(f"{self.uri}: connection lost during a call: {e}", name=name) from e
            raise
        finally:
            deadline.disarm(ticket)
            if ticket is not None and ticket.fired:
                self.mark_lost(conn)  # even if the call's answer came just in time

    def _timed_out(self, ticket: Ticket, name: str | None) -> CallTimeout:
        call = ticket.call or "a libvirt call"
        where = f" (domain {name})" if name else ""
        return CallTimeout(
            f"{self.uri}: libvirt did not answer {call} within {ticket.seconds:g} s{where}; "
            "the connection was cut and is reopened on next use",
            name=name,
            call=ticket.call,
            timeout=ticket.seconds,
        )

    @staticmethod
    def _alive(conn: Any) -> bool:
        try:
            return bool(conn.isAlive())
        except Exception:
            return False


def _has_socket(uri: str) -> bool:
    """False for libvirt's in-process test driver (``test:///...``): nothing to cut."""
    scheme = uri.partition(":")[0].lower()
    return not (scheme == "test" and "//" in uri and uri.partition("://")[2].startswith("/"))
