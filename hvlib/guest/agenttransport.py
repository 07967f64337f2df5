"""Commands through the QEMU guest agent: the ``"agent"`` transport.

Used only when the caller names it (``dom.exec(..., transport="agent")``,
``wait_ready(..., transport="agent")``): never as a fallback after an SSH failure, so a
refused SSH host key stays an error and pinning cannot be bypassed. The guest needs
``DomainSpec(guest_agent=True)`` and qemu-guest-agent running.

How: ``guest-exec`` (argv, stdin as ``input-data``, output captured), then
``guest-exec-status`` polled until the process exited or the timeout; the output arrives
when it exits (the agent returns it only then), and goes to the sink at once. At a timeout a
``kill -9 PID`` is sent through the agent (best effort: ``killed`` says whether it ran). The
agent runs commands as its own user (root) with its own environment, in no shell unless the
caller passed a string. What the guest layer needs of the domain is
:meth:`~hvlib.guest.target.GuestTarget.agent_command`; no libvirt import here.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from hvlib.errors import CommandTimeout, GuestAccessError, HvlibError, SpecError
from hvlib.guest.config import CommandResult, SshConfig
from hvlib.guest.io import Input, input_chunks, shell_argv
from hvlib.guest.progress import Progress, not_ready
from hvlib.guest.target import GuestTarget
from hvlib.guest.transport import Invocation

INPUT_MAX = 8 * 1024 * 1024
"""Bytes of stdin the agent transport takes (it travels in one JSON message)."""
POLL_FIRST = 0.02
POLL_MAX = 0.2
"""Seconds between ``guest-exec-status`` polls: from POLL_FIRST, doubling up to POLL_MAX."""
CALL_TIMEOUT = 10.0
"""Seconds each agent call may take (a guest-exec or a status poll)."""


class AgentTransport:
    """Commands in a VM through its QEMU guest agent (see the module docstring)."""

    waits_for_address = False

    def run(self, target: GuestTarget, command: Invocation) -> CommandResult:
        """Run ``command`` through the agent (``command.ssh`` does not apply).

        Raises:
            CommandTimeout: it ran longer than ``command.timeout`` s (a kill was sent).
            GuestAccessError: the agent did not answer or refused the command.
            SpecError: ``command.input`` is larger than :data:`INPUT_MAX`.
        """
        started = time.monotonic()
        timeout, sink = command.timeout, command.sink
        pid = _start(target, shell_argv(command.argv), _input_data(command.input))
        status = _wait(target, pid, None if timeout is None else started + timeout)
        if status is None:
            killed = _kill(target, pid)
            raise CommandTimeout(command.argv, timeout or 0.0, killed=killed, name=target.name)
        stdout = base64.b64decode(status.get("out-data", ""))
        stderr = base64.b64decode(status.get("err-data", ""))
        if stdout:
            sink.stdout(stdout)
        if stderr:
            sink.stderr(stderr)
        kept_out, kept_err = sink.collected
        elapsed = time.monotonic() - started
        return CommandResult(_exit_status(status), kept_out, kept_err, elapsed, command.argv)

    def attempt_ready(
        self, target: GuestTarget, progress: Progress, deadline: float, ssh: SshConfig | None
    ) -> None:
        """One readiness try: the agent answers ``guest-ping`` and runs ``true``."""
        progress.reach("command")
        with not_ready("command"):
            target.agent_command({"execute": "guest-ping"}, CALL_TIMEOUT)
            left = max(0.5, deadline - time.monotonic())
            result = self.run(target, Invocation(("true",), timeout=left))
            result.check(target.name)

    def close(self) -> None:
        """Nothing is kept open."""


def _input_data(data: Input | None) -> str | None:
    if data is None:
        return None
    chunks, size = [], 0
    for chunk in input_chunks(data):
        size += len(chunk)
        if size > INPUT_MAX:
            raise SpecError("input", f"the agent transport takes at most {INPUT_MAX} bytes")
        chunks.append(chunk)
    return base64.b64encode(b"".join(chunks)).decode()


def _start(target: GuestTarget, argv: list[str], input_data: str | None) -> int:
    arguments: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
    if input_data is not None:
        arguments["input-data"] = input_data
    answer = target.agent_command({"execute": "guest-exec", "arguments": arguments}, CALL_TIMEOUT)
    try:
        return int(answer["pid"])
    except (TypeError, KeyError, ValueError) as e:
        raise GuestAccessError(
            f"{target.name}: the guest agent answered guest-exec without a pid: {answer!r}",
            name=target.name,
        ) from e


def _wait(target: GuestTarget, pid: int, deadline: float | None) -> dict[str, Any] | None:
    """``guest-exec-status`` until the process exited (its status) or ``deadline`` (None)."""
    pause = POLL_FIRST
    while True:
        status = target.agent_command(
            {"execute": "guest-exec-status", "arguments": {"pid": pid}}, CALL_TIMEOUT
        )
        if isinstance(status, dict) and status.get("exited"):
            return status
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return None
        time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - now)))
        pause = min(POLL_MAX, pause * 2)


def _kill(target: GuestTarget, pid: int) -> bool:
    """Send ``kill -9 PID`` through the agent; True if it ran and succeeded."""
    try:
        killer = _start(target, ["kill", "-9", str(pid)], None)
        status = _wait(target, killer, time.monotonic() + CALL_TIMEOUT)
    except HvlibError:
        return False
    return status is not None and _exit_status(status) == 0


def _exit_status(status: dict[str, Any]) -> int:
    """The exit status (128+N when signal N ended it, as the other transports report)."""
    if status.get("signal"):
        return 128 + int(status["signal"])
    return int(status.get("exitcode", 0))
