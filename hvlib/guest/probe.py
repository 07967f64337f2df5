"""What every readiness probe is (:class:`ReadyProbe`), what one try works with
(:class:`Attempt`), what a passing one read (:class:`Reading`) and what a wait returns
(:class:`ReadyResult`). The probes themselves are in :mod:`hvlib.guest.ready` and
:mod:`hvlib.guest.toolprobes`. Declarations only: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from hvlib.guest.config import SshConfig
from hvlib.guest.progress import Progress
from hvlib.guest.target import GuestTarget
from hvlib.guest.transport import Transport

ACCESS_STAGES = ("address", "tcp", "banner", "login", "command")
"""The stages of ``Ready.SSH`` (a container reaches only ``command``)."""


@dataclass(frozen=True)
class Reading:
    """What a passing probe read in the guest (for :class:`ReadyResult`)."""

    status: str | None = None
    failed_units: tuple[str, ...] = ()
    detail: str = ""


class ReadyResult(float):
    """What :meth:`hvlib.Domain.wait_ready` returns: the seconds waited (it *is* that float,
    so code that used the number keeps working), and what the probe found.

    Attributes:
        seconds: the seconds waited (the float itself). probe: the probe's name
            (``"SSH"``, ``"SYSTEMD"``). stage: the furthest stage reached. status: what
            the guest said (``"done"``, ``"running"``, ``"degraded"``; None for probes that
            read no status). failed_units: ``Ready.SYSTEMD``: the failed units when the
            system is ``degraded`` (else empty). detail: the guest's own words, if any.
    """

    probe: str
    stage: str
    status: str | None
    failed_units: tuple[str, ...]
    detail: str

    def __new__(
        cls, seconds: float, probe: str, stage: str, reading: Reading | None = None
    ) -> ReadyResult:
        self = super().__new__(cls, seconds)
        found = reading or Reading()
        self.probe, self.stage = probe, stage
        self.status, self.failed_units, self.detail = (
            found.status,
            found.failed_units,
            found.detail,
        )
        return self

    @property
    def seconds(self) -> float:
        """The seconds waited, as a plain float."""
        return float(self)

    def __repr__(self) -> str:
        units = f", failed_units={self.failed_units!r}" if self.failed_units else ""
        return (
            f"ReadyResult({float(self):.3f} s, probe={self.probe!r}, stage={self.stage!r}, "
            f"status={self.status!r}{units})"
        )


@dataclass(frozen=True)
class Attempt:
    """What one try of a probe works with, made once per wait: the guest, its transport
    (``via``), the wait's progress, the wait's deadline (:func:`time.monotonic`) and the SSH
    credentials of the call (None: the domain's, else its host's)."""

    dom: GuestTarget
    via: Transport
    progress: Progress
    deadline: float
    ssh: SshConfig | None


class ReadyProbe:
    """A way to decide that a guest is ready; see :class:`Ready`."""

    name = "probe"
    stages: tuple[str, ...] = ("probe",)

    def attempt(self, at: Attempt) -> Reading | None:
        """One try; what it read when it passed (None: nothing to tell).

        Raises _NotReady (retried) or any other error (propagated at once)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Ready.{self.name}"
