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
from hvlib.spec import Disk, DomainSpec, Filesystem, Nic, XmlEdit

if TYPE_CHECKING:
    from hvlib.domain import Domain, ShutdownResult
    from hvlib.events import DomainEvent, EventKind
    from hvlib.host import Host

__all__ = [
    "AlreadyExists",
    "CallTimeout",
    "Disk",
    "Domain",
    "DomainEvent",
    "DomainNotFound",
    "DomainSpec",
    "EventKind",
    "Filesystem",
    "Host",
    "HostError",
    "HvlibError",
    "InvalidState",
    "LibvirtError",
    "Nic",
    "NotFound",
    "ShutdownResult",
    "SpecError",
    "State",
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
