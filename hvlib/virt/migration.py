"""Moving a domain between hosts: ``dom.migrate(dest_host, ...)``, and ``dom.snapshots``.

:class:`Mobility` is a mixin of :class:`hvlib.Domain`. :meth:`Mobility.migrate` moves the
domain to another :class:`hvlib.Host` with libvirt's managed migration (``migrate3``: this
process holds both connections and drives the protocol; the guest's memory and, with
``copy_storage``, its disks go straight from the source QEMU to the destination's, over
``dest_address`` when given):

- a running (or paused) guest is migrated live (``live=False``: paused while it moves) and
  keeps its state; a persistent domain's definition moves with it (defined on the
  destination, undefined on the source), so it is defined on exactly one host afterwards;
- a stopped persistent domain is migrated offline: only its definition moves;
- while ``migrate3`` runs, a watcher thread polls the job (``jobStats``) every
  ``poll_interval`` s, hands each reading to ``progress``, aborts the job (``abortJob``)
  past ``timeout`` s or when the connection to the destination is lost;
- on any failure the guest is left running on exactly one side (see :func:`reconcile`) and
  :class:`MigrationError` says where; on success the destination's :class:`hvlib.Domain` is
  returned, with hvlib's console capture carried over (the guest is handed over paused, its
  console opened on the destination, then resumed, so no console line is lost).

Calling ``migrate`` again after it succeeded (the domain gone from the source, present on the
destination with the same uuid) returns the destination's Domain and moves nothing.

libvirt is called only through ``Host.call`` and the domain's ``_read``/``_write``; the raw
destination connection is handed to libvirt's ``migrate3`` as it requires.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from hvlib.enums import State
from hvlib.errors import (
    AlreadyExists,
    DomainNotFound,
    HvlibError,
    MigrationError,
    MigrationTimeout,
    SpecError,
    Unsupported,
)
from hvlib.model.checks import check_seconds
from hvlib.virt import _virt
from hvlib.virt._parts import DomainParts, HostLike
from hvlib.virt.deadline import LONG_CALL_TIMEOUT
from hvlib.virt.remote import display_uri
from hvlib.virt.snapshot import Snapshots

log = logging.getLogger("hvlib")

Progress = Callable[[dict[str, Any]], None]
"""Called with each job reading: libvirt's ``jobStats()`` keys (``time_elapsed`` ms,
``data_total``/``data_processed``/``data_remaining`` bytes, ``memory_*``, ``disk_*``...)."""
POLL_INTERVAL = 0.5
ABORT_GRACE = 60.0
"""Seconds allowed for libvirt to wind a migration down after an abort, before hvlib gives
up waiting."""
_REFUSALS = (Unsupported, AlreadyExists, SpecError)


@dataclass
class _Watch:
    """What the watcher thread saw."""

    last: dict[str, Any] | None = None
    readings: int = 0
    abort_reason: str | None = None


@dataclass(frozen=True)
class _Plan:
    flags: int
    params: dict[str, Any]
    offline: bool
    hand_over_paused: bool


class Mobility(DomainParts):
    """Snapshots and migration for a domain (mixed into :class:`hvlib.Domain`)."""

    migration_stats: dict[str, Any] | None = None
    """On a Domain returned by :meth:`migrate`: libvirt's statistics of the completed
    migration (``downtime`` ms, ``time_elapsed`` ms, ``data_processed`` bytes...), if any."""

    @property
    def snapshots(self) -> Snapshots:
        """This domain's snapshots (see :class:`hvlib.virt.snapshot.Snapshots`)."""
        return Snapshots(self)

    def migrate(
        self,
        dest: HostLike,
        *,
        live: bool = True,
        copy_storage: bool = False,
        timeout: float | None = None,
        bandwidth_mib: int | None = None,
        progress: Progress | None = None,
        dest_address: str | None = None,
        poll_interval: float = POLL_INTERVAL,
        capture_console: bool = True,
    ) -> Self:
        """Move this domain to host ``dest``; return its Domain there.

        A running or paused guest moves live (``live=False``: paused during the move); with
        ``copy_storage`` its disks are copied too (the destination creates them in its pool
        of the same name, or at the same path). A stopped persistent domain moves offline
        (its definition only). ``timeout``: abort past that many seconds. ``bandwidth_mib``:
        at most that many MiB/s. ``progress``: called with each job reading (every
        ``poll_interval`` s; exceptions it raises are logged and ignored). ``dest_address``:
        the destination's address as the *source* host reaches it (the migration stream and
        the disk copy go there; default: libvirt asks the destination for its hostname).
        ``capture_console``: when hvlib captures this domain's console, carry the capture
        over to the destination without losing a line.

        Raises:
            SpecError: a bad argument (bandwidth, timeout, ``dest`` is this domain's host
                or not a Host, ``dest_address`` is not an IP address or a host name).
            DomainNotFound: the domain exists neither here nor (same uuid) on ``dest``.
            Unsupported: ``copy_storage`` for a stopped domain (libvirt 9.0 cannot), a
                stopped transient domain, or the driver cannot migrate.
            AlreadyExists: ``dest`` has another domain of that name.
            MigrationTimeout: aborted at ``timeout``; the guest runs on the source.
            MigrationError: anything else failed; the guest runs on one side only
                (``.running_on``).
        """
        _check_args(self.host, dest, timeout, bandwidth_mib, poll_interval)
        _check_dest_address(dest_address)
        state = self.state
        if state is State.ABSENT:
            return self._already_there(dest)
        plan = self._plan(state, live, copy_storage, bandwidth_mib, dest_address, capture_console)
        _ = self.virt  # read (and kept) now: the arrival is typed from it, and the source goes
        return self._run(dest, plan, state, timeout, progress, poll_interval)

    def _already_there(self, dest: HostLike) -> Self:
        try:
            handle = dest.call(lambda c: c.lookupByUUIDString(self.uuid), name=self.name, safe=True)
        except DomainNotFound:
            raise DomainNotFound(
                f"{self.name} exists neither on {display_uri(self.host.uri)} nor on "
                f"{display_uri(dest.uri)}",
                name=self.name,
            ) from None
        log.info("%s is on %s already: nothing to migrate", self.name, display_uri(dest.uri))
        return type(self)(dest, handle)

    def _plan(
        self,
        state: State,
        live: bool,
        copy_storage: bool,
        bandwidth_mib: int | None,
        dest_address: str | None,
        capture_console: bool,
    ) -> _Plan:
        C = _virt.C
        persistent = bool(self._read(lambda h: h.isPersistent()))
        flags = 0
        if persistent:
            flags |= C.VIR_MIGRATE_PERSIST_DEST | C.VIR_MIGRATE_UNDEFINE_SOURCE
        params: dict[str, Any] = {}
        if not state.is_active:
            if copy_storage:
                raise Unsupported(
                    f"{self.name} is stopped: libvirt 9.0 migrates a stopped domain's "
                    "definition only and cannot copy its storage (copy the volumes first)",
                    name=self.name,
                    field="copy_storage",
                )
            if not persistent:
                rule = f"{self.name}: a stopped transient domain cannot migrate"
                raise Unsupported(rule, name=self.name, field=None)
            return _Plan(flags | C.VIR_MIGRATE_OFFLINE, params, True, False)
        if live:
            flags |= C.VIR_MIGRATE_LIVE
        if copy_storage:
            flags |= C.VIR_MIGRATE_NON_SHARED_DISK
        hand_over_paused = capture_console and state is State.RUNNING and self.console is not None
        if hand_over_paused:
            flags |= C.VIR_MIGRATE_PAUSED
        if bandwidth_mib is not None:
            params[C.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_mib
        if dest_address is not None:
            host = f"[{dest_address}]" if ":" in dest_address else dest_address
            params[C.VIR_MIGRATE_PARAM_URI] = f"tcp://{host}"
            params[C.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = dest_address
        return _Plan(flags, params, False, hand_over_paused)

    def _run(
        self,
        dest: HostLike,
        plan: _Plan,
        state: State,
        timeout: float | None,
        progress: Progress | None,
        poll_interval: float,
    ) -> Self:
        dest_conn = dest.conn
        watch, done = _Watch(), threading.Event()
        watcher = threading.Thread(
            target=self._watch,
            args=(dest_conn, watch, done, timeout, progress, poll_interval),
            name=f"hvlib-migrate-{self.name}",
            daemon=True,
        )
        kind = (
            "offline"
            if plan.offline
            else ("live" if plan.flags & _virt.C.VIR_MIGRATE_LIVE else "paused")
        )
        log.info(
            "%s: %s migration %s -> %s",
            self.name,
            kind,
            display_uri(self.host.uri),
            display_uri(dest.uri),
        )
        started = time.monotonic()
        if not plan.offline:
            watcher.start()
        try:
            handle = self._write(
                lambda h: h.migrate3(dest_conn, plan.params, plan.flags),
                timeout=self._call_deadline(timeout),
            )
        except HvlibError as e:
            done.set()
            failure = self._failed(dest, dest_conn, e, watch, state)
            if isinstance(e, _REFUSALS) and watch.abort_reason is None:
                raise  # refused before anything moved: libvirt's own error says why
            raise failure from e
        finally:
            done.set()
            if watcher.is_alive():
                watcher.join()
        return self._arrived(dest, handle, plan, time.monotonic() - started)

    def _call_deadline(self, timeout: float | None) -> float:
        """The deadline for the migrate3 call itself: well past the migration's own timeout,
        or :data:`hvlib.virt.deadline.LONG_CALL_TIMEOUT` without one."""
        return (timeout if timeout is not None else LONG_CALL_TIMEOUT) + ABORT_GRACE

    def _watch(
        self,
        dest_conn: Any,
        watch: _Watch,
        done: threading.Event,
        timeout: float | None,
        progress: Progress | None,
        poll_interval: float,
    ) -> None:
        """Poll the job until ``done``; report progress; abort at the deadline or when the
        destination's connection is lost."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(poll_interval):
            reading = self._job_reading()
            if reading is not None and not done.is_set():
                watch.last, watch.readings = reading, watch.readings + 1
                _report(progress, reading, self.name)
            reason = None
            if deadline is not None and time.monotonic() >= deadline:
                reason = "timeout"
            elif not _alive(dest_conn):
                reason = "destination lost"
            if reason is not None and watch.abort_reason is None and not done.is_set():
                watch.abort_reason = reason
                log.warning("%s: aborting the migration (%s)", self.name, reason)
                with contextlib.suppress(HvlibError):
                    self._write(lambda h: h.abortJob(), timeout=10)

    def _job_reading(self) -> dict[str, Any] | None:
        try:
            stats: dict[str, Any] = self._write(lambda h: h.jobStats(0), timeout=10)
        except HvlibError as e:
            log.debug("%s: no job reading: %s", self.name, e)
            return None
        if stats.get("type", 0) == _virt.C.VIR_DOMAIN_JOB_NONE:
            return None
        return stats

    def _arrived(self, dest: HostLike, handle: Any, plan: _Plan, elapsed: float) -> Self:
        """The destination's Domain: console capture reopened and the guest resumed when it
        was handed over paused; libvirt's figures of the completed job kept on it.

        Raises:
            MigrationError: it arrived but could not be resumed (it is paused there).
        """
        there = type(self)(dest, handle, self.virt)
        there.ssh = getattr(self, "ssh", None)
        handover = self._hand_over(there) if plan.hand_over_paused else None
        stats: dict[str, Any] | None = None
        with contextlib.suppress(HvlibError):
            stats = there._read(lambda h: h.jobStats(_virt.C.VIR_DOMAIN_JOB_STATS_COMPLETED))
        # set through object.__setattr__ so this also holds while Domain lacks the mixin
        object.__setattr__(there, "migration_stats", stats)
        downtime = (stats or {}).get("downtime")
        log.info(
            "%s: migrated to %s in %.2f s%s%s",
            self.name,
            display_uri(dest.uri),
            elapsed,
            f"; libvirt's downtime {downtime} ms" if downtime is not None else "",
            f"; console reopened and resumed in {handover * 1000:.0f} ms"
            if handover is not None
            else "",
        )
        return there

    def _hand_over(self, there: Self) -> float:
        """Open the console capture of the paused arrival, then resume it; return the time
        that took (the guest is paused meanwhile).

        Raises:
            MigrationError: the resume failed.
        """
        started = time.monotonic()
        try:
            there._capture_console()
        finally:
            try:
                there._write(lambda h: h.resume())
            except HvlibError as e:
                raise MigrationError(
                    f"{self.name} migrated to {display_uri(there.host.uri)} but could not be "
                    f"resumed there ({e}); it is paused there",
                    name=self.name,
                    running_on=None,
                    reason="resume failed",
                    code=e.code,
                ) from e
        return time.monotonic() - started

    def _failed(
        self, dest: HostLike, dest_conn: Any, error: HvlibError, watch: _Watch, state: State
    ) -> MigrationError:
        """Leave the guest on one side (see :func:`reconcile`) and describe the failure."""
        reason = watch.abort_reason or "failed"
        try:
            running_on = reconcile(self, dest, dest_conn, was=state)
        except HvlibError as e:
            log.error("%s: after a failed migration, cannot settle where it runs: %s", self.name, e)
            running_on = None
        what = {
            "timeout": "it did not complete in time and was aborted",
            "destination lost": "the connection to the destination was lost; it was aborted",
        }.get(reason, "it failed")
        where = (
            f"{self.name} runs on {display_uri(running_on)}"
            if running_on
            else "where it runs is unknown"
        )
        message = f"migration of {self.name} to {display_uri(dest.uri)}: {what} ({error}); {where}"
        cls = MigrationTimeout if reason == "timeout" else MigrationError
        return cls(
            message,
            name=self.name,
            running_on=running_on,
            job=watch.last,
            reason=reason,
            code=error.code,
        )


def reconcile(source: Mobility, dest: HostLike, dest_conn: Any, *, was: State) -> str | None:
    """After a failed migration, make the guest run on exactly one side; return that side's
    URI (None if neither side can be asked).

    The destination's copy wins only if it is running (libvirt resumed it there: the
    source's copy is stale and is destroyed). Otherwise the source wins: a leftover copy on
    the destination is destroyed, and a source that was running and is left paused by the
    migration is resumed. An unreachable destination cannot have resumed its copy (only its
    libvirtd could), so the source wins then too.

    Raises:
        HvlibError: a libvirt call on the source failed.
    """
    there = _dest_copy(source, dest, dest_conn)
    if there is not None and there.state is State.RUNNING:
        log.warning("%s: it runs on the destination: stopping the stale source copy", source.name)
        source.destroy()
        return dest.uri
    if there is not None and there.state.is_active:
        log.warning("%s: removing the half-migrated copy on %s", source.name, display_uri(dest.uri))
        there.destroy()
    state = source.state
    if was is State.RUNNING and state is State.PAUSED:
        source._write(lambda h: h.resume())
        state = State.RUNNING
    if state is State.ABSENT:
        return dest.uri if there is not None else None
    return source.host.uri


def _dest_copy(source: Mobility, dest: HostLike, dest_conn: Any) -> Mobility | None:
    """The destination's domain of ``source``'s uuid, or None (also when it cannot be asked)."""
    if not _alive(dest_conn):
        return None
    try:
        handle = dest.call(lambda c: c.lookupByUUIDString(source.uuid), timeout=10)
    except HvlibError:
        return None
    return type(source)(dest, handle)


def _alive(conn: Any) -> bool:
    """Whether a raw libvirt connection is still open (a local check, no RPC)."""
    try:
        with _virt.translated():
            return bool(conn.isAlive())
    except Exception:
        return False


def _report(progress: Progress | None, reading: dict[str, Any], name: str) -> None:
    if progress is None:
        return
    try:
        progress(dict(reading))
    except Exception as e:  # a progress display must not break a migration
        log.warning("%s: the progress callback raised %r (ignored)", name, e)


def _check_args(
    src: HostLike,
    dest: HostLike,
    timeout: float | None,
    bandwidth_mib: int | None,
    poll_interval: float,
) -> None:
    if not isinstance(dest, type(src)):
        raise SpecError("dest", "must be an hvlib.Host (hvlib.connect(uri))", dest)
    if dest is src:
        raise SpecError("dest", "is the host the domain is on already")
    if timeout is not None:
        check_seconds("timeout", timeout, positive=True)
    if bandwidth_mib is not None and (
        isinstance(bandwidth_mib, bool) or not isinstance(bandwidth_mib, int) or bandwidth_mib < 1
    ):
        raise SpecError("bandwidth_mib", "must be a positive integer (MiB/s)", bandwidth_mib)
    check_seconds("poll_interval", poll_interval, positive=True)


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")


def _check_dest_address(address: object) -> None:
    """``dest_address`` goes into the migration URI ``tcp://ADDRESS``: it must be an IP
    address or a host name, nothing that could add a port, a path or options to that URI.

    Raises:
        SpecError: naming ``dest_address``.
    """
    if address is None:
        return
    if isinstance(address, str):
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(address)
            return
        if _HOSTNAME.fullmatch(address) and not address.startswith("-"):
            return
    raise SpecError("dest_address", "must be an IP address or a host name", address)
