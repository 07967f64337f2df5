"""The common base of hvlib's objects on a host (Domain, Network, Pool, Volume).

Each wraps a libvirt object whose handle belongs to one connection: after the Host
reconnects (libvirtd restarted) the handle is looked up again (by uuid, or by name in its
pool) on first use. Calls go through :meth:`hvlib.Host.call`: reads retried on transient
errors, writes made once. Once the Host is closed, everything but the cached identity (name,
uuid) raises :class:`hvlib.HostClosed` at once. Part of the virt layer; no
policy here. The host is taken as :class:`hvlib.virt._parts.HostLike`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

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
