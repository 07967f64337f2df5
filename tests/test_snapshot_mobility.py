"""Migration's decisions without a second real host: argument checks, refusals, the re-run
that finds the domain already moved (test driver), the job watcher (progress, abort at the
timeout or when the destination is lost) and the after-failure reconciliation (fakes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from hvlib import DomainNotFound, DomainSpec, SpecError, State, Unsupported, VirtType
from hvlib.errors import MigrationError, MigrationTimeout
from hvlib.virt.domain import Domain
from hvlib.virt.host import Host, connect
from hvlib.virt.migration import Mobility, _Watch, reconcile


@pytest.fixture(autouse=True)
def mobility() -> Iterator[None]:
    """Domain's Mobility methods (until the lead adds the mixin to Domain's bases)."""
    with pytest.MonkeyPatch.context() as mp:
        if not issubclass(Domain, Mobility):
            for key, value in vars(Mobility).items():
                if not key.startswith("__"):
                    mp.setattr(Domain, key, value, raising=False)
        yield


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Host]:
    """A second test-driver host (its own instance, from a node file)."""
    node = etree.Element("node")
    etree.SubElement(node, "memory").text = str(4 * 1024 * 1024)
    path = tmp_path / "node.xml"
    path.write_bytes(etree.tostring(node))
    with connect(f"test://{path}", poll_interval=None) as h:
        yield h


@pytest.fixture
def vm(host: Host, unique: str) -> Iterator[Domain]:
    dom = host.domains.define(DomainSpec(name=unique, virt=VirtType.QEMU, kernel="/boot/vmlinuz"))
    yield dom
    dom.destroy()
    dom.undefine()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"bandwidth_mib": 0}, "bandwidth_mib"),
        ({"bandwidth_mib": True}, "bandwidth_mib"),
        ({"bandwidth_mib": 1.5}, "bandwidth_mib"),
        ({"poll_interval": 0}, "poll_interval"),
    ],
)
def test_bad_arguments_are_refused_first(
    vm: Domain, other: Host, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(SpecError) as e:
        vm.migrate(other, **kwargs)
    assert e.value.field == field


def test_migrating_to_its_own_host_is_refused(vm: Domain) -> None:
    with pytest.raises(SpecError, match="is the host the domain is on"):
        vm.migrate(vm.host)


def test_a_stopped_domain_cannot_copy_storage(vm: Domain, other: Host) -> None:
    with pytest.raises(Unsupported, match="cannot copy its storage"):
        vm.migrate(other, copy_storage=True)


def test_a_driver_without_migration_refuses_and_nothing_moves(vm: Domain, other: Host) -> None:
    vm.start()
    with pytest.raises(Unsupported, match="virDomainMigrate3"):
        vm.migrate(other, timeout=30)
    assert vm.state is State.RUNNING
    assert other.domains.find(vm.name) is None


def test_a_rerun_after_success_finds_it_on_the_destination(vm: Domain, other: Host) -> None:
    xml = vm.xml(inactive=True)
    vm.undefine()  # as a completed migration leaves the source
    moved = other.domains.define_xml(xml)
    there = vm.migrate(other)
    assert there.uuid == moved.uuid and there.host is other
    moved.undefine()
    with pytest.raises(DomainNotFound, match="exists neither"):
        vm.migrate(other)


# -- the watcher -----------------------------------------------------------------------------


class FakeConn:
    def __init__(self) -> None:
        self.alive = True

    def isAlive(self) -> int:
        return int(self.alive)


class FakeHandle:
    def __init__(self) -> None:
        self.aborted = 0
        self.readings = 0

    def jobStats(self, flags: int = 0) -> dict[str, Any]:
        self.readings += 1
        return {"type": 2, "time_elapsed": self.readings * 10, "data_remaining": 100}

    def abortJob(self) -> None:
        self.aborted += 1


class FakeDomain(Mobility):
    name = "fake"

    def __init__(self) -> None:
        self.fake = FakeHandle()

    def _write(self, fn: Any, timeout: float | None = None) -> Any:
        return fn(self.fake)


def run_watch(
    dom: FakeDomain, conn: FakeConn, *, timeout: float | None, progress: Any, run_for: float
) -> _Watch:
    watch, done = _Watch(), threading.Event()
    t = threading.Thread(target=dom._watch, args=(conn, watch, done, timeout, progress, 0.02))
    t.start()
    time.sleep(run_for)
    done.set()
    t.join(5)
    return watch


def test_the_watcher_reports_progress_and_survives_a_bad_callback() -> None:
    dom, seen = FakeDomain(), []

    def progress(reading: dict[str, Any]) -> None:
        seen.append(reading["time_elapsed"])
        if len(seen) == 2:
            raise RuntimeError("display broke")

    watch = run_watch(dom, FakeConn(), timeout=None, progress=progress, run_for=0.2)
    assert len(seen) >= 4 and seen == sorted(seen)
    assert watch.readings == len(seen) and watch.abort_reason is None and dom.fake.aborted == 0


def test_the_watcher_aborts_at_the_timeout_once() -> None:
    dom = FakeDomain()
    watch = run_watch(dom, FakeConn(), timeout=0.05, progress=None, run_for=0.3)
    assert watch.abort_reason == "timeout" and dom.fake.aborted == 1


def test_the_watcher_aborts_when_the_destination_is_lost() -> None:
    dom, conn = FakeDomain(), FakeConn()
    conn.alive = False
    watch = run_watch(dom, conn, timeout=60, progress=None, run_for=0.1)
    assert watch.abort_reason == "destination lost" and dom.fake.aborted == 1


# -- reconciliation after a failure ----------------------------------------------------------


class FakeSide:
    def __init__(self, state: State, uri: str) -> None:
        self.state = state
        self.host = type("H", (), {"uri": uri})()
        self.uuid, self.name = "u-1", "fake"
        self.calls: list[str] = []

    def destroy(self) -> None:
        self.calls.append("destroy")
        self.state = State.SHUT_OFF

    def _write(self, fn: Any, timeout: float | None = None) -> Any:
        self.calls.append("resume")
        self.state = State.RUNNING


def settle(monkeypatch: pytest.MonkeyPatch, source: FakeSide, there: FakeSide | None) -> str:
    monkeypatch.setattr("hvlib.virt.migration._dest_copy", lambda *_a: there)
    dest = type("D", (), {"uri": "dest://"})()
    return str(reconcile(source, dest, None, was=State.RUNNING))  # type: ignore[arg-type]


def test_a_running_destination_wins_and_the_stale_source_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, there = FakeSide(State.PAUSED, "src://"), FakeSide(State.RUNNING, "dest://")
    assert settle(monkeypatch, src, there) == "dest://"
    assert src.calls == ["destroy"] and there.calls == []


def test_otherwise_the_source_wins_and_runs_again(monkeypatch: pytest.MonkeyPatch) -> None:
    src, there = FakeSide(State.PAUSED, "src://"), FakeSide(State.PAUSED, "dest://")
    assert settle(monkeypatch, src, there) == "src://"
    assert there.calls == ["destroy"] and src.calls == ["resume"] and src.state is State.RUNNING
    src = FakeSide(State.RUNNING, "src://")
    assert settle(monkeypatch, src, None) == "src://"  # destination unreachable or empty
    assert src.calls == []


def test_migration_errors_say_where_it_runs() -> None:
    err = MigrationTimeout("m", name="vm", running_on="src://", job={"a": 1}, reason="timeout")
    assert isinstance(err, MigrationError) and isinstance(err, TimeoutError)
    assert (err.running_on, err.job, err.reason) == ("src://", {"a": 1}, "timeout")
