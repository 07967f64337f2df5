"""The probes that ask a guest's own tools: ``Ready.CLOUD_INIT`` (``cloud-init status``) and
``Ready.SYSTEMD`` (``systemctl is-system-running``).

Each first passes the stages of ``Ready.SSH`` (the transport's own try: over SSH for VMs,
through exec for containers), then runs the tool through the same transport and judges its
answer: ready (a :class:`~hvlib.guest.probe.Reading`), not yet (retried), or never
(:class:`hvlib.ReadyError`, not retried). What the tools print is what cloud-init 22.4 and
systemd 252 print (Debian 12). Exit status 127 (no such program) is never.
"""

from __future__ import annotations

import time

from hvlib.errors import ReadyError, SpecError
from hvlib.guest.config import CommandResult
from hvlib.guest.probe import ACCESS_STAGES, Attempt, Reading, ReadyProbe
from hvlib.guest.progress import _NotReady, not_ready
from hvlib.guest.transport import Invocation


class GuestToolProbe(ReadyProbe):
    """A probe that reaches the guest as ``Ready.SSH`` does, then runs the guest's own tool
    (``argv``) and judges its answer (:meth:`judge`)."""

    stage = "tool"
    argv: tuple[str, ...] = ()
    tool = ""

    @property
    def stages(self) -> tuple[str, ...]:  # type: ignore[override]
        return (*ACCESS_STAGES, self.stage)

    def attempt(self, at: Attempt) -> Reading | None:
        at.via.attempt_ready(at.dom, at.progress, at.deadline, at.ssh)
        at.progress.reach(self.stage)
        result = self.run(at, self.argv)
        if result.exit_status == 127:
            raise ReadyError(
                f"{at.dom.name}: {self.name}: the guest has no {self.tool!r} "
                f"({result.stderr_text.strip() or 'exit status 127'})",
                name=at.dom.name,
                probe=self.name,
                status="not installed",
                detail=result.stderr_text.strip(),
            )
        return self.judge(at, result)

    def run(self, at: Attempt, argv: tuple[str, ...]) -> CommandResult:
        """Run ``argv`` in the guest; a failure to reach it is not-ready (retried)."""
        with not_ready(self.stage):
            left = max(0.5, at.deadline - time.monotonic())
            return at.via.run(at.dom, Invocation(argv, timeout=left, ssh=at.ssh))

    def judge(self, at: Attempt, result: CommandResult) -> Reading:
        """Ready (a Reading), not yet (_NotReady) or never (ReadyError), from ``result``."""
        raise NotImplementedError


def cloud_init_status(text: str) -> str | None:
    """The value of the ``status:`` line of ``cloud-init status`` output (None: no such line)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "status":
            return value.strip()
    return None


class CloudInitProbe(GuestToolProbe):
    """``cloud-init status`` says ``done``. ``error`` (and ``disabled``) raise ReadyError with
    ``cloud-init status --long``'s text; anything else (``not run``, ``running``) is not yet."""

    name = "CLOUD_INIT"
    stage = "cloud-init"
    tool = "cloud-init"
    argv = ("cloud-init", "status")

    def judge(self, at: Attempt, result: CommandResult) -> Reading:
        status = cloud_init_status(result.text)
        if status == "done":
            return Reading(status="done")
        if status in ("error", "disabled"):
            long = self.run(at, ("cloud-init", "status", "--long"))
            detail = (long.text + long.stderr_text).strip()
            raise ReadyError(
                f"{at.dom.name}: cloud-init finished with status {status!r}:\n{detail}",
                name=at.dom.name,
                probe=self.name,
                status=status,
                detail=detail,
            )
        said = status if status is not None else _said(result)
        raise _NotReady(self.stage, f"cloud-init status: {said}")


SYSTEMD_NEVER = frozenset({"maintenance", "stopping"})
"""Answers that mean it will not reach running without someone acting: ReadyError."""
FAILED_UNITS = ("systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager")


def failed_units(text: str) -> tuple[str, ...]:
    """The unit names of ``systemctl list-units --failed --plain --no-legend`` output."""
    return tuple(line.split()[0] for line in text.splitlines() if line.split())


class SystemdProbe(GuestToolProbe):
    """``systemctl is-system-running`` says ``running`` (or ``degraded``, with
    ``allow_degraded``: its failed units go on the result). Call it to choose:
    ``Ready.SYSTEMD(allow_degraded=False)`` demands ``running`` (``degraded`` is retried
    until the timeout, whose message lists the failed units)."""

    stage = "systemd"
    tool = "systemctl"
    argv = ("systemctl", "is-system-running")

    def __init__(self, allow_degraded: bool = True) -> None:
        self.allow_degraded = allow_degraded
        self.name = "SYSTEMD" if allow_degraded else "SYSTEMD(allow_degraded=False)"

    def __call__(self, *, allow_degraded: bool = True) -> SystemdProbe:
        """The SYSTEMD probe, accepting ``degraded`` as ready or not.

        Raises:
            SpecError: ``allow_degraded`` is not a bool.
        """
        if not isinstance(allow_degraded, bool):
            raise SpecError("allow_degraded", "must be a bool", allow_degraded)
        return SystemdProbe(allow_degraded)

    def judge(self, at: Attempt, result: CommandResult) -> Reading:
        state = result.text.strip()
        if state == "running":
            return Reading(status=state)
        if state == "degraded":
            units = failed_units(self.run(at, FAILED_UNITS).text)
            if self.allow_degraded:
                return Reading(status=state, failed_units=units, detail=", ".join(units))
            raise _NotReady(self.stage, f"degraded: failed units: {', '.join(units) or 'none'}")
        if state in SYSTEMD_NEVER:
            raise ReadyError(
                f"{at.dom.name}: systemd is {state!r}: it will not reach 'running' by itself",
                name=at.dom.name,
                probe=self.name,
                status=state,
            )
        raise _NotReady(self.stage, f"systemctl is-system-running: {_said(result)}")


def _said(result: CommandResult) -> str:
    """What a tool printed, for a not-yet reason (stdout, else stderr, else the status)."""
    text = (result.text.strip() or result.stderr_text.strip()).splitlines()
    return text[0] if text else f"exit status {result.exit_status}"
