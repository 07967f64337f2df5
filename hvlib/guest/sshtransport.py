"""The SSH transport of VM guests: commands over a kept SSH session, and the SSH readiness try.

Sessions are opened on first use (inside the host's network namespace, when it has one) and
kept for the next commands, one per address, port and :class:`~hvlib.guest.config.SshConfig`;
a kept session that died before a command could start is replaced once, within the command's
timeout. paramiko is imported on first use (:mod:`hvlib.guest.ssh`), not with this module.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

from hvlib.errors import ChannelOpenError, GuestAccessError
from hvlib.guest.config import CommandResult, SshConfig
from hvlib.guest.progress import Progress, _NotReady, not_ready
from hvlib.guest.target import GuestTarget
from hvlib.guest.transport import Invocation

if TYPE_CHECKING:
    from hvlib.guest.ssh import SshSession

IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface

PROBE_CONNECT_TIMEOUTS = (0.1, 0.25, 0.5, 1.0)
"""Seconds the SSH readiness probe waits for a TCP connection on its first, second, ... try
that got that far (the last for every later one). A guest's address is known (from the DHCP
server's lease) a moment before the guest has configured it; a SYN sent in that moment is
dropped, and the kernel would send it again only a second later: the first tries are short, a
slow network still gets its second."""


def _left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (at least a sliver, so a timeout still fires)."""
    return None if deadline is None else max(0.05, deadline - time.monotonic())


def _connect_budget(config: SshConfig, deadline: float | None) -> float:
    """The connect timeout: the config's, cut short by the caller's deadline.

    Raises:
        GuestAccessError: the deadline has passed.
    """
    if deadline is None:
        return config.connect_timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise GuestAccessError("no time left to connect (the command's timeout has passed)")
    return min(config.connect_timeout, left)


class _SessionCache:
    """Open SSH sessions of one Domain object, by (address, port, config)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions: dict[tuple[str, int, SshConfig], SshSession] = {}
        self.retired: list[SshSession] = []
        """Replaced sessions that may still run a command of another thread."""

    def keep(self, key: tuple[str, int, SshConfig], session: SshSession) -> None:
        """Make ``session`` the one for ``key``; a dead predecessor is closed."""
        with self.lock:
            old = self.sessions.get(key)
            self.sessions[key] = session
            self.retired = [s for s in self.retired if s.active]
            if old is not None and old is not session and old.active:
                self.retired.append(old)
        if old is not None and old is not session and not old.active:
            old.close()

    def close(self) -> None:
        with self.lock:
            sessions = [*self.sessions.values(), *self.retired]
            self.sessions, self.retired = {}, []
        for session in sessions:
            session.close()


class SshTransport:
    """Commands in a VM guest over SSH (see the module docstring)."""

    waits_for_address = True

    def __init__(self) -> None:
        self.cache = _SessionCache()

    def close(self) -> None:
        """Close the kept sessions (idempotent)."""
        self.cache.close()

    def run(self, target: GuestTarget, command: Invocation) -> CommandResult:
        """Run ``command`` over a kept (or new) session; see :class:`Transport`."""
        config = ssh_config(target, command.ssh)
        timeout, argv, input, sink = command.timeout, command.argv, command.input, command.sink
        deadline = None if timeout is None else time.monotonic() + timeout
        session, reused = self._session(target, config, deadline=deadline)
        try:
            return session.run(argv, input=input, timeout=_left(deadline), sink=sink)
        except ChannelOpenError:
            if not reused:
                raise
        # the kept session died before the command could start: one try on a fresh one,
        # within what is left of the command's timeout
        session, _ = self._session(target, config, fresh=True, deadline=deadline)
        return session.run(argv, input=input, timeout=_left(deadline), sink=sink)

    def attempt_ready(
        self, target: GuestTarget, progress: Progress, deadline: float, ssh: SshConfig | None
    ) -> None:
        """One SSH readiness attempt; a passing one leaves its session open for exec."""
        from hvlib.guest import ssh as sshmod

        def left(low: float, high: float) -> float:
            return max(low, min(high, deadline - time.monotonic()))

        config = ssh_config(target, ssh)
        progress.reach("address")
        address = ssh_address(target, config, not_ready=True)
        progress.reach("tcp")
        tries = progress.failures.get("tcp", 0)
        connect = PROBE_CONNECT_TIMEOUTS[min(tries, len(PROBE_CONNECT_TIMEOUTS) - 1)]
        with not_ready("tcp"):
            sock = sshmod.open_socket(address, config.port, target.host.netns, left(0.05, connect))
        try:
            progress.reach("banner")
            with not_ready("banner"):
                sshmod.peek_banner(sock, left(0.05, 2.0))
            progress.reach("login")
            with not_ready("login"):
                session = sshmod.SshSession.over(
                    sock, address, config, timeout=left(0.5, 60.0), name=target.name
                )
        except BaseException:
            sock.close()
            raise
        progress.reach("command")
        try:
            with not_ready("command"):
                session.run("true", timeout=left(0.5, 60.0)).check(target.name)
        except BaseException:
            session.close()
            raise
        self.cache.keep((address, config.port, config), session)

    def _session(
        self,
        target: GuestTarget,
        config: SshConfig,
        *,
        fresh: bool = False,
        deadline: float | None = None,
    ) -> tuple[SshSession, bool]:
        """A logged-in session (the kept one if alive); True if it was kept from before.
        A new connection gives up at ``deadline`` (monotonic) if that comes before the
        config's ``connect_timeout``.

        Raises:
            GuestAccessError: no time left, or the connection failed.
        """
        from hvlib.guest import ssh as sshmod

        address = ssh_address(target, config)
        key = (address, config.port, config)
        with self.cache.lock:
            kept = self.cache.sessions.get(key)
        if kept is not None and kept.active and not fresh:
            return kept, True
        session = sshmod.SshSession.open(
            address,
            config,
            netns=target.host.netns,
            timeout=_connect_budget(config, deadline),
            name=target.name,
        )
        self.cache.keep(key, session)
        return session, False


def ssh_config(target: GuestTarget, ssh: SshConfig | None) -> SshConfig:
    """The call's config, else the domain's (``dom.ssh``), else the host's.

    Raises:
        GuestAccessError: none is set.
    """
    for candidate in (ssh, target.ssh, getattr(target.host, "ssh", None)):
        if candidate is not None:
            return candidate
    raise GuestAccessError(
        f"{target.name}: no SSH credentials: pass ssh=SshConfig(...) to hvlib.connect(), "
        "set dom.ssh, or pass ssh= to this call",
        name=target.name,
    )


def ssh_address(target: GuestTarget, config: SshConfig, *, not_ready: bool = False) -> str:
    """Where to reach the guest: ``config.address``, else the address API's pick.

    Raises:
        GuestAccessError (_NotReady with ``not_ready``): the guest has no usable address.
    """
    if config.address:
        return config.address
    address = pick_address(target.addresses())
    if address is not None:
        return address
    if not_ready:
        raise _NotReady("address", "no usable address reported yet")
    raise GuestAccessError(
        f"{target.name}: no usable address (wait_ready() or wait_for_address() first)",
        name=target.name,
    )


def pick_address(addresses: Mapping[str, Sequence[IPInterface]]) -> str | None:
    """The address to reach a guest at: the first IPv4 one, else the first global IPv6 one
    (loopback and link-local addresses skipped), or None."""
    found = [iface.ip for ifaces in addresses.values() for iface in ifaces]
    usable = [ip for ip in found if not (ip.is_loopback or ip.is_link_local)]
    v4 = [ip for ip in usable if ip.version == 4]
    best = (v4 or usable)[:1]
    return str(best[0]) if best else None
