"""A libvirt connection that survives its daemon: keepalive, close callback, reconnect, retries.

:class:`Connection` owns the raw libvirt connection of a :class:`hvlib.Host`. When libvirtd
restarts (the close callback fires, or a call fails because the connection is dead) the
connection is marked lost; the next use reconnects (retried with a deadline) and re-registers
the lifecycle event callback, bumping :attr:`Connection.generation` so that Domains re-look-up
their handles. :meth:`Connection.call` runs a block of libvirt calls with hvlib's error
translation, retries it on transient errors only when the caller says it is safe to repeat,
and with ``call_timeout`` set runs it on a worker thread and gives up with
:class:`hvlib.CallTimeout`. The URI is checked by :func:`hvlib.model.uri.check_uri` when the
Connection is made, so nothing opens a URI that the guard did not pass. After :meth:`close`
every use fails at once with :class:`HostClosed` (never retried, never reconnected). This is
part of the Host layer; it holds no policy about domains.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from hvlib.errors import CallTimeout, HostClosed, HostError, HvlibError, SpecError
from hvlib.model.uri import check_uri, transport_of
from hvlib.virt import _virt

log = logging.getLogger("hvlib")
T = TypeVar("T")

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
        """Check ``uri`` and the timeouts, then open the connection.

        Raises:
            SpecError: the URI was refused (see :func:`hvlib.model.uri.check_uri`), or a timeout
                is not a finite positive number of seconds.
            HostError: the daemon cannot be reached or refused the connection.
        """
        check_timeout("reconnect_timeout", reconnect_timeout, optional=False, zero=True)
        check_timeout("call_timeout", call_timeout, optional=True)
        self._uri = check_uri(uri, allow_uri_options)
        self.readonly = readonly
        self.reconnect_timeout, self.call_timeout = reconnect_timeout, call_timeout
        self._on_lifecycle, self._on_lost = on_lifecycle, on_lost
        self._lock = threading.RLock()
        self._conn: Any = None
        self._callback_id: int | None = None
        self._closed = False
        self._closed_why = ""
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lost: list[tuple[Any, int | None]] = []
        """Connections lost to a dead daemon (with their event callback id), closed on the
        next reconnect or close(): never from libvirt's close callback itself."""
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
        conn = _virt.open_connection(self.uri, readonly=self.readonly)
        with _virt.translated():
            self._callback_id = conn.domainEventRegisterAny(
                None, _virt.C.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
            )
        self._optional(conn.setKeepAlive, *keepalive_for(self.uri))
        self._optional(conn.registerCloseCallback, self._closed_by_libvirt, None)
        self._conn = conn
        self.generation += 1

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
            self._conn = None
            self._lost.append((conn, self._callback_id))
        self._on_lost()

    def get(self) -> Any:
        """The live libvirt connection, reconnecting first if it was lost.

        Raises:
            HostClosed: closed by the caller (at once; also when it was closed while this
                call waited for a reconnect).
            HostError: the daemon did not come back within ``reconnect_timeout`` s.
        """
        self._raise_if_closed()
        with self._lock:
            self._raise_if_closed()
            if self._conn is None:
                self._reconnect()
                self._raise_if_closed()  # closed meanwhile: close() takes the new one
            conn, lost, self._lost = self._conn, self._lost, []
        self._release(lost)  # outside the lock: closing may wait for libvirt's event loop
        return conn

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
                lambda e: isinstance(e, HostError) and not self._closed
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
        """Deregister events and close (idempotent). Every use after this raises
        :class:`HostClosed` at once; ``reason`` (e.g. "by ensure_all") goes in its message.
        A reconnect under way in another thread stops at its next attempt."""
        if not self._closed:
            self._closed_why = f" ({reason})" if reason else ""
            self._closed = True  # seen at once by a reconnect loop holding the lock
        with self._lock:
            conn, self._conn = self._conn, None
            lost, self._lost = self._lost, []
        self._release(lost)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if conn is not None:
            self._close_conn(conn, self._callback_id)

    def _release(self, lost: list[tuple[Any, int | None]]) -> None:
        for conn, callback_id in lost:
            self._close_conn(conn, callback_id)

    def _close_conn(self, conn: Any, callback_id: int | None) -> None:
        """Deregister and close one libvirt connection, failures logged (it may be dead)."""
        try:
            with _virt.translated():
                if callback_id is not None:
                    conn.domainEventDeregisterAny(callback_id)
        except Exception as e:  # a dead daemon: the local registration is gone anyway
            log.debug("deregistering events on %s: %s", self.uri, e)
        # the close callback holds a reference on the connection: left registered, close()
        # never drops the last one and the socket stays open (2 descriptors per connection,
        # found by integration/test_load.py)
        self._optional(conn.unregisterCloseCallback)
        self._optional(conn.close)

    # -- calls ---------------------------------------------------------------------------

    def call(
        self,
        fn: Callable[[Any], T],
        *,
        name: str | None = None,
        safe: bool = False,
        timeout: float | None = None,
    ) -> T:
        """Run ``fn(conn)`` (libvirt calls) with hvlib's error translation.

        ``safe``: the calls only read, or are idempotent, so on a transient error (lost
        connection, "cannot acquire state change lock") they are made again, after a
        reconnect if needed, until ``reconnect_timeout``; each retry is logged. Unsafe calls
        are never repeated. With ``timeout`` (else the connection's ``call_timeout``) set,
        each attempt runs on a worker thread and is abandoned past that many seconds (the
        worker stays blocked until libvirt answers).

        Raises:
            HostClosed: the connection was closed (at once, never retried).
            CallTimeout: libvirt did not answer within ``call_timeout`` s.
            HvlibError: the translated libvirt error.
        """
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
        conn = self.get()
        deadline = timeout if timeout is not None else self.call_timeout
        try:
            if deadline is None:
                with _virt.translated(name):
                    return fn(conn)
            return self._with_deadline(fn, conn, name, deadline)
        except HostError:
            if not self._alive(conn):
                self.mark_lost(conn)
            raise
        except HvlibError as e:
            # a call cut off by the daemon's death can fail with no libvirt error set
            # ("virDomainGetState() failed", code 0): on a dead connection it is a HostError
            # (so safe calls are retried after the reconnect), not a LibvirtError
            if e.code or isinstance(e, SpecError) or self._alive(conn):
                raise
            self.mark_lost(conn)
            raise HostError(f"{self.uri}: connection lost during a call: {e}", name=name) from e

    def _with_deadline(
        self, fn: Callable[[Any], T], conn: Any, name: str | None, deadline: float
    ) -> T:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(8, "hvlib-call")

        def run() -> T:
            with _virt.translated(name):
                return fn(conn)

        future = self._pool.submit(run)
        try:
            return future.result(timeout=deadline)
        except concurrent.futures.TimeoutError:
            where = f" (domain {name})" if name else ""
            raise CallTimeout(
                f"{self.uri}: libvirt did not answer within {deadline:g} s{where}", name=name
            ) from None

    @staticmethod
    def _alive(conn: Any) -> bool:
        try:
            return bool(conn.isAlive())
        except Exception:
            return False
