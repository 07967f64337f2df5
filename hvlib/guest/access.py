"""Guest access: readiness, command execution and file transfer, for VMs and containers.

:class:`GuestAccess` is a mixin of :class:`hvlib.Domain`. It gives every domain
:meth:`~GuestAccess.wait_ready`, :meth:`~GuestAccess.exec`, :meth:`~GuestAccess.put` and
:meth:`~GuestAccess.get`, over the transport its type's profile names
(:attr:`hvlib.model.profiles.Profile.transport`):

- ``"ssh"`` (KVM, QEMU, Xen): :class:`~hvlib.guest.sshtransport.SshTransport`, to an address
  of the guest found through the domain's address API, the socket opened inside the host's
  network namespace when it has one. Host keys are checked strictly against
  :class:`~hvlib.guest.config.SshConfig`.
- ``"container"`` (LXC): :class:`~hvlib.guest.container.ContainerTransport`, inside the
  container's namespaces; no network, no credentials.

What the mixin needs of the domain is :class:`hvlib.guest.target.GuestTarget`; it imports
nothing of :mod:`hvlib.virt`. What it must not do: import paramiko, tenacity or libvirt at
import time (they are imported on first use, so ``import hvlib`` stays cheap), run a command
through a shell the caller did not ask for, accept an SSH host key that was neither pinned nor
known unless ``accept_unknown_host_key`` says so, or report a command whose outcome is unknown
(timeout, lost connection) as a result. The exceptions are in :mod:`hvlib.errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvlib.errors import Command, SpecError, TransferError, Unsupported
from hvlib.guest.agenttransport import AgentTransport
from hvlib.guest.config import CommandResult, SshConfig
from hvlib.guest.container import ContainerTransport
from hvlib.guest.io import Input, OutputCallback, OutputSink, normalize_command
from hvlib.guest.ready import Ready, ReadyProbe, ReadyResult, require_running, run_probe
from hvlib.guest.sshtransport import SshTransport
from hvlib.guest.target import GuestTarget
from hvlib.guest.transport import Invocation, Transport
from hvlib.model.checks import PathArg, check_seconds
from hvlib.model.profiles import profile_for

DEFAULT_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 600.0
TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "ssh": SshTransport,
    "container": ContainerTransport,
    "agent": AgentTransport,
}
"""The transports by name: the one a profile gives (:attr:`hvlib.model.profiles.Profile.transport`)
is the default; ``"agent"`` only when a caller names it."""
VM_TRANSPORTS = ("ssh", "agent")
CONTAINER_TRANSPORTS = ("container",)

_state_lock = threading.Lock()

if TYPE_CHECKING:
    _Target = GuestTarget
else:
    _Target = object


class GuestAccess(_Target):
    """Readiness, exec and file transfer for a domain (mixed into :class:`hvlib.Domain`).

    ``ssh``: this domain's :class:`~hvlib.guest.config.SshConfig` (None: the host's ``ssh``).
    SSH sessions are opened on first use and kept open for the next commands (one per address
    and config); :meth:`close_access` closes them (they are also closed when the Domain object
    is freed).
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
        transport: str | None = None,
    ) -> ReadyResult:
        """Block until the guest is ready by ``probe`` (default :data:`Ready.SSH`: a command
        runs in it); return a :class:`~hvlib.guest.ready.ReadyResult`: the seconds waited
        (a float), the furthest stage, and what the probe read (``Ready.SYSTEMD``: the
        status and the failed units). Attempts are ``interval`` s apart. ``transport``
        (``"agent"``) runs the probe's commands through the QEMU guest agent instead of
        SSH (see :meth:`exec`).

        Raises:
            WaitTimeout: not ready within ``timeout`` s; the message names the furthest stage
                reached (address, tcp, banner, login, command, cloud-init, systemd) and the
                last failure.
            ReadyError: the guest says it will not get ready (``cloud-init status``:
                ``error``, with its ``--long`` text; systemd in ``maintenance``) or lacks the
                probe's tool. Never retried.
            InvalidState: the domain is not running.
            HostKeyError: the guest's SSH host key was refused (never retried).
            SpecError: ``timeout`` is not a finite number of seconds >= 0, or ``interval``
                not one > 0, or an unknown ``transport``.
            Unsupported: ``transport`` does not apply to this kind of guest.
        """
        timeout = check_seconds("timeout", timeout)
        interval = check_seconds("interval", interval, positive=True)
        if not isinstance(probe, ReadyProbe):
            probe = Ready.CALLABLE(probe)
        via = self._transport(transport)
        if probe is Ready.ADDRESS and via.waits_for_address:
            return ReadyResult(self._wait_address(timeout), probe.name, "address")
        return run_probe(self, via, probe, timeout, interval, ssh)

    def _wait_address(self, timeout: float) -> float:
        started = time.monotonic()
        require_running(self, "wait for an address")
        self.wait_for_address(timeout, nics="any")
        return time.monotonic() - started

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
        transport: str | None = None,
    ) -> CommandResult:
        """Run ``command`` in the guest and return its :class:`CommandResult`.

        A string goes through ``/bin/sh -c``; a sequence is an argv and goes through no shell
        (over SSH it is quoted with :func:`shlex.join` for the remote shell). ``input`` is fed
        to stdin (then closed; without it stdin is empty). Output is binary-exact; with
        ``on_stdout``/``on_stderr`` each piece is handed to the callback as it arrives (and
        not kept in the result). VMs: over SSH (see :class:`SshConfig`); LXC: inside the
        container's namespaces. ``transport="agent"`` runs it through the QEMU guest agent
        instead (``DomainSpec(guest_agent=True)``; output arrives when it exits): only when
        named, never as a fallback after an SSH failure. ``result.transport`` says which
        ran (``"ssh"``, ``"container"``, ``"agent"``).

        Raises:
            RemoteCommandError: ``check`` and a non-zero exit status.
            CommandTimeout: it ran longer than ``timeout`` s; its process group was killed
                (the partial output is on the exception).
            ConnectionLost: the connection dropped while it ran (outcome unknown).
            HostKeyError: the guest's SSH host key was refused.
            GuestAccessError: the guest cannot be reached or logged in to (no address,
                refused, authentication failed) or the container cannot be entered.
            InvalidState: the domain is not running. SpecError: a malformed command, or an
                unknown ``transport``. Unsupported: ``transport`` does not apply to this
                kind of guest (``"agent"`` or ``"ssh"`` for a container), or the VM has
                no guest agent channel (libvirt: "QEMU guest agent is not configured").
        """
        cmd = normalize_command(command)
        if timeout is not None:
            check_seconds("timeout", timeout, positive=True)
        name = self._transport_name(transport)
        require_running(self, "run a command in it")
        sink = OutputSink(on_stdout, on_stderr)
        via = self._transport(name)
        result = via.run(self, Invocation(cmd, input=input, timeout=timeout, sink=sink, ssh=ssh))
        result = dataclasses.replace(result, transport=name)
        return result.check(self.name) if check else result

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

    # -- the transport --

    def close_access(self) -> None:
        """Close the SSH sessions this Domain object keeps open (idempotent)."""
        for transport in list(self.__dict__.get("_hvlib_transports", {}).values()):
            transport.close()

    def _transport_name(self, transport: str | None) -> str:
        """The transport to use: the profile's when None, else ``transport`` if it applies.

        Raises:
            SpecError: an unknown name. Unsupported: it does not apply to this guest.
        """
        default = profile_for(self.virt).transport
        if transport is None:
            return default
        if transport not in TRANSPORTS:
            raise SpecError("transport", f"must be one of {', '.join(TRANSPORTS)}", transport)
        allowed = CONTAINER_TRANSPORTS if default == "container" else VM_TRANSPORTS
        if transport not in allowed:
            raise Unsupported(
                f"{self.name}: a {self.virt.value} guest takes transport "
                f"{' or '.join(map(repr, allowed))}, not {transport!r}",
                name=self.name,
                field="transport",
            )
        return transport

    def _transport(self, name: str | None = None) -> Transport:
        """This domain's transport ``name`` (default: its type's), made on first use."""
        name = self._transport_name(name)
        with _state_lock:
            made: dict[str, Transport] = self.__dict__.setdefault("_hvlib_transports", {})
            transport = made.get(name)
            if transport is None:
                transport = made[name] = TRANSPORTS[name]()
                weakref.finalize(self, transport.close)
            return transport
