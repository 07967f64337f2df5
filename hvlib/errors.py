"""hvlib's exception tree: every error a caller of hvlib can see, and nothing else.

libvirt's own ``libvirtError`` never escapes hvlib: :mod:`hvlib.virt._virt` translates each
one, once, into this tree (keeping libvirt's error code and the original exception as
``__cause__``). Every exception class a caller may catch is defined here (a test checks that
this tree and the classes agree); exceptions used only for control flow inside hvlib are
private to their module (``_NotReady``). This module holds no policy and imports nothing.

::

    HvlibError
    ├── SpecError (also ValueError)      bad input, caught before libvirt is called
    │   └── SpecFileError                the same, in a spec file: FILE:LINE
    ├── Unsupported                      this virt type or this host cannot do that
    ├── HostError                        the connection or the daemon failed
    │   ├── CallTimeout (also TimeoutError)  libvirt did not answer a call within its deadline
    │   └── HostClosed                   the Host was closed: every later call on it fails at once
    ├── NotFound
    │   └── DomainNotFound
    ├── AlreadyExists
    ├── InvalidState                     the domain is not in a state that allows the call
    ├── WaitTimeout (also TimeoutError)  a wait ran out of time
    ├── ReadyError                       the guest says it will not get ready (cloud-init error)
    ├── LibvirtError                     any other libvirt failure (code kept)
    ├── GuestAccessError                 the guest cannot be reached, logged in to, or talked to
    │   ├── HostKeyError                 the guest's SSH host key is unknown or not the one expected
    │   ├── ConnectionLost               the connection dropped while a command ran: outcome unknown
    │   ├── TransferError                put/get moved a different number of bytes than expected
    │   └── ChannelOpenError             no SSH session channel opened: the command did not start
    ├── RemoteCommandError               a command ran in the guest and failed (check=True)
    │   └── CommandTimeout (also TimeoutError)  a command outlived its timeout and was killed
    ├── MigrationError                   a migration did not complete (running_on says where it is)
    │   └── MigrationTimeout (also TimeoutError)  it outlived its timeout and was aborted
    ├── PlacementError                   no host of a fleet can run the spec (reasons per host)
    ├── ImageError                       an image could not be fetched, or is not what it should be
    │   ├── ChecksumMismatch             its bytes do not have the checksum given
    │   └── ImageTimeout (also TimeoutError)  its source stalled for longer than the timeout
    └── ParallelError                    some items of a parallel run failed (errors per item)

Every class takes the object it is about as ``name``; the ones about an input name the
``field`` (:class:`SpecError` always, :class:`Unsupported` when one field is the reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

Command: TypeAlias = str | Sequence[str]
"""A command: a string is run by ``/bin/sh -c``; a sequence is an argv, run without a shell."""


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
    """The virtualization type, the driver or the host cannot do what was asked.

    Attributes:
        field: the spec field (or the argument) that asks for it, spelled as a
            :class:`SpecError`'s field is (``cmdline``, ``disks[1]``, ``cpu.mode``,
            ``copy_storage``); ``virt`` when the type refuses the spec as a whole; None when
            the refusal is about the whole call or the host. Every raise in hvlib sets it.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        name: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, code=code, name=name)
        self.field = field


class HostError(HvlibError):
    """The libvirt connection or daemon failed (unreachable, closed, internal error)."""


class CallTimeout(HostError, TimeoutError):
    """libvirt did not answer a call within its deadline (the host's ``call_timeout``, or the
    call's own bound). hvlib then cut the connection (the next use reconnects).

    Attributes:
        call: the libvirt call that did not return (``virDomain.undefineFlags``), with the
            hvlib method it was made in (``Domain.undefine``) when known; "" if unknown.
        timeout: the deadline in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        name: str | None = None,
        call: str = "",
        timeout: float = 0.0,
    ) -> None:
        super().__init__(message, code=code, name=name)
        self.call = call
        self.timeout = timeout


class HostClosed(HostError):
    """The Host was closed (``host.close()``, or the pool or call that opened it closed it).
    Every later call on it, or on a Domain, Network, Pool or Volume of it, raises this at
    once: nothing is retried or reconnected."""


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


class ReadyError(HvlibError):
    """A readiness wait learned that waiting longer will not help: the guest reported a
    failure (``cloud-init status`` says ``error``, systemd is in ``maintenance``) or lacks
    the program the probe asks (no ``cloud-init``, no ``systemctl``).

    Attributes:
        probe: the probe's name (``"CLOUD_INIT"``, ``"SYSTEMD"``). status: what the guest
            reported (``"error"``, ``"maintenance"``, ``"not installed"``). detail: the
            guest's own words (``cloud-init status --long``, the failed units).
    """

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        probe: str = "",
        status: str = "",
        detail: str = "",
    ) -> None:
        super().__init__(message, name=name)
        self.probe = probe
        self.status = status
        self.detail = detail


class LibvirtError(HvlibError):
    """A libvirt failure with no more specific class; ``code`` is libvirt's error code."""


# -- in a spec file ------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A place in a spec file: the path as given, a 1-based line (0: the file as a whole)
    and, where known, a 1-based column."""

    path: str
    line: int
    column: int | None = None

    def __str__(self) -> str:
        col = "" if self.column is None else f":{self.column}"
        return f"{self.path}:{self.line}{col}"


class SpecFileError(SpecError):
    """A spec file is unreadable or says something hvlib refuses.

    ``str()`` is ``FILE:LINE: FIELD: RULE (got VALUE)`` (``FILE:LINE:COL`` where the column
    is known), on one line; a long value is shortened. Attributes: ``path``, ``line``,
    ``column`` (or None), ``field`` (a path into the document, e.g. ``disks[1].target``),
    ``rule``, ``value``.
    """

    def __init__(self, where: Location, field: str, rule: str, value: object = None) -> None:
        super().__init__(field, rule, value)
        self.path = where.path
        self.line = where.line
        self.column = where.column
        shown = "" if value is None else f" (got {_shown(value)})"
        self.args = (f"{where}: {field}: {rule}{shown}",)

    @property
    def location(self) -> Location:
        """Where the error is."""
        return Location(self.path, self.line, self.column)


_VALUE_SHOWN = 120
"""Characters of a refused value a SpecFileError shows (a longer one is shortened)."""
_INT_BITS_SHOWN = 64
"""An integer longer than this is shown by its size, not its digits."""


def _shown(value: object) -> str:
    """``repr(value)``, shortened to about :data:`_VALUE_SHOWN` characters."""
    if isinstance(value, int) and value.bit_length() > _INT_BITS_SHOWN:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    if len(text) <= _VALUE_SHOWN:
        return text
    return f"{text[:_VALUE_SHOWN]}... ({len(text)} characters)"


# -- inside a guest -------------------------------------------------------------------


class GuestAccessError(HvlibError):
    """The guest could not be reached, logged in to, or talked to (no address, connection
    refused, authentication failed, a broken SSH session, a failed container entry)."""


class HostKeyError(GuestAccessError):
    """The SSH host key the guest offered is unknown, or is not the one expected.

    Attributes:
        address: ``host:port`` that was contacted.
        offered: the offered key, ``"TYPE BASE64"``.
        expected: the keys that would have been accepted (empty: none was known).
    """

    def __init__(
        self, address: str, offered: str, expected: Sequence[str], *, name: str | None = None
    ) -> None:
        self.address = address
        self.offered = offered
        self.expected = tuple(expected)
        super().__init__(host_key_message(address, offered, self.expected), name=name)


class ConnectionLost(GuestAccessError):
    """The connection dropped (or the channel closed without an exit status) while a command
    ran: whether the command succeeded is unknown. Holds the output received so far.

    Attributes:
        command: the command. stdout, stderr: the partial output (bytes).
    """

    def __init__(
        self,
        message: str,
        *,
        command: Command = "",
        stdout: bytes = b"",
        stderr: bytes = b"",
        name: str | None = None,
    ) -> None:
        super().__init__(message, name=name)
        self.command = command
        self.stdout = stdout
        self.stderr = stderr


class TransferError(GuestAccessError):
    """:meth:`GuestAccess.put` or :meth:`GuestAccess.get` did not move the whole file."""


class ImageError(HvlibError):
    """``host.images.ensure`` could not import an image: its source cannot be read (missing
    file, HTTP error, a body shorter than announced), or it is not usable as it is. No
    volume is left behind."""


class ChecksumMismatch(ImageError):
    """An image's bytes do not have the checksum given.

    Attributes:
        expected, actual: ``ALGO:HEX`` of the checksum given and of the bytes received.
    """

    def __init__(self, message: str, *, expected: str, actual: str, name: str | None = None):
        super().__init__(message, name=name)
        self.expected = expected
        self.actual = actual


class ImageTimeout(ImageError, TimeoutError):
    """An image's source sent nothing for longer than the ``timeout`` given (stalled)."""


class RemoteCommandError(HvlibError):
    """A command ran in the guest and failed.

    Attributes:
        command: the command as given. exit_status: its exit status (None: unknown, e.g. killed
        at a timeout). stderr, stdout: its output (bytes; partial for a timeout).
    """

    def __init__(
        self,
        command: Command,
        exit_status: int | None,
        stderr: bytes,
        *,
        stdout: bytes = b"",
        name: str | None = None,
        message: str | None = None,
    ) -> None:
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr
        self.stdout = stdout
        if message is None:
            message = f"{display_command(command)} exited with status {exit_status}"
            tail = stderr[-500:].decode("utf-8", "replace").strip()
            message += f": {tail}" if tail else " (no stderr)"
        super().__init__(f"{name}: {message}" if name else message, name=name)


class CommandTimeout(RemoteCommandError, TimeoutError):
    """A command did not finish within its timeout. Its process group was killed (``killed``
    says whether the kill was confirmed); the output received until then is kept.

    Attributes:
        timeout: the timeout in seconds. killed: True once the remote processes were killed.
    """

    def __init__(
        self,
        command: Command,
        timeout: float,
        *,
        stdout: bytes = b"",
        stderr: bytes = b"",
        killed: bool = False,
        name: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.killed = killed
        how = "killed" if killed else "could not confirm it was killed"
        super().__init__(
            command,
            None,
            stderr,
            stdout=stdout,
            name=name,
            message=f"{display_command(command)} did not finish within {timeout:g} s ({how})",
        )


class ChannelOpenError(GuestAccessError):
    """No session channel could be opened (or the exec request was refused): the command was
    not started."""


# -- above one host --------------------------------------------------------------------


class MigrationError(HvlibError):
    """A migration did not complete. The guest runs on one side only, named here.

    Attributes:
        running_on: the URI of the host where the domain runs (or, for a stopped domain, is
            defined) now; None if hvlib could not tell (both connections lost).
        job: the last job reading (``jobStats()``), or None.
        reason: ``"timeout"``, ``"destination lost"``, ``"resume failed"`` (it arrived,
            paused, and stays so), or ``"failed"``.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        running_on: str | None = None,
        job: dict[str, Any] | None = None,
        reason: str = "failed",
        code: int | None = None,
    ) -> None:
        super().__init__(message, name=name, code=code)
        self.running_on = running_on
        self.job = job
        self.reason = reason


class MigrationTimeout(MigrationError, TimeoutError):
    """The migration outlived its ``timeout`` and was aborted; the guest stays on the source."""


class PlacementError(HvlibError):
    """No host of the fleet can run the spec. ``reasons`` maps each URI to why not."""

    def __init__(self, message: str, reasons: dict[str, str], *, name: str | None = None):
        super().__init__(message, name=name)
        self.reasons = reasons


class ParallelError(HvlibError):
    """Some items of a parallel run failed; the others ran to the end.

    Attributes:
        errors: the exception of each failed item, keyed by its label (the domain name).
        results: per item, in input order, its result, or None where it failed.
    """

    def __init__(self, errors: dict[str, BaseException], results: list[Any]) -> None:
        first = next(iter(errors.items()))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(
            f"{len(errors)} of {len(results)} failed; {first[0]}: {first[1]}{more}",
            name=first[0],
        )
        self.errors = errors
        self.results = results


# -- message helpers (pure text) --------------------------------------------------------


def display_command(command: Command) -> str:
    """The command as one line, for messages (argv shell-quoted)."""
    import shlex

    text = command if isinstance(command, str) else shlex.join(command)
    return repr(text if len(text) <= 200 else text[:197] + "...")


def host_key_message(address: str, offered: str, expected: Sequence[str]) -> str:
    """The text of a :class:`HostKeyError`: what was offered, what was expected, what to do."""
    got = f"{address} offered host key {key_fingerprint(offered)}"
    if not expected:
        return (
            f"{got}, which is unknown: no pinned SshConfig.host_key and no known_hosts entry "
            "for it. Pin the key (SshConfig(host_key=...) or known_hosts=...), or opt in with "
            "SshConfig(accept_unknown_host_key=True)."
        )
    wanted = ", ".join(key_fingerprint(k) for k in expected)
    return (
        f"{got}, but expected {wanted}: the key CHANGED (another machine at this address, "
        "a rebuilt guest, or someone in between). Refusing to connect."
    )


def key_fingerprint(key_line: str) -> str:
    """``"TYPE SHA256:..."`` (OpenSSH's fingerprint form) of a ``"TYPE BASE64"`` key line."""
    import base64
    import hashlib

    fields = key_line.split()
    if len(fields) < 2:
        return key_line
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError:
        return key_line
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{fields[0]} SHA256:{digest}"
