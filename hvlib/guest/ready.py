"""Readiness: the probes of :meth:`hvlib.Domain.wait_ready` and the wait that retries them.

A probe makes one try (:meth:`ReadyProbe.attempt`, given the wait's one :class:`Attempt`);
:func:`run_probe` retries it until it passes or the deadline comes, and a timeout names the
furthest stage reached and the last reason. What the SSH probe does is the transport's
(:mod:`hvlib.guest.transport`). The probes of what real guests do (``Ready.CLOUD_INIT``,
``Ready.SYSTEMD``) first pass the SSH probe's stages, then run the guest's own tool through the
same transport and read its answer (:mod:`hvlib.guest.toolprobes`).

Design: ``Ready`` is a namespace class whose members are probe *objects*, not an Enum, so a
member can also be called to make a variant: ``Ready.SYSTEMD`` is a probe, and
``Ready.SYSTEMD(allow_degraded=False)`` returns another probe of the same type (as
``Ready.CONSOLE(regex)`` does). Every member is a :class:`ReadyProbe`, so ``wait_ready``'s
parameter type stays one type and mypy checks both spellings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from hvlib.errors import (
    GuestAccessError,
    HostKeyError,
    HvlibError,
    InvalidState,
    SpecError,
    Unsupported,
    WaitTimeout,
)
from hvlib.guest.config import SshConfig
from hvlib.guest.probe import ACCESS_STAGES, Attempt, Reading, ReadyProbe, ReadyResult
from hvlib.guest.progress import Progress, _NotReady
from hvlib.guest.target import GuestTarget
from hvlib.guest.toolprobes import CloudInitProbe, SystemdProbe
from hvlib.guest.transport import Transport

__all__ = ["Attempt", "Reading", "Ready", "ReadyProbe", "ReadyResult", "run_probe"]


def missing_capture(name: str, *, test_driver: bool, state: Any = None) -> HvlibError:
    """The error for a console wait on a domain hvlib holds no capture of, saying why.

    On libvirt's test driver there is never one (it has no console streams: hvlib starts its
    domains without capturing): Unsupported. Elsewhere hvlib captures a console from a
    start it makes itself, in this process, with ``capture_console=True``; a domain started
    otherwise (or whose console libvirt refused to open, logged at INFO) has none:
    InvalidState.
    """
    if test_driver:
        return Unsupported(
            f"{name}: no console capture: libvirt's test driver has no console streams, "
            "so hvlib captures no console there and there is no console line to wait for",
            name=name,
            field=None,
        )
    return InvalidState(
        f"{name}: no console capture: hvlib captures a console from a start made through "
        "hvlib in this process (start(capture_console=True)); this domain was started "
        "otherwise, or libvirt refused to open its console (logged at INFO)",
        name=name,
        state=state,
    )


def require_running(dom: GuestTarget, action: str) -> None:
    """Raises InvalidState (naming ``action``) unless the domain is active."""
    state = dom.state
    if not state.is_active:
        raise InvalidState(
            f"cannot {action} {dom.name}: it is {state.value}", name=dom.name, state=state
        )


class _AccessProbe(ReadyProbe):
    """The transport's own try: VMs: address, TCP open, SSH banner, login, then ``true`` runs;
    LXC: ``true`` runs inside the container."""

    name = "SSH"
    stages = ACCESS_STAGES

    def attempt(self, at: Attempt) -> Reading | None:
        at.via.attempt_ready(at.dom, at.progress, at.deadline, at.ssh)
        return None


class _AddressProbe(ReadyProbe):
    """The guest has an address (the domain's address API)."""

    name = "ADDRESS"
    stages = ("address",)

    def attempt(self, at: Attempt) -> Reading | None:
        at.progress.reach("address")
        if not any(at.dom.addresses().values()):
            raise _NotReady("address", "no address reported yet")
        return None


class _ConsoleProbe(ReadyProbe):
    """A console line matching a regular expression (since hvlib started the domain)."""

    stages = ("console",)

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.name = f"CONSOLE({pattern!r})"

    def attempt(self, at: Attempt) -> Reading | None:
        at.progress.reach("console")
        capture = at.dom.console
        if capture is None:
            test_driver = bool(getattr(at.dom.host, "is_test_driver", False))
            raise missing_capture(at.dom.name, test_driver=test_driver)
        try:
            capture.wait_for(self.pattern, max(0.0, at.deadline - time.monotonic()))
        except WaitTimeout as e:
            raise _NotReady("console", f"no line matching {self.pattern!r}") from e
        return None


class _CallableProbe(ReadyProbe):
    """A user function ``fn(dom) -> bool``; False, OSError and GuestAccessError mean not yet."""

    stages = ("probe",)

    def __init__(self, fn: Callable[[Any], bool]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "probe")

    def attempt(self, at: Attempt) -> Reading | None:
        at.progress.reach("probe")
        try:
            ok = self.fn(at.dom)
        except HostKeyError:
            raise
        except (OSError, GuestAccessError) as e:
            raise _NotReady("probe", f"{type(e).__name__}: {e}") from e
        if not ok:
            raise _NotReady("probe", f"{self.name}() returned {ok!r}")
        return None


class Ready:
    """Readiness probes for :meth:`hvlib.Domain.wait_ready`.

    - ``Ready.SSH``: a command runs (VMs: TCP open, then the SSH banner, then a login and
      ``true``; LXC: ``true`` runs inside the container).
    - ``Ready.ADDRESS``: the guest has an address.
    - ``Ready.CONSOLE(regex)``: a console line matches ``regex``.
    - ``Ready.CLOUD_INIT``: ``cloud-init status`` says ``done`` (over SSH for VMs, through
      exec for containers, after the stages of ``Ready.SSH``); its ``error`` raises
      :class:`hvlib.ReadyError` with ``cloud-init status --long``'s text.
    - ``Ready.SYSTEMD``: ``systemctl is-system-running`` says ``running`` or ``degraded``
      (the failed units are on the :class:`ReadyResult`); ``Ready.SYSTEMD(allow_degraded=
      False)`` demands ``running``. ``maintenance`` or ``stopping`` raise ReadyError.
    - any callable ``fn(dom) -> bool`` (also accepted directly by ``wait_ready``).

    A guest without the probe's tool (exit status 127) raises ReadyError at once.
    """

    SSH: ClassVar[ReadyProbe] = _AccessProbe()
    ADDRESS: ClassVar[ReadyProbe] = _AddressProbe()
    CLOUD_INIT: ClassVar[ReadyProbe] = CloudInitProbe()
    SYSTEMD: ClassVar[SystemdProbe] = SystemdProbe()

    @staticmethod
    def CONSOLE(pattern: str) -> ReadyProbe:
        """A probe that waits for a console line matching ``pattern``."""
        return _ConsoleProbe(pattern)

    @staticmethod
    def CALLABLE(fn: Callable[[Any], bool]) -> ReadyProbe:
        """A probe that polls ``fn(dom)`` until it returns True."""
        return _CallableProbe(fn)

    @staticmethod
    def by_word(word: str) -> ReadyProbe:
        """The probe a CLI word names: ``ssh``, ``address``, ``cloud-init``, ``systemd``.

        Raises:
            SpecError: another word.
        """
        probe = READY_WORDS.get(word)
        if probe is None:
            raise SpecError("ready", f"must be one of {', '.join(READY_WORDS)}", word)
        return probe


READY_WORDS: dict[str, ReadyProbe] = {
    "ssh": Ready.SSH,
    "address": Ready.ADDRESS,
    "cloud-init": Ready.CLOUD_INIT,
    "systemd": Ready.SYSTEMD,
}
"""The probes by the word the CLI takes (``--ready WORD``)."""


def run_probe(
    dom: GuestTarget,
    via: Transport,
    probe: ReadyProbe,
    timeout: float,
    interval: float,
    ssh: SshConfig | None = None,
) -> ReadyResult:
    """Retry ``probe`` every ``interval`` s until it passes; return the seconds waited with
    the furthest stage and what the probe read.

    Raises:
        WaitTimeout: not ready within ``timeout`` s (says the furthest stage and the last
            reason; ``.last`` is that stage).
        InvalidState: the domain is not running (checked before each attempt).
        HostKeyError: the guest's host key was refused (not retried).
        ReadyError: the guest said it will not get ready (not retried).
    """
    import tenacity  # only waits need it; keeps ``import hvlib`` cheap

    progress = Progress(probe.stages, dom.name)
    started = time.monotonic()
    deadline = started + timeout
    found: list[Reading | None] = []
    at = Attempt(dom, via, progress, deadline, ssh)

    def once() -> None:
        require_running(dom, "wait until it is ready")
        try:
            found.append(probe.attempt(at))
        except _NotReady as e:
            progress.failed(e)
            raise

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(interval),
        retry=tenacity.retry_if_exception_type(_NotReady),
        reraise=True,
        sleep=lambda s: time.sleep(max(0.0, min(s, deadline - time.monotonic()))),
    )
    try:
        retrying(once)
    except _NotReady:
        waited = time.monotonic() - started
        reason = progress.last.reason if progress.last else "no attempt finished"
        raise WaitTimeout(
            f"{dom.name} not ready ({probe!r}) within {timeout:g} s: reached stage "
            f"{progress.furthest!r}; last: {reason}",
            name=dom.name,
            waited=waited,
            last=progress.furthest,
        ) from progress.last
    return ReadyResult(time.monotonic() - started, probe.name, progress.furthest, found[-1])
