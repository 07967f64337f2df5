"""Rows on a real libvirtd: a SandboxHost (its own network and mount namespaces) booting the
test guest kit. Raw libvirt-python baselines use the XML hvlib renders for the same spec.

Every domain is named ``bench-*``; each row removes what it made, and :meth:`Lab.close` stops
the sandbox (which destroys whatever is left), also after a failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import libvirt

import hvlib
from hvlib import DomainSpec, Filesystem, Nic, State, VirtType
from hvlib.guest.config import SshConfig
from hvlib.parallel import HostPool, ensure_all, start_all
from hvlib.testkit import guestkit
from hvlib.testkit.guestkit import GuestKit
from hvlib.testkit.sandbox import SandboxHost
from hvlib.virt.domain import Domain
from hvlib.virt.events import DomainEvent, EventKind
from hvlib.virt.host import Host


def vm_spec(kit: GuestKit, name: str, *, nic: bool = False) -> DomainSpec:
    """The kit's QEMU (TCG) guest, optionally on the sandbox's NAT network."""
    return DomainSpec(
        name=name,
        virt=VirtType.QEMU,
        memory_mib=256,
        kernel=str(kit.kernel),
        initrd=str(kit.initrd),
        cmdline=guestkit.kernel_cmdline("ttyS0"),
        nics=[Nic.network("default")] if nic else [],
        rng=True,
    )


def ct_spec(kit: GuestKit, name: str) -> DomainSpec:
    """The kit's LXC container (its own root directory, the kit's init)."""
    return DomainSpec(
        name=name,
        virt=VirtType.LXC,
        memory_mib=64,
        init=[guestkit.LXC_INIT],
        filesystems=[Filesystem.mount(str(kit.lxc_rootfs), "/")],
    )


class Lab:
    """A started sandbox, the guest kit, hvlib hosts (default options, as users get them)
    and raw libvirt-python connections on both drivers."""

    def __init__(self, sandbox: SandboxHost, kit: GuestKit) -> None:
        self.sandbox, self.kit = sandbox, kit
        self.qemu = hvlib.connect(sandbox.qemu_uri, netns=sandbox.netns)
        self.lxc = hvlib.connect(sandbox.lxc_uri, netns=sandbox.netns)
        self.raw_qemu = libvirt.open(sandbox.qemu_uri)
        self.raw_lxc = libvirt.open(sandbox.lxc_uri)
        self._rpc_dom = self.raw_qemu.defineXML(
            hvlib.render(vm_spec(kit, "bench-rpc")).replace("\n", "")
        )

    @classmethod
    def open(cls, name: str) -> Lab:
        """Build (or reuse) the kit and start a sandbox named ``name``.

        Raises:
            SandboxError, GuestKitError: what failed (nothing is left running).
        """
        kit = guestkit.ensure_guest_kit()
        sandbox = SandboxHost(name).start()
        try:
            return cls(sandbox, kit)
        except BaseException:
            sandbox.stop()
            raise

    def close(self) -> None:
        """Close the connections and stop the sandbox (idempotent)."""
        for host in (self.qemu, self.lxc):
            host.close()
        for conn in (self.raw_qemu, self.raw_lxc):
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self.sandbox.stop()

    def rpc(self, calls: int) -> float:
        """Seconds per raw ``dom.state()`` on the sandbox's libvirtd: one local RPC."""
        dom = self._rpc_dom
        started = time.perf_counter()
        for _ in range(calls):
            dom.state()
        return (time.perf_counter() - started) / calls

    def remove(self, raw: Any, names: Iterable[str]) -> None:
        """Destroy and undefine the named domains through ``raw`` (absent ones are skipped)."""
        for name in names:
            try:
                dom = raw.lookupByName(name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefine()


# -- B1: QEMU lifecycle, hvlib / raw ------------------------------------------------------


def qemu_lifecycle(lab: Lab, capture_console: bool) -> float:
    """Seconds for define -> start -> destroy -> undefine of the kit's VM through hvlib."""
    spec = vm_spec(lab.kit, "bench-b1")
    started = time.perf_counter()
    dom = lab.qemu.domains.define(spec)
    dom.start(capture_console=capture_console)
    dom.destroy()
    dom.undefine()
    return time.perf_counter() - started


def raw_lifecycle(raw: Any, xml: str) -> float:
    """Seconds for the same four calls through libvirt-python, from the same XML."""
    started = time.perf_counter()
    dom = raw.defineXML(xml)
    dom.create()
    dom.destroy()
    dom.undefine()
    return time.perf_counter() - started


# -- B4, B5: parallel provisioning / a pool of one ----------------------------------------


def timed_provision(
    lab: Lab, uri: str, specs: Sequence[DomainSpec], *, ensure: bool, pool: tuple[int, int]
) -> float:
    """Seconds to ensure (LXC) or define and start (QEMU) every spec with ``pool`` =
    (workers, connections), connections included; then everything is removed (untimed)."""
    workers, connections = pool
    started = time.perf_counter()
    try:
        if ensure:
            ensure_all(uri, specs, workers=workers, connections=connections)
        else:
            start_all(uri, specs, workers=workers, connections=connections)
        return time.perf_counter() - started
    finally:
        teardown(uri, [s.name for s in specs])


def teardown(uri: str, names: Sequence[str]) -> None:
    """Destroy and undefine ``names`` in parallel (absent ones are skipped)."""

    def remove(host: Host, name: str) -> None:
        dom = host.domains.find(name)
        if dom is not None:
            dom.destroy()
            dom.undefine()

    with HostPool(uri, connections=2) as pool:
        pool.map(remove, names, labels=names, workers=4)


# -- B6: LXC start, hvlib / raw -----------------------------------------------------------


def hvlib_start(lab: Lab, name: str, capture_console: bool) -> float:
    """Seconds of ``start()`` of a container defined (untimed) through hvlib."""
    dom = lab.lxc.domains.define(ct_spec(lab.kit, name))
    try:
        started = time.perf_counter()
        dom.start(capture_console=capture_console)
        return time.perf_counter() - started
    finally:
        dom.destroy()
        dom.undefine()


INIT_PROBE_S = 3.0
"""How long B6 watches (untimed) whether libvirt learns a raw-started container's init."""


def init_known_after(dom: Any, limit: float = INIT_PROBE_S) -> tuple[float, int] | None:
    """(seconds, tries) until libvirt could open the running container's namespaces (it
    knows its init), tried every 5 ms; None if not within ``limit``."""
    import libvirt_lxc

    started = time.monotonic()
    tries = 0
    while time.monotonic() - started < limit:
        tries += 1
        try:
            fds = libvirt_lxc.lxcOpenNamespace(dom, 0)
        except libvirt.libvirtError:
            time.sleep(0.005)
            continue
        for fd in fds:
            os.close(fd)
        return time.monotonic() - started, tries
    return None


def raw_start(
    lab: Lab, name: str, init_known: list[tuple[float, int] | None] | None = None
) -> float:
    """Seconds of libvirt-python's ``create()`` of the same container, from the same XML.
    With ``init_known``, afterwards (untimed) appends :func:`init_known_after`."""
    dom = lab.raw_lxc.defineXML(hvlib.render(ct_spec(lab.kit, name)))
    try:
        started = time.perf_counter()
        dom.create()
        took = time.perf_counter() - started
        if init_known is not None:
            init_known.append(init_known_after(dom))
        return took
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


# -- B7: event -> wait_for's return ------------------------------------------------------


class EventLog:
    """Lifecycle events as hvlib's event thread delivered them (their arrival timestamps)."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: DomainEvent) -> None:
        with self._lock:
            self.events.append(event)

    def first(self, uuid: str, kind: EventKind, after: float) -> DomainEvent | None:
        """The first ``kind`` event of ``uuid`` that arrived after ``after``."""
        with self._lock:
            return next(
                (
                    e
                    for e in self.events
                    if e.uuid == uuid and e.kind is kind and e.timestamp >= after
                ),
                None,
            )


def event_delay(
    host: Host, dom: Domain, log: EventLog, goal: State, act: Callable[[], None]
) -> float:
    """Seconds from libvirt's event to ``wait_for(goal)`` returning in a waiting thread
    (polling disabled), when ``act`` (a raw libvirt call) causes the change.

    Raises:
        RuntimeError: the waiter failed, or no matching event arrived.
    """
    kind = EventKind.STARTED if goal is State.RUNNING else EventKind.STOPPED
    returned: list[float] = []
    failed: list[BaseException] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        try:
            dom.wait_for(goal, timeout=30, poll_interval=None)
            returned.append(time.monotonic())
        except BaseException as e:
            failed.append(e)

    thread = threading.Thread(target=waiter, name="bench-waiter")
    thread.start()
    waiting.wait()
    time.sleep(0.05)  # let it block on the hub's condition
    acted = time.monotonic()
    act()
    thread.join(35)
    event = log.first(dom.uuid, kind, acted)
    if failed or not returned or event is None:
        raise RuntimeError(f"B7 waiter: {failed or 'no return'}; event {event}")
    return returned[0] - event.timestamp


def event_delays(lab: Lab, samples: int) -> list[float]:
    """``samples`` start and as many destroy delays of one container (polling disabled)."""
    log = EventLog()
    with hvlib.connect(lab.sandbox.lxc_uri, poll_interval=None) as host:
        host.subscribe(log)
        dom = host.domains.define(ct_spec(lab.kit, "bench-b7"))
        raw = lab.raw_lxc.lookupByUUIDString(dom.uuid)
        out = []
        try:
            for _ in range(samples):
                out.append(event_delay(host, dom, log, State.RUNNING, raw.create))
                out.append(event_delay(host, dom, log, State.SHUT_OFF, raw.destroy))
        finally:
            dom.destroy()
            dom.undefine()
    return out


# -- B8: the guest's SSH line -> wait_ready's return ---------------------------------------


class LineWatcher:
    """A console listener noting when each watched text first arrived (monotonic time)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = tuple(texts)
        self.seen: dict[str, float] = {}
        self._tail = b""

    def __call__(self, chunk: bytes) -> None:
        now = time.monotonic()
        window = self._tail + chunk
        for text in self.texts:
            if text not in self.seen and text.encode() in window:
                self.seen[text] = now
        self._tail = window[-256:]


@dataclass(frozen=True)
class SshSample:
    """One B8 boot, in seconds."""

    from_ssh_line: float
    """The SSH_LINE's arrival -> wait_ready's return."""
    from_reachable: float
    """The later of the SSH_LINE and the DHCP lease line -> wait_ready's return."""
    lease_after_ssh: float
    """The lease line's arrival minus the SSH_LINE's."""
    fresh_login: float
    """A fresh SSH login plus ``true`` on the ready guest (what a probe's last steps cost)."""
    stages: dict[str, float]
    """When wait_ready reached each stage (tcp, banner, login, command), seconds after the
    later of the SSH line and the lease line."""
    crng: float | None
    """The guest kernel's CRNG_LINE's arrival, seconds after that same moment (None: not
    seen after the listener was attached)."""


CRNG_LINE = "random: crng init done"
"""The guest kernel's line once its random generator is ready (getrandom() blocks before)."""


class StageLog(logging.Handler):
    """Notes when hvlib's readiness probe reached each stage (its debug log lines)."""

    _RE = re.compile(r"^(\S+): readiness reached '(\w+)'")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: dict[tuple[str, str], float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = self._RE.match(record.getMessage())
        if match:
            self.seen.setdefault((match.group(1), match.group(2)), time.monotonic())

    def of(self, name: str, since: float) -> dict[str, float]:
        """Each stage the domain ``name`` reached, in seconds after ``since``."""
        return {stage: t - since for (dom, stage), t in self.seen.items() if dom == name}


def ssh_ready_delay(lab: Lab, host: Host, index: int, stages: StageLog) -> SshSample:
    """Boot the kit's VM on the NAT network, ``wait_ready()`` (SSH) on it, then time a
    fresh login.

    Raises:
        RuntimeError: a line never arrived, or arrived before the listener was attached.
        WaitTimeout: the guest was not ready in time.
    """
    dom = host.domains.define(vm_spec(lab.kit, f"bench-b8-{index}", nic=True))
    try:
        dom.start()
        capture = dom.console
        if capture is None:
            raise RuntimeError("no console capture after start()")
        watch = LineWatcher([guestkit.SSH_LINE, guestkit.LEASE_PREFIX, CRNG_LINE])
        capture.listeners.append(watch)
        if guestkit.SSH_LINE.encode() in capture.data:
            raise RuntimeError("the SSH line came before the listener was attached")
        dom.wait_ready(timeout=120)
        returned = time.monotonic()
        ssh_at = watch.seen.get(guestkit.SSH_LINE)
        lease_at = watch.seen.get(guestkit.LEASE_PREFIX)
        if ssh_at is None or lease_at is None:
            raise RuntimeError(f"console lines seen: {sorted(watch.seen)}")
        dom.close_access()
        login_started = time.monotonic()
        dom.exec(["true"], check=True, timeout=60)
        login = time.monotonic() - login_started
        reachable = max(ssh_at, lease_at)
        return SshSample(
            returned - ssh_at,
            returned - reachable,
            lease_at - ssh_at,
            login,
            stages.of(dom.name, reachable),
            watch.seen[CRNG_LINE] - reachable if CRNG_LINE in watch.seen else None,
        )
    finally:
        dom.close_access()  # before the guest goes: its kept SSH session would complain
        dom.destroy()
        dom.undefine()


@contextlib.contextmanager
def ssh_sampler(lab: Lab) -> Iterator[Callable[[int], SshSample]]:
    """A function taking one B8 sample (boot ``i``), with a host that has the kit's SSH
    credentials and hvlib's readiness stages recorded."""
    ssh = SshConfig(user="root", key=lab.kit.client_key, host_key=lab.kit.host_key_pub)
    logger, stages = logging.getLogger("hvlib"), StageLog()
    level = logger.level
    logger.addHandler(stages)
    logger.setLevel(logging.DEBUG)  # the probe's stage lines are debug records
    try:
        with hvlib.connect(lab.sandbox.qemu_uri, netns=lab.sandbox.netns, ssh=ssh) as host:
            yield lambda i: ssh_ready_delay(lab, host, i, stages)
    finally:
        logger.setLevel(level)
        logger.removeHandler(stages)


def sandbox_name() -> str:
    """A sandbox name unique to this process."""
    return f"bench{os.getpid()}"
