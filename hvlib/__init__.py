"""hvlib: one typed, idempotent, event-driven Domain API over KVM, QEMU, Xen PV/HVM and LXC.

>>> import hvlib
>>> with hvlib.connect("test:///default") as host:            # doctest: +SKIP
...     dom = host.domains.define(spec)
...     dom.start()

Importing hvlib is cheap: libvirt itself is loaded on the first :func:`connect`.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    from hvlib.connection import HostClosed
    from hvlib.domain import Domain, ShutdownResult
    from hvlib.ensure import Change, ChangeHow, EnsureResult
    from hvlib.events import DomainEvent, EventKind
    from hvlib.fleet import Fleet, HostCapacity, Inventory, Placement, PlacementError
    from hvlib.host import Host
    from hvlib.migration import MigrationError, MigrationTimeout
    from hvlib.remote import PathArg
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
    "HostClosed",
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
    "HostClosed": "hvlib.connection",
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


def connect(
    uri: str,
    *,
    netns: str | None = None,
    poll_interval: float | None = 1.0,
    readonly: bool = False,
    ssh: SshConfig | None = None,
    reconnect_timeout: float = 30.0,
    call_timeout: float | None = None,
    allow_uri_options: Iterable[str] = (),
    allow_emulation: bool | None = None,
    known_hosts: PathArg | None = None,
    keyfile: PathArg | None = None,
    host_ssh: SshConfig | None = None,
) -> Host:
    """Open a :class:`Host` on ``uri``; see :func:`hvlib.host.connect` for the options (the
    same ones, spelled out here so that a type checker catches a misspelt one).

    Raises:
        HostError: the daemon cannot be reached or refused the connection.
        SpecError: an option is of the wrong type or out of range, or the URI was refused.
    """
    from hvlib.host import connect as _connect

    return _connect(
        uri,
        netns=netns,
        poll_interval=poll_interval,
        readonly=readonly,
        ssh=ssh,
        reconnect_timeout=reconnect_timeout,
        call_timeout=call_timeout,
        allow_uri_options=allow_uri_options,
        allow_emulation=allow_emulation,
        known_hosts=known_hosts,
        keyfile=keyfile,
        host_ssh=host_ssh,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hvlib' has no attribute {name!r}")
