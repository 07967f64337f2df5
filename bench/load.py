"""B11: many lifecycles in flight at once on the sandbox, hvlib / raw libvirt-python.

hvlib runs :mod:`hvlib.testkit.loadrun`'s operations (threads sharing one Host per driver);
raw libvirt-python runs the same operations from the same XML (threads sharing one raw
connection per driver), written as a careful user of libvirt-python would: the LXC start race
handled by starting again (libvirt 9.0 never learns some containers' init), the console read
through a non-blocking stream on libvirt's event loop, shutdown polled until off, exec by a
helper process that enters the namespaces ``lxcOpenNamespace`` hands out.

Throughput is operations per minute of the whole batch (N / wall time x 60); latency is each
operation's seconds, and each stage's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_lxc

import hvlib
from hvlib.model.netplan import NetworkSpec
from hvlib.model.storxml import volume_doc
from hvlib.testkit import guestkit
from hvlib.testkit import loadrun as lr

RAW_INIT_WAIT = 3.0
"""Seconds the raw side waits for libvirt to learn a container's init before starting it
again (hvlib's first wait is 0.5 s, its later ones longer)."""
RAW_STARTS = 6
SHUTDOWN_POLL = 0.1

# Enter the namespaces whose descriptors are listed in argv[1] and exec argv[2:] (setns
# needs a single-threaded process: a fresh interpreter, as hvlib's own helper is).
_ENTER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for fd in sys.argv[1].split(","):
    libc.setns(int(fd), 0)  # the user namespace of a container without an id map refuses
os.chdir("/")
os.execv(sys.argv[2], sys.argv[2:])
"""


@dataclass(frozen=True)
class Batch:
    """The outcomes of one batch and its wall time."""

    outcomes: list[lr.Outcome]
    seconds: float

    @property
    def per_minute(self) -> float:
        return len([o for o in self.outcomes if o.ok]) / self.seconds * 60


def hvlib_batch(uris: tuple[str, str], netns: str, kit: lr.Kit, ops: Sequence[lr.Op]) -> Batch:
    """The operations at once through hvlib (threads sharing one Host per driver)."""
    hosts = lr.open_hosts(uris, netns)
    try:
        started = time.monotonic()
        outcomes = lr.run_threads(hosts, kit, ops, BOUNDS)
        took = time.monotonic() - started
    finally:
        lr.converge(hosts, kit, ops, hvlib.State.ABSENT, BOUNDS)  # after a failure
        hosts.close()
    return Batch(outcomes, took)


BOUNDS = lr.Bounds(ready=300.0, ensure=180.0)
"""At 500 in flight a TCG guest was seen to need more than 240 s to its ready line."""


def raw_batch(uris: tuple[str, str], kit: lr.Kit, ops: Sequence[lr.Op]) -> Batch:
    """The same operations through raw libvirt-python, one thread each."""
    conns = {"qemu": libvirt.open(uris[0]), "lxc": libvirt.open(uris[1])}
    results: list[lr.Outcome | None] = [None] * len(ops)

    def run(i: int, op: lr.Op) -> None:
        results[i] = raw_lifecycle(conns[op.virt], kit, op)

    threads = [threading.Thread(target=run, args=(i, op), daemon=True) for i, op in enumerate(ops)]
    started = time.monotonic()
    for th in threads:
        th.start()
    deadline = started + BOUNDS.deadline()
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    took = time.monotonic() - started
    outcomes = [
        r or lr.Outcome(op.name, op.virt, error_type=lr.HUNG)
        for r, op in zip(results, ops, strict=True)
    ]
    for op in ops:
        _raw_remove(conns[op.virt], op)
    for conn in conns.values():
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
    return Batch(outcomes, took)


def raw_lifecycle(conn: Any, kit: lr.Kit, op: lr.Op) -> lr.Outcome:
    """One operation through libvirt-python; never raises."""
    out = lr.Outcome(op.name, op.virt)
    started = time.monotonic()
    try:
        _raw_steps(conn, kit, op, out)
    except Exception as e:
        out.failed_with(e)
    out.seconds = time.monotonic() - started
    return out


def _stage(out: lr.Outcome, name: str, started: float) -> None:
    out.stages[name] = time.monotonic() - started


def _raw_steps(conn: Any, kit: lr.Kit, op: lr.Op, out: lr.Outcome) -> None:
    if op.volume:
        t = time.monotonic()
        pool = conn.storagePoolLookupByName(lr.POOL)
        pool.createXML(volume_doc(op.volume, 1024 * 1024, "raw").to_xml(), 0)
        _stage(out, "volume", t)
    if op.network and op.subnet:
        t = time.monotonic()
        spec = NetworkSpec(op.network, op.subnet, "isolated")
        conn.networkDefineXML(spec.doc().to_xml()).create()
        _stage(out, "network", t)
    t = time.monotonic()
    xml = hvlib.render(lr.spec_of(kit, op))
    dom = conn.defineXML(xml)
    console = _raw_start(conn, dom) if op.virt == "qemu" else None
    if op.virt == "lxc":
        fds = _raw_start_container(dom)
    _stage(out, "ensure", t)
    t = time.monotonic()
    if op.virt == "lxc":
        _raw_exec(fds, op.name)
        _stage(out, "exec", t)
    else:
        assert console is not None
        console.wait(BOUNDS.ready)
        _stage(out, "ready", t)
    t = time.monotonic()
    _raw_shutdown(dom, op.virt == "lxc")
    _stage(out, "shutdown", t)
    if console is not None:
        console.close()
    t = time.monotonic()
    dom.undefine()
    _stage(out, "absent", t)
    t = time.monotonic()
    _raw_remove_extras(conn, op)
    _stage(out, "cleanup", t)


def _raw_start_container(dom: Any) -> list[int]:
    """create(), then the namespaces once libvirt knows the init; a start whose init it
    does not learn within RAW_INIT_WAIT s is destroyed and made again."""
    for _ in range(RAW_STARTS):
        dom.create()
        deadline = time.monotonic() + RAW_INIT_WAIT
        while time.monotonic() < deadline:
            try:
                return [int(fd) for fd in libvirt_lxc.lxcOpenNamespace(dom, 0)]
            except libvirt.libvirtError:
                time.sleep(0.01)
        dom.destroy()
    raise RuntimeError(f"{dom.name()}: libvirt never learned the init in {RAW_STARTS} starts")


def _raw_exec(fds: list[int], name: str) -> None:
    try:
        listed = ",".join(str(fd) for fd in fds)
        argv = [sys.executable, "-I", "-S", "-c", _ENTER, listed, "/bin/echo", name]
        proc = subprocess.run(argv, capture_output=True, timeout=BOUNDS.exec, pass_fds=fds)
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    if proc.returncode != 0 or proc.stdout.strip() != name.encode():
        raise RuntimeError(f"{name}: exec gave {proc.returncode} {proc.stdout!r} {proc.stderr!r}")


class RawConsole:
    """A non-blocking console stream on libvirt's event loop, watched for the ready line."""

    def __init__(self, conn: Any, dom: Any) -> None:
        self.data = bytearray()
        self.ready = threading.Event()
        self.stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        events = libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_HANGUP
        self.stream.eventAddCallback(events, self._on_event, None)

    def _on_event(self, stream: Any, _events: int, _opaque: Any) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            while True:
                chunk = stream.recv(65536)
                if isinstance(chunk, int) or not chunk:
                    break
                self.data += chunk
        if guestkit.READY_LINE.encode() in self.data:
            self.ready.set()

    def wait(self, timeout: float) -> None:
        if not self.ready.wait(timeout):
            raise TimeoutError(f"no ready line within {timeout:g} s")

    def close(self) -> None:
        for step in (self.stream.eventRemoveCallback, self.stream.abort):
            with contextlib.suppress(libvirt.libvirtError):
                step()


def _raw_start(conn: Any, dom: Any) -> RawConsole:
    """Start paused, open the console, resume: the console from the first byte."""
    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    console = RawConsole(conn, dom)
    dom.resume()
    return console


def _raw_shutdown(dom: Any, container: bool) -> None:
    flags = libvirt.VIR_DOMAIN_SHUTDOWN_SIGNAL if container else 0
    dom.shutdownFlags(flags)
    deadline = time.monotonic() + BOUNDS.shutdown
    while dom.isActive():
        if time.monotonic() > deadline:
            dom.destroy()
            break
        time.sleep(SHUTDOWN_POLL)


def _raw_remove_extras(conn: Any, op: lr.Op) -> None:
    if op.volume:
        conn.storagePoolLookupByName(lr.POOL).storageVolLookupByName(op.volume).delete(0)
    if op.network:
        net = conn.networkLookupByName(op.network)
        net.destroy()
        net.undefine()


def _raw_remove(conn: Any, op: lr.Op) -> None:
    """Whatever a failed raw operation left (untimed)."""
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByName(op.name)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    with contextlib.suppress(libvirt.libvirtError):
        _raw_remove_extras(conn, op)


# -- the rows ------------------------------------------------------------------------------

SIZES = ((200, 6), (500, 10))
"""(operations in flight, of which QEMU guests): the rest are LXC containers."""
QUICK_SIZES = ((10, 1), (20, 1))


def rows(lab: Any, say: Any, *, quick: bool = False) -> list[Any]:
    """B11 (200 in flight) and B11+ (500): hvlib / raw operations per minute, p95 latencies;
    the order alternates (hvlib first at 200, raw first at 500) so drift cancels a little."""
    from bench import stats

    uris = (lab.sandbox.qemu_uri, lab.sandbox.lxc_uri)
    kit = lr.Kit.of(lab.kit)
    out = []
    for index, (count, vms) in enumerate(QUICK_SIZES if quick else SIZES):
        ops = lr.plan(f"b11-{count}", count - vms, vms, volumes=count // 10, networks=4)
        batches: dict[str, Batch] = {}
        order = ("hvlib", "raw") if index % 2 == 0 else ("raw", "hvlib")
        for side in order:
            say(f"B11: {count} in flight ({vms} QEMU), {side}")
            if side == "hvlib":
                batches[side] = hvlib_batch(uris, lab.sandbox.netns, kit, ops)
            else:
                batches[side] = raw_batch(uris, kit, ops)
            say(f"B11: {side}: {batches[side].seconds:.1f} s; {lr.summary(batches[side].outcomes)}")
        out.append(_row(stats, count, vms, batches, index))
    return out


def _row(stats: Any, count: int, vms: int, batches: dict[str, Batch], index: int) -> Any:
    hv, raw = batches["hvlib"], batches["raw"]
    ok = {k: sum(o.ok for o in b.outcomes) for k, b in batches.items()}
    return stats.Row(
        key="B11" if index == 0 else "B11+",
        what=(
            f"{count} lifecycles in flight ({count - vms} LXC + {vms} QEMU): operations/min, "
            "hvlib / raw libvirt-python"
        ),
        figure=f"{hv.per_minute:.0f} / {raw.per_minute:.0f} per min",
        target="-",
        spread=f"p95 op {_p95(hv)} / {_p95(raw)} s",
        n=count,
        passed=None,
        note=(
            f"{count} in flight: hvlib {ok['hvlib']}/{count} ok in {hv.seconds:.1f} s, raw "
            f"{ok['raw']}/{count} in {raw.seconds:.1f} s; p95 s per stage, hvlib: "
            f"{_stages(hv)}; raw: {_stages(raw)}{_failures(batches)}"
        ),
    )


def _p95(batch: Batch) -> str:
    value = lr.percentile([o.seconds for o in batch.outcomes if o.ok], 95)
    return "-" if value is None else f"{value:.1f}"


def _stages(batch: Batch) -> str:
    parts = []
    for stage in lr.STAGES:
        value = lr.percentile([o.stages[stage] for o in batch.outcomes if stage in o.stages], 95)
        if value is not None:
            parts.append(f"{stage} {value:.2f}")
    return ", ".join(parts)


def _failures(batches: dict[str, Batch]) -> str:
    """The first few failures of each side, for the note ("" when none failed)."""
    parts = []
    for side, batch in batches.items():
        failed = [o.describe() for o in batch.outcomes if not o.ok][:3]
        if failed:
            parts.append(f"{side} failed: " + " | ".join(failed))
    return "; " + "; ".join(parts) if parts else ""
