"""What the Domain mix-in :class:`hvlib.virt.migration.Mobility` may use of the
:class:`hvlib.Domain` it is mixed into, declared once for type checkers.

At run time :class:`DomainParts` is an empty class; :class:`hvlib.Domain` provides every member.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ipaddress

    from hvlib.enums import State, VirtType
    from hvlib.virt.console import ConsoleCapture
    from hvlib.virt.host import Host


class DomainParts:
    """The members of :class:`hvlib.Domain` that its mix-ins rely on (declarations only)."""

    if TYPE_CHECKING:
        host: Host

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

        def addresses(
            self, *args: Any, **kwargs: Any
        ) -> Mapping[str, Sequence[ipaddress.IPv4Interface | ipaddress.IPv6Interface]]: ...

        def wait_for_address(self, *args: Any, **kwargs: Any) -> Any: ...

        def _read(self, fn: Callable[[Any], Any]) -> Any: ...

        def _write(self, fn: Callable[[Any], Any], timeout: float | None = None) -> Any: ...
