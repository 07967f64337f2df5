"""Live migration for real between two sandboxed libvirt hosts, each in its own network
namespace, joined by a veth pair: the source is opened on its unix socket, the destination
over SSH (+libssh, pinned host key). The guest prints a counter on its serial console every
0.5 s; it keeps counting on the destination, read through hvlib's console capture there.
Failures: a migration past its timeout, and one whose destination libvirtd is killed while
the job runs, both leave the guest running on the source and nothing on the destination."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hvlib
from hvlib import State
from hvlib.errors import MigrationError, MigrationTimeout
from hvlib.testkit.guestkit import GuestKit
from hvlib.testkit.sandbox import SandboxHost, SshLink
from hvlib.virt.domain import Domain
from hvlib.virt.host import Host
from integration.conftest import counter_guest_spec, linked_pair, pinned_uri

pytestmark = [pytest.mark.integration, pytest.mark.remote, pytest.mark.qemu]
log = logging.getLogger(__name__)

IMAGES = "/var/lib/libvirt/images"  # inside each sandbox's mount namespace: a dir of its own
COUNTER = re.compile(rb"counter (\d+)")
PATTERN_AT = 8 * 2**20  # where the test writes a pattern into the guest's disk image


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLink]:
    with linked_pair("mg", tmp_path_factory.mktemp("ssh")) as link:
        yield link


@pytest.fixture(scope="module")
def host_a(linked: SshLink) -> Iterator[Host]:
    with hvlib.connect(linked.a.qemu_uri, poll_interval=None) as h:
        h.pools.ensure_dir("images", IMAGES)
        yield h


@pytest.fixture(scope="module")
def host_b(linked: SshLink) -> Iterator[Host]:
    with hvlib.connect(pinned_uri(linked), poll_interval=None) as h:
        h.pools.ensure_dir("images", IMAGES)
        yield h


def counters(data: bytes) -> list[int]:
    return [int(n) for n in COUNTER.findall(data)]


def qcow2_with_pattern(workdir: Path) -> bytes:
    """A 64 MiB qcow2 image with 1 MiB of 0x5a at PATTERN_AT (so a copy can be compared)."""
    path = workdir / "pattern.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    write = f"write -P 0x5a {PATTERN_AT} 1M"
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", write, str(path)], check=True, capture_output=True
    )
    return path.read_bytes()


def cleanup(*hosts: Host, name: str) -> None:
    for host in hosts:
        with_domain = host.domains.find(name)
        if with_domain is not None:
            with_domain.destroy()
            with_domain.undefine()


class Stamps:
    """Arrival times of console counter lines (a ConsoleCapture listener; whole lines only,
    so a line split across chunks is read once it is complete)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int]] = []
        self._tail = b""

    def __call__(self, chunk: bytes) -> None:
        now = time.monotonic()
        *lines, self._tail = (self._tail + chunk).split(b"\n")
        self.seen += [(now, n) for line in lines for n in counters(line)]


# -- live, with storage ----------------------------------------------------------------------


def test_live_migration_with_storage_copy_keeps_the_guest_counting(
    linked: SshLink, host_a: Host, host_b: Host, kit: GuestKit, tmp_path: Path
) -> None:
    vol = host_a.volumes.create("images", "mig.qcow2", data=qcow2_with_pattern(tmp_path))
    dom = host_a.domains.define(counter_guest_spec(kit, "mig", disks=[vol.disk()]))
    try:
        dom.start()
        assert dom.console is not None
        src_stamps = Stamps()
        dom.console.listeners.append(src_stamps)
        dom.wait_for_console("counter 3", timeout=60)
        readings: list[dict[str, Any]] = []
        started = time.monotonic()
        there = dom.migrate(
            host_b,
            copy_storage=True,
            dest_address=linked.address_b,
            progress=readings.append,
            timeout=120,
        )
        took = time.monotonic() - started
        dst_stamps = Stamps()
        assert there.console is not None
        there.console.listeners.append(dst_stamps)
        returned_at = time.monotonic()

        # exactly one side has it, running, defined persistently on the destination
        assert there.host is host_b and there.state is State.RUNNING
        assert dom.state is State.ABSENT and host_a.domains.find("mig") is None
        assert bool(there.handle.isPersistent())
        assert readings and max(r.get("disk_total", 0) for r in readings) == 64 * 2**20
        stats = there.migration_stats or {}
        assert stats.get("memory_processed", 0) > 0 and stats.get("downtime") is not None

        # the counter goes on, on the destination's console, read through hvlib
        src_last = counters(dom.console_log())[-1]
        line = there.wait_for_console(r"counter \d+", timeout=10)
        dst_first = int(line.split()[-1])
        there.wait_for_console(f"counter {dst_first + 4}", timeout=10)
        assert src_last < dst_first <= src_last + 2, (src_last, dst_first)
        first_seen = next((t for t, n in dst_stamps.seen if n == dst_first), returned_at)
        gap = first_seen - max(t for t, n in src_stamps.seen if n == src_last)
        log.info(
            "live migration with storage copy: %.2f s (libvirt: %s ms total, %s ms downtime, "
            "%s MiB memory, %s MiB disk copied); %d progress readings; console: last counter "
            "on the source %d, first on the destination %d, %.2f s apart (lines every 0.5 s)",
            took,
            stats.get("time_elapsed"),
            stats.get("downtime"),
            stats.get("memory_processed", 0) // 2**20,
            max(r.get("disk_total", 0) for r in readings) // 2**20,
            len(readings),
            src_last,
            dst_first,
            gap,
        )

        # the disk was copied: the destination's image has the same contents as the source's
        a_file = linked.a.root / "var/lib/libvirt/images/mig.qcow2"
        b_file = linked.b.root / "var/lib/libvirt/images/mig.qcow2"
        compared = subprocess.run(
            ["qemu-img", "compare", "-U", str(a_file), str(b_file)], capture_output=True, text=True
        )
        assert compared.returncode == 0, compared.stdout + compared.stderr

        # calling it again after success moves nothing and finds it there
        assert dom.migrate(host_b).uuid == there.uuid

        # offline: the stopped guest's definition moves back (its storage stays)
        assert there.shutdown(timeout=30).graceful
        started = time.monotonic()
        back = there.migrate(host_a)
        log.info("offline migration back: %.2f s", time.monotonic() - started)
        assert back.host is host_a and back.state is State.SHUT_OFF
        assert host_b.domains.find("mig") is None
    finally:
        cleanup(host_a, host_b, name="mig")
        for host in (host_a, host_b):
            found = host.volumes.find("images", "mig.qcow2")
            if found is not None:
                found.delete()


def test_a_domain_looked_up_by_name_migrates_too(
    linked: SshLink, host_a: Host, host_b: Host, kit: GuestKit
) -> None:
    # a Domain from find() reads its virt type lazily from the source's definition, which a
    # live migration undefines: the type must be read before, or the arrival cannot be typed
    host_a.domains.define(counter_guest_spec(kit, "mig-found")).start()
    try:
        found = host_a.domains.find("mig-found")
        assert found is not None
        there = found.migrate(host_b, dest_address=linked.address_b, timeout=120)
        assert there.host is host_b and there.virt is hvlib.VirtType.QEMU
        assert there.state is State.RUNNING and host_a.domains.find("mig-found") is None
    finally:
        cleanup(host_a, host_b, name="mig-found")


# -- failures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow(host_a: Host, host_b: Host, kit: GuestKit) -> Iterator[Domain]:
    """A running guest on a, to be migrated at 1 MiB/s (its ~100 MiB of memory take over a
    minute): long enough to time out, or to lose the destination, mid-way."""
    dom = host_a.domains.define(counter_guest_spec(kit, "slow"))
    try:
        dom.start()
        dom.wait_for_console("counter 1", timeout=60)
        yield dom
    finally:
        cleanup(host_a, host_b, name="slow")


def assert_runs_on_a_only(dom: Domain, host_b: Host) -> None:
    assert dom.state is State.RUNNING
    offset = dom.console.offset if dom.console else 0
    assert dom.console is not None
    dom.console.wait_for(r"counter \d+", timeout=5, since=offset)  # still counting
    there = host_b.domains.find(dom.name)
    assert there is None or not there.state.is_active, there


def test_a_migration_past_its_timeout_is_aborted(
    linked: SshLink, slow: Domain, host_b: Host
) -> None:
    readings: list[dict[str, Any]] = []
    started = time.monotonic()
    with pytest.raises(MigrationTimeout) as e:
        slow.migrate(
            host_b,
            dest_address=linked.address_b,
            bandwidth_mib=1,
            timeout=3,
            progress=readings.append,
        )
    took = time.monotonic() - started
    log.info("aborted at the timeout after %.2f s: %s", took, e.value)
    assert e.value.reason == "timeout" and e.value.running_on == slow.host.uri
    assert e.value.job is not None and e.value.job["data_remaining"] > 0
    assert 3 <= took < 15 and readings
    assert_runs_on_a_only(slow, host_b)


def test_a_migration_whose_destination_dies_leaves_the_guest_on_the_source(
    linked: SshLink, slow: Domain, host_b: Host
) -> None:
    progressed = threading.Event()
    readings: list[dict[str, Any]] = []

    def progress(reading: dict[str, Any]) -> None:
        readings.append(reading)
        if reading.get("data_processed", 0) > 0:
            progressed.set()

    outcome: list[BaseException | Domain] = []

    def migrate() -> None:
        try:
            outcome.append(
                slow.migrate(
                    host_b, dest_address=linked.address_b, bandwidth_mib=1, progress=progress
                )
            )
        except BaseException as e:
            outcome.append(e)

    worker = threading.Thread(target=migrate)
    started = time.monotonic()
    worker.start()
    try:
        assert progressed.wait(30), "the migration job reported no progress"
        # at 1 MiB/s, what is left would take at least 10 more seconds
        assert readings[-1]["data_remaining"] >= 10 * 2**20
        killed_at = time.monotonic()
        linked.b.kill_libvirtd()
        worker.join(60)
        assert not worker.is_alive(), "migrate() did not return after the destination died"
        ended = time.monotonic()
    finally:
        worker.join(60)
        if not _alive(linked.b):
            linked.b.restart_libvirtd()  # it recovers and kills the half-migrated QEMU
    error = outcome[0]
    assert isinstance(error, MigrationError) and not isinstance(error, MigrationTimeout), error
    log.info(
        "destination killed %.2f s into the migration; migrate() raised %.2f s later: %s",
        killed_at - started,
        ended - killed_at,
        error,
    )
    assert error.reason == "destination lost" and error.running_on == slow.host.uri
    assert_runs_on_a_only(slow, host_b)


def _alive(sb: SandboxHost) -> bool:
    try:
        os.kill(sb.libvirtd_pid, 0)
    except (ProcessLookupError, Exception):
        return False
    return Path(f"/proc/{sb.libvirtd_pid}").exists()
