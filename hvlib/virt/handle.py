"""The common base of hvlib's objects on a host (Domain, Network, Pool, Volume).

Each wraps a libvirt object whose handle belongs to one connection: after the Host
reconnects (libvirtd restarted) the handle is looked up again (by uuid, or by name in its
pool) on first use. Calls go through :meth:`hvlib.Host.call`: reads retried on transient
errors, writes made once. Once the Host is closed, everything but the cached identity (name,
uuid) raises :class:`hvlib.HostClosed` at once. Part of the virt layer; no
policy here. The host is taken as :class:`hvlib.virt._parts.HostLike`. :class:`ByName` is
the ``get``/``find``/``list`` of a host's networks and pools.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from hvlib.errors import NotFound

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

T = TypeVar("T")


class HostObject:
    """A libvirt object on ``host``; subclasses say how to find it again (:meth:`_lookup`)."""

    def __init__(self, host: HostLike, handle: Any) -> None:
        self.host = host
        self._handle = handle
        self._generation = host.generation

    def _lookup(self, conn: Any) -> Any:
        """Find this object again on a new connection (subclasses).

        Raises:
            NotFound: it is gone.
        """
        raise NotImplementedError

    @property
    def handle(self) -> Any:
        """The underlying libvirt object (an escape hatch: raw calls on it raise raw libvirt
        errors), looked up again after the host reconnected.

        Raises:
            HostClosed: the host was closed (the handle would be of a closed connection).
            NotFound: after a reconnect, the object is gone.
        """
        self.host.connection.check_open()
        if self._generation != self.host.generation:
            generation = self.host.generation
            self._handle = self.host.call(self._lookup, name=self._label(), safe=True)
            self._generation = generation
        return self._handle

    def _label(self) -> str | None:
        return getattr(self, "name", None)

    def _read(self, fn: Callable[[Any], T]) -> T:
        """``fn(handle)``: a read or an idempotent call, retried on transient errors."""
        return self.host.call(lambda _c: fn(self.handle), name=self._label(), safe=True)

    def _write(self, fn: Callable[[Any], T], timeout: float | None = None) -> T:
        """``fn(handle)``: a call that changes something, made once (never retried), given
        up after ``timeout`` s (else the host's ``call_timeout``) with CallTimeout."""
        return self.host.call(lambda _c: fn(self.handle), name=self._label(), timeout=timeout)


H = TypeVar("H", bound=HostObject)


class ByName(Generic[H]):
    """The objects of one kind on a host, found by name: ``get``, ``find`` and ``list``.

    A subclass names the kind: ``_kind`` (in messages), ``_item`` (the class that wraps a
    handle: ``_item(host, handle)``), and the names of the libvirt connection's look-up by
    name and list-all calls (``_lookup_call``, ``_list_call``).
    """

    _kind: str
    _item: type[H]
    _lookup_call: str
    _list_call: str

    def __init__(self, host: HostLike) -> None:
        self.host = host

    def get(self, name: str) -> H:
        """The one called ``name``.

        Raises:
            NotFound: there is none.
        """
        found = self.find(name)
        if found is None:
            raise NotFound(f"no {self._kind} named {name}", name=name)
        return found

    def find(self, name: str) -> H | None:
        """The one called ``name``, or None."""
        lookup = self._lookup_call
        try:
            handle = self.host.call(lambda c: getattr(c, lookup)(name), name=name, safe=True)
        except NotFound:
            return None
        return self._item(self.host, handle)

    def list(self) -> builtins.list[H]:
        """Every one on the host (active or not), in one libvirt call."""
        list_call = self._list_call
        handles = self.host.call(lambda c: getattr(c, list_call)(0), safe=True)
        return [self._item(self.host, h) for h in handles]
