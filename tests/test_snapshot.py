"""Snapshots: the XML both ways (pure), and the Snapshots collection on libvirt's test driver
(which takes internal snapshots; an external one is made there by redefining its XML)."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest
from lxml import etree

import hvlib
from hvlib import AlreadyExists, Disk, DomainSpec, NotFound, SpecError, State, Unsupported, VirtType
from hvlib.virt.domain import Domain
from hvlib.virt.host import Host
from hvlib.virt.migration import Mobility
from hvlib.virt.snapshot import (
    EXTERNAL_REVERT_VERSION,
    SnapshotKind,
    parse_snapshot,
    snapshot_state,
    snapshot_xml,
    version_text,
)


@pytest.fixture(autouse=True)
def mobility() -> Iterator[None]:
    """Domain's Mobility methods (until the lead adds the mixin to Domain's bases)."""
    with pytest.MonkeyPatch.context() as mp:
        if not issubclass(Domain, Mobility):
            for key, value in vars(Mobility).items():
                if not key.startswith("__"):
                    mp.setattr(Domain, key, value, raising=False)
        yield


# -- pure ------------------------------------------------------------------------------------


def test_snapshot_xml_is_built_with_lxml_and_checked() -> None:
    root = etree.fromstring(snapshot_xml("before-upgrade", "a <tricky> & 'quoted' text"))
    assert root.tag == "domainsnapshot"
    assert root.findtext("name") == "before-upgrade"
    assert root.findtext("description") == "a <tricky> & 'quoted' text"
    assert etree.fromstring(snapshot_xml("s")).find("description") is None
    with pytest.raises(SpecError, match=r"snapshot\.name"):
        snapshot_xml("../evil")
    with pytest.raises(SpecError, match=r"snapshot\.description"):
        snapshot_xml("s", "nul\x00")


EXTERNAL = """<domainsnapshot><name>ext</name><state>disk-snapshot</state>
<parent><name>base</name></parent><creationTime>1700000000</creationTime>
<memory snapshot='no'/><disks>
<disk name='vda' snapshot='external' type='file'><source file='/img/vm.ext'/></disk>
<disk name='vdb' snapshot='no'/></disks><domain type='qemu'><name>vm</name></domain>
</domainsnapshot>"""
INTERNAL = """<domainsnapshot><name>int</name><description>d</description>
<state>running</state><creationTime>1700000001</creationTime><memory snapshot='internal'/>
<disks><disk name='vda' snapshot='internal'/></disks></domainsnapshot>"""


def test_parse_snapshot_tells_the_kinds_apart() -> None:
    ext = parse_snapshot(EXTERNAL, current=True)
    assert (ext.name, ext.kind, ext.state, ext.parent) == (
        "ext",
        SnapshotKind.EXTERNAL,
        "disk-snapshot",
        "base",
    )
    assert ext.current and not ext.has_memory and ext.created == 1700000000
    assert ext.disks == {"vda": "external", "vdb": "no"}
    assert ext.overlays == {"vda": "/img/vm.ext"}
    internal = parse_snapshot(INTERNAL)
    assert internal.kind is SnapshotKind.INTERNAL and internal.has_memory
    assert internal.description == "d" and internal.parent is None and not internal.current
    assert snapshot_state(internal) is State.RUNNING and snapshot_state(ext) is State.SHUT_OFF


def test_version_text() -> None:
    assert version_text(9_000_000) == "9.0.0" and version_text(EXTERNAL_REVERT_VERSION) == "9.7.0"


# -- on the test driver ----------------------------------------------------------------------


def vm_spec(name: str, fmt: str | None = "qcow2") -> DomainSpec:
    return DomainSpec(
        name=name,
        virt=VirtType.QEMU,
        kernel="/boot/vmlinuz",
        disks=[Disk.file(f"/var/lib/images/{name}.img", format=fmt)],
    )


@pytest.fixture
def vm(host: Host, unique: str) -> Iterator[Domain]:
    dom = host.domains.define(vm_spec(unique))
    yield dom
    dom.destroy()
    if dom.state is not State.ABSENT:  # the test driver undefines no domain with snapshots
        for snap in dom.snapshots.list():
            dom.snapshots.delete(snap.name)
    dom.undefine()


def test_create_list_get_and_idempotence(vm: Domain) -> None:
    vm.start()
    first = vm.snapshots.create("s1", description="first")
    assert (first.name, first.kind, first.state) == ("s1", SnapshotKind.INTERNAL, "running")
    assert first.current and first.description == "first"
    assert vm.snapshots.create("s1") == first  # same name and kind: nothing taken
    second = vm.snapshots.create("s2")
    assert second.parent == "s1"
    names = [(s.name, s.current) for s in vm.snapshots.list()]
    assert names == [("s1", False), ("s2", True)]
    assert vm.snapshots.get("s1").name == "s1" and vm.snapshots.find("nope") is None
    with pytest.raises(NotFound, match="has no snapshot nope"):
        vm.snapshots.get("nope")


def test_create_of_the_other_kind_is_refused(vm: Domain) -> None:
    vm.snapshots.create("s1")
    with pytest.raises(AlreadyExists, match="internal \\(not external\\)"):
        vm.snapshots.create("s1", disk_only=True)


def test_revert_brings_the_state_back(vm: Domain) -> None:
    vm.snapshots.create("off")  # taken shut off
    vm.start()
    vm.snapshots.create("on")
    vm.destroy()
    vm.snapshots.revert("on")
    assert vm.state is State.RUNNING
    vm.snapshots.revert("off")
    assert vm.state is State.SHUT_OFF
    with pytest.raises(NotFound):
        vm.snapshots.revert("nope")


def test_delete_is_idempotent(vm: Domain) -> None:
    vm.snapshots.create("s1")
    vm.snapshots.delete("s1")
    assert vm.snapshots.list() == []
    vm.snapshots.delete("s1")  # absent: success


def test_internal_snapshots_need_qcow2(host: Host, unique: str) -> None:
    dom = host.domains.define(vm_spec(unique, fmt="raw"))
    try:
        with pytest.raises(Unsupported, match=r"need qcow2 disks; vda is raw.*disk_only=True"):
            dom.snapshots.create("s1")
        assert dom.snapshots.list() == []
    finally:
        dom.undefine()


def test_a_running_guest_without_disks_has_nowhere_to_keep_memory(host: Host, unique: str) -> None:
    dom = host.domains.define(DomainSpec(name=unique, virt=VirtType.QEMU, kernel="/boot/vmlinuz"))
    try:
        dom.start()
        with pytest.raises(Unsupported, match="has none"):
            dom.snapshots.create("s1")
        with pytest.raises(Unsupported, match="no writable disk"):
            dom.snapshots.create("s1", disk_only=True)
    finally:
        dom.destroy()
        dom.undefine()


def test_containers_have_no_snapshots(host: Host, unique: str) -> None:
    ct = host.domains.define(
        DomainSpec(
            name=unique,
            virt=VirtType.LXC,
            init=["/sbin/init"],
            filesystems=[hvlib.Filesystem.mount("/srv/ct", "/")],
        )
    )
    try:
        for call in (lambda: ct.snapshots.create("s"), ct.snapshots.list):
            with pytest.raises(Unsupported, match="no snapshots of LXC"):
                call()
    finally:
        ct.undefine()


def _external(vm: Domain, name: str) -> None:
    """Make an external (disk-only) snapshot by redefining its XML: the test driver cannot
    take one, but keeps one it is given."""
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "state").text = "disk-snapshot"
    etree.SubElement(root, "creationTime").text = "1700000000"
    etree.SubElement(root, "memory", snapshot="no")
    disk = etree.SubElement(etree.SubElement(root, "disks"), "disk", name="vda")
    disk.set("snapshot", "external")
    disk.set("type", "file")
    etree.SubElement(disk, "source", file=f"/var/lib/images/{vm.name}.{name}")
    root.append(etree.fromstring(vm.xml(inactive=True)))
    xml = etree.tostring(root, encoding="unicode")
    vm.handle.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)


def test_external_snapshots_are_listed_but_not_reverted_on_libvirt_9_0(vm: Domain) -> None:
    _external(vm, "ext")
    snap = vm.snapshots.get("ext")
    assert snap.kind is SnapshotKind.EXTERNAL
    assert snap.overlays == {"vda": f"/var/lib/images/{vm.name}.ext"}
    assert vm.snapshots.create("ext", disk_only=True) == snap  # same kind: nothing taken
    with pytest.raises(AlreadyExists, match="external \\(not internal\\)"):
        vm.snapshots.create("ext")
    with pytest.raises(Unsupported) as e:
        vm.snapshots.revert("ext")
    assert "libvirt 9.0.0 cannot revert to the external snapshot ext" in str(e.value)
    assert "came in libvirt 9.7.0" in str(e.value)
    assert vm.state is State.SHUT_OFF  # nothing was half-done
    vm.snapshots.delete("ext")
    assert vm.snapshots.find("ext") is None


def test_snapshots_of_an_absent_domain(vm: Domain) -> None:
    vm.undefine()
    with pytest.raises(hvlib.DomainNotFound):
        vm.snapshots.create("s1")
    with pytest.raises(hvlib.DomainNotFound):
        vm.snapshots.list()


@pytest.mark.parametrize("state", [State.SHUT_OFF, State.RUNNING])
def test_a_domain_with_snapshots_is_undefined_with_their_metadata(
    host: Host, unique: str, state: State
) -> None:
    """undefine() and ensure(ABSENT) take a domain's snapshot metadata with it (the test
    driver, like QEMU, refuses to undefine a domain with snapshots otherwise), on a driver
    that refuses some of the other undefine flags (the test driver takes no NVRAM flag)."""
    spec = vm_spec(unique)
    for remove in ("ensure", "undefine"):
        dom = host.domains.ensure(spec, state=state).domain
        assert dom is not None
        dom.snapshots.create("s1")
        dom.snapshots.create("s2")
        if remove == "ensure":
            res = host.domains.ensure(spec, state=State.ABSENT)
            assert res.changed and res.forced is state.is_active
        else:
            dom.undefine()
            if state.is_active:  # left running, transient: destroying it removes it
                assert dom.state is State.RUNNING and not dom.handle.isPersistent()
                dom.destroy()
        assert host.domains.find(unique) is None
