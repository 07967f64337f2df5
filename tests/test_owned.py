"""Every field a spec owns is compared (issue 16, item 14): the enumeration comes from the
code's own declarations, so a field added later without a comparison fails here.

Two sides. The spec side: every field of every spec dataclass (``dataclasses.fields``) has a
mutation below (or a stated reason it has none); each mutation is ensured on libvirt's
test:/// driver over a domain made from the base spec, and must be reported as a change,
written, and converge (the next ensure reports nothing and writes nothing). The XML side:
every field :mod:`hvlib.model.domxml` declares on a device class is classified by
:data:`hvlib.model.plan.DEVICES`, and changing one in a definition changes its owned view
exactly when it is owned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import libvirt
import pytest
from lxml import etree

import hvlib
from hvlib import Cpu, Disk, DomainSpec, Filesystem, IdMap, IdRange, Nic, State, VirtType, XmlEdit
from hvlib.model.plan import DEVICES, owned
from hvlib.model.render import render_tree
from hvlib.model.xmlmodel import Field, Flag, MemoryKiB
from hvlib.virt import _virt
from hvlib.virt.host import Host
from tests.counting import CountingLibvirt

M1, M2 = "52:54:00:00:00:01", "52:54:00:00:00:02"


def base_vm(name: str) -> DomainSpec:
    return DomainSpec(
        name=name,
        virt=VirtType.QEMU,
        vcpus=2,
        max_vcpus=4,
        memory_mib=256,
        max_memory_mib=512,
        kernel="/boot/vmlinuz",
        initrd="/boot/initrd",
        cmdline="console=ttyS0",
        disks=[
            Disk.file("/img/a.img", format="raw"),
            Disk.volume("default-pool", "v1", target="vdb", format="raw"),
        ],
        nics=[Nic.network("default", mac=M1), Nic.bridge("br0", mac=M2, model="e1000")],
        filesystems=[Filesystem.mount("/srv/share", "/share")],
        description="base",
        cpu=Cpu.model("Nehalem", require=["aes"], disable=["sse4.2"], sockets=2, cores=2),
        xml_edits=[XmlEdit.set("./clock/@offset", "utc")],
    )


def base_ct(name: str) -> DomainSpec:
    ranges = (IdRange(0, 100000, 1000), IdRange(1000, 200000, 10))
    return DomainSpec(
        name=name,
        virt=VirtType.LXC,
        init=["/sbin/init", "--log"],
        filesystems=[Filesystem.mount("/srv/ct")],
        idmap=IdMap(uids=ranges, gids=ranges),
    )


Mutation = Callable[[DomainSpec], DomainSpec]


def _disk(i: int, **kw: Any) -> Mutation:
    return lambda s: replace(
        s, disks=[replace(d, **kw) if j == i else d for j, d in enumerate(s.disks)]
    )


def _nic(i: int, **kw: Any) -> Mutation:
    return lambda s: replace(
        s, nics=[replace(n, **kw) if j == i else n for j, n in enumerate(s.nics)]
    )


def _fs(i: int, **kw: Any) -> Mutation:
    return lambda s: replace(
        s, filesystems=[replace(f, **kw) if j == i else f for j, f in enumerate(s.filesystems)]
    )


def _cpu(**kw: Any) -> Mutation:
    return lambda s: replace(s, cpu=replace(s.cpu, **kw))


def _range(kind: str, i: int, **kw: Any) -> Mutation:
    def mutate(s: DomainSpec) -> DomainSpec:
        assert s.idmap is not None
        ranges = list(getattr(s.idmap, kind))
        ranges[i] = replace(ranges[i], **kw)
        return replace(s, idmap=replace(s.idmap, **{kind: ranges}))

    return mutate


# (class, field) -> (base, mutation, the change fields that must be reported)
MUTATIONS: dict[tuple[type, str], tuple[Callable[[str], DomainSpec], Mutation, set[str]]] = {
    (DomainSpec, "virt"): (base_vm, lambda s: replace(s, virt=VirtType.KVM), {"virt"}),
    (DomainSpec, "vcpus"): (base_vm, lambda s: replace(s, vcpus=3), {"vcpus"}),
    (DomainSpec, "memory_mib"): (base_vm, lambda s: replace(s, memory_mib=384), {"memory_mib"}),
    (DomainSpec, "max_memory_mib"): (
        base_vm,
        lambda s: replace(s, max_memory_mib=1024),
        {"max_memory_mib"},
    ),
    (DomainSpec, "max_vcpus"): (
        base_vm,
        lambda s: replace(s, max_vcpus=8, cpu=replace(s.cpu, cores=4)),
        {"max_vcpus", "cpu"},
    ),
    (DomainSpec, "kernel"): (base_vm, lambda s: replace(s, kernel="/boot/other"), {"kernel"}),
    (DomainSpec, "initrd"): (base_vm, lambda s: replace(s, initrd="/boot/other"), {"initrd"}),
    (DomainSpec, "cmdline"): (base_vm, lambda s: replace(s, cmdline="quiet"), {"cmdline"}),
    (DomainSpec, "disks"): (
        base_vm,
        lambda s: replace(s, disks=s.disks[:1]),
        {"disks[vdb]"},
    ),
    (DomainSpec, "nics"): (base_vm, lambda s: replace(s, nics=s.nics[:1]), {f"nics[{M2}]"}),
    (DomainSpec, "filesystems"): (
        base_vm,
        lambda s: replace(s, filesystems=[]),
        {"filesystems[/share]"},
    ),
    (DomainSpec, "init"): (base_ct, lambda s: replace(s, init=["/bin/sh"]), {"init"}),
    (DomainSpec, "uuid"): (
        base_vm,
        lambda s: replace(s, uuid="6b0e7c31-3c60-4e6c-9f0e-2f7c1f7b0a11"),
        {"uuid"},
    ),
    (DomainSpec, "description"): (
        base_vm,
        lambda s: replace(s, description="other"),
        {"description"},
    ),
    (DomainSpec, "autostart"): (base_vm, lambda s: replace(s, autostart=True), {"autostart"}),
    (DomainSpec, "on_poweroff"): (
        base_vm,
        lambda s: replace(s, on_poweroff="preserve"),
        {"on_poweroff"},
    ),
    (DomainSpec, "on_reboot"): (
        base_vm,
        lambda s: replace(s, on_reboot="destroy"),
        {"on_reboot"},
    ),
    (DomainSpec, "on_crash"): (base_vm, lambda s: replace(s, on_crash="preserve"), {"on_crash"}),
    (DomainSpec, "cpu"): (base_vm, lambda s: replace(s, cpu=Cpu.host_model()), {"cpu"}),
    (DomainSpec, "nested"): (base_vm, lambda s: replace(s, nested=True), {"cpu"}),
    (DomainSpec, "machine"): (base_vm, lambda s: replace(s, machine="q35"), {"machine"}),
    (DomainSpec, "firmware"): (base_vm, lambda s: replace(s, firmware="efi"), {"firmware"}),
    (DomainSpec, "secure_boot"): (
        lambda n: replace(base_vm(n), machine="q35", firmware="efi"),
        lambda s: replace(s, secure_boot=True),
        {"secure_boot"},
    ),
    (DomainSpec, "xml_edits"): (
        base_vm,
        lambda s: replace(s, xml_edits=[XmlEdit.set("./clock/@offset", "localtime")]),
        {"xml_edits"},
    ),
    (DomainSpec, "idmap"): (
        base_ct,
        lambda s: replace(s, idmap=IdMap.shifted(300000)),
        {"idmap"},
    ),
    (DomainSpec, "rng"): (base_vm, lambda s: replace(s, rng=True), {"rng"}),
    (DomainSpec, "guest_agent"): (
        base_vm,
        lambda s: replace(s, guest_agent=True),
        {"guest_agent"},
    ),
    (Disk, "kind"): (
        base_vm,
        lambda s: replace(
            s, disks=[Disk.volume("default-pool", "a.img", format="raw"), s.disks[1]]
        ),
        {"disks[vda]"},
    ),
    (Disk, "path"): (base_vm, _disk(0, path="/img/b.img"), {"disks[vda]"}),
    (Disk, "pool"): (base_vm, _disk(1, pool="other-pool"), {"disks[vdb]"}),
    (Disk, "volume_name"): (base_vm, _disk(1, volume_name="v2"), {"disks[vdb]"}),
    (Disk, "device"): (base_vm, _disk(0, device="cdrom"), {"disks[vda]", "disks[hda]"}),
    (Disk, "target"): (base_vm, _disk(1, target="vdd"), {"disks[vdb]", "disks[vdd]"}),
    (Disk, "format"): (base_vm, _disk(1, format="qcow2"), {"disks[vdb]"}),
    (Disk, "readonly"): (base_vm, _disk(0, readonly=True), {"disks[vda]"}),
    (Nic, "kind"): (base_vm, _nic(0, kind="bridge"), {f"nics[{M1}]"}),
    (Nic, "source"): (base_vm, _nic(1, source="br1"), {f"nics[{M2}]"}),
    (Nic, "mac"): (
        base_vm,
        _nic(1, mac="52:54:00:00:00:03"),
        {f"nics[{M2}]", "nics[52:54:00:00:00:03]"},
    ),
    (Nic, "model"): (base_vm, _nic(1, model="rtl8139"), {f"nics[{M2}]"}),
    (Filesystem, "source"): (base_vm, _fs(0, source="/srv/other"), {"filesystems[/share]"}),
    (Filesystem, "target"): (
        base_vm,
        _fs(0, target="/other"),
        {"filesystems[/share]", "filesystems[/other]"},
    ),
    (Filesystem, "readonly"): (base_vm, _fs(0, readonly=True), {"filesystems[/share]"}),
    (Cpu, "mode"): (base_vm, lambda s: replace(s, cpu=Cpu.host_model(sockets=2, cores=2)), {"cpu"}),
    (Cpu, "name"): (base_vm, _cpu(name="Westmere"), {"cpu"}),
    (Cpu, "require"): (base_vm, _cpu(require=["aes", "avx"]), {"cpu"}),
    (Cpu, "disable"): (base_vm, _cpu(disable=[]), {"cpu"}),
    (Cpu, "sockets"): (base_vm, _cpu(sockets=1, cores=4), {"cpu"}),
    (Cpu, "cores"): (base_vm, _cpu(sockets=4, cores=1), {"cpu"}),
    (Cpu, "threads"): (base_vm, _cpu(cores=1, threads=2), {"cpu"}),
    (Cpu, "fallback"): (base_vm, _cpu(fallback=True), {"cpu"}),
    (IdMap, "uids"): (base_ct, _range("uids", 1, count=20), {"idmap"}),
    (IdMap, "gids"): (base_ct, _range("gids", 1, count=20), {"idmap"}),
    (IdRange, "start"): (base_ct, _range("uids", 1, start=2000), {"idmap"}),
    (IdRange, "target"): (base_ct, _range("gids", 1, target=300000), {"idmap"}),
    (IdRange, "count"): (base_ct, _range("uids", 0, count=999), {"idmap"}),
    (XmlEdit, "xpath"): (
        base_vm,
        lambda s: replace(s, xml_edits=[XmlEdit.set("./on_crash", "preserve")]),
        {"xml_edits"},
    ),
    (XmlEdit, "value"): (
        base_vm,
        lambda s: replace(s, xml_edits=[XmlEdit.set("./clock/@offset", "localtime")]),
        {"xml_edits"},
    ),
    (XmlEdit, "remove"): (
        base_vm,
        lambda s: replace(s, xml_edits=[*s.xml_edits, XmlEdit.delete("./devices/memballoon")]),
        {"xml_edits"},
    ),
}
NOT_COMPARED = {
    (DomainSpec, "name"): "identity: a spec with another name is another domain",
    (DomainSpec, "xml_hook"): "a function (compare=False): what it does cannot be compared",
}
SPEC_CLASSES = (DomainSpec, Disk, Nic, Filesystem, Cpu, IdMap, IdRange, XmlEdit)


def test_every_spec_field_has_a_mutation_or_a_reason() -> None:
    declared = {(cls, f.name) for cls in SPEC_CLASSES for f in dataclasses.fields(cls)}
    covered = set(MUTATIONS) | set(NOT_COMPARED)
    assert declared - covered == set(), "a spec field nobody compares: add a mutation"
    assert covered - declared == set()
    assert not set(MUTATIONS) & set(NOT_COMPARED)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Host, CountingLibvirt]]:
    proxy = CountingLibvirt(libvirt)
    monkeypatch.setattr(_virt, "libvirt", proxy)
    with hvlib.connect("test:///default", poll_interval=None) as host:
        pool = '<pool type="dir"><name>other-pool</name><target><path>/o</path></target></pool>'
        if "other-pool" not in host.conn.listStoragePools():
            host.conn.storagePoolDefineXML(pool).create()
        yield host, proxy


@pytest.mark.parametrize("state", [State.SHUT_OFF, State.RUNNING])
@pytest.mark.parametrize("key", list(MUTATIONS), ids=[f"{c.__name__}.{f}" for c, f in MUTATIONS])
def test_each_owned_field_is_reported_and_converges(
    counted: tuple[Host, CountingLibvirt], unique: str, key: tuple[type, str], state: State
) -> None:
    host, proxy = counted
    make, mutate, fields = MUTATIONS[key]
    base = make(unique)
    allow = {"allow_restart": True, "allow_recreate": True}
    host.domains.ensure(base, state=state, **allow)
    assert not host.domains.ensure(base, state=state).changed
    changed = mutate(base)
    assert changed != base
    res = host.domains.ensure(changed, state=state, **allow)
    assert res.changed and fields <= {c.field for c in res.changes}, res.changes
    assert res.pending == []
    if key != (DomainSpec, "autostart"):
        assert res.diff(), "what is written shows in the diff"
    proxy.calls.clear()
    again = host.domains.ensure(changed, state=state, **allow)
    assert not again.changed and again.pending == [], again.changes
    assert again.diff() == ""
    assert proxy.calls.writes() == {}
    host.domains.ensure(changed, state=State.ABSENT)


def test_a_volume_disk_format_change_is_reported(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    """The issue's own example (a volume disk raw -> qcow2) is a change of ``disks[vda]``
    and written; before the fix ensure said changed=False, changes=[]."""
    host, _ = counted
    raw = Disk.volume("default-pool", "d", format="raw")
    spec = DomainSpec(name=unique, virt=VirtType.QEMU, kernel="/k", disks=[raw])
    host.domains.ensure(spec, state=State.SHUT_OFF)
    qcow2 = replace(spec, disks=[replace(raw, format="qcow2")])
    res = host.domains.ensure(qcow2, state=State.SHUT_OFF)
    assert [c.field for c in res.changes] == ["disks[vda]"]
    assert '+      <driver name="qemu" type="qcow2"/>' in res.diff()
    assert host.domains.get(unique).xml_doc(inactive=True).disks[0].driver_type == "qcow2"
    assert not host.domains.ensure(qcow2, state=State.SHUT_OFF).changed
    host.domains.ensure(qcow2, state=State.ABSENT)


@pytest.mark.parametrize(
    "edits",
    [
        [XmlEdit.set("./memory/@unit", "MiB"), XmlEdit.set("./memory", "256")],
        [XmlEdit.delete("./devices/memballoon")],
    ],
    ids=["libvirt-rewrites-the-value", "libvirt-puts-it-back"],
)
def test_an_edit_libvirt_rewrites_still_converges(
    counted: tuple[Host, CountingLibvirt], unique: str, edits: list[XmlEdit]
) -> None:
    """XPath edits are compared as recorded, not by the values they set: an edit whose
    value libvirt rewrites (it stores ``<memory unit='MiB'>256`` as KiB) or whose element
    libvirt puts back (QEMU adds its default ``<memballoon>``; done by hand here, the test
    driver does not) is written once and then reports nothing."""
    host, proxy = counted
    spec = DomainSpec(name=unique, virt=VirtType.QEMU, kernel="/k")
    host.domains.ensure(spec, state=State.SHUT_OFF)
    edited = replace(spec, xml_edits=edits)
    res = host.domains.ensure(edited, state=State.SHUT_OFF)
    assert [c.field for c in res.changes] == ["xml_edits"]
    doc = host.domains.get(unique).xml_doc(inactive=True)
    if doc.el.find("devices/memballoon") is None:
        etree.SubElement(doc.devices, "memballoon", model="virtio")
        host.domains.define_xml(doc.to_xml())
    proxy.calls.clear()
    again = host.domains.ensure(edited, state=State.SHUT_OFF)
    assert not again.changed and proxy.calls.writes() == {}, again.changes
    host.domains.ensure(spec, state=State.ABSENT)


# -- the XML side ----------------------------------------------------------------------------


def _declared(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if isinstance(v, Field | Flag | MemoryKiB)}


@pytest.mark.parametrize("family", list(DEVICES))
def test_every_declared_device_field_is_classified(family: str) -> None:
    fields = DEVICES[family]
    groups = [{fields.key}, set(fields.owned), set(fields.defaulted), set(fields.ignored)]
    assert sum(len(g) for g in groups) == len(set().union(*groups)), "classified twice"
    assert _declared(fields.node) == set().union(*groups)


@pytest.mark.parametrize("family", list(DEVICES))
def test_changing_a_device_field_changes_the_owned_view_exactly_when_owned(family: str) -> None:
    spec = base_vm("v")
    fields = DEVICES[family]
    for name in _declared(fields.node) - {fields.key}:
        doc = render_tree(spec)
        node = getattr(doc, {"nics": "interfaces"}.get(family, family))[0]
        key = f"{family}[{getattr(node, fields.key)}]"
        before = owned(doc, spec)[key]
        value = getattr(node, name)
        setattr(node, name, (not value) if isinstance(value, bool) else f"{value}-other")
        after = owned(doc, spec)[key]
        if name in fields.ignored:
            assert after == before, name
        else:
            assert fields.differs(before, after), name
