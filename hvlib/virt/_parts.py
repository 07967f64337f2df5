"""The seams inside the virt layer, declared once for type checkers.

:class:`HostLike` is what a host's objects (domains, networks, pools, volumes) and the helpers
below :mod:`hvlib.virt.host` (acceleration, fitting, migration, snapshots) use of the
:class:`hvlib.Host` they belong to: they take it through this Protocol, so none of them
imports the module that builds them. :class:`DomainParts` is what the Domain mix-in
:class:`hvlib.virt.migration.Mobility` may use of the :class:`hvlib.Domain` it is mixed into
(at run time an empty class; :class:`hvlib.Domain` provides every member).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hvlib.guest.config import SshConfig
from hvlib.virt.connection import Connection
from hvlib.virt.console import ConsoleCapture
from hvlib.virt.events import EventHub

if TYPE_CHECKING:
    from hvlib.enums import State, VirtType
    from hvlib.model.domxml import DomainXML

T = TypeVar("T")


class HostLike(Protocol):
    """The connection-level members of :class:`hvlib.Host` (see the module docstring)."""

    @property
    def uri(self) -> str: ...

    @property
    def connection(self) -> Connection: ...

    @property
    def consoles(self) -> dict[str, ConsoleCapture]: ...

    @property
    def event_hub(self) -> EventHub: ...

    @property
    def poll_interval(self) -> float | None: ...

    @property
    def allow_emulation(self) -> bool: ...

    @property
    def netns(self) -> str | None: ...

    @property
    def ssh(self) -> SshConfig | None: ...

    @property
    def conn(self) -> Any: ...

    @property
    def generation(self) -> int: ...

    @property
    def is_test_driver(self) -> bool: ...

    @property
    def driver(self) -> str: ...

    def call(
        self,
        fn: Callable[[Any], T],
        *,
        name: str | None = None,
        safe: bool = False,
        timeout: float | None = None,
    ) -> T: ...

    def capabilities(self) -> str: ...


class DomainParts:
    """The members of :class:`hvlib.Domain` that its mix-in relies on (declarations only)."""

    if TYPE_CHECKING:
        host: HostLike
        ssh: SshConfig | None

        def __init__(self, host: HostLike, handle: Any, virt: VirtType | None = None) -> None: ...

        @property
        def name(self) -> str: ...

        @property
        def uuid(self) -> str: ...

        @property
        def virt(self) -> VirtType: ...

        @property
        def handle(self) -> Any: ...

        @property
        def state(self) -> State: ...

        @property
        def console(self) -> ConsoleCapture | None: ...

        def xml_doc(self, *, inactive: bool = False) -> DomainXML: ...

        def destroy(self) -> None: ...

        def wait_for(
            self,
            state: State | Iterable[State],
            timeout: float = 60.0,
            poll_interval: float | None = None,
        ) -> State: ...

        def mac_addresses(self) -> list[str]: ...

        def _capture_console(self) -> None: ...

        def _init_pid(self) -> int | None: ...

        def container_namespaces(self) -> list[int]: ...

        def console_log(self) -> bytes: ...

        def _wait_inactive(self, timeout: float) -> bool: ...

        def _read(self, fn: Callable[[Any], T]) -> T: ...

        def _write(self, fn: Callable[[Any], T], timeout: float | None = None) -> T: ...
