"""Starting an LXC container: whether libvirt learned its init, and an init that exits at once.

:class:`ContainerStart` is mixed into :class:`hvlib.Domain` (it uses the members
:class:`hvlib.virt._parts.DomainParts` declares); :meth:`hvlib.Domain.start` calls it after
``create()`` of a container. Libvirt is called only through the Domain's ``_read``; the
controller's sockets and the init's /proc entries are read by :mod:`hvlib.virt.lxcmonitor`.
"""

from __future__ import annotations

import logging
import os
import time

from hvlib.errors import HvlibError, InvalidState, LibvirtError, Unsupported
from hvlib.virt import lxcmonitor
from hvlib.virt._parts import DomainParts

log = logging.getLogger("hvlib")

INIT_WAITS = (0.5, 1.0, 2.0, 5.0, 5.0, 5.0)
"""Seconds each start waits for libvirt to learn the container's init while libvirtd still
holds its monitor connection (a start whose monitor connection libvirt dropped is retried at
once: :func:`hvlib.virt.lxcmonitor.monitor_lost`). When libvirt learns the init at all, it knows it
within 6 ms of create() returning (bench B6); the longer waits are for a loaded host."""
LXC_START_ATTEMPTS = len(INIT_WAITS)
"""Starts tried before giving up on a container whose init libvirt never learns. Measured
on libvirt 9.0 (NOTES: "The LXC start race"): 4.5-13 % of starts lose the init event, each
start independently, so six starts all fail about once in 10**5-10**6 calls."""
INIT_POLL = 0.01
"""Seconds between checks that libvirt knows a started container's init."""
LOST_CONFIRM = 0.2
"""Seconds :func:`hvlib.virt.lxcmonitor.monitor_lost` must hold before a start counts as
lost. A lost monitor stays lost; but while libvirtd's connection waits in the controller's
listen backlog (not yet accepted) nothing is connected either: on a loaded host a start was
seen read as lost whose init libvirt then learned (integration/test_sandbox.py)."""
INIT_SETTLE = 0.25
"""Seconds a container start watches its init after libvirt knows it: an init that exits
within them (systemd refused its cgroup: "Exiting PID 1") fails the start with the console's
tail. Watched through /proc where the controller is visible (an exit is seen within
INIT_POLL), else through libvirt's state. Measured (kit container, init exits at once):
libvirt reported it shut off 0.22-0.29 s after start() returned."""
INIT_GONE_WAIT = 5.0
"""Seconds to wait for libvirt to report a container off once its init has exited."""
CONSOLE_TAIL_LINES = 20


class ContainerStart(DomainParts):
    """What a container's start checks once libvirt has created it (a mix-in)."""

    def _init_known(self, wait: float) -> bool:
        """Whether libvirt knows the started container's init (it can then be entered, shut
        down, and its exit seen). libvirt 9.0 loses it in about one start in ten: its event
        loop reads the controller's ``init`` event before the monitor's program is added,
        finds no program, and closes the monitor (README, "The LXC start race"). Such a
        start is recognised within :data:`LOST_CONFIRM` s where the controller's sockets can
        be read (:func:`hvlib.virt.lxcmonitor.monitor_lost`), else after ``wait`` s. True
        where it cannot be checked (a remote connection cannot pass descriptors)."""
        deadline = time.monotonic() + wait
        controller: int | None = None
        lost_since: float | None = None
        while True:
            try:
                for fd in self.container_namespaces():
                    os.close(fd)
                return True
            except InvalidState:
                if not self.state.is_active:
                    raise self._init_exited() from None
                if controller is None:
                    controller = int(self._read(lambda h: h.ID()))
                now = time.monotonic()
                if not lxcmonitor.monitor_lost(controller, self.name):
                    lost_since = None
                elif lost_since is None:
                    lost_since = now
                elif now - lost_since >= LOST_CONFIRM:
                    log.info("%s: libvirt dropped its monitor of the container", self.name)
                    return False
                if now >= deadline:
                    return False
                time.sleep(INIT_POLL)
            except (Unsupported, LibvirtError):
                return True

    def _watch_init(self, settle: float) -> None:
        """Raise if the started container's init exits within ``settle`` s (INIT_SETTLE)."""
        deadline = time.monotonic() + settle
        init = self._init_pid()
        while time.monotonic() < deadline:
            gone = init is not None and not lxcmonitor.alive(init)
            if gone or not self.state.is_active:
                self._wait_inactive(INIT_GONE_WAIT)
                raise self._init_exited()
            time.sleep(INIT_POLL)

    def _init_pid(self) -> int | None:
        """The host pid of this running container's init, where this process can see it (the
        same pid namespace as libvirtd); else None."""
        try:
            fds = self.container_namespaces()
        except HvlibError:
            return None
        try:
            links = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
        except OSError:
            return None
        finally:
            for fd in fds:
                os.close(fd)
        pid_ns = next((link for link in links if link.startswith("pid:")), None)
        return None if pid_ns is None else lxcmonitor.find_init(self.name, pid_ns)

    def _init_exited(self) -> InvalidState:
        """The error of a start whose container init exited at once, with the console tail."""
        log_bytes = self.console_log() if self.console is not None else b""
        lines = log_bytes.decode("utf-8", "replace").replace("\r", "").splitlines()
        tail = "\n".join(lines[-CONSOLE_TAIL_LINES:]) or "(nothing on its console)"
        state = self.state
        return InvalidState(
            f"{self.name}: its init exited during the start (the container is "
            f"{state.value}); the console's last lines:\n{tail}",
            name=self.name,
            state=state,
        )
