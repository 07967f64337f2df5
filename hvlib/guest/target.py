"""What the guest layer needs of a domain, as Protocols: the seam between guest and virt.

:class:`hvlib.Domain` (in :mod:`hvlib.virt.domain`) satisfies :class:`GuestTarget`; the
guest layer never imports it. A test's stand-in satisfies it too (no libvirt needed).
Declarations only: no code runs here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from hvlib.enums import State, VirtType
from hvlib.guest.config import SshConfig

IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class HostSide(Protocol):
    """What the guest layer needs of the host a domain is on."""

    @property
    def netns(self) -> str | None:
        """The network namespace in which to open sockets toward guests (None: this one)."""

    @property
    def ssh(self) -> SshConfig | None:
        """The host's default SSH credentials for its guests."""


class ConsoleLines(Protocol):
    """A captured console that can be waited on for a line."""

    def wait_for(self, pattern: str, timeout: float) -> str:
        """Block until a console line matches ``pattern``; return it.

        Raises:
            WaitTimeout: no such line within ``timeout`` s.
        """


class GuestTarget(Protocol):
    """A domain as the guest layer sees it: identity, run state, where to reach it."""

    ssh: SshConfig | None
    """This domain's own SSH credentials (None: the host's)."""

    @property
    def name(self) -> str: ...

    @property
    def virt(self) -> VirtType: ...

    @property
    def state(self) -> State: ...

    @property
    def host(self) -> HostSide: ...

    @property
    def console(self) -> ConsoleLines | None: ...

    def addresses(self) -> Mapping[str, Sequence[IPInterface]]:
        """The guest's addresses per NIC (MAC)."""

    def wait_for_address(self, timeout: float = ..., *, nics: str = ...) -> object:
        """Block until the NICs (``"any"`` or ``"all"``) have an address."""

    def agent_command(self, command: dict[str, Any], timeout: float) -> Any:
        """Send one command to the QEMU guest agent; the answer's ``return`` member.

        Raises:
            GuestAccessError: the agent did not answer or refused. InvalidState: not running.
        """

    def container_namespaces(self) -> list[int]:
        """File descriptors of a running container's namespaces (the caller closes them).

        Raises:
            InvalidState: not running, or its init has not started yet.
            Unsupported: not a container, or the connection cannot pass descriptors.
        """
