"""SSH transport to VM guests: paramiko over a socket opened in the host's network namespace.

What it does: opens a TCP connection (inside ``host.netns`` when set, through
:func:`hvlib.guest.netns.create_connection`), checks the guest's host key strictly against
:class:`hvlib.guest.config.SshConfig` (pinned ``host_key`` and/or ``known_hosts``; an unknown key
only with the explicit ``accept_unknown_host_key``), logs in with a private key, and runs commands
on session channels with streamed, binary-exact output, stdin input, a deadline and exit status.

Each command is wrapped so that it runs in its own process group (``setsid``) and reports its
pid first on stderr (that line is removed from the output). At a timeout hvlib kills that group
with ``kill -9 -PGID`` over a second channel (busybox's builtin ``kill`` rejects ``--``), then
closes the first: closing an SSH channel does not stop a command that has no terminal (dropbear
and OpenSSH leave it running).

What it must not do: run anything through the remote shell that the caller did not ask for
(argv lists are quoted with :func:`shlex.join`), accept a host key silently, call libvirt, or
open sockets in the calling thread's namespace when a network namespace is configured.
"""

from __future__ import annotations

import base64
import logging
import select
import shlex
import socket
import time
from pathlib import Path

import paramiko

from hvlib.errors import (
    ChannelOpenError,
    CommandTimeout,
    ConnectionLost,
    GuestAccessError,
    HostKeyError,
)
from hvlib.guest import netns as netnsmod
from hvlib.guest.config import CommandResult, SshConfig
from hvlib.guest.io import CHUNK, Input, InputFeeder, OutputSink, normalize_command
from hvlib.model.checks import PathArg

log = logging.getLogger("hvlib")

PID_MARKER = b"hvlib-exec-pid="
EXIT_GRACE = 0.5
"""Seconds to keep reading after the exit status when the output streams stay open (a
background process of the command holds them)."""
KILL_TIMEOUT = 5.0
_SLICE = 0.2
_KEEPALIVE = (
    ("TCP_KEEPIDLE", 5),
    ("TCP_KEEPINTVL", 2),
    ("TCP_KEEPCNT", 3),
    ("TCP_USER_TIMEOUT", 15000),
)
_CHANNEL_ERRORS = (paramiko.SSHException, OSError, EOFError)


# -- the remote command line --------------------------------------------------------------


def wrap_command(command: str | tuple[str, ...]) -> str:
    """The line sent to the remote login shell for ``command``.

    It starts ``/bin/sh`` in a new session (``setsid``, when the guest has it), which prints
    ``hvlib-exec-pid=PID`` on stderr and then ``exec``s the command: an argv as is (quoted with
    :func:`shlex.join`), a string through ``/bin/sh -c``. The login shell then exits with the
    command's status.
    """
    if isinstance(command, str):
        body, args = 'exec /bin/sh -c "$1"', shlex.quote(command)
    else:
        body, args = 'exec "$@"', shlex.join(command)
    inner = f'echo "{PID_MARKER.decode()}$$" >&2; {body}'
    return (
        "S=; command -v setsid >/dev/null 2>&1 && S=setsid; "
        f"$S /bin/sh -c {shlex.quote(inner)} hvlib-exec {args}; exit $?"
    )


def kill_command(pid: int) -> str:
    """The line that kills process group ``pid`` (or, lacking one, process ``pid``)."""
    if pid <= 1:
        raise ValueError(f"refusing to kill pid {pid}")
    return f"kill -9 -{pid} 2>/dev/null || kill -9 {pid}"


class PidFilter:
    """Passes output to a sink, removing the ``hvlib-exec-pid=`` line from the start of stderr
    and remembering the pid."""

    def __init__(self, sink: OutputSink, scan_limit: int = 4096) -> None:
        self.sink = sink
        self.pid: int | None = None
        self._head = bytearray()
        self._scanning = True
        self._limit = scan_limit

    def stdout(self, data: bytes) -> None:
        self.sink.stdout(data)

    def stderr(self, data: bytes) -> None:
        if not self._scanning:
            self.sink.stderr(data)
            return
        self._head += data
        while self._scanning:
            newline = self._head.find(b"\n")
            if newline < 0:
                if len(self._head) > self._limit:
                    self.finish()
                return
            line = bytes(self._head[:newline])
            del self._head[: newline + 1]
            digits = line[len(PID_MARKER) :]
            if line.startswith(PID_MARKER) and digits.isdigit():
                self.pid = int(digits)
                self.finish()
            else:
                self.sink.stderr(line + b"\n")

    def finish(self) -> None:
        """Stop scanning; hand on whatever was held back."""
        self._scanning = False
        held, self._head = bytes(self._head), bytearray()
        self.sink.stderr(held)


# -- connecting ---------------------------------------------------------------------------


def where(address: str, port: int) -> str:
    """``address:port`` (``[v6]:port``)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def open_socket(address: str, port: int, netns: str | None, timeout: float) -> socket.socket:
    """A TCP connection to ``address:port``, made inside ``netns`` when given, with TCP
    keepalive so a vanished guest is noticed within ~15 s.

    Raises:
        GuestAccessError: refused, unreachable or timed out.
        HostError: the network namespace does not exist.
    """
    try:
        sock = netnsmod.create_connection((address, port), timeout, netns)
    except OSError as e:
        inside = f" (in netns {netns})" if netns else ""
        raise GuestAccessError(f"cannot connect to {where(address, port)}{inside}: {e}") from e
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in _KEEPALIVE:
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    return sock


def peek_banner(sock: socket.socket, timeout: float) -> bytes:
    """Wait until the server's ``SSH-`` identification line has arrived, without consuming it.

    Raises:
        GuestAccessError: nothing, or something else, arrived within ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while b"SSH-" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise GuestAccessError(f"no SSH banner within {timeout:g} s (got {data[:80]!r})")
        sock.settimeout(left)
        try:
            data = sock.recv(256, socket.MSG_PEEK)
        except TimeoutError:
            continue
        except OSError as e:
            raise GuestAccessError(f"connection failed before the SSH banner: {e}") from e
        if not data:
            raise GuestAccessError("connection closed before the SSH banner")
        if b"SSH-" not in data:
            time.sleep(0.01)  # a partial peek: let more arrive
    return data


def key_line(key: paramiko.PKey) -> str:
    """``"TYPE BASE64"`` of a public key."""
    return f"{key.get_name()} {key.get_base64()}"


def expected_host_keys(config: SshConfig, address: str) -> list[paramiko.PKey]:
    """The host keys that ``config`` accepts for ``address`` (pinned key, then known_hosts).

    Raises:
        GuestAccessError: the known_hosts file cannot be read, or the pinned key's type is
            unknown to paramiko.
    """
    keys: list[paramiko.PKey] = []
    pinned = config.host_key_line
    if pinned is not None:
        kind, blob = pinned.split()
        try:
            keys.append(paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
        except (paramiko.SSHException, ValueError) as e:
            raise GuestAccessError(f"SshConfig.host_key {kind}: unusable: {e}") from e
    if config.known_hosts is not None:
        name = address if config.port == 22 else f"[{address}]:{config.port}"
        keys.extend(known_host_keys(config.known_hosts, name))
    return keys


def known_host_keys(path: PathArg, name: str) -> list[paramiko.PKey]:
    """Every key an OpenSSH known_hosts file lists for ``name`` (``host`` or ``[host]:port``;
    plain and hashed entries; wildcards, negations and ``@`` markers are not supported and
    skipped). Unlike ``paramiko.HostKeys.lookup``, several keys of one type are all kept.

    Raises:
        GuestAccessError: the file cannot be read.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise GuestAccessError(f"cannot read known_hosts {path}: {e}") from e
    keys: list[paramiko.PKey] = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith(("#", "@")):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except (paramiko.SSHException, ValueError) as e:
            log.debug("known_hosts %s: skipping a line: %s", path, e)
            continue
        if entry is not None and entry.key is not None and _names_match(entry.hostnames, name):
            keys.append(entry.key)
    return keys


def _names_match(patterns: list[str], name: str) -> bool:
    for pattern in patterns:
        if pattern == name:
            return True
        if pattern.startswith("|1|") and paramiko.HostKeys.hash_host(name, pattern) == pattern:
            return True
    return False


def check_host_key(
    offered: paramiko.PKey,
    expected: list[paramiko.PKey],
    config: SshConfig,
    address: str,
    name: str | None = None,
) -> None:
    """Accept ``offered`` if it is one of ``expected``; an unknown key only with
    ``config.accept_unknown_host_key`` (logged as a warning).

    Raises:
        HostKeyError: unknown (and no opt-in), or different from every expected key.
    """
    if any(offered.asbytes() == key.asbytes() for key in expected):
        return
    if not expected and config.accept_unknown_host_key:
        log.warning(
            "%s: accepting unknown SSH host key %s of %s (accept_unknown_host_key=True)",
            name,
            key_line(offered),
            address,
        )
        return
    raise HostKeyError(address, key_line(offered), [key_line(k) for k in expected], name=name)


def load_client_key(config: SshConfig) -> paramiko.PKey:
    """The private key to log in with.

    Raises:
        GuestAccessError: no key configured, or it cannot be read or parsed.
    """
    if config.key is None:
        raise GuestAccessError("SshConfig.key (a private key file) is not set")
    try:
        return paramiko.PKey.from_path(Path(config.key))
    except (OSError, paramiko.SSHException, ValueError) as e:
        raise GuestAccessError(f"cannot load the SSH key {config.key}: {e}") from e


def _prefer_key_types(transport: paramiko.Transport, expected: list[paramiko.PKey]) -> None:
    """Ask the server for a host key of a type we can check (as OpenSSH does)."""
    wanted: list[str] = []
    for key in expected:
        kind = key.get_name()
        wanted += ["rsa-sha2-512", "rsa-sha2-256", kind] if kind == "ssh-rsa" else [kind]
    options = transport.get_security_options()
    available = list(options.key_types)
    first = [k for k in dict.fromkeys(wanted) if k in available]
    options.key_types = [*first, *(k for k in available if k not in first)]


# -- the session --------------------------------------------------------------------------


class SshSession:
    """One logged-in SSH connection to a guest; runs any number of commands (also at once)."""

    def __init__(self, transport: paramiko.Transport, target: str, name: str | None) -> None:
        self.transport = transport
        self.target = target
        self.name = name

    def __repr__(self) -> str:
        return f"<SshSession {self.target} {'open' if self.active else 'closed'}>"

    @classmethod
    def open(
        cls,
        address: str,
        config: SshConfig,
        *,
        netns: str | None,
        timeout: float,
        name: str | None = None,
    ) -> SshSession:
        """Connect to ``address`` (inside ``netns``), check the host key and log in.

        Raises:
            HostKeyError: the host key was refused.
            GuestAccessError: connection, negotiation or authentication failed.
            HostError: the network namespace does not exist.
        """
        sock = open_socket(address, config.port, netns, timeout)
        try:
            return cls.over(sock, address, config, timeout=timeout, name=name)
        except BaseException:
            sock.close()
            raise

    @classmethod
    def over(
        cls,
        sock: socket.socket,
        address: str,
        config: SshConfig,
        *,
        timeout: float,
        name: str | None = None,
    ) -> SshSession:
        """Log in over an already connected socket (the session owns it from now on).

        Raises:
            HostKeyError: the host key was refused.
            GuestAccessError: negotiation or authentication failed.
        """
        target = where(address, config.port)
        expected = expected_host_keys(config, address)
        pkey = load_client_key(config)
        transport = paramiko.Transport(sock)
        try:
            _prefer_key_types(transport, expected)
            transport.banner_timeout = timeout
            transport.handshake_timeout = timeout
            transport.auth_timeout = timeout
            transport.start_client(timeout=timeout)
            check_host_key(transport.get_remote_server_key(), expected, config, target, name)
            transport.auth_publickey(config.user, pkey)
        except HostKeyError:
            transport.close()
            raise
        except _CHANNEL_ERRORS as e:
            transport.close()
            raise GuestAccessError(
                f"SSH login as {config.user} to {target} failed: {type(e).__name__}: {e}",
                name=name,
            ) from e
        return cls(transport, target, name)

    @property
    def active(self) -> bool:
        """True while the connection is up and logged in."""
        return bool(self.transport.is_active() and self.transport.is_authenticated())

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.transport.close()

    def run(
        self,
        command: str | tuple[str, ...] | list[str],
        *,
        input: Input | None = None,
        timeout: float | None = None,
        sink: OutputSink | None = None,
    ) -> CommandResult:
        """Run ``command`` (a string through ``/bin/sh -c``, an argv without a shell).

        Raises:
            CommandTimeout: still running after ``timeout`` s; its process group was killed.
            ConnectionLost: the connection dropped, or the channel closed without an exit
                status, while it ran.
            ChannelOpenError: no channel could be opened (the command did not start).
            SpecError: a malformed command.
        """
        cmd = normalize_command(command)
        sink = sink if sink is not None else OutputSink()
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        chan = self._start(cmd, deadline)
        out = PidFilter(sink)
        writer = _writer(chan, input)
        try:
            if not _pump(chan, out, deadline):
                raise self._timed_out(chan, cmd, out, sink, timeout or 0.0)
            out.finish()
            status = self._exit_status(chan, cmd, sink)
        finally:
            chan.close()
            writer.join()
        writer.raise_local_error()
        stdout, stderr = sink.collected
        return CommandResult(status, stdout, stderr, time.monotonic() - started, cmd)

    def _start(self, cmd: str | tuple[str, ...], deadline: float | None) -> paramiko.Channel:
        budget = 10.0 if deadline is None else max(0.5, min(10.0, deadline - time.monotonic()))
        try:
            chan = self.transport.open_session(timeout=budget)
        except _CHANNEL_ERRORS as e:
            raise ChannelOpenError(
                f"cannot open an SSH channel to {self.target}: {e}", name=self.name
            ) from e
        try:
            chan.exec_command(wrap_command(cmd))
        except _CHANNEL_ERRORS as e:
            chan.close()
            if not self.transport.is_active():
                raise ConnectionLost(
                    f"connection to {self.target} lost while starting the command: {e}",
                    command=cmd,
                    name=self.name,
                ) from e
            raise ChannelOpenError(
                f"{self.target} refused to run a command: {e}", name=self.name
            ) from e
        return chan

    def _exit_status(
        self, chan: paramiko.Channel, cmd: str | tuple[str, ...], sink: OutputSink
    ) -> int:
        if chan.status_event.is_set() and chan.exit_status >= 0:
            return int(chan.exit_status)
        stdout, stderr = sink.collected
        if not self.transport.is_active():
            reason = f"the connection to {self.target} was lost"
            cause = self.transport.get_exception()
            reason += f" ({cause})" if cause else ""
        else:
            reason = f"{self.target} closed the channel without an exit status"
        raise ConnectionLost(
            f"{reason} while the command ran: its outcome is unknown",
            command=cmd,
            stdout=stdout,
            stderr=stderr,
            name=self.name,
        )

    def _timed_out(
        self,
        chan: paramiko.Channel,
        cmd: str | tuple[str, ...],
        out: PidFilter,
        sink: OutputSink,
        timeout: float,
    ) -> CommandTimeout:
        killed = out.pid is not None and self.kill(out.pid)
        chan.close()
        out.finish()
        stdout, stderr = sink.collected
        return CommandTimeout(
            cmd, timeout, stdout=stdout, stderr=stderr, killed=killed, name=self.name
        )

    def kill(self, pid: int) -> bool:
        """Kill the remote process group ``pid`` (over a new channel); True if confirmed."""
        try:
            result = self.run(kill_command(pid), timeout=KILL_TIMEOUT)
        except (GuestAccessError, CommandTimeout) as e:
            log.warning("%s: could not kill remote process group %d: %s", self.name, pid, e)
            return False
        return result.exit_status == 0


def _writer(chan: paramiko.Channel, data: Input | None) -> InputFeeder:
    """Feeds a command's stdin over ``chan``, then sends EOF; without input, EOF at once."""
    return InputFeeder(
        chan.sendall, chan.shutdown_write, data, gone=_CHANNEL_ERRORS, label="remote"
    )


def _pump(chan: paramiko.Channel, out: PidFilter, deadline: float | None) -> bool:
    """Move output to ``out`` until EOF and exit status (False: the deadline passed first).

    If the exit status arrives but the streams stay open (a background process holds them),
    reading stops :data:`EXIT_GRACE` s later.
    """
    fd = chan.fileno()
    grace_until: float | None = None
    while not (chan.eof_received or chan.closed):
        if grace_until is None and chan.status_event.is_set():
            grace_until = time.monotonic() + EXIT_GRACE
        now = time.monotonic()
        if grace_until is not None and now >= grace_until:
            break
        if deadline is not None and now >= deadline:
            return False
        limit = min(x for x in (deadline, grace_until, now + _SLICE) if x is not None)
        select.select([fd], [], [], max(0.0, limit - now))
        _drain(chan, out)
    _drain(chan, out)
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not chan.status_event.wait(left):
        return False
    _drain(chan, out)
    return True


def _drain(chan: paramiko.Channel, out: PidFilter) -> None:
    while chan.recv_ready():
        out.stdout(chan.recv(CHUNK))
    while chan.recv_stderr_ready():
        out.stderr(chan.recv_stderr(CHUNK))
