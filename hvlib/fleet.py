"""Fleet: several libvirt hosts at once, their capacity, and where a domain should go.

``Fleet(uris, ...)`` (with the options of :func:`hvlib.connect`) opens one :class:`hvlib.Host`
per URI, in parallel; a host that cannot be reached is recorded in :attr:`Fleet.down` with the
reason, never fatal. :meth:`Fleet.inventory` reads every host's capacity in parallel (one
worker per host, each bounded by a deadline): logical CPUs, total and free memory, the
virtualization types its capabilities list, and what its defined domains already claim.
:meth:`Fleet.place` picks, among the hosts that can run a spec, the one with the most headroom;
:meth:`Fleet.ensure` first looks for the domain on every host (so a second run converges the
copy that exists instead of making another) and only places it when it exists nowhere.

Headroom, and how a host is chosen, are :mod:`hvlib.fleet_capacity`'s: a host full of
defined but stopped domains is as full as one where they run.

SSH pins (``known_hosts=``, ``keyfile=``, ``host_ssh=``) are applied to each URI here with
:func:`hvlib.virt.remote.remote_uri`. Only :mod:`hvlib.virt.host` calls are made (through
``Host.call``); XML is read with lxml. Nothing here is shared between processes: two
processes placing the same new name at once may pick different hosts.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from hvlib.enums import State
from hvlib.errors import HostError, HvlibError, InvalidState, PlacementError, SpecError
from hvlib.fleet_capacity import HostCapacity, Inventory, Placement, capacity_of, choose
from hvlib.model.checks import PathArg
from hvlib.model.render import render
from hvlib.model.spec import DomainSpec
from hvlib.model.uri import allowed_names, check_uri
from hvlib.virt.closing import Closing
from hvlib.virt.connection import check_timeout
from hvlib.virt.remote import SSH_TRANSPORTS, check_path_arg, remote_uri, transport_of

if TYPE_CHECKING:
    from hvlib.guest.config import SshConfig
    from hvlib.virt.converge import EnsureResult
    from hvlib.virt.domain import Domain
    from hvlib.virt.host import ConnectOptions, Host

log = logging.getLogger("hvlib")
T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
"""Seconds a host has to answer an inventory or lookup before it is reported down."""
DEFAULT_RECONNECT_TIMEOUT = 5.0
"""The fleet's hosts give up reconnecting sooner than a lone Host (30 s): a dead host
should be reported, not waited for."""


class Fleet(Closing):
    """Several libvirt hosts seen together: ``Fleet(uris, ...)``.

    The options after ``timeout`` are those of :func:`hvlib.connect`, for every host
    (``reconnect_timeout`` defaults to :data:`DEFAULT_RECONNECT_TIMEOUT` here); ``known_hosts``,
    ``keyfile`` and ``host_ssh`` pin SSH host keys as in :func:`hvlib.virt.remote.remote_uri`, for
    the URIs with an SSH transport (the others are opened as they are). ``timeout`` bounds
    each host's answer to one fleet call. Use as a context manager, or call :meth:`close`.

    Raises (constructor):
        SpecError: a URI, a pin or an option is malformed or refused (nothing is opened).
    """

    def __init__(
        self,
        uris: Iterable[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        netns: str | None = None,
        poll_interval: float | None = 1.0,
        readonly: bool = False,
        ssh: SshConfig | None = None,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        call_timeout: float | None = None,
        allow_uri_options: Iterable[str] = (),
        allow_emulation: bool | None = None,
        known_hosts: PathArg | None = None,
        keyfile: PathArg | None = None,
        host_ssh: SshConfig | None = None,
    ) -> None:
        from hvlib.guest.config import check_ssh_config
        from hvlib.virt.host import check_host_options

        check_timeout("timeout", timeout, optional=False)
        check_host_options(netns, poll_interval, readonly, ssh, allow_emulation)
        check_timeout("reconnect_timeout", reconnect_timeout, optional=False, zero=True)
        check_timeout("call_timeout", call_timeout, optional=True)
        allowed = list(allowed_names(allow_uri_options))
        check_path_arg("known_hosts", known_hosts)
        check_path_arg("keyfile", keyfile)
        check_ssh_config("host_ssh", host_ssh)
        self.uris: list[str] = _uri_list(uris)
        pins = {"known_hosts": known_hosts, "keyfile": keyfile, "host_ssh": host_ssh}
        pins = {k: v for k, v in pins.items() if v is not None}
        if pins and not any(transport_of(u) in SSH_TRANSPORTS for u in self.uris):
            raise SpecError("uris", "SSH pins given, but no URI uses an SSH transport")
        self._open_uri = {uri: _pinned(uri, pins) for uri in self.uris}
        for uri in self._open_uri.values():  # bad input is refused before anything opens
            check_uri(uri, allowed)
        self.timeout = timeout
        self._connect_kwargs: ConnectOptions = {
            "netns": netns,
            "poll_interval": poll_interval,
            "readonly": readonly,
            "ssh": ssh,
            "reconnect_timeout": reconnect_timeout,
            "call_timeout": call_timeout,
            "allow_uri_options": allowed,
            "allow_emulation": allow_emulation,
        }
        self._lock = threading.Lock()
        self._hosts: dict[str, Host] = {}
        self._caps: dict[str, tuple[int, str]] = {}
        self.down: dict[str, str] = {}
        """URI -> why the last attempt to reach it failed (empty when all answered)."""
        try:
            self.connect()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<Fleet {len(self._hosts)} up, {len(self.down)} down>"

    @property
    def hosts(self) -> dict[str, Host]:
        """The connected hosts, by the URI they were given as (in that order). Raises nothing."""
        with self._lock:
            return {u: self._hosts[u] for u in self.uris if u in self._hosts}

    def host(self, uri: str) -> Host:
        """The connected host given as ``uri``.

        Raises:
            HostError: it is down (the message says why) or not part of the fleet.
        """
        found = self.hosts.get(uri)
        if found is None:
            why = self.down.get(uri, "not part of this fleet")
            raise HostError(f"{uri}: {why}")
        return found

    def connect(self) -> dict[str, str]:
        """(Re)try every host that is not connected, in parallel; return :attr:`down`.

        Raises:
            SpecError: a URI was refused (a risky option): that is bad input, not a host down.
        """
        from hvlib.virt.host import connect

        missing = [u for u in self.uris if u not in self.hosts]
        results = self._each(
            missing, lambda uri: connect(self._open_uri[uri], **self._connect_kwargs)
        )
        with self._lock:
            for uri, (host, error) in results.items():
                if host is not None:
                    self._hosts[uri] = host
                    self.down.pop(uri, None)
                else:
                    self.down[uri] = error
                    log.warning("fleet: %s is down: %s", uri, error)
        return dict(self.down)

    def close(self) -> None:
        """Close every host connection (idempotent; raises nothing). Calls on the fleet's
        Hosts and on the Domains it returned then raise :class:`hvlib.virt.connection.HostClosed`
        at once."""
        with self._lock:
            hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            host.connection.close("closed with its Fleet")

    # -- reading -------------------------------------------------------------------------

    def inventory(self) -> Inventory:
        """Every host's capacity, read in parallel; hosts that are down (or do not answer
        within ``timeout``) are listed with the reason. Reconnects hosts that were down.

        Raises:
            SpecError: as :meth:`connect`. (A host that fails is reported, never raised.)
        """
        self.connect()
        results = self._each(list(self.hosts), self._capacity)
        return self._sorted(results)

    def _sorted(self, results: dict[str, tuple[HostCapacity | None, str]]) -> Inventory:
        up: dict[str, HostCapacity] = {}
        down: dict[str, str] = {}
        for uri in self.uris:
            capacity, error = results.get(uri, (None, self.down.get(uri, "down")))
            if capacity is not None:
                up[uri] = capacity
            else:
                down[uri] = error
        return Inventory(up, down)

    def find(self, name: str) -> dict[str, Domain]:
        """The domain called ``name`` on every host that has it (URI -> Domain), looked up
        in parallel.

        Raises:
            HostError: a host did not answer (it might hold the domain); ``.name`` is the
                domain's name and the message lists the hosts.
        """
        self.connect()
        results = self._each(list(self.hosts), lambda uri: self.hosts[uri].domains.find(name))
        unknown = {u: e for u, (_, e) in results.items() if e} | self.down
        if unknown:
            where = "; ".join(f"{u}: {e}" for u, e in unknown.items())
            raise HostError(
                f"cannot tell where {name} is: hosts did not answer: {where}", name=name
            )
        return {u: d for u in self.uris if (d := results.get(u, (None, ""))[0]) is not None}

    # -- deciding ------------------------------------------------------------------------

    def plan(self, spec: DomainSpec) -> Placement:
        """Where :meth:`place` would put ``spec``, with each other host's reason.

        A host qualifies when its capabilities list the spec's type, its headroom covers the
        spec's memory, it has at least the spec's vcpus as CPUs, and it has the networks and
        pools the spec names.

        Raises:
            SpecError, Unsupported: the spec is invalid for its type (no host asked).
            PlacementError: no host qualifies.
        """
        render(spec)
        self.connect()
        results = self._each(list(self.hosts), lambda uri: self._assess(uri, spec))
        inventory = self._sorted({u: (r[0] if r else None, e) for u, (r, e) in results.items()})
        refs = {u: r[1] for u, (r, _) in results.items() if r is not None and r[1]}
        fit = {u: c for u, c in inventory.hosts.items() if u not in refs}
        try:
            uri, reasons = choose(spec, fit)
        except PlacementError as e:
            e.reasons.update(refs | inventory.down)
            raise PlacementError(
                f"no host can run {spec.name}: "
                + "; ".join(f"{u}: {r}" for u, r in e.reasons.items()),
                e.reasons,
                name=spec.name,
            ) from None
        reasons.update(refs | inventory.down)
        return Placement(uri, fit[uri], reasons)

    def place(self, spec: DomainSpec) -> Host:
        """The host that can run ``spec`` with the most headroom (see :meth:`plan`); logs
        the decision at INFO.

        Raises:
            SpecError, Unsupported: the spec is invalid. PlacementError: no host can run it.
        """
        placement = self.plan(spec)
        log.info(
            "fleet: %s goes to %s (headroom %d MiB); not: %s",
            spec.name,
            placement.uri,
            placement.capacity.headroom_mib,
            "; ".join(f"{u}: {r}" for u, r in placement.rejected.items()) or "no other host",
        )
        return self.hosts[placement.uri]

    def ensure(
        self,
        spec: DomainSpec,
        state: State = State.RUNNING,
        *,
        check: bool = False,
        allow_restart: bool = False,
        allow_recreate: bool = False,
        shutdown_timeout: float = 60.0,
    ) -> EnsureResult:
        """Make the fleet hold ``spec`` in ``state`` on exactly one host; return what changed
        (``result.domain.host`` is where it is).

        The domain is looked for on every host first: where it exists, it is converged there
        (``check``, ``allow_restart``, ``allow_recreate`` and ``shutdown_timeout`` as in
        :meth:`hvlib.virt.host.Domains.ensure`); where it exists nowhere, it is placed
        (:meth:`place`) and made there. ``State.ABSENT`` removes it from every host that has
        it. A second call with the same spec changes nothing and creates no copy.

        Raises:
            HostError: a host is down, so the domain might exist there (nothing is created).
            InvalidState: the name is defined on more than one host.
            PlacementError: it exists nowhere and no host can run it.
            SpecError, Unsupported, WaitTimeout: as :meth:`hvlib.virt.host.Domains.ensure`.
        """
        render(spec)
        found = self.find(spec.name)

        def ensure_on(host: Host, wanted: State) -> EnsureResult:
            return host.domains.ensure(
                spec,
                wanted,
                check=check,
                allow_restart=allow_restart,
                allow_recreate=allow_recreate,
                shutdown_timeout=shutdown_timeout,
            )

        if state is State.ABSENT:
            return self._remove_everywhere(found, ensure_on)
        if len(found) > 1:
            raise InvalidState(
                f"{spec.name} is defined on {len(found)} hosts: {', '.join(found)}; "
                "remove the extra copies first",
                name=spec.name,
            )
        if found:
            uri = next(iter(found))
            log.info("fleet: %s exists on %s: converging it there", spec.name, uri)
            return ensure_on(self.hosts[uri], state)
        return ensure_on(self.place(spec), state)

    def _remove_everywhere(
        self, found: dict[str, Domain], ensure_on: Callable[[Host, State], EnsureResult]
    ) -> EnsureResult:
        from hvlib.virt.converge import EnsureResult

        targets = list(found) or [next(iter(self.hosts))]
        results = [ensure_on(self.hosts[u], State.ABSENT) for u in targets]
        changes = [c for r in results for c in r.changes]
        return EnsureResult(any(r.changed for r in results), changes=changes)

    def _capacity(self, uri: str) -> HostCapacity:
        """One host's capacity, its capabilities read once per connection: they do not
        change while it is connected, and over libvirt 9.0's +libssh transport a reply that
        large stalls until the next keepalive (5 s, seen here)."""
        host = self.hosts[uri]
        cached = self._caps.get(uri)
        if cached is None or cached[0] != host.generation:
            cached = (host.generation, host.capabilities())
            self._caps[uri] = cached
        return capacity_of(host, uri, capabilities=cached[1])

    def _assess(self, uri: str, spec: DomainSpec) -> tuple[HostCapacity, str]:
        """The host's capacity and "" if it has the networks and pools ``spec`` names, else
        the reason it does not."""
        capacity = self._capacity(uri)
        try:
            self.hosts[uri].domains.check_host_refs(spec)
        except SpecError as e:
            return capacity, str(e)
        return capacity, ""

    # -- parallel plumbing ---------------------------------------------------------------

    def _each(self, uris: list[str], fn: Callable[[str], T]) -> dict[str, tuple[T | None, str]]:
        """``fn(uri)`` for every URI in parallel: URI -> (result, "") or (None, reason).
        A call still running after ``timeout`` s is abandoned (its thread finishes alone)."""
        if not uris:
            return {}
        pool = concurrent.futures.ThreadPoolExecutor(len(uris), "hvlib-fleet")
        try:
            futures = {uri: pool.submit(fn, uri) for uri in uris}
            concurrent.futures.wait(futures.values(), timeout=self.timeout)
            out: dict[str, tuple[T | None, str]] = {}
            for uri, future in futures.items():
                out[uri] = _outcome(future, self.timeout)
            return out
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _uri_list(uris: object) -> list[str]:
    """The fleet's URIs, in order, each once.

    Raises:
        SpecError: ``uris`` is one string, not iterable, empty, or holds a non-string.
    """
    if isinstance(uris, str | bytes):
        raise SpecError("uris", "must be a list of URIs, not one string", uris)
    try:
        found = list(dict.fromkeys(uris))  # type: ignore[call-overload]
    except TypeError:
        raise SpecError("uris", "must be a list of URIs", uris) from None
    if not found:
        raise SpecError("uris", "a fleet needs at least one host URI")
    for uri in found:
        if not isinstance(uri, str):
            raise SpecError("uris", "must hold URIs (strings)", uri)
    return found


def _pinned(uri: str, pins: dict[str, Any]) -> str:
    """``uri`` with the fleet's SSH pins applied if it is an SSH transport, else as it is.

    Raises:
        SpecError: a malformed pin (see :func:`hvlib.virt.remote.remote_uri`).
    """
    if not pins or transport_of(uri) not in SSH_TRANSPORTS:
        return uri
    return remote_uri(
        uri,
        known_hosts=pins.get("known_hosts"),
        keyfile=pins.get("keyfile"),
        ssh=pins.get("host_ssh"),
    )


def _outcome(future: concurrent.futures.Future[Any], timeout: float) -> tuple[Any, str]:
    if not future.done():
        return None, f"did not answer within {timeout:g} s"
    error = future.exception()
    if error is None:
        return future.result(), ""
    if isinstance(error, HvlibError) and not isinstance(error, SpecError):
        return None, str(error).splitlines()[0] if str(error) else type(error).__name__
    raise error
