"""Typed domain lifecycle events and the hub that fans them out to waiters and subscribers.

libvirt calls :meth:`EventHub.dispatch` on its event-loop thread; the hub records, per domain,
a counter that waiters block on (so a ``wait_for`` wakes within milliseconds of libvirt's
event) and hands a :class:`DomainEvent` to each subscriber. Callbacks must be quick: they run
on libvirt's loop thread. This module does not import libvirt.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger("hvlib")


class EventKind(enum.Enum):
    """libvirt's lifecycle event types, by name (their order is libvirt's numbering)."""

    DEFINED = 0
    UNDEFINED = 1
    STARTED = 2
    SUSPENDED = 3
    RESUMED = 4
    STOPPED = 5
    SHUTDOWN = 6
    PM_SUSPENDED = 7
    CRASHED = 8
    UNKNOWN = -1

    @classmethod
    def of(cls, code: int) -> EventKind:
        """The kind for libvirt's numeric event type (UNKNOWN for a future one)."""
        try:
            return cls(code)
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True)
class DomainEvent:
    """One lifecycle event: which domain, what happened, libvirt's detail code, when."""

    name: str
    uuid: str
    kind: EventKind
    detail: int
    timestamp: float = field(default_factory=time.monotonic)


Callback = Callable[[DomainEvent], None]


class Subscription:
    """A registered event callback; :meth:`cancel` (or leaving the ``with``) removes it."""

    def __init__(self, hub: EventHub, callback: Callback) -> None:
        self._hub, self.callback = hub, callback

    def cancel(self) -> None:
        """Stop delivering events to the callback (idempotent)."""
        self._hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class EventHub:
    """Per-host fan-out of lifecycle events, and the condition that waits block on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._seq = 0  # one counter for all domains: nothing grows with the domains seen
        self._subs: list[Subscription] = []

    def dispatch(self, event: DomainEvent) -> None:
        """Record ``event``, wake its waiters, call each subscriber (errors are logged)."""
        with self.cond:
            self._seq += 1
            self.cond.notify_all()
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.callback(event)
            except Exception:
                log.exception("event callback %r failed", sub.callback)

    def wake_all(self) -> None:
        """Wake every waiter (after a reconnect, say) so that it re-reads its state."""
        with self.cond:
            self._seq += 1
            self.cond.notify_all()

    def seq(self) -> int:
        """How many events (and wake-ups) there were: a waiter re-reads its state whenever
        this changes (one counter for all domains, so it holds nothing per domain)."""
        return self._seq

    def subscribe(self, callback: Callback) -> Subscription:
        """Deliver every future event to ``callback`` (on libvirt's event thread)."""
        sub = Subscription(self, callback)
        with self.cond:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove ``sub`` (idempotent)."""
        with self.cond:
            if sub in self._subs:
                self._subs.remove(sub)

    def stream(self, names: set[str] | None, timeout: float | None) -> Iterator[DomainEvent]:
        """Yield events (for ``names`` only, if given) until ``timeout`` s pass without one."""
        inbox: queue.Queue[DomainEvent] = queue.Queue()
        sub = self.subscribe(lambda e: inbox.put(e) if names is None or e.name in names else None)
        try:
            while True:
                try:
                    yield inbox.get(timeout=timeout)
                except queue.Empty:
                    return
        finally:
            sub.cancel()
