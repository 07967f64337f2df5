"""The transport seam: how a command reaches the inside of a guest.

One interface, two implementations: :class:`hvlib.guest.sshtransport.SshTransport` (VMs) and
:class:`hvlib.guest.container.ContainerTransport` (LXC). Which one a domain uses is data: its
type's :attr:`hvlib.model.profiles.Profile.transport`. A transport keeps no reference to the
domain (it is handed the :class:`~hvlib.guest.target.GuestTarget` on each call), so a
domain object and its open sessions can be freed together.
"""

from __future__ import annotations

from typing import Protocol

from hvlib.guest.config import CommandResult, SshConfig
from hvlib.guest.io import Input, OutputSink
from hvlib.guest.progress import Progress
from hvlib.guest.target import GuestTarget


class Transport(Protocol):
    """Runs commands inside one guest."""

    waits_for_address: bool
    """True if ``Ready.ADDRESS`` waits through the domain's address wait (a VM's NICs);
    False if it polls :meth:`GuestTarget.addresses` like any other probe."""

    def run(
        self,
        target: GuestTarget,
        command: str | tuple[str, ...],
        *,
        input: Input | None,
        timeout: float | None,
        sink: OutputSink,
        ssh: SshConfig | None,
    ) -> CommandResult:
        """Run a checked command (see :func:`hvlib.guest.io.normalize_command`).

        Raises:
            CommandTimeout, ConnectionLost, HostKeyError, GuestAccessError: as for
                :meth:`hvlib.Domain.exec`.
        """

    def attempt_ready(
        self, target: GuestTarget, progress: Progress, deadline: float, ssh: SshConfig | None
    ) -> None:
        """One try of ``Ready.SSH``: a command runs in the guest.

        Raises:
            _NotReady: not yet (retried). HostKeyError: refused (never retried).
        """

    def close(self) -> None:
        """Close what the transport keeps open (idempotent)."""
