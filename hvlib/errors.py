"""hvlib's exception tree: every error a caller of hvlib can see.

libvirt's own ``libvirtError`` never escapes hvlib: :mod:`hvlib.virt._virt` translates each one,
once, into this tree (keeping libvirt's error code and the original exception as ``__cause__``).
This module holds no policy and imports nothing from libvirt.

::

    HvlibError
    ├── SpecError (also ValueError)      bad input, caught before libvirt is called
    ├── Unsupported                      this virt type or this host cannot do that
    ├── HostError                        the connection or the daemon failed
    │   └── CallTimeout (also TimeoutError)  libvirt did not answer within call_timeout
    ├── NotFound
    │   └── DomainNotFound
    ├── AlreadyExists
    ├── InvalidState                     the domain is not in a state that allows the call
    ├── WaitTimeout (also TimeoutError)  a wait ran out of time
    └── LibvirtError                     any other libvirt failure (code kept)
"""

from __future__ import annotations


class HvlibError(Exception):
    """Root of every exception hvlib raises.

    Attributes:
        code: libvirt's numeric error code when the error came from libvirt, else None.
        name: the domain (or other object) the error is about, when known.
    """

    def __init__(self, message: str, *, code: int | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name


class SpecError(HvlibError, ValueError):
    """A spec field is malformed or out of range. ``field`` names it, ``rule`` says why."""

    def __init__(self, field: str, rule: str, value: object = None) -> None:
        super().__init__(f"{field}: {rule}" + ("" if value is None else f" (got {value!r})"))
        self.field = field
        self.rule = rule
        self.value = value


class Unsupported(HvlibError):
    """The virtualization type, the driver or the host cannot do what was asked."""


class HostError(HvlibError):
    """The libvirt connection or daemon failed (unreachable, closed, internal error)."""


class CallTimeout(HostError, TimeoutError):
    """libvirt did not answer a call within the host's ``call_timeout``."""


class NotFound(HvlibError):
    """The named object does not exist."""


class DomainNotFound(NotFound):
    """No domain of that name (or uuid) exists on the host."""


class AlreadyExists(HvlibError):
    """An object of that name already exists (use ``ensure`` to converge instead)."""


class InvalidState(HvlibError):
    """The object is not in a state that allows the operation.

    Attributes:
        state: the state the domain was seen in, when known (a :class:`hvlib.State`).
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        name: str | None = None,
        state: object = None,
    ) -> None:
        super().__init__(message, code=code, name=name)
        self.state = state


class WaitTimeout(HvlibError, TimeoutError):
    """A wait did not reach its goal in time.

    Attributes:
        waited: seconds waited. last: the last observed value (a state, a stage), if any.
    """

    def __init__(
        self, message: str, *, name: str | None = None, waited: float = 0.0, last: object = None
    ) -> None:
        super().__init__(message, name=name)
        self.waited = waited
        self.last = last


class LibvirtError(HvlibError):
    """A libvirt failure with no more specific class; ``code`` is libvirt's error code."""
