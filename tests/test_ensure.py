"""ensure(): desired state on libvirt's real test:/// driver, with every libvirt call counted
by a proxy around hvlib.virt._virt.libvirt (so no call escapes the count)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import libvirt
import pytest

import hvlib
from hvlib import Disk, DomainSpec, Filesystem, IdMap, IdRange, Nic, State, VirtType
from hvlib.model.plan import LIVE_ALL, ChangeHow
from hvlib.virt import _virt, converge
from hvlib.virt.host import Host
from tests.counting import CountingLibvirt


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Host, CountingLibvirt]]:
    proxy = CountingLibvirt(libvirt)
    monkeypatch.setattr(_virt, "libvirt", proxy)
    with hvlib.connect("test:///default", poll_interval=None) as host:
        yield host, proxy


def vm(name: str, **kw: object) -> DomainSpec:
    base: dict[str, object] = {
        "name": name,
        "virt": VirtType.KVM,
        "kernel": "/boot/vmlinuz",
        "memory_mib": 256,
        "max_memory_mib": 512,
        "vcpus": 1,
        "max_vcpus": 2,
        "nics": [Nic.network("default")],
    }
    base.update(kw)
    return DomainSpec(**base)  # type: ignore[arg-type]


def test_create_then_second_run_changes_nothing_and_writes_nothing(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    first = host.domains.ensure(vm(unique))
    assert first.changed and first.domain is not None
    assert first.domain.state is State.RUNNING
    assert [c.how for c in first.changes] == [ChangeHow.STATE, ChangeHow.STATE]
    proxy.calls.clear()
    second = host.domains.ensure(vm(unique))
    assert not second.changed, second.changes
    assert second.changes == [] and second.pending == []
    assert proxy.calls.writes() == {}, proxy.calls
    assert sum(proxy.calls.values()) > 0, "the proxy saw the reads"
    host.domains.ensure(vm(unique), state=State.ABSENT)


def test_identity_is_kept_across_redefines(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, _ = counted
    dom = host.domains.ensure(vm(unique), state=State.SHUT_OFF).domain
    assert dom is not None
    mac_before = dom.mac_addresses()
    res = host.domains.ensure(vm(unique, cmdline="console=ttyS0 quiet"), state=State.SHUT_OFF)
    assert [c.field for c in res.changes] == ["cmdline"]
    assert res.changes[0].how is ChangeHow.NEXT_BOOT
    again = host.domains.get(unique)
    assert again.uuid == dom.uuid and again.mac_addresses() == mac_before
    assert "+    <cmdline>console=ttyS0 quiet</cmdline>" in res.diff()
    host.domains.ensure(vm(unique), state=State.ABSENT)


def test_live_changes_on_a_running_guest(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    host.domains.ensure(vm(unique))
    proxy.calls.clear()
    res = host.domains.ensure(vm(unique, memory_mib=384, vcpus=2))
    how = {c.field: c.how for c in res.changes}
    assert how == {"memory_mib": ChangeHow.LIVE, "vcpus": ChangeHow.LIVE}
    assert proxy.calls["setMemoryFlags"] == 1 and proxy.calls["setVcpusFlags"] == 1
    live = host.domains.get(unique).xml_doc()
    assert live.current_memory_kib == 384 * 1024 and live.vcpu_current in (2, None)
    assert host.domains.get(unique).xml_doc(inactive=True).current_memory_kib == 384 * 1024
    host.domains.ensure(vm(unique), state=State.ABSENT)


def test_nic_added_to_a_running_guest_without_hotplug_is_pending(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    # libvirt's test driver has no device hotplug, and ensure knows it (check mode says so
    # too): the NIC goes into the persistent definition (next boot) and the restart it
    # needs is reported pending, without a hotplug attempt. The live hotplug itself is
    # proven on a real QEMU guest in integration/test_ensure.py.
    host, proxy = counted
    host.domains.ensure(vm(unique))
    proxy.calls.clear()
    two = vm(unique, nics=[Nic.network("default"), Nic.network("default")])
    checked = host.domains.ensure(two, check=True)
    res = host.domains.ensure(two)
    assert [c.how for c in res.changes] == [ChangeHow.NEXT_BOOT]
    assert [c.how for c in res.pending] == [ChangeHow.RESTART]
    assert (checked.changes, checked.pending) == (res.changes, res.pending)
    assert proxy.calls["attachDeviceFlags"] == 0
    assert len(host.domains.get(unique).xml_doc(inactive=True).interfaces) == 2
    again = host.domains.ensure(two)
    assert not again.changed and [c.how for c in again.pending] == [ChangeHow.RESTART]
    host.domains.ensure(vm(unique), state=State.ABSENT)


def test_a_hotplug_the_driver_refuses_becomes_a_pending_restart(
    counted: tuple[Host, CountingLibvirt], unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal nothing predicted (here: ensure is told the test driver hot-plugs NICs,
    which it refuses) is reported as it happened: a next-boot change and a pending restart,
    and with allow_restart the restart applies it."""
    host, proxy = counted
    monkeypatch.setattr(converge, "live_abilities", lambda virt, test_driver: LIVE_ALL)
    host.domains.ensure(vm(unique))
    two = vm(unique, nics=[Nic.network("default"), Nic.network("default")])
    assert [c.how for c in host.domains.ensure(two, check=True).changes] == [ChangeHow.LIVE]
    proxy.calls.clear()
    res = host.domains.ensure(two)
    assert proxy.calls["attachDeviceFlags"] == 1
    assert [c.how for c in res.changes] == [ChangeHow.NEXT_BOOT]
    assert [c.how for c in res.pending] == [ChangeHow.RESTART]
    three = vm(unique, nics=[Nic.network("default")] * 3)
    done = host.domains.ensure(three, allow_restart=True)
    # the second NIC, still not in the running guest, and the third, refused again: the
    # restart applies both
    hows = sorted(c.how.value for c in done.changes)
    assert hows == ["next-boot", "restart", "restart"], done.changes
    assert done.pending == [] and not done.forced
    assert len(host.domains.get(unique).xml_doc().interfaces) == 3
    host.domains.ensure(vm(unique), state=State.ABSENT)


def test_lists_replace_not_append(counted: tuple[Host, CountingLibvirt], unique: str) -> None:
    host, _ = counted
    spec = vm(unique, disks=[Disk.file("/a.img"), Disk.file("/b.img")])
    host.domains.ensure(spec, state=State.SHUT_OFF)
    res = host.domains.ensure(replace(spec, disks=[Disk.file("/a.img")]), state=State.SHUT_OFF)
    assert [c.field for c in res.changes] == ["disks[vdb]"]
    assert [d.target_dev for d in host.domains.get(unique).xml_doc(inactive=True).disks] == ["vda"]
    host.domains.ensure(spec, state=State.ABSENT)


def test_restart_needed_is_pending_unless_allowed(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    host.domains.ensure(vm(unique))
    changed = vm(unique, cmdline="console=ttyS0")
    res = host.domains.ensure(changed)
    assert [(c.field, c.how) for c in res.pending] == [("cmdline", ChangeHow.RESTART)]
    assert [(c.field, c.how) for c in res.changes] == [("cmdline", ChangeHow.NEXT_BOOT)]
    again = host.domains.ensure(changed)  # persistent is right; the running guest is not
    assert not again.changed and [c.field for c in again.pending] == ["cmdline"]
    proxy.calls.clear()
    done = host.domains.ensure(changed, allow_restart=True)
    assert [(c.field, c.how) for c in done.changes] == [("cmdline", ChangeHow.RESTART)]
    assert proxy.calls["createWithFlags"] + proxy.calls["create"] == 1
    assert host.domains.ensure(changed).pending == []
    host.domains.ensure(changed, state=State.ABSENT)


def test_virt_change_needs_recreate(counted: tuple[Host, CountingLibvirt], unique: str) -> None:
    host, proxy = counted
    dom = host.domains.ensure(vm(unique), state=State.SHUT_OFF).domain
    assert dom is not None
    proxy.calls.clear()
    emu = vm(unique, virt=VirtType.QEMU)
    res = host.domains.ensure(emu, state=State.SHUT_OFF)
    assert not res.changed and [c.how for c in res.pending] == [ChangeHow.RECREATE]
    assert proxy.calls.writes() == {}
    res = host.domains.ensure(emu, state=State.SHUT_OFF, allow_recreate=True)
    assert [c.how for c in res.changes] == [ChangeHow.RECREATE]
    again = host.domains.get(unique)
    assert again.virt is VirtType.QEMU and again.uuid == dom.uuid
    host.domains.ensure(emu, state=State.ABSENT)


def test_check_mode_reports_and_writes_nothing(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    res = host.domains.ensure(vm(unique), check=True)
    assert res.changed and res.domain is None and host.domains.find(unique) is None
    host.domains.ensure(vm(unique))
    proxy.calls.clear()
    res = host.domains.ensure(vm(unique, memory_mib=300), state=State.PAUSED, check=True)
    assert {c.field for c in res.changes} == {"memory_mib", "state"}
    assert proxy.calls.writes() == {}
    assert host.domains.get(unique).state is State.RUNNING
    host.domains.ensure(vm(unique), state=State.ABSENT)


def test_state_transitions_count_as_changes(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, _ = counted
    host.domains.ensure(vm(unique), state=State.SHUT_OFF)
    for state in (State.RUNNING, State.PAUSED, State.RUNNING, State.SHUT_OFF):
        res = host.domains.ensure(vm(unique), state=state)
        assert [c.field for c in res.changes] == ["state"] and res.changes[0].after is state
        assert host.domains.get(unique).state is state
    host.domains.ensure(vm(unique), state=State.ABSENT)


def test_absent_twice(counted: tuple[Host, CountingLibvirt], unique: str) -> None:
    host, proxy = counted
    host.domains.ensure(vm(unique))
    first = host.domains.ensure(vm(unique), state=State.ABSENT)
    assert first.changed and first.domain is None
    proxy.calls.clear()
    second = host.domains.ensure(vm(unique), state=State.ABSENT)
    assert not second.changed and proxy.calls.writes() == {}


def test_absent_needs_only_the_name(counted: tuple[Host, CountingLibvirt], unique: str) -> None:
    host, _proxy = counted
    host.domains.ensure(vm(unique))
    bare = DomainSpec(name=unique)  # a kvm spec that could not boot: never rendered for ABSENT
    gone = host.domains.ensure(bare, state=State.ABSENT)
    assert gone.changed and host.domains.find(unique) is None
    assert not host.domains.ensure(bare, state=State.ABSENT).changed


def test_containers_converge_too(counted: tuple[Host, CountingLibvirt], unique: str) -> None:
    host, proxy = counted
    spec = DomainSpec(
        name=unique,
        virt=VirtType.LXC,
        init=["/sbin/init"],
        filesystems=[Filesystem.mount("/srv/ct")],
        nics=[Nic.network("default")],
    )
    host.domains.ensure(spec)
    proxy.calls.clear()
    assert not host.domains.ensure(spec).changed
    assert proxy.calls.writes() == {}
    host.domains.ensure(spec, state=State.ABSENT)


def test_bad_host_refs_fail_before_any_change(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    with pytest.raises(hvlib.SpecError, match="does not exist"):
        host.domains.ensure(vm(unique, nics=[Nic.network("nosuch")]))
    assert proxy.calls.writes() == {}


def test_bad_state_is_a_spec_error(counted: tuple[Host, CountingLibvirt], unique: str) -> None:
    with pytest.raises(hvlib.SpecError):
        counted[0].domains.ensure(vm(unique), state=State.CRASHED)


def ct(name: str, **kw: object) -> DomainSpec:
    base: dict[str, object] = {
        "name": name,
        "virt": VirtType.LXC,
        "init": ["/sbin/init"],
        "filesystems": [Filesystem.mount("/srv/ct")],
        "idmap": IdMap.shifted(100000),
    }
    base.update(kw)
    return DomainSpec(**base)  # type: ignore[arg-type]


SHIFTED_100000 = (((0, 100000, 65536),), ((0, 100000, 65536),))


def test_container_idmap_change_is_a_config_change(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    host.domains.ensure(ct(unique), state=State.SHUT_OFF)
    kept = host.domains.get(unique).xml_doc(inactive=True).idmap  # the test driver keeps it
    assert kept == {"uid": SHIFTED_100000[0], "gid": SHIFTED_100000[1]}
    assert not host.domains.ensure(ct(unique), state=State.SHUT_OFF).changed
    moved = ct(unique, idmap=IdMap.shifted(200000, 1000))
    res = host.domains.ensure(moved, state=State.SHUT_OFF)
    assert [(c.field, c.how) for c in res.changes] == [("idmap", ChangeHow.NEXT_BOOT)]
    assert res.changes[0].before == SHIFTED_100000
    assert res.changes[0].after == (((0, 200000, 1000),), ((0, 200000, 1000),))
    assert '+    <uid start="0" target="200000" count="1000"/>' in res.diff()
    proxy.calls.clear()
    again = host.domains.ensure(moved, state=State.SHUT_OFF)
    assert not again.changed and again.pending == [], again.changes
    assert proxy.calls.writes() == {}
    gone = host.domains.ensure(ct(unique, idmap=None), state=State.SHUT_OFF)
    assert [(c.field, c.after) for c in gone.changes] == [("idmap", None)]
    assert host.domains.get(unique).xml_doc(inactive=True).idmap == {}
    host.domains.ensure(moved, state=State.ABSENT)


def test_container_idmap_ranges_in_another_order_are_no_change(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, _ = counted
    ranges = [IdRange(1000, 1000, 1), IdRange(0, 100000, 1000)]
    spec = ct(unique, idmap=IdMap(uids=ranges, gids=ranges))
    host.domains.ensure(spec, state=State.SHUT_OFF)
    flipped = ct(unique, idmap=IdMap(uids=ranges[::-1], gids=ranges))
    assert not host.domains.ensure(flipped, state=State.SHUT_OFF).changed
    host.domains.ensure(spec, state=State.ABSENT)


def test_idmap_change_on_a_running_container_waits_for_a_restart(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    host.domains.ensure(ct(unique))
    moved = ct(unique, idmap=IdMap.shifted(300000))
    res = host.domains.ensure(moved)
    assert [(c.field, c.how) for c in res.changes] == [("idmap", ChangeHow.NEXT_BOOT)]
    assert [(c.field, c.how) for c in res.pending] == [("idmap", ChangeHow.RESTART)]
    assert host.domains.get(unique).xml_doc().idmap["uid"] == SHIFTED_100000[0]  # still live
    proxy.calls.clear()
    done = host.domains.ensure(moved, allow_restart=True)
    assert [(c.field, c.how) for c in done.changes] == [("idmap", ChangeHow.RESTART)]
    assert proxy.calls["createWithFlags"] + proxy.calls["create"] == 1
    assert host.domains.get(unique).xml_doc().idmap["uid"] == ((0, 300000, 65536),)
    final = host.domains.ensure(moved)
    assert not final.changed and final.pending == []
    host.domains.ensure(moved, state=State.ABSENT)


def test_rng_change_is_a_config_change(counted: tuple[Host, CountingLibvirt], unique: str) -> None:
    host, proxy = counted
    host.domains.ensure(vm(unique), state=State.SHUT_OFF)
    with_rng = vm(unique, rng=True)
    res = host.domains.ensure(with_rng, state=State.SHUT_OFF)
    assert [(c.field, c.before, c.after, c.how) for c in res.changes] == [
        ("rng", False, True, ChangeHow.NEXT_BOOT)
    ]
    assert '+    <rng model="virtio">' in res.diff()
    kept = host.domains.get(unique).xml_doc(inactive=True).rngs  # the test driver keeps it
    assert [(r.model, r.backend_model, r.backend_path) for r in kept] == [
        ("virtio", "random", "/dev/urandom")
    ]
    proxy.calls.clear()
    again = host.domains.ensure(with_rng, state=State.SHUT_OFF)
    assert not again.changed and again.pending == [], again.changes
    assert proxy.calls.writes() == {}
    gone = host.domains.ensure(vm(unique), state=State.SHUT_OFF)
    assert [(c.field, c.after) for c in gone.changes] == [("rng", False)]
    assert host.domains.get(unique).xml_doc(inactive=True).rngs == []
    host.domains.ensure(vm(unique), state=State.ABSENT)


def test_rng_on_a_running_guest_waits_for_a_restart(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    host.domains.ensure(vm(unique))
    with_rng = vm(unique, rng=True)
    res = host.domains.ensure(with_rng)
    assert [(c.field, c.how) for c in res.changes] == [("rng", ChangeHow.NEXT_BOOT)]
    assert [(c.field, c.how) for c in res.pending] == [("rng", ChangeHow.RESTART)]
    assert host.domains.get(unique).xml_doc().rngs == []  # not attached live
    proxy.calls.clear()
    done = host.domains.ensure(with_rng, allow_restart=True)
    assert [(c.field, c.how) for c in done.changes] == [("rng", ChangeHow.RESTART)]
    assert proxy.calls["createWithFlags"] + proxy.calls["create"] == 1
    assert len(host.domains.get(unique).xml_doc().rngs) == 1
    final = host.domains.ensure(with_rng)
    assert not final.changed and final.pending == []
    host.domains.ensure(with_rng, state=State.ABSENT)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("shutdown_timeout", float("inf")),
        ("shutdown_timeout", float("nan")),
        ("shutdown_timeout", -1),
        ("shutdown_timeout", "5"),
        ("check", "yes"),
        ("allow_restart", 1),
        ("allow_recreate", None),
        ("force_shutdown", "no"),
    ],
)
def test_ensure_options_are_checked_before_anything_is_written(
    counted: tuple[Host, CountingLibvirt], unique: str, option: str, value: object
) -> None:
    """Issue 16 item 8: a bad option is a SpecError naming it, raised before the domain is
    defined (before, ``shutdown_timeout=inf`` was only seen by a later shutdown)."""
    host, proxy = counted
    with pytest.raises(hvlib.SpecError, match=option):
        host.domains.ensure(vm(unique), State.RUNNING, **{option: value})  # type: ignore[arg-type]
    assert host.domains.find(unique) is None
    assert proxy.calls.writes() == {}


def test_ensure_takes_a_state_by_its_spelling(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    """States are members or their value strings, as everywhere else in hvlib."""
    host, _ = counted
    res = host.domains.ensure(vm(unique), "shut-off")  # type: ignore[arg-type]
    assert res.domain is not None and res.domain.state is State.SHUT_OFF
    with pytest.raises(hvlib.SpecError, match="state"):
        host.domains.ensure(vm(unique), "runing")  # type: ignore[arg-type]


def test_absent_needs_nothing_the_spec_refers_to(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    """A removal must work after what the domain used is gone (its volume deleted, its
    network or pool removed): ``ensure(ABSENT)`` checks no host reference (seen in a full
    run: a test's clean-up failed with 'disks[0].volume: does not exist on this host')."""
    host, _ = counted
    uses = vm(unique, nics=[Nic.network("default")])
    host.domains.ensure(uses, State.SHUT_OFF)
    gone = replace(
        uses,
        disks=[hvlib.Disk.volume("default-pool", f"{unique}-deleted.img")],
        nics=[Nic.network("no-such-net")],
    )
    res = host.domains.ensure(gone, State.ABSENT)
    assert res.changed and host.domains.find(unique) is None
    assert not host.domains.ensure(gone, State.ABSENT).changed
