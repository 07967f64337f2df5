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
    ChecksumMismatch,
    CommandTimeout,
    ConnectionLost,
    DomainNotFound,
    GuestAccessError,
    HostClosed,
    HostError,
    HostKeyError,
    HvlibError,
    ImageError,
    ImageTimeout,
    InvalidState,
    LibvirtError,
    MigrationError,
    MigrationTimeout,
    NotFound,
    PlacementError,
    ReadyError,
    RemoteCommandError,
    SpecError,
    TransferError,
    Unsupported,
    WaitTimeout,
)
from hvlib.model.cpuspec import Cpu
from hvlib.model.devices import Disk, Filesystem, Nic, XmlEdit
from hvlib.model.idmap import IdMap, IdRange
from hvlib.model.render import render, validate
from hvlib.model.spec import DomainSpec

if TYPE_CHECKING:
    from hvlib.fleet import Fleet
    from hvlib.fleet_capacity import HostCapacity, Inventory, Placement
    from hvlib.guest.config import CommandResult, SshConfig
    from hvlib.guest.ready import Ready, ReadyResult
    from hvlib.model.addresses import AddressSource
    from hvlib.model.checks import PathArg
    from hvlib.model.plan import Change, ChangeHow
    from hvlib.virt.accel import Acceleration
    from hvlib.virt.converge import EnsureResult
    from hvlib.virt.domain import Domain
    from hvlib.virt.events import DomainEvent, EventKind
    from hvlib.virt.host import Host
    from hvlib.virt.images import ImageResult
    from hvlib.virt.snapshot import Snapshot, SnapshotKind
    from hvlib.virt.stopping import ShutdownResult

__all__ = [
    "Acceleration",
    "AddressSource",
    "AlreadyExists",
    "CallTimeout",
    "Change",
    "ChangeHow",
    "ChecksumMismatch",
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
    "ImageError",
    "ImageResult",
    "ImageTimeout",
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
    "ReadyError",
    "ReadyResult",
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
    "Domain": "hvlib.virt.domain",
    "ShutdownResult": "hvlib.virt.stopping",
    "Host": "hvlib.virt.host",
    "ImageResult": "hvlib.virt.images",
    "DomainEvent": "hvlib.virt.events",
    "EventKind": "hvlib.virt.events",
    "AddressSource": "hvlib.model.addresses",
    "Change": "hvlib.model.plan",
    "ChangeHow": "hvlib.model.plan",
    "EnsureResult": "hvlib.virt.converge",
    "CommandResult": "hvlib.guest.config",
    "SshConfig": "hvlib.guest.config",
    "Ready": "hvlib.guest.ready",
    "ReadyResult": "hvlib.guest.ready",
    "Fleet": "hvlib.fleet",
    "HostCapacity": "hvlib.fleet_capacity",
    "Inventory": "hvlib.fleet_capacity",
    "Placement": "hvlib.fleet_capacity",
    "Snapshot": "hvlib.virt.snapshot",
    "SnapshotKind": "hvlib.virt.snapshot",
    "Acceleration": "hvlib.virt.accel",
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
    """Open a :class:`Host` on ``uri``; see :func:`hvlib.virt.host.connect` for the options (the
    same ones, spelled out here so that a type checker catches a misspelt one).

    Raises:
        HostError: the daemon cannot be reached or refused the connection.
        SpecError: an option is of the wrong type or out of range, or the URI was refused.
    """
    from hvlib.virt.host import connect as _connect

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
    """The names of :data:`_LAZY`, imported on first use and then kept in this module."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hvlib' has no attribute {name!r}")
