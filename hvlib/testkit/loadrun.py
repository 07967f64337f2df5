"""Many lifecycles at once on one host: the workload of ``integration/test_load.py`` and of
``make bench``'s load row.

One *operation* (:class:`Op`) is a whole lifecycle of one domain of the test guest kit, with
the volume and the network that some operations make alongside:

    [volume ensure] [network ensure] -> ensure(RUNNING) -> exec (a container: ``echo NAME``
    in its namespaces) or the ready line on the console (a VM) -> shutdown -> ensure(ABSENT)
    -> [volume delete] [network delete]

Each stage is timed (:class:`Outcome`); an operation ends in success or in the exception it
raised (never retried here). Three ways to run a batch of operations, all at once:

- :func:`run_threads`: one thread per operation, the threads sharing one :class:`Host` per
  driver (``Hosts``);
- :func:`run_pools`: :class:`hvlib.parallel.HostPool` per driver, as many workers as
  operations (libvirtd's ``max_client_requests`` decides the connections: 5 workers each);
- :func:`run_processes`: ``N`` child processes (``python -m hvlib.testkit.loadrun``), each
  running its share with :func:`run_threads`; outcomes come back as JSON.

Every runner waits for each operation only until its deadline (:meth:`Bounds.deadline`, the
sum of the stage timeouts the operation itself passes to hvlib, plus a margin): an operation
still running then is reported as hung (:data:`HUNG`), never waited for without end.

:func:`leftovers` lists what of a batch is still on the host (domains, volumes, networks,
``libvirt_lxc`` and QEMU processes of the sandbox). This module is test tooling (it may be
imported by tests and the benchmark, never by the library).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hvlib import DomainSpec, Filesystem, State, VirtType
from hvlib.errors import CallTimeout
from hvlib.testkit import guestkit
from hvlib.virt.host import Host

POOL = "default"
"""The sandbox's storage pool, where operations make their volumes."""
HUNG = "Hung"
"""``Outcome.error_type`` of an operation that did not return by its deadline."""
NO_TIMER_CHECK = "no_timer_check"
"""A kernel argument for the VMs: under TCG on a loaded host, the guest kernel's check of the
IO-APIC timer fails and it panics ("IO-APIC + timer doesn't work!", seen in 1 of 10 boots with
200 operations in flight on 2 shared cores); this skips that check."""
STAGES = ("volume", "network", "ensure", "exec", "ready", "shutdown", "absent", "cleanup")


@dataclass(frozen=True)
class Bounds:
    """Timeouts in seconds that each operation hands to hvlib, per stage.

    The defaults come from measurements on the 2-core machine while other work shared the
    cores (integration/test_load.py's docstring has the figures): the worst stage seen, with
    a margin of 3x or more.
    """

    ensure: float = 90.0
    """Not passed to hvlib (ensure has no overall timeout); the runners' deadline counts it."""
    exec: float = 60.0
    ready: float = 150.0
    shutdown: float = 60.0
    absent: float = 30.0
    extra: float = 30.0
    """Volume and network stages and the runner's own slack."""

    def deadline(self) -> float:
        """Seconds after which an operation that has not returned counts as hung."""
        return self.ensure + max(self.exec, self.ready) + self.shutdown + self.absent + self.extra


@dataclass(frozen=True)
class Kit:
    """The paths of the test guest kit that the specs need (picklable, JSON-able)."""

    kernel: str
    initrd: str
    lxc_rootfs: str

    @classmethod
    def of(cls, kit: guestkit.GuestKit) -> Kit:
        return cls(str(kit.kernel), str(kit.initrd), str(kit.lxc_rootfs))


@dataclass(frozen=True)
class Op:
    """One lifecycle: a container or a VM, optionally with a volume and a network."""

    name: str
    virt: str
    """``lxc`` or ``qemu``."""
    volume: str | None = None
    network: str | None = None
    subnet: str | None = None
    """The network's ``ipv4`` (CIDR)."""


@dataclass
class Outcome:
    """What one operation did: seconds per stage reached, and its error if it failed."""

    name: str
    virt: str
    stages: dict[str, float] = field(default_factory=dict)
    error_type: str | None = None
    error_module: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error_type is None

    def failed_with(self, exc: BaseException) -> None:
        self.error_type, self.error_module = type(exc).__name__, type(exc).__module__
        self.error = str(exc)

    def is_hvlib_error(self) -> bool:
        """True if it failed with an exception of :mod:`hvlib.errors` (a clear hvlib error)."""
        return self.error_module == "hvlib.errors"

    def describe(self) -> str:
        return f"{self.name}: {self.error_type}: {self.error} (stages {self.stages})"


def plan(
    prefix: str, containers: int, vms: int, *, volumes: int, networks: int, octet: int = 77
) -> list[Op]:
    """``containers`` LXC and ``vms`` QEMU operations named ``PREFIX-ct-N`` / ``PREFIX-vm-N``,
    VMs spread evenly through the list; ``volumes`` of them make a volume and ``networks``
    an isolated network each (``10.OCTET.N.1/24``), spread likewise."""
    total = containers + vms
    vm_at = {int((k + 0.5) * total / vms) for k in range(vms)} if vms else set()
    ops: list[Op] = []
    for i in range(total):
        n = sum(1 for j in vm_at if j < i) if i in vm_at else i - sum(1 for j in vm_at if j < i)
        kind = "vm" if i in vm_at else "ct"
        ops.append(Op(f"{prefix}-{kind}-{n}", "qemu" if i in vm_at else "lxc"))
    return [
        _with_extras(op, i, total, volumes, networks, prefix, octet) for i, op in enumerate(ops)
    ]


def _with_extras(
    op: Op, i: int, total: int, volumes: int, networks: int, prefix: str, octet: int
) -> Op:
    vstep, nstep = max(1, total // max(1, volumes)), max(1, total // max(1, networks))
    volume = f"{op.name}.img" if volumes and i % vstep == 0 and i // vstep < volumes else None
    net = i // nstep if networks and i % nstep == 1 % nstep and i // nstep < networks else None
    if net is None:
        return Op(op.name, op.virt, volume)
    return Op(op.name, op.virt, volume, f"{prefix}-net-{net}", f"10.{octet}.{net}.1/24")


def spec_of(kit: Kit, op: Op) -> DomainSpec:
    """The domain of an operation: the kit's LXC container or its QEMU (TCG) guest."""
    if op.virt == "lxc":
        return DomainSpec(
            name=op.name,
            virt=VirtType.LXC,
            memory_mib=64,
            init=[guestkit.LXC_INIT],
            filesystems=[Filesystem.mount(kit.lxc_rootfs, "/")],
        )
    return DomainSpec(
        name=op.name,
        virt=VirtType.QEMU,
        memory_mib=256,
        kernel=kit.kernel,
        initrd=kit.initrd,
        cmdline=guestkit.kernel_cmdline("ttyS0", guestkit.FLAG_NOSSH, NO_TIMER_CHECK),
        rng=True,
    )


@dataclass
class Hosts:
    """One Host per driver, shared by every thread of a run."""

    qemu: Host
    lxc: Host

    def of(self, op: Op) -> Host:
        return self.qemu if op.virt == "qemu" else self.lxc

    def close(self) -> None:
        self.qemu.close()
        self.lxc.close()


StageHook = Callable[[str, str], None]
"""Called with (operation name, stage) as each stage completes (the fault test counts)."""


class _Timer:
    def __init__(self, outcome: Outcome, hook: StageHook | None) -> None:
        self.outcome, self.hook = outcome, hook

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.outcome.stages[name] = time.monotonic() - started
        if self.hook is not None:
            self.hook(self.outcome.name, name)


def lifecycle(
    host: Host,
    kit: Kit,
    op: Op,
    bounds: Bounds,
    hook: StageHook | None = None,
    outcome: Outcome | None = None,
) -> Outcome:
    """Run one operation on ``host`` (the Host of its driver), filling ``outcome`` (a new one
    by default) stage by stage; never raises."""
    outcome = outcome if outcome is not None else Outcome(op.name, op.virt)
    started = time.monotonic()
    try:
        _lifecycle(host, kit, op, bounds, _Timer(outcome, hook))
    except Exception as e:  # reported in the outcome: the caller judges it
        outcome.failed_with(e)
    outcome.seconds = time.monotonic() - started
    return outcome


def _lifecycle(host: Host, kit: Kit, op: Op, bounds: Bounds, t: _Timer) -> None:
    spec = spec_of(kit, op)
    if op.volume:
        with t.stage("volume"):
            host.volumes.ensure(POOL, op.volume, size_mib=1)
    if op.network and op.subnet:
        with t.stage("network"):
            host.networks.ensure(op.network, ipv4=op.subnet, mode="isolated")
    with t.stage("ensure"):
        dom = host.domains.ensure(spec, State.RUNNING).domain
        if dom is None:
            raise AssertionError(f"{op.name}: ensure(RUNNING) returned no domain")
    if op.virt == "lxc":
        with t.stage("exec"):
            out = dom.exec(["/bin/echo", op.name], timeout=bounds.exec, check=True)
            if out.stdout.strip() != op.name.encode():
                raise AssertionError(f"{op.name}: exec printed {out.stdout!r}")
    else:
        with t.stage("ready"):
            dom.wait_for_console(guestkit.READY_LINE, timeout=bounds.ready)
    with t.stage("shutdown"):
        dom.shutdown(timeout=bounds.shutdown)
    with t.stage("absent"):
        removed(host, spec, op, bounds)
    with t.stage("cleanup"):
        remove_extras(host, op)


LOST_REPLIES: list[str] = []
"""Operations whose removal met a CallTimeout and was ensured again (printed by the tests)."""


def removed(host: Host, spec: DomainSpec, op: Op, bounds: Bounds) -> None:
    """``ensure(ABSENT)``, once more after a CallTimeout, as a user's second pass would: under
    load libvirtd 9.0 loses the reply of a call made while a console stream of the same
    connection ends (README, "The B6 hang"); hvlib's deadline then cuts the connection and
    reopens it, and the removal, idempotent, converges on the new one."""
    try:
        host.domains.ensure(spec, State.ABSENT, shutdown_timeout=bounds.absent)
    except CallTimeout:
        LOST_REPLIES.append(op.name)
        host.domains.ensure(spec, State.ABSENT, shutdown_timeout=bounds.absent)


def remove_extras(host: Host, op: Op) -> None:
    """Delete the operation's volume and network (absent ones are fine)."""
    if op.volume:
        vol = host.volumes.find(POOL, op.volume)
        if vol is not None:
            vol.delete()
    if op.network:
        net = host.networks.find(op.network)
        if net is not None:
            net.delete()


def converge(
    hosts: Hosts, kit: Kit, ops: Sequence[Op], state: State, bounds: Bounds
) -> list[Outcome]:
    """A pass of ``ensure(spec, state)`` over every operation's domain at once (threads on
    ``hosts``), with its volume and network ensured (RUNNING) or removed (ABSENT)."""

    def one(host: Host, op: Op) -> None:
        if state is State.ABSENT:
            removed(host, spec_of(kit, op), op, bounds)
            remove_extras(host, op)
            return
        if op.volume:
            host.volumes.ensure(POOL, op.volume, size_mib=1)
        if op.network and op.subnet:
            host.networks.ensure(op.network, ipv4=op.subnet, mode="isolated")
        host.domains.ensure(spec_of(kit, op), state)

    return run_threads(hosts, kit, ops, bounds, body=one)


Body = Callable[[Host, Op], None]


def run_threads(
    hosts: Hosts,
    kit: Kit,
    ops: Sequence[Op],
    bounds: Bounds,
    *,
    hook: StageHook | None = None,
    body: Body | None = None,
) -> list[Outcome]:
    """Every operation at once, one thread each, on the shared ``hosts``; the outcomes in
    order. ``body`` replaces the lifecycle (it raises to fail)."""
    results: list[Outcome | None] = [None] * len(ops)
    partial = [Outcome(op.name, op.virt) for op in ops]  # what a hung one reached

    def run(i: int, op: Op) -> None:
        if body is None:
            results[i] = lifecycle(hosts.of(op), kit, op, bounds, hook, partial[i])
            return
        outcome, started = Outcome(op.name, op.virt), time.monotonic()
        try:
            body(hosts.of(op), op)
        except Exception as e:
            outcome.failed_with(e)
        outcome.seconds = time.monotonic() - started
        results[i] = outcome

    threads = [
        threading.Thread(target=run, args=(i, op), name=f"load-{op.name}", daemon=True)
        for i, op in enumerate(ops)
    ]
    for th in threads:
        th.start()
    _join(threads, time.monotonic() + bounds.deadline())
    return [
        r if r is not None else _hung(op, bounds, dict(p.stages))
        for r, op, p in zip(results, ops, partial, strict=True)
    ]


def _join(threads: Sequence[threading.Thread], deadline: float) -> None:
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))


def _hung(op: Op, bounds: Bounds, stages: dict[str, float] | None = None) -> Outcome:
    out = Outcome(op.name, op.virt, stages=stages or {}, error_type=HUNG)
    done = ", ".join(stages or {}) or "none"
    out.error = (
        f"did not return within its deadline of {bounds.deadline():g} s (stages done: {done}; "
        "it hung in the next)"
    )
    return out


def run_pools(
    uris: tuple[str, str],
    kit: Kit,
    ops: Sequence[Op],
    bounds: Bounds,
    *,
    netns: str | None = None,
) -> list[Outcome]:
    """Every operation at once through :class:`hvlib.parallel.HostPool` (one per driver,
    ``uris`` = (qemu, lxc)), as many workers as operations; the outcomes in order."""
    from hvlib.parallel import MAX_REQUESTS_PER_CONNECTION, HostPool

    by_virt = {v: [o for o in ops if o.virt == v] for v in ("qemu", "lxc")}
    done: dict[str, Outcome] = {}

    def drive(uri: str, batch: list[Op]) -> None:
        if not batch:
            return
        conns = -(-len(batch) // MAX_REQUESTS_PER_CONNECTION)
        with HostPool(uri, connections=conns, netns=netns, poll_interval=None) as pool:
            outs = pool.map(
                lambda host, op: lifecycle(host, kit, op, bounds),
                batch,
                labels=[o.name for o in batch],
                workers=len(batch),
            )
        done.update((o.name, o) for o in outs)

    drivers = [
        threading.Thread(target=drive, args=(uri, by_virt[v]), name=f"load-pool-{v}", daemon=True)
        for uri, v in zip(uris, ("qemu", "lxc"), strict=True)
    ]
    for th in drivers:
        th.start()
    _join(drivers, time.monotonic() + bounds.deadline() + 30)  # + opening 40 connections
    return [done.get(op.name) or _hung(op, bounds) for op in ops]


# -- several processes -----------------------------------------------------------------


def run_processes(
    uris: tuple[str, str],
    kit: Kit,
    ops: Sequence[Op],
    bounds: Bounds,
    *,
    processes: int,
    netns: str | None = None,
) -> list[Outcome]:
    """The operations split among ``processes`` children, each running its share at once
    with :func:`run_threads` on its own Hosts; the outcomes in order. A child that does not
    finish by the deadline is killed and its operations reported as hung."""
    shares = [list(ops[i::processes]) for i in range(processes)]
    children = [_spawn(uris, kit, share, bounds, netns) for share in shares]
    deadline = time.monotonic() + bounds.deadline() + 30  # + the child's start and connect
    done: dict[str, Outcome] = {}
    for child in children:
        try:
            out, err = child.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            continue
        if child.returncode != 0:
            raise RuntimeError(f"load child exited {child.returncode}: {err.decode()[-2000:]}")
        done.update((o["name"], Outcome(**o)) for o in json.loads(out))
    return [done.get(op.name) or _hung(op, bounds) for op in ops]


def _spawn(
    uris: tuple[str, str], kit: Kit, share: list[Op], bounds: Bounds, netns: str | None
) -> subprocess.Popen[bytes]:
    job = {
        "uris": list(uris),
        "kit": asdict(kit),
        "ops": [asdict(o) for o in share],
        "bounds": asdict(bounds),
        "netns": netns,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hvlib.testkit.loadrun"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job).encode())
    proc.stdin.close()
    proc.stdin = None  # communicate() must not flush it again
    return proc


def open_hosts(uris: tuple[str, str], netns: str | None) -> Hosts:
    """A Host per driver (``uris`` = (qemu, lxc)), events only (no polling)."""
    import hvlib

    qemu = hvlib.connect(uris[0], netns=netns, poll_interval=None)
    try:
        return Hosts(qemu, hvlib.connect(uris[1], netns=netns, poll_interval=None))
    except BaseException:
        qemu.close()
        raise


def _child() -> int:
    job = json.loads(sys.stdin.read())
    kit = Kit(**job["kit"])
    ops = [Op(**o) for o in job["ops"]]
    bounds = Bounds(**job["bounds"])
    hosts = open_hosts((job["uris"][0], job["uris"][1]), job["netns"])
    try:
        outcomes = run_threads(hosts, kit, ops, bounds)
    finally:
        hosts.close()
    sys.stdout.write(json.dumps([asdict(o) for o in outcomes]))
    sys.stdout.flush()
    os._exit(0)  # a hung operation's thread must not keep the child alive


# -- what is left ------------------------------------------------------------------------


def leftovers(hosts: Hosts, ops: Sequence[Op], sandbox_pids: set[int]) -> list[str]:
    """What of ``ops`` the host still holds: domains (any state), volumes, networks, and
    ``libvirt_lxc`` or QEMU processes among ``sandbox_pids``."""
    names = {o.name for o in ops}
    found = [f"domain {d.name}" for h in (hosts.qemu, hosts.lxc) for d in h.domains.list()]
    found = [f for f in found if f.split()[1] in names]
    vols = {o.volume for o in ops if o.volume}
    found += [f"volume {v.name}" for v in hosts.lxc.pools.get(POOL).volumes() if v.name in vols]
    nets = {o.network for o in ops if o.network}
    found += [f"network {n.name}" for n in hosts.lxc.networks.list() if n.name in nets]
    return found + guest_processes(sandbox_pids)


def guest_processes(pids: set[int]) -> list[str]:
    """``libvirt_lxc`` controllers and QEMU processes among ``pids``, as "process PID CMD"."""
    out = []
    for pid in sorted(pids):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        base = os.path.basename(argv0)
        if base == "libvirt_lxc" or base.startswith("qemu-system"):
            out.append(f"process {pid} {base}")
    return out


def summary(outcomes: Sequence[Outcome]) -> str:
    """One line: how many succeeded, failed (by error type), hung; p95 of each stage."""
    failed: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            failed[o.error_type or "?"] = failed.get(o.error_type or "?", 0) + 1
    p95 = {s: percentile([o.stages[s] for o in outcomes if s in o.stages], 95) for s in STAGES}
    stages = ", ".join(f"{s} {v:.2f}" for s, v in p95.items() if v is not None)
    return (
        f"{sum(o.ok for o in outcomes)}/{len(outcomes)} ok, failed {failed or 'none'}; "
        f"p95 s: {stages}; slowest op {max((o.seconds for o in outcomes), default=0):.1f} s"
    )


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The ``pct`` percentile (nearest rank) of ``values``; None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


if __name__ == "__main__":
    sys.exit(_child())
