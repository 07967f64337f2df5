"""A counting proxy around the one module that imports libvirt (hvlib.virt._virt.libvirt).

Installed with ``monkeypatch.setattr(hvlib.virt._virt, "libvirt", CountingLibvirt(libvirt))``
before a connection is opened, every call hvlib makes on the module, its connections,
domains, networks, pools and streams passes through it and is counted by method name. It
forwards to the real libvirt: this is an observer, not a fake.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

WRITE_CALLS = frozenset(
    {
        "defineXML",
        "defineXMLFlags",
        "create",
        "createWithFlags",
        "createXML",
        "destroy",
        "destroyFlags",
        "undefine",
        "undefineFlags",
        "shutdown",
        "shutdownFlags",
        "reboot",
        "suspend",
        "resume",
        "setAutostart",
        "setMemory",
        "setMemoryFlags",
        "setVcpus",
        "setVcpusFlags",
        "attachDevice",
        "attachDeviceFlags",
        "detachDevice",
        "detachDeviceFlags",
        "updateDeviceFlags",
        "setMetadata",
        "migrate",
        "migrate3",
        "migrateToURI3",
    }
)


class Calls(Counter[str]):
    """Call counts by method name."""

    def writes(self) -> dict[str, int]:
        """Only the calls that change something on the host."""
        return {k: v for k, v in self.items() if k in WRITE_CALLS}


def _wrap(value: Any, calls: Calls) -> Any:
    if isinstance(value, list):
        return [_wrap(v, calls) for v in value]
    if isinstance(value, tuple):
        return tuple(_wrap(v, calls) for v in value)
    if type(value).__name__.startswith("vir") and not isinstance(value, BaseException):
        return _Proxy(value, calls)
    return value


class _Proxy:
    def __init__(self, target: Any, calls: Calls) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_calls", calls)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if isinstance(attr, type) or not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] += 1
            return _wrap(attr(*args, **kwargs), self._calls)

        return counted


class CountingLibvirt(_Proxy):
    """The libvirt module, counting every call made through it (``.calls``)."""

    def __init__(self, module: Any) -> None:
        super().__init__(module, Calls())

    @property
    def calls(self) -> Calls:
        return self._calls  # type: ignore[no-any-return]
