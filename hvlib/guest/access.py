"""Guest access: readiness, command execution and file transfer, for VMs and containers.

:class:`GuestAccess` is a mixin of :class:`hvlib.Domain`. It gives every domain
:meth:`~GuestAccess.wait_ready`, :meth:`~GuestAccess.exec`, :meth:`~GuestAccess.put` and
:meth:`~GuestAccess.get`, over one of two transports chosen by the virtualization type:

- VMs (KVM, QEMU, Xen): SSH (:mod:`hvlib.guest.ssh`, paramiko) to an address of the guest found
  through the domain's address API, the socket opened inside the host's network namespace
  when it has one. Host keys are checked strictly against :class:`SshConfig`.
- LXC: the command runs inside the container's namespaces (:mod:`hvlib.guest.container`), through
  libvirt's LXC API; no network, no credentials.

This module also holds what both transports share: :class:`SshConfig`, :class:`CommandResult`,
the exceptions, and the output plumbing. It relies only on attributes that
:class:`hvlib.Domain` has: ``host``, ``name``, ``uuid``, ``virt``, ``handle``, ``state``,
``console``, ``addresses()`` and ``wait_for_address()``.

What it must not do: import paramiko, tenacity or libvirt at import time (they are imported
on first use, so ``import hvlib`` stays cheap), run a command through a shell the caller did
not ask for, accept an SSH host key that was neither pinned nor known unless
``accept_unknown_host_key`` says so, or report a command whose outcome is unknown (timeout,
lost connection) as a result.

Exceptions (all :class:`hvlib.HvlibError`)::

    GuestAccessError                 the guest cannot be reached, logged in to, or talked to
    ├── HostKeyError                 the guest's SSH host key is unknown or not the expected one
    ├── ConnectionLost               the connection dropped while a command ran: outcome unknown
    └── TransferError                put/get moved a different number of bytes than expected
    RemoteCommandError               a command ran and failed (``check=True``)
    └── CommandTimeout (TimeoutError)  a command outlived its timeout and was killed
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import ipaddress
import logging
import os
import re
import secrets
import shlex
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, TypeAlias

from hvlib.errors import HvlibError, InvalidState, SpecError, WaitTimeout
from hvlib.virt._parts import DomainParts

if TYPE_CHECKING:
    from hvlib.guest.ssh import SshSession

log = logging.getLogger("hvlib")

IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Command: TypeAlias = str | Sequence[str]
"""A command: a string is run by ``/bin/sh -c``; a sequence is an argv, run without a shell."""
Input: TypeAlias = bytes | bytearray | memoryview | IO[bytes]
"""What can be fed to a command's stdin: bytes, or a binary file object read in chunks."""
OutputCallback: TypeAlias = Callable[[bytes], None]
CHUNK = 64 * 1024
"""Size of the pieces input is read and sent in."""
DEFAULT_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 600.0


# -- exceptions ---------------------------------------------------------------------------


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


# -- configuration and results ------------------------------------------------------------

PathArg: TypeAlias = str | os.PathLike[str]
_KEY_TYPE = re.compile(r"[a-z][a-z0-9@.+-]*")


@dataclasses.dataclass(frozen=True)
class SshConfig:
    """How hvlib logs in to VM guests over SSH.

    Given to ``hvlib.connect(..., ssh=SshConfig(...))`` as the host's default, set per domain
    (``dom.ssh = SshConfig(...)``) or per call (``dom.exec(..., ssh=...)``).

    Host keys are checked strictly: the key the guest offers must be ``host_key`` (an OpenSSH
    public key line, ``"ssh-ed25519 AAAA..."``) or listed for the guest's address in
    ``known_hosts``. Accepting an unknown key is an explicit opt-in
    (``accept_unknown_host_key=True``, logged as a warning); a key that differs from a known
    one is always refused.

    ``address`` overrides the address API (e.g. a forwarded loopback port).

    Raises:
        SpecError: on construction, for a bad port, timeout or host key line.
    """

    user: str = "root"
    key: PathArg | None = None
    known_hosts: PathArg | None = None
    host_key: str | None = None
    port: int = 22
    accept_unknown_host_key: bool = False
    connect_timeout: float = 10.0
    address: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise SpecError("ssh.port", "must be an integer", self.port)
        if not 0 < self.port < 65536:
            raise SpecError("ssh.port", "must be between 1 and 65535", self.port)
        if not self.user:
            raise SpecError("ssh.user", "must not be empty")
        if self.connect_timeout <= 0:
            raise SpecError("ssh.connect_timeout", "must be positive", self.connect_timeout)
        if self.host_key is not None:
            check_key_line(self.host_key)

    @property
    def host_key_line(self) -> str | None:
        """``host_key`` reduced to ``"TYPE BASE64"`` (any comment dropped)."""
        if self.host_key is None:
            return None
        kind, blob = self.host_key.split()[:2]
        return f"{kind} {blob}"


def check_key_line(line: str) -> None:
    """Check an OpenSSH public key line (``TYPE BASE64 [comment]``).

    Raises:
        SpecError: it is not one.
    """
    import base64

    fields = line.split()
    if len(fields) < 2 or not _KEY_TYPE.fullmatch(fields[0]):
        raise SpecError("ssh.host_key", "must be an OpenSSH public key line 'TYPE BASE64'", line)
    try:
        base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise SpecError("ssh.host_key", "the key is not valid base64", line) from None


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What a command did: exit status, output (bytes, exactly as produced) and duration.

    A stream that was handed to an ``on_stdout``/``on_stderr`` callback is not kept here
    (its field is ``b""``).
    """

    exit_status: int
    stdout: bytes
    stderr: bytes
    elapsed: float
    command: Command = ""

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        """True if the exit status is 0."""
        return self.exit_status == 0

    def check(self, name: str | None = None) -> CommandResult:
        """Return self if the command succeeded.

        Raises:
            RemoteCommandError: the exit status is not 0.
        """
        if self.exit_status != 0:
            raise RemoteCommandError(
                self.command, self.exit_status, self.stderr, stdout=self.stdout, name=name
            )
        return self


# -- commands, input and output (shared by both transports) -------------------------------


def normalize_command(command: Command) -> str | tuple[str, ...]:
    """Check a command: a non-empty string, or a non-empty sequence of strings; no NUL.

    Raises:
        SpecError: empty, not strings, or containing NUL (which no argv can carry).
    """
    if isinstance(command, str):
        if not command.strip():
            raise SpecError("command", "must not be empty")
        if "\0" in command:
            raise SpecError("command", "must not contain NUL", command)
        return command
    if isinstance(command, bytes | bytearray):
        raise SpecError("command", "must be a string or a sequence of strings", command)
    argv = tuple(command)
    if not argv or not argv[0]:
        raise SpecError("command", "argv must not be empty and argv[0] must be a name", argv)
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise SpecError(f"command[{i}]", "must be a string", arg)
        if "\0" in arg:
            raise SpecError(f"command[{i}]", "must not contain NUL", arg)
    return argv


def display_command(command: Command) -> str:
    """The command as one line, for messages (argv shell-quoted)."""
    text = command if isinstance(command, str) else shlex.join(command)
    return repr(text if len(text) <= 200 else text[:197] + "...")


def shell_argv(command: str | tuple[str, ...]) -> list[str]:
    """The argv that runs ``command``: a string through ``/bin/sh -c``, an argv as is."""
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


def input_chunks(data: Input | None, size: int = CHUNK) -> Iterator[bytes]:
    """``data`` as chunks of at most ``size`` bytes (a file object is read lazily)."""
    if data is None:
        return
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])
        return
    while chunk := data.read(size):
        yield chunk


class InputFeeder:
    """Feeds a command's stdin from ``data`` on a thread, then ends it; without input, ends
    it at once. ``write(chunk)`` sends one chunk, ``end()`` closes the stream; a failure of
    either of the kinds in ``gone`` means the command stopped reading (logged, not raised).
    An error reading the caller's ``data`` is kept for :meth:`raise_local_error`.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        end: Callable[[], None],
        data: Input | None,
        *,
        gone: tuple[type[BaseException], ...],
        label: str,
    ) -> None:
        self._write, self._end, self._gone, self._label = write, end, gone, label
        self._local_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if data is None:
            self._close()
            return
        self._thread = threading.Thread(
            target=self._feed, args=(data,), name=f"hvlib-{label}-stdin", daemon=True
        )
        self._thread.start()

    def _feed(self, data: Input) -> None:
        try:
            for chunk in self._chunks(data):
                self._write(chunk)
        except self._gone as e:
            log.debug("stdin of %s command: %s", self._label, e)
        finally:
            self._close()

    def _chunks(self, data: Input) -> Iterator[bytes]:
        chunks = input_chunks(data)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except BaseException as e:  # reading the caller's input failed
                self._local_error = e
                return
            yield chunk

    def _close(self) -> None:
        with contextlib.suppress(*self._gone):
            self._end()

    def join(self) -> None:
        """Wait (briefly) for the feeding thread."""
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def raise_local_error(self) -> None:
        """Re-raise an error reading the caller's input (the command saw a short stdin)."""
        if self._local_error is not None:
            raise self._local_error


class OutputSink:
    """Collects a command's stdout and stderr, or hands each piece to a callback.

    Thread-safe enough for one reader thread per stream.
    """

    def __init__(
        self, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None
    ) -> None:
        self._callbacks = (on_stdout, on_stderr)
        self._buffers = (bytearray(), bytearray())

    def stdout(self, data: bytes) -> None:
        """Take a piece of stdout."""
        self._take(0, data)

    def stderr(self, data: bytes) -> None:
        """Take a piece of stderr."""
        self._take(1, data)

    def _take(self, which: int, data: bytes) -> None:
        if not data:
            return
        callback = self._callbacks[which]
        if callback is None:
            self._buffers[which].extend(data)
        else:
            callback(data)

    @property
    def collected(self) -> tuple[bytes, bytes]:
        """(stdout, stderr) kept so far (b"" for a stream given to a callback)."""
        return bytes(self._buffers[0]), bytes(self._buffers[1])


def decode_lines(callback: Callable[[str], None]) -> OutputCallback:
    """An ``on_stdout``/``on_stderr`` callback that calls ``callback`` once per decoded line
    (UTF-8, bad bytes replaced, newline stripped). A last unterminated line is not delivered."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = [""]

    def take(data: bytes) -> None:
        text = pending[0] + decoder.decode(data)
        *lines, pending[0] = text.split("\n")
        for line in lines:
            callback(line)

    return take


# -- readiness ----------------------------------------------------------------------------


class NotReady(Exception):
    """One readiness attempt failed at ``stage`` (retried until the deadline)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


PROBE_CONNECT_TIMEOUTS = (0.1, 0.25, 0.5, 1.0)
"""Seconds the SSH readiness probe waits for a TCP connection on its first, second, ... try
that got that far (the last for every later one). A guest's address is known (from the DHCP
server's lease) a moment before the guest has configured it; a SYN sent in that moment is
dropped, and the kernel would send it again only a second later: the first tries are short, a
slow network still gets its second."""


class _Progress:
    """The furthest stage a readiness wait reached, the last reason it stopped there, and how
    many tries stopped at each stage."""

    def __init__(self, stages: Sequence[str], name: str = "") -> None:
        self.stages = tuple(stages)
        self.best = -1
        self.last: NotReady | None = None
        self.failures: dict[str, int] = {}
        self.name = name
        self.started = time.monotonic()

    def reach(self, stage: str) -> None:
        index = self.stages.index(stage)
        if index > self.best:
            self.best = index
            log.debug(
                "%s: readiness reached %r after %.3f s",
                self.name,
                stage,
                time.monotonic() - self.started,
            )

    @property
    def furthest(self) -> str:
        return self.stages[self.best] if self.best >= 0 else "none"


class ReadyProbe:
    """A way to decide that a guest is ready; see :class:`Ready`."""

    name = "probe"
    stages: tuple[str, ...] = ("probe",)

    def attempt(
        self, dom: GuestAccess, progress: _Progress, deadline: float, ssh: SshConfig | None
    ) -> None:
        """One try. Raises NotReady (retried) or any other error (propagated at once)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Ready.{self.name}"


class _AccessProbe(ReadyProbe):
    """VMs: address, TCP open, SSH banner, login, then ``true`` runs. LXC: ``true`` runs."""

    name = "SSH"
    stages = ("address", "tcp", "banner", "login", "command")

    def attempt(
        self, dom: GuestAccess, progress: _Progress, deadline: float, ssh: SshConfig | None
    ) -> None:
        if dom.virt.is_container:
            progress.reach("command")
            dom._probe_command(deadline)
            return
        dom._probe_ssh(progress, deadline, ssh)


class _AddressProbe(ReadyProbe):
    """The guest has an address (the domain's address API)."""

    name = "ADDRESS"
    stages = ("address",)

    def attempt(
        self, dom: GuestAccess, progress: _Progress, deadline: float, ssh: SshConfig | None
    ) -> None:
        progress.reach("address")
        if not any(dom.addresses().values()):
            raise NotReady("address", "no address reported yet")


class _ConsoleProbe(ReadyProbe):
    """A console line matching a regular expression (since hvlib started the domain)."""

    stages = ("console",)

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.name = f"CONSOLE({pattern!r})"

    def attempt(
        self, dom: GuestAccess, progress: _Progress, deadline: float, ssh: SshConfig | None
    ) -> None:
        progress.reach("console")
        capture = dom.console
        if capture is None:
            raise InvalidState(
                f"{dom.name}: no console capture (start the domain with hvlib)", name=dom.name
            )
        try:
            capture.wait_for(self.pattern, max(0.0, deadline - time.monotonic()))
        except WaitTimeout as e:
            raise NotReady("console", f"no line matching {self.pattern!r}") from e


class _CallableProbe(ReadyProbe):
    """A user function ``fn(dom) -> bool``; False, OSError and GuestAccessError mean not yet."""

    stages = ("probe",)

    def __init__(self, fn: Callable[[Any], bool]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "probe")

    def attempt(
        self, dom: GuestAccess, progress: _Progress, deadline: float, ssh: SshConfig | None
    ) -> None:
        progress.reach("probe")
        try:
            ok = self.fn(dom)
        except HostKeyError:
            raise
        except (OSError, GuestAccessError) as e:
            raise NotReady("probe", f"{type(e).__name__}: {e}") from e
        if not ok:
            raise NotReady("probe", f"{self.name}() returned {ok!r}")


class Ready:
    """Readiness probes for :meth:`GuestAccess.wait_ready`.

    - ``Ready.SSH``: a command runs (VMs: TCP open, then the SSH banner, then a login and
      ``true``; LXC: ``true`` runs inside the container).
    - ``Ready.ADDRESS``: the guest has an address.
    - ``Ready.CONSOLE(regex)``: a console line matches ``regex``.
    - any callable ``fn(dom) -> bool`` (also accepted directly by ``wait_ready``).
    """

    SSH: ClassVar[ReadyProbe] = _AccessProbe()
    ADDRESS: ClassVar[ReadyProbe] = _AddressProbe()

    @staticmethod
    def CONSOLE(pattern: str) -> ReadyProbe:
        """A probe that waits for a console line matching ``pattern``."""
        return _ConsoleProbe(pattern)

    @staticmethod
    def CALLABLE(fn: Callable[[Any], bool]) -> ReadyProbe:
        """A probe that polls ``fn(dom)`` until it returns True."""
        return _CallableProbe(fn)


def run_probe(
    dom: GuestAccess,
    probe: ReadyProbe,
    timeout: float,
    interval: float,
    ssh: SshConfig | None = None,
) -> tuple[float, str]:
    """Retry ``probe`` every ``interval`` s until it passes; return (seconds, furthest stage).

    Raises:
        WaitTimeout: not ready within ``timeout`` s (says the furthest stage and the last
            reason; ``.last`` is that stage).
        InvalidState: the domain is not running (checked before each attempt).
        HostKeyError: the guest's host key was refused (not retried).
    """
    import tenacity  # only waits need it; keeps ``import hvlib`` cheap

    progress = _Progress(probe.stages, dom.name)
    started = time.monotonic()
    deadline = started + timeout

    def once() -> None:
        dom._require_running("wait until it is ready")
        try:
            probe.attempt(dom, progress, deadline, ssh)
        except NotReady as e:
            progress.last = e
            progress.failures[e.stage] = progress.failures.get(e.stage, 0) + 1
            raise

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(interval),
        retry=tenacity.retry_if_exception_type(NotReady),
        reraise=True,
        sleep=lambda s: time.sleep(max(0.0, min(s, deadline - time.monotonic()))),
    )
    try:
        retrying(once)
    except NotReady:
        waited = time.monotonic() - started
        reason = progress.last.reason if progress.last else "no attempt finished"
        raise WaitTimeout(
            f"{dom.name} not ready ({probe!r}) within {timeout:g} s: reached stage "
            f"{progress.furthest!r}; last: {reason}",
            name=dom.name,
            waited=waited,
            last=progress.furthest,
        ) from progress.last
    return time.monotonic() - started, progress.furthest


@contextlib.contextmanager
def _not_ready(stage: str) -> Iterator[None]:
    """Turn a failure that may pass on a later try into NotReady(stage); HostKeyError and
    anything else propagate."""
    try:
        yield
    except HostKeyError:
        raise
    except (GuestAccessError, RemoteCommandError, OSError) as e:
        raise NotReady(stage, f"{type(e).__name__}: {e}") from e


def pick_address(addresses: Mapping[str, Sequence[IPInterface]]) -> str | None:
    """The address to reach a guest at: the first IPv4 one, else the first global IPv6 one
    (loopback and link-local addresses skipped), or None."""
    found = [iface.ip for ifaces in addresses.values() for iface in ifaces]
    usable = [ip for ip in found if not (ip.is_loopback or ip.is_link_local)]
    v4 = [ip for ip in usable if ip.version == 4]
    best = (v4 or usable)[:1]
    return str(best[0]) if best else None


# -- the mixin ----------------------------------------------------------------------------

_state_lock = threading.Lock()


def _left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (at least a sliver, so a timeout still fires)."""
    return None if deadline is None else max(0.05, deadline - time.monotonic())


def _connect_budget(config: SshConfig, deadline: float | None) -> float:
    """The connect timeout: the config's, cut short by the caller's deadline.

    Raises:
        GuestAccessError: the deadline has passed.
    """
    if deadline is None:
        return config.connect_timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise GuestAccessError("no time left to connect (the command's timeout has passed)")
    return min(config.connect_timeout, left)


class _SessionCache:
    """Open SSH sessions of one Domain object, by (address, port, config)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions: dict[tuple[str, int, SshConfig], SshSession] = {}
        self.retired: list[SshSession] = []
        """Replaced sessions that may still run a command of another thread."""

    def keep(self, key: tuple[str, int, SshConfig], session: SshSession) -> None:
        """Make ``session`` the one for ``key``; a dead predecessor is closed."""
        with self.lock:
            old = self.sessions.get(key)
            self.sessions[key] = session
            self.retired = [s for s in self.retired if s.active]
            if old is not None and old is not session and old.active:
                self.retired.append(old)
        if old is not None and old is not session and not old.active:
            old.close()

    def close(self) -> None:
        with self.lock:
            sessions = [*self.sessions.values(), *self.retired]
            self.sessions, self.retired = {}, []
        for session in sessions:
            session.close()


class GuestAccess(DomainParts):
    """Readiness, exec and file transfer for a domain (mixed into :class:`hvlib.Domain`).

    ``ssh``: this domain's :class:`SshConfig` (None: the host's ``ssh``). SSH sessions are
    opened on first use and kept open for the next commands (one per address and config);
    :meth:`close_access` closes them (they are also closed when the Domain object is freed).
    """

    ssh: SshConfig | None = None

    # -- readiness --

    def wait_ready(
        self,
        timeout: float = 120.0,
        probe: ReadyProbe | Callable[[Any], bool] = Ready.SSH,
        *,
        interval: float = 0.1,
        ssh: SshConfig | None = None,
    ) -> float:
        """Block until the guest is ready by ``probe`` (default :data:`Ready.SSH`: a command
        runs in it); return the seconds waited. Attempts are ``interval`` s apart.

        Raises:
            WaitTimeout: not ready within ``timeout`` s; the message names the furthest stage
                reached (address, tcp, banner, login, command) and the last failure.
            InvalidState: the domain is not running.
            HostKeyError: the guest's SSH host key was refused (never retried).
        """
        if not isinstance(probe, ReadyProbe):
            probe = Ready.CALLABLE(probe)
        if probe is Ready.ADDRESS and not self.virt.is_container:
            return self._wait_address(timeout)
        waited, _stage = run_probe(self, probe, timeout, interval, ssh)
        return waited

    def _wait_address(self, timeout: float) -> float:
        started = time.monotonic()
        self._require_running("wait for an address")
        self.wait_for_address(timeout, nics="any")
        return time.monotonic() - started

    def _probe_ssh(self, progress: _Progress, deadline: float, ssh: SshConfig | None) -> None:
        """One SSH readiness attempt; a passing one leaves its session open for exec."""
        from hvlib.guest import ssh as sshmod

        def left(low: float, high: float) -> float:
            return max(low, min(high, deadline - time.monotonic()))

        config = self._ssh_config(ssh)
        progress.reach("address")
        address = self._ssh_address(config, not_ready=True)
        progress.reach("tcp")
        tries = progress.failures.get("tcp", 0)
        connect = PROBE_CONNECT_TIMEOUTS[min(tries, len(PROBE_CONNECT_TIMEOUTS) - 1)]
        with _not_ready("tcp"):
            sock = sshmod.open_socket(address, config.port, self.host.netns, left(0.05, connect))
        try:
            progress.reach("banner")
            with _not_ready("banner"):
                sshmod.peek_banner(sock, left(0.05, 2.0))
            progress.reach("login")
            with _not_ready("login"):
                session = sshmod.SshSession.over(
                    sock, address, config, timeout=left(0.5, 60.0), name=self.name
                )
        except BaseException:
            sock.close()
            raise
        progress.reach("command")
        try:
            with _not_ready("command"):
                session.run("true", timeout=left(0.5, 60.0)).check(self.name)
        except BaseException:
            session.close()
            raise
        self._keep_session(address, config, session)

    def _probe_command(self, deadline: float) -> None:
        with _not_ready("command"):
            self.exec(["true"], timeout=max(0.5, deadline - time.monotonic()), check=True)

    # -- exec --

    def exec(
        self,
        command: Command,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        input: Input | None = None,
        check: bool = False,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        ssh: SshConfig | None = None,
    ) -> CommandResult:
        """Run ``command`` in the guest and return its :class:`CommandResult`.

        A string goes through ``/bin/sh -c``; a sequence is an argv and goes through no shell
        (over SSH it is quoted with :func:`shlex.join` for the remote shell). ``input`` is fed
        to stdin (then closed; without it stdin is empty). Output is binary-exact; with
        ``on_stdout``/``on_stderr`` each piece is handed to the callback as it arrives (and
        not kept in the result). VMs: over SSH (see :class:`SshConfig`); LXC: inside the
        container's namespaces.

        Raises:
            RemoteCommandError: ``check`` and a non-zero exit status.
            CommandTimeout: it ran longer than ``timeout`` s; its process group was killed
                (the partial output is on the exception).
            ConnectionLost: the connection dropped while it ran (outcome unknown).
            HostKeyError: the guest's SSH host key was refused.
            GuestAccessError: the guest cannot be reached or logged in to (no address,
                refused, authentication failed) or the container cannot be entered.
            InvalidState: the domain is not running. SpecError: a malformed command.
        """
        cmd = normalize_command(command)
        if timeout is not None and timeout <= 0:
            raise SpecError("timeout", "must be positive or None", timeout)
        self._require_running("run a command in it")
        sink = OutputSink(on_stdout, on_stderr)
        if self.virt.is_container:
            from hvlib.guest import container as lxcexec

            result = lxcexec.run(
                self.handle, cmd, input=input, timeout=timeout, sink=sink, name=self.name
            )
        else:
            result = self._exec_ssh(cmd, input, timeout, sink, ssh)
        return result.check(self.name) if check else result

    def _exec_ssh(
        self,
        cmd: str | tuple[str, ...],
        input: Input | None,
        timeout: float | None,
        sink: OutputSink,
        ssh: SshConfig | None,
    ) -> CommandResult:
        from hvlib.guest import ssh as sshmod

        config = self._ssh_config(ssh)
        deadline = None if timeout is None else time.monotonic() + timeout
        session, reused = self._session(config, deadline=deadline)
        try:
            return session.run(cmd, input=input, timeout=_left(deadline), sink=sink)
        except sshmod.ChannelOpenError:
            if not reused:
                raise
        # the kept session died before the command could start: one try on a fresh one,
        # within what is left of the command's timeout
        session, _ = self._session(config, fresh=True, deadline=deadline)
        return session.run(cmd, input=input, timeout=_left(deadline), sink=sink)

    # -- files --

    def put(
        self,
        local_path: PathArg,
        remote_path: str,
        *,
        timeout: float | None = TRANSFER_TIMEOUT,
        ssh: SshConfig | None = None,
    ) -> int:
        """Copy the local file ``local_path`` to ``remote_path`` in the guest; return its size.

        The bytes are streamed in chunks into a temporary file next to ``remote_path``
        (``cat``), whose size is checked before it is renamed into place.

        Raises:
            TransferError: the guest received a different number of bytes.
            RemoteCommandError: the guest could not write the file (the message says why).
            CommandTimeout, ConnectionLost, GuestAccessError, InvalidState: as for exec.
            OSError: the local file cannot be read.
        """
        size = os.path.getsize(local_path)
        tmp = f"{remote_path}.hvlib-{secrets.token_hex(4)}"
        script = (
            'cat > "$1" || exit; n=$(wc -c < "$1" | tr -d " \t") || exit; echo "$n"; '
            'if [ "$n" -eq "$2" ]; then mv -f "$1" "$3"; else rm -f "$1"; exit 3; fi'
        )
        argv = ["/bin/sh", "-c", script, "hvlib-put", tmp, str(size), remote_path]
        with open(local_path, "rb") as f:
            result = self.exec(argv, input=f, timeout=timeout, ssh=ssh)
        received = result.text.strip()
        if result.exit_status == 3:
            raise TransferError(
                f"{self.name}: put {local_path} -> {remote_path}: the guest received "
                f"{received} bytes, expected {size}",
                name=self.name,
            )
        result.check(self.name)
        return size

    def get(
        self,
        remote_path: str,
        local_path: PathArg,
        *,
        timeout: float | None = TRANSFER_TIMEOUT,
        ssh: SshConfig | None = None,
    ) -> int:
        """Copy the guest's file ``remote_path`` to ``local_path``; return its size.

        The size is read first (``wc -c``), the bytes streamed (``cat``) into a temporary
        file next to ``local_path``, checked against that size, then renamed into place.

        Raises:
            TransferError: a different number of bytes arrived (e.g. the file changed).
            RemoteCommandError: the guest could not read the file (the message says why).
            CommandTimeout, ConnectionLost, GuestAccessError, InvalidState: as for exec.
            OSError: the local file cannot be written.
        """
        probe = self.exec(["wc", "-c", remote_path], check=True, timeout=timeout, ssh=ssh)
        expected = int(probe.text.split()[0])
        target = Path(local_path)
        tmp = target.with_name(f".{target.name}.hvlib-{secrets.token_hex(4)}")
        try:
            with open(tmp, "wb") as f:

                def write(data: bytes) -> None:
                    f.write(data)

                self.exec(
                    ["cat", remote_path], check=True, timeout=timeout, ssh=ssh, on_stdout=write
                )
                got = f.tell()
            if got != expected:
                raise TransferError(
                    f"{self.name}: get {remote_path} -> {local_path}: received {got} bytes, "
                    f"the file had {expected}",
                    name=self.name,
                )
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return expected

    # -- sessions --

    def close_access(self) -> None:
        """Close the SSH sessions this Domain object keeps open (idempotent)."""
        cache = self.__dict__.get("_hvlib_sessions")
        if cache is not None:
            cache.close()

    def _sessions(self) -> _SessionCache:
        with _state_lock:
            cache = self.__dict__.get("_hvlib_sessions")
            if cache is None:
                cache = self.__dict__["_hvlib_sessions"] = _SessionCache()
                weakref.finalize(self, cache.close)
            return cache

    def _session(
        self, config: SshConfig, *, fresh: bool = False, deadline: float | None = None
    ) -> tuple[SshSession, bool]:
        """A logged-in session (the kept one if alive); True if it was kept from before.
        A new connection gives up at ``deadline`` (monotonic) if that comes before the
        config's ``connect_timeout``.

        Raises:
            GuestAccessError: no time left, or the connection failed.
        """
        from hvlib.guest import ssh as sshmod

        address = self._ssh_address(config)
        cache = self._sessions()
        key = (address, config.port, config)
        with cache.lock:
            kept = cache.sessions.get(key)
        if kept is not None and kept.active and not fresh:
            return kept, True
        session = sshmod.SshSession.open(
            address,
            config,
            netns=self.host.netns,
            timeout=_connect_budget(config, deadline),
            name=self.name,
        )
        cache.keep(key, session)
        return session, False

    def _keep_session(self, address: str, config: SshConfig, session: SshSession) -> None:
        self._sessions().keep((address, config.port, config), session)

    def _ssh_config(self, ssh: SshConfig | None) -> SshConfig:
        """The call's config, else the domain's (``dom.ssh``), else the host's.

        Raises:
            GuestAccessError: none is set.
        """
        for candidate in (ssh, self.ssh, getattr(self.host, "ssh", None)):
            if candidate is not None:
                return candidate
        raise GuestAccessError(
            f"{self.name}: no SSH credentials: pass ssh=SshConfig(...) to hvlib.connect(), "
            "set dom.ssh, or pass ssh= to this call",
            name=self.name,
        )

    def _ssh_address(self, config: SshConfig, *, not_ready: bool = False) -> str:
        """Where to reach the guest: ``config.address``, else the address API's pick.

        Raises:
            GuestAccessError (NotReady with ``not_ready``): the guest has no usable address.
        """
        if config.address:
            return config.address
        address = pick_address(self.addresses())
        if address is not None:
            return address
        if not_ready:
            raise NotReady("address", "no usable address reported yet")
        raise GuestAccessError(
            f"{self.name}: no usable address (wait_ready() or wait_for_address() first)",
            name=self.name,
        )

    def _require_running(self, action: str) -> None:
        state = self.state
        if not state.is_active:
            raise InvalidState(
                f"cannot {action} {self.name}: it is {state.value}", name=self.name, state=state
            )
