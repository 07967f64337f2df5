"""Parallel provisioning: many domains ensured or started at once over a small connection pool.

libvirtd serves each client connection with at most ``max_client_requests`` calls in flight
(5 by default, :data:`MAX_REQUESTS_PER_CONNECTION`); further calls on that connection wait for
a slot. :class:`HostPool` opens ``connections`` :class:`hvlib.Host` connections to one URI and
runs ``workers`` threads over them, each thread bound to one connection for its whole life
(handed out round-robin as threads first ask), so the pool's threads never have more than
``ceil(workers / connections)`` calls in flight on one connection. Each Host is thread-safe.
The defaults (4 workers, 2 connections: 2 calls in flight per connection) leave libvirtd's
limit room for the Hosts' own event and console traffic.

A failure of one item never stops the others: every item runs, and if any failed,
:class:`ParallelError` is raised afterwards with each item's result or error. ``workers=1,
connections=1`` is the same code run serially (what the benchmarks compare against).

>>> from hvlib.parallel import HostPool, ensure_all
>>> results = ensure_all("lxc:///system", specs, workers=4, connections=2)  # doctest: +SKIP
>>> with HostPool("qemu:///system", connections=2) as pool:                  # doctest: +SKIP
...     domains = pool.start_all(specs, workers=4)                           # handles stay usable

This module does not import libvirt; it calls :mod:`hvlib.virt.host` only.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hvlib.enums import State
from hvlib.errors import AlreadyExists, ParallelError, SpecError
from hvlib.model.plan import ENSURE_STATES
from hvlib.model.spec import DomainSpec
from hvlib.virt.closing import Closing
from hvlib.virt.converge import EnsureResult
from hvlib.virt.domain import Domain
from hvlib.virt.host import ConnectOptions, Host, check_connect_options, connect

if TYPE_CHECKING:
    from hvlib.guest.config import SshConfig
    from hvlib.model.checks import PathArg

__all__ = [
    "DEFAULT_CONNECTIONS",
    "DEFAULT_WORKERS",
    "MAX_REQUESTS_PER_CONNECTION",
    "HostPool",
    "ParallelError",
    "ensure_all",
    "start_all",
]

T = TypeVar("T")
R = TypeVar("R")

_CLOSED_BY = (
    "closed by hvlib.parallel.{what} when it returned, as it opened it from a URI: pass an "
    "open HostPool to keep using the domains"
)
MAX_REQUESTS_PER_CONNECTION = 5
"""libvirtd's default ``max_client_requests``: calls one connection may have in flight."""
DEFAULT_WORKERS = 4
"""Threads provisioning at once (``ensure_all``, ``start_all``, :meth:`HostPool.map`)."""
DEFAULT_CONNECTIONS = 2
"""Connections in a pool: the pool size."""


def check_sizes(workers: int, connections: int) -> None:
    """Check a pool's shape.

    Raises:
        SpecError: ``workers`` or ``connections`` is below 1, or the workers would put more
            than :data:`MAX_REQUESTS_PER_CONNECTION` calls in flight on one connection.
    """
    for field, value in (("workers", workers), ("connections", connections)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(field, "must be an integer of at least 1", value)
    if math.ceil(workers / connections) > MAX_REQUESTS_PER_CONNECTION:
        raise SpecError(
            "workers",
            f"at most {MAX_REQUESTS_PER_CONNECTION} per connection (libvirtd's "
            f"max_client_requests); use more connections",
            workers,
        )


def unique_names(specs: Iterable[DomainSpec]) -> list[str]:
    """The specs' names, in order.

    Raises:
        SpecError: a name occurs twice (two threads would race on one domain).
    """
    names: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise SpecError("name", "occurs more than once in one parallel run", spec.name)
        seen.add(spec.name)
        names.append(spec.name)
    return names


class HostPool(Closing):
    """``connections`` Hosts on one URI, shared by worker threads (each Host is thread-safe).

    Use as a context manager, or call :meth:`close`. Domains and results returned by its
    methods belong to its Hosts and stay usable until the pool is closed; after that, every
    call on them raises :class:`hvlib.virt.connection.HostClosed` at once (their ``name`` and
    ``uuid`` stay readable).
    """

    def __init__(
        self,
        uri: str,
        *,
        connections: int = DEFAULT_CONNECTIONS,
        netns: str | None = None,
        poll_interval: float | None = 1.0,
        readonly: bool = False,
        ssh: SshConfig | None = None,
        reconnect_timeout: float = 30.0,
        call_timeout: float | None = None,
        allow_uri_options: Iterable[str] = (),
        allow_emulation: bool | None = None,
        known_hosts: PathArg | None = None,
        keyfile: PathArg | None = None,
        host_ssh: SshConfig | None = None,
    ) -> None:
        """Open the connections; the options after ``connections`` are those of
        :func:`hvlib.connect`, for each connection.

        Raises:
            SpecError: ``connections`` is below 1, a connect option is wrong, or a URI
                option was not allowed (nothing is opened).
            HostError: the daemon cannot be reached (connections opened so far are closed).
        """
        options: ConnectOptions = {
            "netns": netns,
            "poll_interval": poll_interval,
            "readonly": readonly,
            "ssh": ssh,
            "reconnect_timeout": reconnect_timeout,
            "call_timeout": call_timeout,
            "allow_uri_options": allow_uri_options,
            "allow_emulation": allow_emulation,
            "known_hosts": known_hosts,
            "keyfile": keyfile,
            "host_ssh": host_ssh,
        }
        self._open(uri, connections, options)

    @classmethod
    def _from_options(
        cls, uri: str, connections: int = DEFAULT_CONNECTIONS, options: object = None
    ) -> HostPool:
        """A pool from a :class:`hvlib.virt.host.ConnectOptions` dict (``connect_kw=``).

        Raises:
            SpecError: ``options`` is not such a dict; as the constructor.
            HostError: as the constructor.
        """
        checked = check_connect_options("connect_kw", {} if options is None else options)
        pool = cls.__new__(cls)
        pool._open(uri, connections, checked)
        return pool

    def _open(self, uri: str, connections: int, options: ConnectOptions) -> None:
        check_sizes(1, connections)
        self.uri = uri
        self.hosts: list[Host] = []
        try:
            for _ in range(connections):
                self.hosts.append(connect(uri, **options))
        except BaseException:
            self.close()
            raise
        self._local = threading.local()
        self._next = itertools.count()
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """How many connections the pool holds."""
        return len(self.hosts)

    def __repr__(self) -> str:
        return f"<HostPool {self.uri} x{self.size}>"

    def close(self) -> None:
        """Close every connection (idempotent). Calls on the pool's Hosts and on the Domains
        it returned then raise :class:`hvlib.virt.connection.HostClosed` at once."""
        self._close("closed with its HostPool")

    def _close(self, reason: str) -> None:
        for host in self.hosts:
            host.connection.close(reason)

    def host(self) -> Host:
        """The Host of the calling thread: each thread is bound to one connection, given out
        round-robin on the thread's first call."""
        host: Host | None = getattr(self._local, "host", None)
        if host is None:
            with self._lock:
                host = self.hosts[next(self._next) % len(self.hosts)]
            self._local.host = host
        return host

    def map(
        self,
        fn: Callable[[Host, T], R],
        items: Sequence[T],
        *,
        labels: Sequence[str] | None = None,
        workers: int = DEFAULT_WORKERS,
    ) -> list[R]:
        """Run ``fn(host, item)`` for every item on ``workers`` threads; results in order.

        Every item runs even when others fail. ``labels`` name the items in errors (default:
        their index). On Ctrl-C, items not yet started are cancelled and running ones are
        waited for.

        Raises:
            SpecError: bad ``workers`` for this pool (see :func:`check_sizes`), or ``labels``
                of another length than ``items``.
            ParallelError: one or more items raised (each error kept, with the results).
        """
        check_sizes(workers, self.size)
        names = [str(i) for i in range(len(items))] if labels is None else list(labels)
        if len(names) != len(items):
            raise SpecError("labels", "must name each item once", len(names))
        with concurrent.futures.ThreadPoolExecutor(workers, "hvlib-parallel") as pool:
            futures = [pool.submit(self._run, fn, item) for item in items]
            try:
                concurrent.futures.wait(futures)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return _collect(futures, names)

    def _run(self, fn: Callable[[Host, T], R], item: T) -> R:
        return fn(self.host(), item)

    def ensure_all(
        self,
        specs: Sequence[DomainSpec],
        *,
        workers: int = DEFAULT_WORKERS,
        state: State = State.RUNNING,
        check: bool = False,
        allow_restart: bool = False,
        allow_recreate: bool = False,
        shutdown_timeout: float = 60.0,
        force_shutdown: bool = True,
    ) -> list[EnsureResult]:
        """``host.domains.ensure(spec, state, check=..., allow_restart=...,
        allow_recreate=..., shutdown_timeout=..., force_shutdown=...)`` for every spec, in
        parallel; the results in the specs' order.

        Raises:
            SpecError: two specs share a name, bad ``workers``, or ``state`` is not one
                ``ensure`` takes (nothing was done).
            ParallelError: some specs failed (``.errors`` by domain name; each error is what
                :meth:`hvlib.virt.domains.Domains.ensure` raised); the others were ensured.
        """
        if state not in ENSURE_STATES:
            raise SpecError("state", "must be RUNNING, SHUT_OFF, PAUSED or ABSENT", state)
        names = unique_names(specs)
        return self.map(
            lambda host, spec: host.domains.ensure(
                spec,
                state,
                check=check,
                allow_restart=allow_restart,
                allow_recreate=allow_recreate,
                shutdown_timeout=shutdown_timeout,
                force_shutdown=force_shutdown,
            ),
            specs,
            labels=names,
            workers=workers,
        )

    def start_all(
        self,
        specs: Sequence[DomainSpec],
        *,
        workers: int = DEFAULT_WORKERS,
        capture_console: bool = True,
    ) -> list[Domain]:
        """Define each spec (unless a domain of its name exists: that one is used as it is)
        and start it, in parallel; the domains in the specs' order. Use :meth:`ensure_all`
        to also converge existing definitions on their specs.

        Raises:
            SpecError: two specs share a name, or bad ``workers``.
            ParallelError: some specs failed (``.errors`` by domain name: what
                :meth:`hvlib.virt.domains.Domains.define` or :meth:`hvlib.Domain.start` raised).
        """
        names = unique_names(specs)
        return self.map(
            lambda host, spec: _define_and_start(host, spec, capture_console),
            specs,
            labels=names,
            workers=workers,
        )


def _define_and_start(host: Host, spec: DomainSpec, capture_console: bool) -> Domain:
    dom = host.domains.find(spec.name)
    if dom is None:
        try:
            dom = host.domains.define(spec)
        except AlreadyExists:  # defined by someone else meanwhile
            dom = host.domains.get(spec.name)
    dom.start(capture_console=capture_console)
    return dom


def _collect(futures: Sequence[concurrent.futures.Future[R]], names: Sequence[str]) -> list[R]:
    """The futures' results in order, or ParallelError with every failure."""
    results: list[Any] = []
    errors: dict[str, BaseException] = {}
    for name, future in zip(names, futures, strict=True):
        if future.cancelled():
            errors[name] = concurrent.futures.CancelledError(f"{name}: not started")
            results.append(None)
            continue
        error = future.exception()
        if error is not None:
            errors[name] = error
        results.append(None if error is not None else future.result())
    if errors:
        raise ParallelError(errors, results)
    return results


def ensure_all(
    target: str | HostPool,
    specs: Sequence[DomainSpec],
    *,
    workers: int = DEFAULT_WORKERS,
    connections: int = DEFAULT_CONNECTIONS,
    state: State = State.RUNNING,
    connect_kw: ConnectOptions | None = None,
    check: bool = False,
    allow_restart: bool = False,
    allow_recreate: bool = False,
    shutdown_timeout: float = 60.0,
    force_shutdown: bool = True,
) -> list[EnsureResult]:
    """Ensure every spec in ``state`` on ``target`` (``check``, ``allow_restart``,
    ``allow_recreate``, ``shutdown_timeout`` and ``force_shutdown`` as in
    :meth:`hvlib.virt.domains.Domains.ensure`).

    ``target`` is an open HostPool (``connections`` and ``connect_kw`` are ignored; the
    results' ``domain`` handles stay usable while the pool is open) or a URI: then a
    :class:`HostPool` of ``connections`` (opened with ``connect_kw``, the options of
    :func:`hvlib.connect`) is opened, used and closed before this returns, so the results'
    ``domain`` handles are dead: their ``name`` and ``uuid`` are readable, every call on
    them raises :class:`hvlib.virt.connection.HostClosed` at once, saying so. Pass an open
    HostPool to keep using the domains.

    Raises:
        SpecError: bad ``workers``, ``connections``, ``state`` or ``connect_kw``, or two
            specs share a name (checked before connecting).
        HostError: the daemon cannot be reached.
        ParallelError: some specs failed; the others were ensured (see
            :meth:`HostPool.ensure_all`).
    """

    def run(pool: HostPool) -> list[EnsureResult]:
        return pool.ensure_all(
            specs,
            workers=workers,
            state=state,
            check=check,
            allow_restart=allow_restart,
            allow_recreate=allow_recreate,
            shutdown_timeout=shutdown_timeout,
            force_shutdown=force_shutdown,
        )

    if isinstance(target, HostPool):
        return run(target)
    check_sizes(workers, connections)
    unique_names(specs)
    if state not in ENSURE_STATES:
        raise SpecError("state", "must be RUNNING, SHUT_OFF, PAUSED or ABSENT", state)
    pool = HostPool._from_options(target, connections, connect_kw)
    try:
        return run(pool)
    finally:
        pool._close(_CLOSED_BY.format(what="ensure_all"))


def start_all(
    target: str | HostPool,
    specs: Sequence[DomainSpec],
    *,
    workers: int = DEFAULT_WORKERS,
    connections: int = DEFAULT_CONNECTIONS,
    capture_console: bool = True,
    connect_kw: ConnectOptions | None = None,
) -> list[Domain]:
    """Define (where absent) and start every spec on ``target``: a URI (a :class:`HostPool`
    of ``connections``, opened with ``connect_kw``, is opened, used and closed: the returned
    Domains keep their name and uuid, but their connection and their console capture are
    closed, and every call on them raises :class:`hvlib.virt.connection.HostClosed` at once) or an
    open HostPool (``connections`` and ``connect_kw`` are ignored; the Domains stay usable).

    Raises:
        SpecError: bad ``workers`` or ``connections``, or two specs share a name.
        HostError: the daemon cannot be reached.
        ParallelError: some specs failed; the others were started (see
            :meth:`HostPool.start_all`).
    """
    if isinstance(target, HostPool):
        return target.start_all(specs, workers=workers, capture_console=capture_console)
    check_sizes(workers, connections)
    unique_names(specs)
    pool = HostPool._from_options(target, connections, connect_kw)
    try:
        return pool.start_all(specs, workers=workers, capture_console=capture_console)
    finally:
        pool._close(_CLOSED_BY.format(what="start_all"))
