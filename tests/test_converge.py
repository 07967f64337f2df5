"""ensure() converges (issue 16, items 3, 10, 15, 16, 19) on libvirt's test:/// driver, every
libvirt call counted by a proxy around hvlib.virt._virt.libvirt (tests/counting.py).

- A recreate across virt types defines exactly what render(spec) gives, schema-valid, after
  a graceful shutdown, and the next ensure changes and writes nothing.
- Check mode reports what apply does (property over specs and existing states).
- Whenever nothing is written, the diff is empty (property over specs).
- A pending memory change stays pending until a restart applies it.
- A shutdown that had to force says so (``forced``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import libvirt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hvlib
from hvlib import Disk, DomainSpec, Filesystem, IdMap, Nic, State, VirtType
from hvlib.model.domxml import DomainXML
from hvlib.model.plan import ChangeHow, derived_mac, differs, owned
from hvlib.model.render import render, validate
from hvlib.virt import _virt
from hvlib.virt.converge import EnsureResult
from hvlib.virt.domain import Domain
from hvlib.virt.host import Host
from hvlib.virt.hostfit import fit
from tests.counting import CountingLibvirt

TYPES = (
    VirtType.KVM,
    VirtType.QEMU,
    VirtType.XEN_PV,
    VirtType.XEN_PVH,
    VirtType.XEN_HVM,
    VirtType.LXC,
)


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Host, CountingLibvirt]]:
    proxy = CountingLibvirt(libvirt)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_virt, "libvirt", proxy)
        with hvlib.connect("test:///default", poll_interval=None) as host:
            yield host, proxy


@pytest.fixture
def counted(shared: tuple[Host, CountingLibvirt]) -> tuple[Host, CountingLibvirt]:
    shared[1].calls.clear()
    return shared


_names = itertools.count()


def fresh_name() -> str:
    return f"cv{next(_names)}"


def spec_of(virt: VirtType, name: str, **kw: Any) -> DomainSpec:
    """A spec of each type with a NIC and its type's storage (a disk, or a root directory)."""
    base: dict[str, Any] = {"name": name, "virt": virt, "nics": [Nic.network("default")]}
    if virt is VirtType.LXC:
        base.update(init=["/sbin/init"], filesystems=[Filesystem.mount("/srv/ct")])
    else:
        base.update(kernel="/boot/vmlinuz", disks=[Disk.file("/img/a.img")])
    base.update(kw)
    return DomainSpec(**base)


def _by_position(view: dict[str, Any]) -> dict[str, Any]:
    """An owned view with each device keyed by its kind and position, not its key (a
    rendered definition has no MACs yet)."""
    out: dict[str, Any] = {}
    counters: dict[str, int] = {}
    for key, value in view.items():
        family, bracket, _ = key.partition("[")
        if bracket and family == "nics":
            index = counters.get(family, 0)
            counters[family] = index + 1
            key = f"{family}[#{index}]"
        out[key] = value
    return out


# -- item 3: recreate across virt types ---------------------------------------------------


@pytest.mark.parametrize("state", [State.SHUT_OFF, State.RUNNING])
@pytest.mark.parametrize(
    ("a", "b"),
    list(itertools.permutations(TYPES, 2)),
    ids=[f"{a.value}-{b.value}" for a, b in itertools.permutations(TYPES, 2)],
)
def test_a_recreate_defines_exactly_the_new_render(
    counted: tuple[Host, CountingLibvirt], a: VirtType, b: VirtType, state: State
) -> None:
    host, proxy = counted
    name = fresh_name()
    first = host.domains.ensure(spec_of(a, name), state=state).domain
    assert first is not None
    mac = first.mac_addresses()
    new = spec_of(b, name)
    proxy.calls.clear()
    res = host.domains.ensure(new, state=state, allow_recreate=True)
    assert res.changed and "virt" in {c.field for c in res.changes}
    assert {c.how for c in res.changes} <= {ChangeHow.RECREATE}, res.changes
    if state is State.RUNNING:  # shut down as a restart does, not destroyed
        assert proxy.calls["shutdownFlags"] + proxy.calls["shutdown"] >= 1
        assert proxy.calls["destroy"] == 0 and not res.forced
    dom = host.domains.get(name)
    assert dom.state is state and dom.uuid == first.uuid and dom.mac_addresses() == mac
    defined = dom.xml(inactive=True)
    validate(defined)
    fitted = fit(host, new).spec  # what ensure renders on this host
    want = _by_position(owned(DomainXML.from_xml(render(fitted)), fitted))
    have = _by_position(owned(DomainXML.from_xml(defined), new))
    assert set(have) == set(want)
    assert [k for k in want if differs(k, have[k], want[k])] == [], (have, want)
    proxy.calls.clear()
    third = host.domains.ensure(new, state=state, allow_recreate=True)
    assert not third.changed and third.pending == [] and third.diff() == ""
    assert proxy.calls.writes() == {}
    host.domains.ensure(new, state=State.ABSENT)


def test_a_recreate_of_a_guest_that_ignores_shutdown_is_forced(
    counted: tuple[Host, CountingLibvirt], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guest that ignores the shutdown request (mocked: libvirt's test driver always obeys
    one at once) is shut down until ``shutdown_timeout``, then destroyed: ``forced``."""
    host, proxy = counted
    name = fresh_name()
    host.domains.ensure(spec_of(VirtType.XEN_PV, name))
    monkeypatch.setattr(Domain, "_request_shutdown", lambda self, attempt, timeout: True)
    proxy.calls.clear()
    res = host.domains.ensure(
        spec_of(VirtType.QEMU, name), allow_recreate=True, shutdown_timeout=0.2
    )
    assert res.forced and proxy.calls["destroy"] == 1
    assert host.domains.get(name).state is State.RUNNING
    assert host.domains.get(name).virt is VirtType.QEMU
    host.domains.ensure(spec_of(VirtType.QEMU, name), state=State.ABSENT)


# -- item 16: forced, wherever ensure stops a guest ----------------------------------------


@pytest.mark.parametrize("how", ["shut-off", "restart", "recreate", "absent"])
def test_forced_says_whether_a_stop_had_to_force(
    counted: tuple[Host, CountingLibvirt], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Each way ensure stops a running guest, once obeyed and once ignored (mocked, as
    above): ``forced`` is False, then True. A removal always destroys: forced."""
    host, _ = counted
    for ignores in (False, True):
        name = fresh_name()
        spec = spec_of(VirtType.QEMU, name)
        host.domains.ensure(spec)
        with monkeypatch.context() as mp:
            if ignores:
                mp.setattr(Domain, "_request_shutdown", lambda self, attempt, timeout: True)
            kw: dict[str, Any] = {"shutdown_timeout": 0.2}
            if how == "shut-off":
                res = host.domains.ensure(spec, state=State.SHUT_OFF, **kw)
            elif how == "restart":
                res = host.domains.ensure(replace(spec, cmdline="x"), allow_restart=True, **kw)
            elif how == "recreate":
                res = host.domains.ensure(
                    replace(spec, virt=VirtType.KVM), allow_recreate=True, **kw
                )
            else:
                res = host.domains.ensure(spec, state=State.ABSENT)
        assert res.changed
        assert res.forced is (ignores or how == "absent"), (how, ignores)
        host.domains.ensure(spec, state=State.ABSENT)


# -- item 19: a pending change stays pending ------------------------------------------------


def test_a_pending_memory_change_stays_pending_until_a_restart(
    counted: tuple[Host, CountingLibvirt],
) -> None:
    """The issue's sequence: memory 192 of max 256, running; then 320 of 320 (above the
    running guest's maximum: both need a restart); a third ensure still lists both while
    the guest runs at 192; a restart applies them; then nothing is pending."""
    host, proxy = counted
    name = fresh_name()
    spec = spec_of(VirtType.QEMU, name, memory_mib=192, max_memory_mib=256)
    host.domains.ensure(spec)
    bigger = replace(spec, memory_mib=320, max_memory_mib=320)
    second = host.domains.ensure(bigger)
    assert {(c.field, c.how) for c in second.pending} == {
        ("memory_mib", ChangeHow.RESTART),
        ("max_memory_mib", ChangeHow.RESTART),
    }
    for _ in range(2):
        third = host.domains.ensure(bigger)
        assert not third.changed
        assert {(c.field, c.before, c.after) for c in third.pending} == {
            ("memory_mib", 192, 320),
            ("max_memory_mib", 256, 320),
        }
    assert host.domains.get(name).xml_doc().current_memory_kib == 192 * 1024
    proxy.calls.clear()
    done = host.domains.ensure(bigger, allow_restart=True)
    assert {c.field for c in done.changes} == {"memory_mib", "max_memory_mib"}
    assert proxy.calls["createWithFlags"] + proxy.calls["create"] == 1
    assert host.domains.get(name).xml_doc().current_memory_kib == 320 * 1024
    last = host.domains.ensure(bigger)
    assert not last.changed and last.pending == []
    host.domains.ensure(bigger, state=State.ABSENT)


def test_a_balloon_within_its_slack_is_not_pending(counted: tuple[Host, CountingLibvirt]) -> None:
    """A balloon reports what the guest gave back, in pages: a running guest 1 MiB off the
    wanted size runs with it (the live size is set behind ensure's back here)."""
    host, _ = counted
    name = fresh_name()
    spec = spec_of(VirtType.QEMU, name, memory_mib=256, max_memory_mib=512)
    dom = host.domains.ensure(spec).domain
    assert dom is not None
    dom.set_memory_live(255 * 1024)
    res = host.domains.ensure(spec)
    assert not res.changed and res.pending == []
    dom.set_memory_live(200 * 1024)
    res = host.domains.ensure(spec)
    assert [(c.field, c.how) for c in res.pending] == [("memory_mib", ChangeHow.RESTART)]
    host.domains.ensure(spec, state=State.ABSENT)


# -- item 10: check mode reports what apply does --------------------------------------------


def test_a_new_nic_gets_the_same_mac_in_check_and_apply(
    counted: tuple[Host, CountingLibvirt],
) -> None:
    host, _ = counted
    name = fresh_name()
    spec = spec_of(VirtType.QEMU, name)
    host.domains.ensure(spec, state=State.SHUT_OFF)
    two = replace(spec, nics=[*spec.nics, Nic.network("default")])
    checks = [host.domains.ensure(two, state=State.SHUT_OFF, check=True) for _ in range(3)]
    assert len({tuple(c.field for c in r.changes) for r in checks}) == 1
    applied = host.domains.ensure(two, state=State.SHUT_OFF)
    assert applied.changes == checks[0].changes
    assert applied.after_xml == checks[0].after_xml
    new_mac = applied.changes[0].field.removeprefix("nics[").rstrip("]")
    assert new_mac in host.domains.get(name).mac_addresses()
    host.domains.ensure(spec, state=State.ABSENT)


def test_a_derived_mac_depends_on_its_seed_and_index_and_avoids_taken_ones() -> None:
    a = derived_mac("host-a/dom-1", 0, set())
    assert a == derived_mac("host-a/dom-1", 0, set()) and a.startswith("52:54:00:")
    assert (
        len({a, derived_mac("host-b/dom-1", 0, set()), derived_mac("host-a/dom-1", 1, set())}) == 3
    )
    assert derived_mac("host-a/dom-1", 0, {a}) != a


def test_a_domain_from_before_keeps_its_macs(counted: tuple[Host, CountingLibvirt]) -> None:
    """A domain whose NICs got their MACs elsewhere (libvirt, an older hvlib) is matched NIC
    by NIC: nothing changes, nothing is written."""
    host, proxy = counted
    name = fresh_name()
    spec = spec_of(VirtType.QEMU, name, nics=[Nic.network("default")] * 2)
    host.domains.define_xml(render(spec))  # libvirt chooses the MACs
    macs = host.domains.get(name).mac_addresses()
    proxy.calls.clear()
    res = host.domains.ensure(spec, state=State.SHUT_OFF)
    assert not res.changed and proxy.calls.writes() == {}
    assert host.domains.get(name).mac_addresses() == macs
    host.domains.ensure(spec, state=State.ABSENT)


VMS = (VirtType.QEMU, VirtType.KVM, VirtType.XEN_PV)
states = st.sampled_from([State.RUNNING, State.SHUT_OFF, State.PAUSED])


@st.composite
def specs(draw: st.DrawFn, virt: VirtType | None = None) -> DomainSpec:
    """A spec with random sizes, boot, devices and platform fields (of ``virt``, or one of a
    few types)."""
    virt = virt or draw(st.sampled_from((*VMS, VirtType.LXC)))
    memory = draw(st.sampled_from([128, 192, 256, 320]))
    max_memory = draw(st.sampled_from([None, 256, 384]))
    vcpus = draw(st.integers(1, 3))
    kw: dict[str, Any] = {
        "memory_mib": memory,
        "max_memory_mib": max(max_memory, memory) if max_memory else None,
        "vcpus": vcpus,
        "description": draw(st.sampled_from([None, "a", "b"])),
        "on_crash": draw(st.sampled_from(["destroy", "preserve"])),
        "autostart": draw(st.booleans()),
        "nics": [Nic.network("default")] * draw(st.integers(0, 2)),
    }
    if virt is VirtType.LXC:
        kw["filesystems"] = [Filesystem.mount(draw(st.sampled_from(["/srv/a", "/srv/b"])))]
        kw["idmap"] = draw(st.sampled_from([None, IdMap.shifted(100000)]))
    else:
        kw["max_vcpus"] = draw(st.sampled_from([None, 4]))
        kw["kernel"] = "/boot/vmlinuz"
        kw["cmdline"] = draw(st.sampled_from([None, "console=ttyS0", "quiet"]))
        fmts = draw(st.lists(st.sampled_from(["raw", "qcow2"]), max_size=2))
        kw["disks"] = [Disk.file(f"/img/{i}.img", format=f) for i, f in enumerate(fmts)]
    if virt in (VirtType.QEMU, VirtType.KVM):
        kw["rng"] = draw(st.booleans())
        kw["machine"] = draw(st.sampled_from([None, "q35"]))
    return spec_of(virt, "placeholder", **kw)


def _comparable(res: EnsureResult) -> tuple[Any, ...]:
    return (res.changed, res.changes, res.pending, res.before_xml, res.after_xml)


PROPERTY = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(
    data=st.data(),
    before=specs(),
    state0=states,
    state=states,
    allow_restart=st.booleans(),
    allow_recreate=st.booleans(),
    same_type=st.booleans(),
)
def test_check_mode_reports_what_apply_does(
    counted: tuple[Host, CountingLibvirt],
    data: st.DataObject,
    before: DomainSpec,
    state0: State,
    state: State,
    allow_restart: bool,
    allow_recreate: bool,
    same_type: bool,
) -> None:
    host, proxy = counted
    name = fresh_name()
    first = replace(before, name=name)
    want = replace(data.draw(specs(before.virt if same_type else None)), name=name)
    host.domains.ensure(first, state=state0)
    kw = {"state": state, "allow_restart": allow_restart, "allow_recreate": allow_recreate}
    proxy.calls.clear()
    checked = host.domains.ensure(want, check=True, **kw)
    assert proxy.calls.writes() == {}, "check mode writes nothing"
    applied = host.domains.ensure(want, **kw)
    assert _comparable(checked) == _comparable(applied)
    after_check = host.domains.ensure(want, check=True, **kw)
    assert not after_check.changed and after_check.changes == [], after_check.changes
    assert {c.field for c in after_check.pending} <= {c.field for c in applied.pending}
    host.domains.ensure(want, state=State.ABSENT)


# -- item 15: the diff comes from the same owned view ---------------------------------------


@PROPERTY
@given(before=specs(), after=specs(), state0=states, state=states, check=st.booleans())
def test_the_diff_is_empty_whenever_nothing_is_written(
    counted: tuple[Host, CountingLibvirt],
    before: DomainSpec,
    after: DomainSpec,
    state0: State,
    state: State,
    check: bool,
) -> None:
    host, proxy = counted
    name = fresh_name()
    host.domains.ensure(replace(before, name=name), state=state0)
    want = replace(after, name=name)
    proxy.calls.clear()
    res = host.domains.ensure(want, state=state, check=check)
    defines = proxy.calls["defineXML"] + proxy.calls["defineXMLFlags"]
    if not res.changed:
        assert res.diff() == "" and defines == 0
    definition = {c.field for c in res.changes} - {"state", "autostart"}
    if not check:
        assert bool(res.diff()) == bool(definition) == bool(defines), res.changes
    again = host.domains.ensure(want, state=state)
    if not again.changed:
        assert again.diff() == ""
    host.domains.ensure(want, state=State.ABSENT)


def test_the_test_drivers_nic_target_is_not_a_diff(counted: tuple[Host, CountingLibvirt]) -> None:
    """The issue's example: the test driver writes ``<target dev='testnet0'/>`` into a NIC,
    which the spec does not own; a second ensure said changed=False with that line in its
    diff."""
    host, _ = counted
    spec = spec_of(VirtType.QEMU, fresh_name())
    host.domains.ensure(spec)
    res = host.domains.ensure(spec)
    assert not res.changed and res.diff() == ""
    changed = host.domains.ensure(replace(spec, cmdline="quiet"))
    assert "testnet0" not in changed.diff() and "+    <cmdline>quiet</cmdline>" in changed.diff()
    host.domains.ensure(spec, state=State.ABSENT)


def test_a_recreate_libvirt_refuses_puts_the_old_definition_back(
    counted: tuple[Host, CountingLibvirt], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If libvirt refuses the new definition after the old one was undefined (mocked: the
    test driver takes any of hvlib's), the old definition is defined again and the refusal
    raised: a recreate never leaves the name without a domain."""
    host, _ = counted
    name = fresh_name()
    old = host.domains.ensure(spec_of(VirtType.LXC, name), state=State.SHUT_OFF).domain
    assert old is not None
    real = type(host.domains).define_xml
    refused: list[str] = []

    def refuse_qemu(self: Any, xml: str) -> Domain:
        if '<type arch="x86_64" machine="pc">hvm</type>' in xml and not refused:
            refused.append(xml)
            raise hvlib.SpecError("xml", "refused (mocked)")
        return real(self, xml)

    monkeypatch.setattr(type(host.domains), "define_xml", refuse_qemu)
    with pytest.raises(hvlib.SpecError, match="refused"):
        host.domains.ensure(spec_of(VirtType.QEMU, name), state=State.SHUT_OFF, allow_recreate=True)
    assert refused
    back = host.domains.get(name)
    assert back.uuid == old.uuid and back.virt is VirtType.LXC
    host.domains.ensure(spec_of(VirtType.LXC, name), state=State.ABSENT)
