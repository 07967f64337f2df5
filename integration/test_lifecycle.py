"""The whole lifecycle through hvlib on a real, sandboxed libvirtd: QEMU (TCG) guests from the
test guest kit and LXC containers, including guests that ignore the shutdown request."""

from __future__ import annotations

import time

import pytest

from hvlib import DomainSpec, Filesystem, InvalidState, Nic, State, VirtType, WaitTimeout
from hvlib.testkit import guestkit
from hvlib.testkit.guestkit import GuestKit
from hvlib.virt.events import EventKind
from hvlib.virt.host import Host
from integration.conftest import MakeDomain

READY = guestkit.READY_LINE


def vm_spec(kit: GuestKit, name: str, *flags: str, **kw: object) -> DomainSpec:
    return DomainSpec(
        name=name,
        virt=VirtType.QEMU,
        memory_mib=256,
        kernel=str(kit.kernel),
        initrd=str(kit.initrd),
        cmdline=guestkit.kernel_cmdline("ttyS0", *flags),
        rng=True,
        **kw,
    )  # type: ignore[arg-type]


def ct_spec(kit: GuestKit, name: str, *args: str) -> DomainSpec:
    return DomainSpec(
        name=name,
        virt=VirtType.LXC,
        memory_mib=64,
        init=[guestkit.LXC_INIT, *args],
        filesystems=[Filesystem.mount(str(kit.lxc_rootfs), "/")],
    )


@pytest.mark.integration
@pytest.mark.qemu
def test_qemu_guest_boots_to_ready_and_shuts_down_by_acpi(
    qemu_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    dom = make_domain(qemu_host, vm_spec(kit, "it-acpi", nics=[Nic.network("default")]))
    assert dom.state is State.SHUT_OFF
    dom.start()
    assert dom.state is State.RUNNING
    dom.wait_for_console(READY, timeout=90)
    assert b"Linux version" in dom.console_log(), "capture must begin with the kernel's boot"
    result = dom.shutdown(timeout=30)
    assert result.graceful, result
    assert result.elapsed < 30
    assert dom.state is State.SHUT_OFF
    dom.undefine()
    assert dom.state is State.ABSENT


@pytest.mark.integration
@pytest.mark.qemu
def test_qemu_guest_ignoring_acpi_is_forced_off_at_the_timeout(
    qemu_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    dom = make_domain(qemu_host, vm_spec(kit, "it-noacpi", guestkit.FLAG_NOACPI))
    dom.start()
    dom.wait_for_console(READY, timeout=90)
    result = dom.shutdown(timeout=4, resend_interval=1)
    assert not result.graceful
    assert 4.0 <= result.elapsed < 5.0, result.elapsed
    assert result.requests >= 3, "the request is re-sent"
    assert dom.state is State.SHUT_OFF


@pytest.mark.integration
@pytest.mark.qemu
def test_qemu_shutdown_without_force_raises_and_leaves_it_running(
    qemu_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    dom = make_domain(qemu_host, vm_spec(kit, "it-noforce", guestkit.FLAG_NOACPI))
    dom.start()
    dom.wait_for_console(READY, timeout=90)
    with pytest.raises(WaitTimeout):
        dom.shutdown(timeout=2, force=False)
    assert dom.state is State.RUNNING


@pytest.mark.integration
@pytest.mark.qemu
def test_qemu_suspend_resume_and_events(
    qemu_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    seen: list[EventKind] = []
    dom = make_domain(qemu_host, vm_spec(kit, "it-events"))
    with qemu_host.subscribe(lambda e: seen.append(e.kind) if e.name == "it-events" else None):
        dom.start()
        dom.suspend()
        assert dom.wait_for(State.PAUSED, timeout=5) is State.PAUSED
        dom.resume()
        dom.destroy()
        dom.wait_for(State.SHUT_OFF, timeout=10)
        time.sleep(0.2)
    assert EventKind.SUSPENDED in seen and EventKind.RESUMED in seen
    assert seen[-1] is EventKind.STOPPED
    with pytest.raises(InvalidState):
        dom.suspend()


@pytest.mark.integration
@pytest.mark.lxc
def test_lxc_container_starts_and_stops_gracefully(
    lxc_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    dom = make_domain(lxc_host, ct_spec(kit, "it-ct"))
    dom.start()
    assert dom.state is State.RUNNING
    assert dom.virt is VirtType.LXC
    dom.wait_for_console(READY, timeout=30)
    result = dom.shutdown(timeout=20)
    assert result.graceful, result
    assert dom.state is State.SHUT_OFF
    dom.undefine()
    assert dom.state is State.ABSENT


@pytest.mark.integration
@pytest.mark.lxc
def test_lxc_container_ignoring_term_is_forced_off_at_the_timeout(
    lxc_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    dom = make_domain(lxc_host, ct_spec(kit, "it-ct-stubborn", guestkit.LXC_IGNORE_TERM_ARG))
    dom.start()
    dom.wait_for_console(READY, timeout=30)
    result = dom.shutdown(timeout=3, resend_interval=1)
    assert not result.graceful
    # libvirt's LXC destroy sends SIGTERM, waits 2 s for the container to go, then SIGKILL:
    # measured 1.8 s for an init that ignores TERM, on top of the timeout.
    assert 3.0 <= result.elapsed < 5.5, result.elapsed
    assert dom.state is State.SHUT_OFF


@pytest.mark.integration
@pytest.mark.qemu
@pytest.mark.lxc
def test_list_and_stats_on_a_real_host(
    qemu_host: Host, lxc_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    vm = make_domain(qemu_host, vm_spec(kit, "it-list-vm"))
    ct = make_domain(lxc_host, ct_spec(kit, "it-list-ct"))
    vm.start()
    ct.start()
    assert "it-list-vm" in {d.name for d in qemu_host.domains.list(state=State.RUNNING)}
    assert "it-list-ct" in {d.name for d in lxc_host.domains.list(state=State.RUNNING)}
    assert "it-list-ct" not in {d.name for d in qemu_host.domains.list()}, "per driver"
    stats = qemu_host.domains.stats()
    assert stats["it-list-vm"].state is State.RUNNING
    assert lxc_host.domains.stats()["it-list-ct"].state is State.RUNNING  # no bulk call on LXC
    assert (stats["it-list-vm"].cpu_time_ns or 0) > 0
    assert (stats["it-list-vm"].memory_max_kib or 0) == 256 * 1024
