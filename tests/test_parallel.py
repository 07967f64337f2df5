"""hvlib.parallel on libvirt's in-process test driver: order, pool binding, errors, sizes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

import hvlib
from hvlib import DomainSpec, Nic, SpecError, State, VirtType
from hvlib.parallel import (
    DEFAULT_CONNECTIONS,
    MAX_REQUESTS_PER_CONNECTION,
    HostPool,
    ParallelError,
    check_sizes,
    ensure_all,
    start_all,
)
from hvlib.virt.host import Host

URI = "test:///default"


def spec(name: str, nics: list[Nic] | None = None) -> DomainSpec:
    return DomainSpec(
        name=name, virt=VirtType.QEMU, memory_mib=64, kernel="/boot/vmlinuz", nics=nics or []
    )


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    with hvlib.connect(URI) as host:
        for name in made:
            dom = host.domains.find(name)
            if dom is not None:
                dom.destroy()
                dom.undefine()


def test_ensure_all_runs_every_spec_and_keeps_their_order(unique: str, cleanup: list[str]) -> None:
    wanted = names(unique, 12)
    cleanup.extend(wanted)
    results = ensure_all(URI, [spec(n) for n in wanted], workers=4, connections=2)
    assert [r.domain.name for r in results if r.domain] == wanted
    assert all(r.changed for r in results)
    with hvlib.connect(URI) as host:
        running = {d.name for d in host.domains.list(State.RUNNING)}
    assert set(wanted) <= running
    again = ensure_all(URI, [spec(n) for n in wanted])
    assert not any(r.changed for r in again), "a second run changes nothing"


def test_serial_pool_is_the_same_code(unique: str, cleanup: list[str]) -> None:
    wanted = names(unique, 3)
    cleanup.extend(wanted)
    results = ensure_all(URI, [spec(n) for n in wanted], workers=1, connections=1)
    assert [r.domain.name for r in results if r.domain] == wanted


def test_each_thread_is_bound_to_one_connection_round_robin() -> None:
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def record(host: Host, _item: int) -> int:
        time.sleep(0.02)  # let every worker take items
        with lock:
            seen.append((threading.get_ident(), id(host)))
        return id(host)

    with HostPool(URI, connections=3) as pool:
        assert pool.size == 3
        pool.map(record, list(range(60)), workers=6)
        hosts_of_thread: dict[int, set[int]] = {}
        for thread, host in seen:
            hosts_of_thread.setdefault(thread, set()).add(host)
        assert all(len(h) == 1 for h in hosts_of_thread.values()), "a thread kept its host"
        threads_per_host = Counter(next(iter(h)) for h in hosts_of_thread.values())
        assert set(threads_per_host) <= {id(h) for h in pool.hosts}
        assert max(threads_per_host.values()) <= 2, "6 workers over 3 connections: 2 each"


def test_map_runs_items_concurrently() -> None:
    with HostPool(URI, connections=1) as pool:
        started = time.monotonic()
        pool.map(lambda _h, _i: time.sleep(0.2), list(range(8)), workers=4)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"8 x 0.2 s on 4 workers took {elapsed:.2f} s"


def test_failures_are_collected_and_do_not_stop_the_others(unique: str, cleanup: list[str]) -> None:
    good = names(unique, 4)
    cleanup.extend(good)
    bad = spec(f"{unique}-bad", nics=[Nic.network("no-such-net")])
    specs = [spec(good[0]), spec(good[1]), bad, spec(good[2]), spec(good[3])]
    with pytest.raises(ParallelError) as caught:
        ensure_all(URI, specs, workers=2, connections=2)
    err = caught.value
    assert set(err.errors) == {bad.name}
    assert isinstance(err.errors[bad.name], SpecError)
    assert "1 of 5 failed" in str(err)
    assert err.results[2] is None
    assert [r.domain.name for r in err.results if r is not None and r.domain] == good
    with hvlib.connect(URI) as host:
        assert all(host.domains.get(n).state is State.RUNNING for n in good)
        assert host.domains.find(bad.name) is None


def test_force_shutdown_reaches_each_ensure(unique: str, cleanup: list[str]) -> None:
    cleanup.append(unique)
    with pytest.raises(ParallelError) as caught:  # each ensure checks it: it was passed on
        ensure_all(URI, [spec(unique)], force_shutdown="no")  # type: ignore[arg-type]
    refused = caught.value.errors[unique]
    assert isinstance(refused, SpecError) and refused.field == "force_shutdown"
    [done] = ensure_all(URI, [spec(unique)], state=State.SHUT_OFF, force_shutdown=False)
    assert done.changed and not done.forced


def test_start_all_defines_what_is_missing_and_starts_what_exists(
    unique: str, cleanup: list[str]
) -> None:
    wanted = names(unique, 3)
    cleanup.extend(wanted)
    with HostPool(URI) as pool:
        pool.hosts[0].domains.define(spec(wanted[0]))
        domains = pool.start_all([spec(n) for n in wanted])
        assert [d.name for d in domains] == wanted
        assert all(d.state is State.RUNNING for d in domains), "handles usable while open"
    assert [d.name for d in start_all(URI, [spec(n) for n in wanted])] == wanted


def test_duplicate_names_and_bad_states_are_refused_before_anything_runs(unique: str) -> None:
    with pytest.raises(SpecError, match="more than once"):
        ensure_all(URI, [spec(unique), spec(unique)])
    with pytest.raises(SpecError, match="state"):
        ensure_all(URI, [spec(unique)], state=State.CRASHED)
    with HostPool(URI, connections=1) as pool, pytest.raises(SpecError, match="state"):
        pool.ensure_all([spec(unique)], state=State.CRASHED)
    with hvlib.connect(URI) as host:
        assert host.domains.find(unique) is None


@pytest.mark.parametrize(
    ("workers", "connections"),
    [(0, 1), (1, 0), (True, 1), (MAX_REQUESTS_PER_CONNECTION + 1, 1), (11, 2)],
)
def test_pool_shapes_libvirtd_cannot_serve_are_refused(workers: int, connections: int) -> None:
    with pytest.raises(SpecError):
        check_sizes(workers, connections)


def test_largest_allowed_shape_and_defaults() -> None:
    check_sizes(MAX_REQUESTS_PER_CONNECTION * 2, 2)
    with HostPool(URI) as pool:
        assert pool.size == DEFAULT_CONNECTIONS
        with pytest.raises(SpecError, match="labels"):
            pool.map(lambda _h, i: i, [1, 2], labels=["one"])


def test_domains_of_ensure_all_from_a_uri_are_clearly_dead(unique: str, cleanup: list[str]) -> None:
    """ensure_all(URI) closes the pool it opened: its results' domains keep their name and
    uuid, and every call on them fails at once, saying who closed the connection (before:
    each call retried the closed connection for 31 s)."""
    cleanup.append(unique)
    (result,) = ensure_all(URI, [spec(unique)], state=State.SHUT_OFF)
    dom = result.domain
    assert dom is not None and dom.name == unique and dom.uuid
    for call in (lambda: dom.state, dom.start, lambda: dom.handle, dom.xml):
        started = time.monotonic()
        with pytest.raises(hvlib.HostClosed, match=r"closed by hvlib\.parallel\.ensure_all"):
            call()
        assert time.monotonic() - started < 0.5


def test_domains_of_start_all_from_a_uri_are_clearly_dead(unique: str, cleanup: list[str]) -> None:
    cleanup.append(unique)
    (dom,) = start_all(URI, [spec(unique)])
    started = time.monotonic()
    with pytest.raises(hvlib.HostClosed, match=r"closed by hvlib\.parallel\.start_all"):
        dom.destroy()
    assert time.monotonic() - started < 0.5


def test_domains_of_an_open_pool_stay_usable_until_it_closes(
    unique: str, cleanup: list[str]
) -> None:
    cleanup.append(unique)
    with HostPool(URI, connections=1) as pool:
        (result,) = ensure_all(pool, [spec(unique)], state=State.SHUT_OFF)
        assert result.domain is not None and result.domain.state is State.SHUT_OFF
    with pytest.raises(hvlib.HostClosed, match="closed with its HostPool"):
        result.domain.state  # noqa: B018
