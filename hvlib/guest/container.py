"""Run a command inside a running LXC container: the container transport.

What it does: asks the domain for descriptors of the container's namespaces
(:meth:`hvlib.Domain.container_namespaces`: libvirt's ``lxcOpenNamespace``, in this process;
this module never imports libvirt), hands them to a fresh helper process
(:mod:`hvlib.guest._nsexec`, started with :class:`subprocess.Popen` and ``pass_fds``) which
joins the namespaces, forks the command inside the container's PID namespace and relays its
exit status. stdin is fed from ``input``; stdout and stderr are streamed to an
:class:`hvlib.guest.io.OutputSink`. At a timeout the helper is told (SIGTERM) to SIGKILL the
command's whole process group inside the container.

What it must not do: run Python code between ``fork`` and ``exec`` in hvlib's own process
(libvirt's event-loop thread runs there; ``subprocess`` forks and execs in C), let the helper
use the libvirt connection (a forked child on the parent's connection breaks it, FIELD-NOTES),
or go through a shell unless the caller passed a string.

Not done: the command is not moved into the container's cgroup (``lxcEnterCGroup`` would have
to run in the child, on the connection): its CPU and memory are accounted to hvlib's cgroup.
Destroying the container still ends it (its PID namespace goes away).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from hvlib.errors import CommandTimeout, ConnectionLost, GuestAccessError, InvalidState
from hvlib.guest.config import CommandResult, SshConfig
from hvlib.guest.io import CHUNK, Input, InputFeeder, OutputSink, shell_argv
from hvlib.guest.progress import Progress, not_ready
from hvlib.guest.target import GuestTarget
from hvlib.guest.transport import Invocation

log = logging.getLogger("hvlib")

HELPER = Path(__file__).with_name("_nsexec.py")
STOP_GRACE = 2.0
"""Seconds the helper gets to kill the command's group and exit before it is killed itself."""
EXIT_GRACE = 0.5
"""Seconds to keep reading after the command exited while a background process it left
behind holds its output open."""
INIT_WAIT = 5.0
"""Seconds to wait for a just-started container's init before giving up."""
_SLICE = 0.2


NamespaceOpener = Callable[[], list[int]]
"""Returns descriptors of a running container's namespaces (the caller closes them); raises
InvalidState while its init has not started (:meth:`GuestTarget.container_namespaces`)."""


class ContainerTransport:
    """Commands in an LXC container, inside its namespaces (see the module docstring)."""

    waits_for_address = False

    def run(self, target: GuestTarget, command: Invocation) -> CommandResult:
        """:func:`run` in ``target``'s container (``command.ssh`` does not apply)."""
        return run(
            target.container_namespaces,
            command.argv,
            input=command.input,
            timeout=command.timeout,
            sink=command.sink,
            name=target.name,
        )

    def attempt_ready(
        self, target: GuestTarget, progress: Progress, deadline: float, ssh: SshConfig | None
    ) -> None:
        """One readiness try: ``true`` runs inside the container."""
        progress.reach("command")
        with not_ready("command"):
            left = max(0.5, deadline - time.monotonic())
            result = self.run(target, Invocation(("true",), timeout=left))
            result.check(target.name)

    def close(self) -> None:
        """Nothing is kept open."""


def open_namespaces(
    opener: NamespaceOpener, name: str | None, wait: float | None = None
) -> list[int]:
    """``opener()``, retried while libvirt says the container's init has not started yet
    (right after ``start()``), for up to ``wait`` s (default :data:`INIT_WAIT`).

    Raises:
        GuestAccessError: the init pid did not appear in time.
        HvlibError: any other failure of ``opener``.
    """
    deadline = time.monotonic() + (INIT_WAIT if wait is None else wait)
    while True:
        try:
            return opener()
        except InvalidState as e:
            if time.monotonic() >= deadline:
                raise GuestAccessError(f"{name}: cannot enter the container: {e}", name=name) from e
        time.sleep(0.02)


def run(
    opener: NamespaceOpener,
    command: str | tuple[str, ...],
    *,
    input: Input | None = None,
    timeout: float | None = None,
    sink: OutputSink | None = None,
    name: str | None = None,
) -> CommandResult:
    """Run ``command`` inside the container ``opener`` opens (a string through ``/bin/sh -c``, an
    argv without a shell), as root in ``/root`` (or ``/``) with a clean environment.

    Raises:
        CommandTimeout: still running after ``timeout`` s; its process group was killed.
        ConnectionLost: the helper process was killed while the command ran.
        GuestAccessError: the container's namespaces could not be opened or entered.
        InvalidState: the container is not running.
    """
    sink = sink if sink is not None else OutputSink()
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    proc, status_r = _spawn(opener, shell_argv(command), name)
    writer = _writer(proc.stdin, input)
    try:
        if not _pump(proc, sink, deadline) or not _wait_exit(proc, deadline):
            killed = _stop(proc, status_r)
            stdout, stderr = sink.collected
            raise CommandTimeout(
                command, timeout or 0.0, stdout=stdout, stderr=stderr, killed=killed, name=name
            )
        _check_helper(_read_status(status_r), proc.returncode, name, command, sink)
    finally:
        _reap(proc)
        writer.join()
        os.close(status_r)
    writer.raise_local_error()
    stdout, stderr = sink.collected
    return CommandResult(proc.returncode, stdout, stderr, time.monotonic() - started, command)


def helper_argv(status_fd: int, ns_fds: list[int], argv: list[str]) -> list[str]:
    """The helper's command line (its own interpreter in isolated mode, no site packages)."""
    fds = ",".join(str(fd) for fd in ns_fds)
    return [sys.executable, "-I", "-S", str(HELPER), str(status_fd), fds, "--", *argv]


def _spawn(
    opener: NamespaceOpener, argv: list[str], name: str | None
) -> tuple[subprocess.Popen[bytes], int]:
    ns_fds = open_namespaces(opener, name)
    status_r, status_w = os.pipe()
    try:
        proc = subprocess.Popen(
            helper_argv(status_w, ns_fds, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(*ns_fds, status_w),
            start_new_session=True,
            env={},
        )
    except OSError as e:
        os.close(status_r)
        raise GuestAccessError(f"cannot start the container exec helper: {e}", name=name) from e
    finally:
        for fd in (*ns_fds, status_w):
            os.close(fd)
    os.set_blocking(status_r, False)
    return proc, status_r


def _pump(proc: subprocess.Popen[bytes], sink: OutputSink, deadline: float | None) -> bool:
    """Move output to ``sink`` until both streams end (False: the deadline passed first)."""
    assert proc.stdout is not None and proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ, sink.stdout)
        sel.register(proc.stderr.fileno(), selectors.EVENT_READ, sink.stderr)
        exited_at: float | None = None
        while sel.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now >= exited_at + EXIT_GRACE:
                return True
            if deadline is not None and now >= deadline:
                return False
            for key, _ in sel.select(_SLICE if deadline is None else min(_SLICE, deadline - now)):
                data = os.read(key.fd, CHUNK)
                if data:
                    key.data(data)
                else:
                    sel.unregister(key.fd)
    return True


def _wait_exit(proc: subprocess.Popen[bytes], deadline: float | None) -> bool:
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        proc.wait(left)
    except subprocess.TimeoutExpired:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes], status_r: int) -> bool:
    """Make the helper SIGKILL the command's group (it then exits); True if it confirmed."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        log.warning("container exec helper %d ignored SIGTERM: killing it", proc.pid)
        proc.kill()
        proc.wait()
    return any(line.startswith("killed ") for line in _read_status(status_r))


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Close our output pipe ends (stdin is the writer's); never leave the helper running."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _read_status(fd: int) -> list[str]:
    chunks = []
    with contextlib.suppress(BlockingIOError, OSError):
        while data := os.read(fd, 4096):
            chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace").splitlines()


def _check_helper(
    status: list[str],
    returncode: int,
    name: str | None,
    command: str | tuple[str, ...],
    sink: OutputSink,
) -> None:
    """Raise if the helper could not start the command, or died itself (killed by a signal:
    then the command's outcome is unknown)."""
    errors = [line.removeprefix("error ") for line in status if line.startswith("error ")]
    if errors:
        raise GuestAccessError(f"{name}: {'; '.join(errors)}", name=name)
    if not any(line.startswith("pid ") for line in status):
        raise GuestAccessError(
            f"{name}: the container exec helper failed (exit status {returncode}) before "
            "starting the command",
            name=name,
        )
    if returncode < 0:
        stdout, stderr = sink.collected
        raise ConnectionLost(
            f"{name}: the container exec helper was killed by signal {-returncode} while the "
            "command ran: its outcome is unknown",
            command=command,
            stdout=stdout,
            stderr=stderr,
            name=name,
        )


def _writer(stdin: IO[bytes] | None, data: Input | None) -> InputFeeder:
    """Feeds the command's stdin pipe, then closes it; without input, closes it at once."""
    if stdin is None:
        return InputFeeder(_no_write, _no_end, None, gone=(OSError,), label="container")
    fd = stdin.fileno()

    def write(chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]

    return InputFeeder(write, stdin.close, data, gone=(OSError,), label="container")


def _no_write(_chunk: bytes) -> None:
    raise OSError("no stdin pipe")


def _no_end() -> None:
    """Nothing to close."""
