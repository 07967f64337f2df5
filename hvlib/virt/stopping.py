"""Stopping a domain: graceful shutdown (forced past a deadline), destroy and undefine.

:class:`Stopping` is mixed into :class:`hvlib.Domain` (it uses the members
:class:`hvlib.virt._parts.DomainParts` declares); :meth:`Stopping.shutdown` returns a
:class:`ShutdownResult`. Libvirt is called only through the Domain's ``_read``/``_write``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvlib.enums import State
from hvlib.errors import CallTimeout, DomainNotFound, InvalidState, WaitTimeout
from hvlib.model.checks import check_bool, check_seconds
from hvlib.virt import _virt, lxcmonitor
from hvlib.virt._parts import DomainParts

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

NOT_READY_RETRY = 0.1
"""Seconds before re-asking a guest that could not take a shutdown request yet."""
TEARDOWN_POLL = 0.05
"""Seconds between checks that a domain reported shut off is also torn down (libxl)."""
_UNDEFINE_FLAGS = (
    "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA",
    "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE",
    "VIR_DOMAIN_UNDEFINE_NVRAM",
    "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA",
)
"""What an undefine removes with the definition, most needed first, where the driver takes
the flag (libvirt 9.0's test driver takes only the first two, and refuses the whole call for
a third: it then kept no domain that had snapshots)."""
_UNDEFINE_MASKS: weakref.WeakKeyDictionary[HostLike, tuple[int, int]] = weakref.WeakKeyDictionary()
"""Per host: (connection generation, the undefine flags its driver took)."""
_SHUTDOWN_MODES: weakref.WeakKeyDictionary[HostLike, dict[str, int]] = weakref.WeakKeyDictionary()
"""Per host, per container uuid: the shutdown flags of the request its last graceful shutdown
followed (what works for its init), tried first the next time."""
INITCTL_INITS = ("systemd", "init", "upstart")
"""Init programs (the basename of the container init's executable) that take libvirt's
initctl request and ignore SIGTERM as PID 1: systemd re-executes itself on SIGTERM, sysvinit
ignores it. Their shutdown tries libvirt's default (initctl, then SIGTERM) first."""


@dataclass(frozen=True)
class ShutdownResult:
    """What :meth:`Domain.shutdown` did: ``graceful`` False means it had to destroy."""

    graceful: bool
    elapsed: float
    requests: int = 0
    """How many shutdown requests were sent (0: it was already off)."""


def _undefine_flag_sets(first: int | None) -> Iterator[int]:
    """The undefine flag sets to try: ``first`` (what the driver took before), then every
    subset of :data:`_UNDEFINE_FLAGS` this libvirt-python has, larger sets first and, among
    sets of one size, those with the more needed flags first; 0 last."""
    if first is not None:
        yield first
    values = [v for v in (getattr(_virt.C, n, 0) for n in _UNDEFINE_FLAGS) if v]
    subsets = [
        combo
        for size in range(len(values), -1, -1)
        for combo in itertools.combinations(values, size)
    ]  # combinations() keeps the order of ``values``: the more needed flags come first
    for combo in subsets:
        flags = functools.reduce(lambda a, b: a | b, combo, 0)
        if flags != first:
            yield flags


class Stopping(DomainParts):
    """Shutdown, destroy and undefine of a :class:`hvlib.Domain` (a mix-in)."""

    def shutdown(
        self, timeout: float = 60.0, *, force: bool = True, resend_interval: float = 5.0
    ) -> ShutdownResult:
        """Shut down gracefully: send ACPI (or the container's init) a request, re-sent every
        ``resend_interval`` s, until the domain is off; past ``timeout``, destroy it.

        Returns what happened. A domain that is already off (or absent) gives
        ``ShutdownResult(graceful=True, elapsed=0.0, requests=0)``.

        Raises:
            WaitTimeout: ``force=False`` and the guest did not stop in time (it keeps running).
            SpecError: ``timeout`` is not a finite number of seconds >= 0, ``resend_interval``
                not one > 0, or ``force`` not a bool.
        """
        timeout = check_seconds("timeout", timeout)
        resend_interval = check_seconds("resend_interval", resend_interval, positive=True)
        check_bool("force", force)
        started = time.monotonic()
        deadline = started + timeout
        requests = 0
        while self.state.is_active:
            if deadline - time.monotonic() <= 0:
                return self._shutdown_timed_out(started, requests, force, timeout)
            sent = self._request_shutdown(requests, deadline - time.monotonic())
            requests += sent
            pause = resend_interval if sent else NOT_READY_RETRY
            if self._wait_inactive(max(0.0, min(pause, deadline - time.monotonic()))):
                self._learn_shutdown()
                break
        return ShutdownResult(True, time.monotonic() - started, requests)

    def _request_shutdown(self, attempt: int, timeout: float) -> bool:
        """Send one shutdown request; False if the guest cannot take one yet.

        VMs get ACPI. Containers alternate: first SIGTERM to their init (libvirt's
        ``SIGNAL`` mode), then libvirt's default (initctl, then SIGTERM). The default alone was
        seen to report success without signalling a busybox init (libvirt 9.0), while an init
        such as systemd wants initctl (it ignores SIGTERM: a SIGTERM first cost it a whole
        ``resend_interval``). So the order is learned: the mode that last shut this
        container down gracefully goes first; before any, the init's program decides
        (:data:`INITCTL_INITS`, read from /proc where the controller is visible). Right
        after a container starts, libvirt refuses with "Init process ID is not yet known":
        that is retried within 0.1 s, not counted.
        A request libvirt does not answer within ``timeout`` s (a frozen guest blocks its
        monitor) counts as sent: the deadline then decides.
        """
        flags = self._container_modes()[attempt % 2] if self.virt.is_container else 0
        self.__dict__["_hvlib_last_shutdown"] = flags
        try:
            self._write(lambda h: self._shutdown_flags(h, flags), timeout=timeout)
        except (DomainNotFound, CallTimeout):
            return True  # vanished meanwhile, or the guest's monitor does not answer
        except InvalidState:
            return not self.state.is_active  # stopped meanwhile; else: not ready for it yet
        return True

    def _container_modes(self) -> tuple[int, int]:
        """The two shutdown modes a container alternates, the one to try first first."""
        signal, default = _virt.C.VIR_DOMAIN_SHUTDOWN_SIGNAL, 0
        learned = _SHUTDOWN_MODES.get(self.host, {}).get(self.uuid)
        if learned is None:
            learned = default if self._init_takes_initctl() else signal
            _SHUTDOWN_MODES.setdefault(self.host, {})[self.uuid] = learned
        return (learned, signal if learned == default else default)

    def _init_takes_initctl(self) -> bool:
        """Whether the running container's init is one of :data:`INITCTL_INITS` (False if
        that cannot be read here: a remote host, another pid namespace)."""
        init = self._init_pid()
        program = lxcmonitor.program_of(init) if init is not None else None
        return program is not None and os.path.basename(program) in INITCTL_INITS

    def _learn_shutdown(self) -> None:
        """Remember the mode of the last request sent: it shut the container down."""
        flags = self.__dict__.pop("_hvlib_last_shutdown", None)
        if self.virt.is_container and flags is not None:
            _SHUTDOWN_MODES.setdefault(self.host, {})[self.uuid] = flags

    @staticmethod
    def _shutdown_flags(handle: Any, flags: int) -> None:
        try:
            handle.shutdownFlags(flags)
        except Exception as e:  # a driver without that mode (the test driver): its default
            if not flags or _virt.code_of(e) != _virt.C.VIR_ERR_INVALID_ARG:
                raise
            handle.shutdownFlags(0)

    def _wait_inactive(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        try:
            self.wait_for((State.SHUT_OFF, State.ABSENT, State.CRASHED), timeout=timeout)
        except WaitTimeout:
            return False
        return self._wait_torn_down(deadline)

    def _wait_torn_down(self, deadline: float) -> bool:
        """Wait until libvirt no longer counts the domain as active; False at ``deadline``.

        libvirt's Xen (libxl) driver reports shut-off before its clean-up thread has torn the
        domain down (seen on Xen 4.17 with libvirt 9.0 after a guest's ACPI power-off): an
        undefine in that window only made the domain transient, and it stayed listed.
        """
        while True:
            try:
                if not self._read(lambda h: h.isActive()):
                    return True
            except DomainNotFound:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(TEARDOWN_POLL)

    def _shutdown_timed_out(
        self, started: float, requests: int, force: bool, timeout: float
    ) -> ShutdownResult:
        if not force:
            raise WaitTimeout(
                f"{self.name} did not shut down within {timeout:g} s",
                name=self.name,
                waited=time.monotonic() - started,
                last=self.state,
            )
        self.destroy()
        return ShutdownResult(False, time.monotonic() - started, requests)

    def destroy(self) -> None:
        """Stop the domain at once (power off); a no-op if it is off or absent. The console
        capture stops first, in this thread (what it captured stays readable): aborting its
        stream from libvirt's event thread once the console hangs up, while this thread's
        next call is answered, makes libvirtd 9.0 lose that answer (README, "The B6 hang")."""
        if not self.state.is_active:
            return
        capture = self.console
        if capture is not None:
            with self.host.connection.bounded(name=self.name, reconnect=False):
                capture.close()
        with contextlib.suppress(InvalidState, DomainNotFound):  # it stopped meanwhile
            self._write(lambda h: h.destroy())

    def undefine(self) -> None:
        """Remove the persistent definition with its snapshot metadata, managed save image,
        NVRAM and checkpoint metadata (each where the driver has it); a no-op if the domain
        is absent. A running domain keeps running, transient. The snapshots' data (inside
        qcow2 images, or overlay files) stays on disk.

        A driver refuses an undefine flag it does not know (``VIR_ERR_INVALID_ARG``) as a
        whole, so the largest set of these flags the driver takes is found by trying them,
        most needed first, and remembered for the host's connection.

        Raises:
            LibvirtError, InvalidState: libvirt refused (the message says why).
        """
        try:
            self._write(self._undefine)
        except DomainNotFound:
            return

    def _undefine(self, handle: Any) -> None:
        known = _UNDEFINE_MASKS.get(self.host)
        first = known[1] if known is not None and known[0] == self.host.generation else None
        for flags in _undefine_flag_sets(first):
            try:
                handle.undefineFlags(flags)
            except Exception as e:
                code = _virt.code_of(e)
                if code == _virt.C.VIR_ERR_NO_SUPPORT:  # a driver without undefineFlags
                    handle.undefine()
                    return
                if code != _virt.C.VIR_ERR_INVALID_ARG or not flags:
                    raise
                continue
            _UNDEFINE_MASKS[self.host] = (self.host.generation, flags)
            return
