"""The transport seam: how a command reaches the inside of a guest.

One interface, two implementations: :class:`hvlib.guest.sshtransport.SshTransport` (VMs) and
:class:`hvlib.guest.container.ContainerTransport` (LXC). Which one a domain uses is data: its
type's :attr:`hvlib.model.profiles.Profile.transport`. A transport keeps no reference to the
domain (it is handed the :class:`~hvlib.guest.target.GuestTarget` on each call), so a
domain object and its open sessions can be freed together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from hvlib.guest.config import CommandResult, SshConfig
from hvlib.guest.io import Input, OutputSink
from hvlib.guest.progress import Progress
from hvlib.guest.target import GuestTarget


@dataclass(frozen=True)
class Invocation:
    """One command for a transport to run: ``argv`` checked by
    :func:`hvlib.guest.io.normalize_command` (a string goes through ``/bin/sh -c``), fed
    ``input``, given up after ``timeout`` s (None: no limit), its output handed to ``sink``;
    ``ssh``: the credentials for this call (None: the domain's, else its host's; the
    container and agent transports need none)."""

    argv: str | tuple[str, ...]
    input: Input | None = None
    timeout: float | None = None
    sink: OutputSink = field(default_factory=OutputSink)
    ssh: SshConfig | None = None


class Transport(Protocol):
    """Runs commands inside one guest."""

    waits_for_address: bool
    """True if ``Ready.ADDRESS`` waits through the domain's address wait (a VM's NICs);
    False if it polls :meth:`GuestTarget.addresses` like any other probe."""

    def run(self, target: GuestTarget, command: Invocation) -> CommandResult:
        """Run ``command`` in ``target``.

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
