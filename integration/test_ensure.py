"""ensure() on a real, sandboxed libvirtd: a QEMU guest and an LXC container are converged,
changed live (memory, a hot-plugged NIC) and at next boot, and libvirt's own live and
persistent XML are checked against the report."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hvlib import DomainSpec, Filesystem, Nic, State, VirtType
from hvlib.model.plan import ChangeHow
from hvlib.testkit import guestkit
from hvlib.testkit.guestkit import GuestKit
from hvlib.virt.host import Host


@pytest.fixture
def cleanup(qemu_host: Host, lxc_host: Host) -> Iterator[list[DomainSpec]]:
    specs: list[DomainSpec] = []
    yield specs
    for spec in specs:
        host = lxc_host if spec.virt is VirtType.LXC else qemu_host
        host.domains.ensure(spec, state=State.ABSENT)


def _check_live_and_next_boot(host: Host, spec: DomainSpec, cmdline_field: str) -> None:
    first = host.domains.ensure(spec)
    assert first.changed and first.domain is not None
    dom = first.domain
    dom.wait_for_console(guestkit.READY_LINE, timeout=90)  # its balloon driver is loaded
    assert not host.domains.ensure(spec).changed, "second run: no change"

    bigger = replace(
        spec, memory_mib=spec.memory_mib + 64, nics=[*spec.nics, Nic.network("default")]
    )
    res = host.domains.ensure(bigger)
    assert {c.field.split("[")[0]: c.how for c in res.changes} == {
        "memory_mib": ChangeHow.LIVE,
        "nics": ChangeHow.LIVE,
    }, res
    assert res.pending == []
    live, persistent = dom.xml_doc(), dom.xml_doc(inactive=True)
    assert persistent.current_memory_kib == bigger.memory_mib * 1024
    assert len(live.interfaces) == len(persistent.interfaces) == 2
    assert {i.mac for i in live.interfaces} == {i.mac for i in persistent.interfaces}
    if spec.virt is not VirtType.LXC:  # the guest's balloon reaches the new size
        deadline = time.monotonic() + 15
        while dom.xml_doc().current_memory_kib != bigger.memory_mib * 1024:
            assert time.monotonic() < deadline, dom.xml_doc().current_memory_kib
            time.sleep(0.2)

    later = replace(bigger, **{cmdline_field: _changed(bigger, cmdline_field)})
    res = host.domains.ensure(later)
    assert [(c.field, c.how) for c in res.changes] == [(cmdline_field, ChangeHow.NEXT_BOOT)]
    assert [(c.field, c.how) for c in res.pending] == [(cmdline_field, ChangeHow.RESTART)]
    assert _read(dom.xml_doc(inactive=True), cmdline_field) == _changed(bigger, cmdline_field)
    assert _read(dom.xml_doc(), cmdline_field) != _changed(bigger, cmdline_field)
    assert not host.domains.ensure(later).changed
    assert dom.state is State.RUNNING


def _changed(spec: DomainSpec, name: str) -> object:
    return "console=ttyS0 hvlib.next-boot" if name == "cmdline" else "preserve"


def _read(doc: object, name: str) -> object:
    return getattr(doc, name)


@pytest.mark.integration
@pytest.mark.qemu
def test_qemu_guest_converges_live_and_next_boot(
    qemu_host: Host, kit: GuestKit, cleanup: list[DomainSpec]
) -> None:
    spec = DomainSpec(
        name="it-ensure-vm",
        virt=VirtType.QEMU,
        memory_mib=192,
        max_memory_mib=512,
        kernel=str(kit.kernel),
        initrd=str(kit.initrd),
        cmdline=guestkit.kernel_cmdline(),
        nics=[Nic.network("default")],
        rng=True,
    )
    cleanup.append(spec)
    _check_live_and_next_boot(qemu_host, spec, "cmdline")


@pytest.mark.integration
@pytest.mark.lxc
def test_lxc_container_converges_live_and_next_boot(
    lxc_host: Host, kit: GuestKit, cleanup: list[DomainSpec]
) -> None:
    spec = DomainSpec(
        name="it-ensure-ct",
        virt=VirtType.LXC,
        memory_mib=64,
        max_memory_mib=256,
        init=[guestkit.LXC_INIT],
        filesystems=[Filesystem.mount(str(kit.lxc_rootfs))],
        nics=[Nic.network("default")],
    )
    cleanup.append(spec)
    _check_live_and_next_boot(lxc_host, spec, "on_crash")


RACE_SCRIPT = """
import sys, hvlib
from hvlib import DomainSpec, State, VirtType, Filesystem
spec = DomainSpec(name="it-race", virt=VirtType.LXC, init=["/sbin/hvlib-init"],
                  filesystems=[Filesystem.mount(sys.argv[2])])
with hvlib.connect(sys.argv[1]) as host:
    res = host.domains.ensure(spec, state=State.SHUT_OFF)
    print(",".join(c.field for c in res.changes))
"""


@pytest.mark.integration
@pytest.mark.lxc
def test_two_processes_ensuring_one_spec_end_with_one_domain(
    sandbox: object, lxc_host: Host, kit: GuestKit
) -> None:
    import subprocess
    import sys

    uri = lxc_host.uri
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_SCRIPT, uri, str(kit.lxc_rootfs)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    try:
        assert sorted(outputs) == ["", "domain"], "exactly one of them defined it"
        assert [d.name for d in lxc_host.domains.list()].count("it-race") == 1
    finally:
        dom = lxc_host.domains.find("it-race")
        if dom is not None:
            dom.undefine()


def _kit_vm(kit: GuestKit, name: str, **kw: object) -> DomainSpec:
    fields: dict[str, object] = {
        "virt": VirtType.QEMU,
        "memory_mib": 192,
        "max_memory_mib": 256,
        "kernel": str(kit.kernel),
        "initrd": str(kit.initrd),
        "cmdline": guestkit.kernel_cmdline(),
        "nics": [Nic.network("default")],
    }
    return DomainSpec(name=name, **(fields | kw))  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.qemu
def test_qemu_pending_memory_stays_pending_and_check_mode_matches_apply(
    qemu_host: Host, kit: GuestKit, cleanup: list[DomainSpec]
) -> None:
    """Issue 16 items 10, 15 and 19 on a real QEMU guest: memory above the running guest's
    maximum stays pending (192 MiB of 256 -> 320 of 320) on every later ensure until a
    restart applies it; a NIC added to the running guest is hot-plugged with the MAC its
    check reported; an ensure that writes nothing shows no diff."""
    spec = _kit_vm(kit, "it-ensure-pending")
    cleanup.append(spec)
    dom = qemu_host.domains.ensure(spec).domain
    assert dom is not None
    dom.wait_for_console(guestkit.READY_LINE, timeout=90)
    same = qemu_host.domains.ensure(spec)
    assert not same.changed and same.diff() == ""

    bigger = replace(spec, memory_mib=320, max_memory_mib=320)
    pending = {("memory_mib", 192, 320), ("max_memory_mib", 256, 320)}
    second = qemu_host.domains.ensure(bigger)
    assert {(c.field, c.before, c.after) for c in second.pending} == pending
    for _ in range(2):
        later = qemu_host.domains.ensure(bigger)
        assert not later.changed and later.diff() == ""
        assert {(c.field, c.before, c.after) for c in later.pending} == pending
    assert dom.xml_doc().current_memory_kib == 192 * 1024

    two = replace(bigger, nics=[*bigger.nics, Nic.network("default")])
    checked = qemu_host.domains.ensure(two, check=True)
    applied = qemu_host.domains.ensure(two)
    assert (checked.changes, checked.pending) == (applied.changes, applied.pending)
    assert [c.how for c in applied.changes] == [ChangeHow.LIVE]
    new_mac = applied.changes[0].field.removeprefix("nics[").rstrip("]")
    assert new_mac in {i.mac for i in dom.xml_doc().interfaces}, "hot-plugged with that MAC"

    done = qemu_host.domains.ensure(two, allow_restart=True, shutdown_timeout=30)
    assert {c.field for c in done.changes} == {"memory_mib", "max_memory_mib"}
    assert not done.forced, "the kit's guest powers off on ACPI"
    dom.wait_for_console(guestkit.READY_LINE, timeout=90)
    final = qemu_host.domains.ensure(two)
    assert not final.changed and final.pending == [] and final.diff() == ""
    assert dom.xml_doc().current_memory_kib == 320 * 1024


@pytest.mark.integration
@pytest.mark.qemu
def test_qemu_domain_with_snapshots_is_removed(
    qemu_host: Host, kit: GuestKit, tmp_path: Path
) -> None:
    """Issue 16 item 9 on real QEMU: a domain with an internal snapshot on its qcow2 disk
    is removed by ensure(ABSENT), its snapshot metadata with it."""
    image = tmp_path / "snap.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    qemu_host.pools.ensure_dir("it-ensure-images", "/var/lib/libvirt/images/it-ensure")
    vol = qemu_host.volumes.create("it-ensure-images", "snap.qcow2", data=image.read_bytes())
    spec = _kit_vm(kit, "it-ensure-snap", disks=[vol.disk()])
    try:
        dom = qemu_host.domains.ensure(spec, state=State.SHUT_OFF).domain
        assert dom is not None
        dom.snapshots.create("before")
        assert [s.name for s in dom.snapshots.list()] == ["before"]
        res = qemu_host.domains.ensure(spec, state=State.ABSENT)
        assert res.changed and qemu_host.domains.find(spec.name) is None
    finally:
        qemu_host.domains.ensure(spec, state=State.ABSENT)
        vol.delete()
