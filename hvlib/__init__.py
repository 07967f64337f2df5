"""hvlib: one typed, idempotent, event-driven Domain API over KVM, QEMU, Xen PV/HVM and LXC.

>>> import hvlib
>>> with hvlib.connect("test:///default") as host:            # doctest: +SKIP
...     dom = host.domains.define(spec)
...     dom.start()

Importing hvlib is cheap: libvirt itself is loaded on the first :func:`connect`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hvlib.enums import State, VirtType
from hvlib.errors import (
    AlreadyExists,
    CallTimeout,
    DomainNotFound,
    HostError,
    HvlibError,
    InvalidState,
    LibvirtError,
    NotFound,
    SpecError,
    Unsupported,
    WaitTimeout,
)
from hvlib.render import render, validate
from hvlib.spec import Cpu, Disk, DomainSpec, Filesystem, IdMap, IdRange, Nic, XmlEdit

if TYPE_CHECKING:
    from hvlib.accel import Acceleration
    from hvlib.access import (
        CommandResult,
        CommandTimeout,
        ConnectionLost,
        GuestAccessError,
        HostKeyError,
        Ready,
        RemoteCommandError,
        SshConfig,
        TransferError,
    )
    from hvlib.addresses import AddressSource
    from hvlib.domain import Domain, ShutdownResult
    from hvlib.ensure import Change, ChangeHow, EnsureResult
    from hvlib.events import DomainEvent, EventKind
    from hvlib.fleet import Fleet, HostCapacity, Inventory, Placement, PlacementError
    from hvlib.host import Host
    from hvlib.migration import MigrationError, MigrationTimeout
    from hvlib.snapshot import Snapshot, SnapshotKind

__all__ = [
    "Acceleration",
    "AddressSource",
    "AlreadyExists",
    "CallTimeout",
    "Change",
    "ChangeHow",
    "CommandResult",
    "CommandTimeout",
    "ConnectionLost",
    "Cpu",
    "Disk",
    "Domain",
    "DomainEvent",
    "DomainNotFound",
    "DomainSpec",
    "EnsureResult",
    "EventKind",
    "Filesystem",
    "Fleet",
    "GuestAccessError",
    "Host",
    "HostCapacity",
    "HostError",
    "HostKeyError",
    "HvlibError",
    "IdMap",
    "IdRange",
    "InvalidState",
    "Inventory",
    "LibvirtError",
    "MigrationError",
    "MigrationTimeout",
    "Nic",
    "NotFound",
    "Placement",
    "PlacementError",
    "Ready",
    "RemoteCommandError",
    "ShutdownResult",
    "Snapshot",
    "SnapshotKind",
    "SpecError",
    "SshConfig",
    "State",
    "TransferError",
    "Unsupported",
    "VirtType",
    "WaitTimeout",
    "XmlEdit",
    "connect",
    "render",
    "validate",
]

_LAZY = {
    "Domain": "hvlib.domain",
    "ShutdownResult": "hvlib.domain",
    "Host": "hvlib.host",
    "DomainEvent": "hvlib.events",
    "EventKind": "hvlib.events",
    "AddressSource": "hvlib.addresses",
    "Change": "hvlib.ensure",
    "ChangeHow": "hvlib.ensure",
    "EnsureResult": "hvlib.ensure",
    "CommandResult": "hvlib.access",
    "CommandTimeout": "hvlib.access",
    "ConnectionLost": "hvlib.access",
    "GuestAccessError": "hvlib.access",
    "HostKeyError": "hvlib.access",
    "Ready": "hvlib.access",
    "RemoteCommandError": "hvlib.access",
    "SshConfig": "hvlib.access",
    "TransferError": "hvlib.access",
    "Fleet": "hvlib.fleet",
    "HostCapacity": "hvlib.fleet",
    "Inventory": "hvlib.fleet",
    "Placement": "hvlib.fleet",
    "PlacementError": "hvlib.fleet",
    "MigrationError": "hvlib.migration",
    "MigrationTimeout": "hvlib.migration",
    "Snapshot": "hvlib.snapshot",
    "SnapshotKind": "hvlib.snapshot",
    "Acceleration": "hvlib.accel",
}


def connect(uri: str, **kwargs: Any) -> Host:
    """Open a :class:`Host` on ``uri``; see :func:`hvlib.host.connect` for the options.

    Raises:
        HostError: the daemon cannot be reached or refused the connection.
    """
    from hvlib.host import connect as _connect

    return _connect(uri, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hvlib' has no attribute {name!r}")
