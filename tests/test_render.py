"""Rendering: goldens per type, libvirt's RelaxNG schema, escaping, edits, templates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

import hvlib
from hvlib import Disk, DomainSpec, IdMap, Nic, SpecError, State, VirtType, XmlEdit
from hvlib.model.domxml import DomainXML
from hvlib.model.plan import merge
from hvlib.model.render import load_template, render_tree, schema_names, template_text
from hvlib.model.xmlmodel import XmlNode
from hvlib.virt.host import Host
from tests.golden_specs import GOLDEN_SPECS

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(GOLDEN_SPECS))
def test_render_matches_golden(name: str) -> None:
    expected = (GOLDEN / f"{name}.xml").read_text()
    assert hvlib.render(GOLDEN_SPECS[name]) + "\n" == expected, "run `make goldens` and review"


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.xml")), ids=lambda p: p.stem)
def test_every_golden_validates_against_libvirt_schema(path: Path) -> None:
    hvlib.validate(path.read_text())


def test_every_golden_spec_has_a_golden_file_and_back() -> None:
    assert {p.stem for p in GOLDEN.glob("*.xml")} == set(GOLDEN_SPECS)


def test_every_virt_type_has_a_golden() -> None:
    covered = {spec.virt for spec in GOLDEN_SPECS.values()}
    assert covered == set(VirtType)


@pytest.mark.parametrize("template", ["hvm", "xen-pv", "xen-hvm", "lxc"])
def test_templates_are_valid_domain_xml_on_their_own(template: str) -> None:
    hvlib.validate(template_text(template))


def test_validate_rejects_a_broken_document() -> None:
    doc = load_template("hvm")
    doc.el.remove(doc.el.find("name"))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="does not validate"):
        hvlib.validate(doc.to_xml())


def test_domain_type_per_virt_type() -> None:
    expect = {
        "kvm": ("kvm", "hvm"),
        "qemu": ("qemu", "hvm"),
        "xen-pv": ("xen", "xen"),
        "xen-hvm": ("xen", "hvm"),
        "lxc": ("lxc", "exe"),
    }
    for name, (dtype, os_type) in expect.items():
        doc = render_tree(GOLDEN_SPECS[name])
        assert (doc.domain_type, doc.os_type) == (dtype, os_type), name


def test_escaping_round_trips_every_value() -> None:
    spec = GOLDEN_SPECS["escaping"]
    doc = DomainXML.from_xml(hvlib.render(spec))
    assert doc.kernel == spec.kernel
    assert doc.cmdline == spec.cmdline
    assert doc.description == spec.description
    assert doc.el.find("b") is None and not doc.xpath("//b"), "markup must not be injected"


def test_xml_edits_set_attribute_text_and_remove() -> None:
    spec = DomainSpec(
        name="e",
        virt=VirtType.QEMU,
        kernel="/k",
        xml_edits=[
            XmlEdit.set("./on_crash", "preserve"),
            XmlEdit.set("./os/type/@machine", "q35"),
            XmlEdit.delete("./devices/memballoon"),
        ],
    )
    doc = render_tree(spec)
    assert doc.on_crash == "preserve"
    assert doc.os_machine == "q35"
    assert doc.el.find("devices/memballoon") is None


def test_xml_edit_that_matches_nothing_is_a_spec_error() -> None:
    spec = DomainSpec(
        name="e", virt=VirtType.QEMU, kernel="/k", xml_edits=[XmlEdit.set("./nosuch", "x")]
    )
    with pytest.raises(SpecError, match="matches no element"):
        hvlib.render(spec)


def test_xml_edit_with_bad_xpath_is_a_spec_error() -> None:
    spec = DomainSpec(
        name="e", virt=VirtType.QEMU, kernel="/k", xml_edits=[XmlEdit.set("./[[", "x")]
    )
    with pytest.raises(SpecError, match="XPath"):
        hvlib.render(spec)


def test_xml_hook_sees_the_lxml_tree() -> None:
    def hook(el: etree._Element) -> None:
        etree.SubElement(el.find("devices"), "rng", model="virtio")  # type: ignore[arg-type]

    doc = render_tree(DomainSpec(name="h", virt=VirtType.KVM, kernel="/k", xml_hook=hook))
    assert doc.el.find("devices/rng").get("model") == "virtio"  # type: ignore[union-attr]


def test_disk_targets_skip_explicit_ones() -> None:
    spec = DomainSpec(
        name="t",
        virt=VirtType.KVM,
        disks=[
            Disk.file("/a", target="vda"),
            Disk.file("/b"),
            Disk.file("/c"),
            Disk.cdrom("/d.iso"),
        ],
    )
    targets = [d.target_dev for d in render_tree(spec).disks]
    assert targets == ["vda", "vdb", "vdc", "hda"]


def test_memory_balloon_range_and_vcpu_hotplug() -> None:
    doc = render_tree(
        DomainSpec(
            name="m",
            virt=VirtType.KVM,
            kernel="/k",
            memory_mib=256,
            max_memory_mib=1024,
            vcpus=1,
            max_vcpus=4,
        )
    )
    assert (doc.memory_kib, doc.current_memory_kib) == (1024 * 1024, 256 * 1024)
    assert (doc.vcpu, doc.vcpu_current) == (4, 1)


def test_idmap_follows_os_and_reads_back_in_container_id_order() -> None:
    spec = GOLDEN_SPECS["lxc-idmap"]
    doc = render_tree(spec)
    assert doc.el.find("os").getnext() is doc.el.find("idmap")  # type: ignore[union-attr]
    assert doc.idmap == {
        "uid": ((0, 100000, 1000), (1000, 1000, 1), (1001, 101001, 64535)),
        "gid": ((0, 100000, 65536),),
    }


def test_merging_a_spec_replaces_or_removes_the_idmap() -> None:
    spec = GOLDEN_SPECS["lxc-idmap"]
    current = render_tree(spec)
    merge(current, replace(spec, idmap=IdMap.shifted(200000, 10)))
    assert current.idmap == {"uid": ((0, 200000, 10),), "gid": ((0, 200000, 10),)}
    assert len(current.el.findall("idmap")) == 1
    merge(current, replace(spec, idmap=None))
    assert current.idmap == {} and current.el.find("idmap") is None


def test_vm_definitions_keep_an_idmap_they_do_not_own() -> None:
    # a VM spec cannot ask for one; what a VM's definition has is left as it is
    current = render_tree(GOLDEN_SPECS["qemu"])
    current.idmap = {"uid": ((0, 1, 1),), "gid": ((0, 1, 1),)}
    merge(current, GOLDEN_SPECS["qemu"])
    assert current.idmap == {"uid": ((0, 1, 1),), "gid": ((0, 1, 1),)}


def _device_tags(doc: DomainXML) -> list[str]:
    return [str(el.tag) for el in doc.devices if isinstance(el.tag, str)]


def test_rng_renders_after_the_memballoon_and_validates() -> None:
    spec = GOLDEN_SPECS["qemu-rng"]
    xml = hvlib.render(spec)
    hvlib.validate(xml)
    doc = DomainXML.from_xml(xml)
    assert _device_tags(doc) == ["interface", "serial", "console", "memballoon", "rng"]
    [rng] = doc.rngs
    assert (rng.model, rng.backend_model, rng.backend_path) == ("virtio", "random", "/dev/urandom")
    assert rng.address_type is None
    assert "<rng" not in hvlib.render(replace(spec, rng=False))


@pytest.mark.parametrize("virt", [VirtType.KVM, VirtType.QEMU])
def test_rng_on_each_machine(virt: VirtType) -> None:
    for machine, address in (("pc", None), ("q35", None), ("microvm", "virtio-mmio")):
        spec = replace(GOLDEN_SPECS["qemu-rng"], virt=virt, machine=machine)
        xml = hvlib.render(spec)
        hvlib.validate(xml)
        [rng] = DomainXML.from_xml(xml).rngs
        assert rng.address_type == address, machine


def test_merging_a_spec_adds_keeps_or_removes_its_rng() -> None:
    spec = GOLDEN_SPECS["qemu-rng"]
    current = render_tree(replace(spec, rng=False))
    merge(current, spec)
    assert len(current.rngs) == 1 and _device_tags(current)[-1] == "rng"
    current.rngs[0].address_type = "pci"  # what libvirt wrote back is kept
    merge(current, spec)
    assert [r.address_type for r in current.rngs] == ["pci"]
    merge(current, replace(spec, rng=False))
    assert current.rngs == []


def test_an_rng_of_another_kind_is_not_the_specs() -> None:
    # an EGD-fed RNG added through the escape hatch is neither the spec's nor removed by it
    current = render_tree(GOLDEN_SPECS["qemu"])
    egd = etree.SubElement(current.devices, "rng", model="virtio")
    etree.SubElement(egd, "backend", model="egd", type="tcp")
    merge(current, GOLDEN_SPECS["qemu"])
    assert [r.backend_model for r in current.rngs] == ["egd"]
    merge(current, replace(GOLDEN_SPECS["qemu"], rng=True))
    assert [r.backend_model for r in current.rngs] == ["egd", "random"]


def test_devices_go_where_libvirt_writes_them() -> None:
    doc = load_template("hvm")
    for tag in ("rng", "panic", "watchdog", "input", "disk", "interface"):
        doc.insert_device(XmlNode(etree.Element(tag)))
    assert _device_tags(doc) == [
        "disk",
        "interface",
        "serial",
        "console",
        "input",
        "watchdog",
        "memballoon",
        "rng",
        "panic",
    ]


# -- issue 16 item 5: edits may not touch what hvlib identifies a domain by -----------------

UUID = "5b3f8f8e-6f2a-4c47-9a3e-2f5d8f0b6c11"
_IDENTITY_SETS = [
    "./name",
    "/domain/name",
    "name",
    ".//name",
    "//name",
    "*[1]",
    "/*/*[1]",
    "child::name",
    "descendant-or-self::name",
    "//*[local-name()='name']",
    "(//name)[1]",
    "./on_crash | ./name",
    "./uuid",
    "//uuid",
    "./@type",
    "/domain/@type",
    ".//os/type",
    "os/*[1]",
    "./metadata/*",
    "//*[namespace-uri()='https://hvlib.dev/xmlns/hvlib/1']",
    "./metadata/*/@x",
    "./devices/interface/mac/@address",  # NICs are keyed by MAC
    "//mac",
]
_IDENTITY_DELETES = [*_IDENTITY_SETS, "./os", "//os", "/domain", ".", "./metadata", "//*"]


def _edited(*edits: XmlEdit) -> DomainSpec:
    return DomainSpec(
        name="e",
        virt=VirtType.QEMU,
        kernel="/k",
        uuid=UUID,
        nics=[Nic.network("default", mac="52:54:00:ab:cd:03")],
        xml_edits=edits,
    )


@pytest.mark.parametrize("xpath", _IDENTITY_SETS)
def test_a_set_that_reaches_an_identity_node_is_refused_whatever_its_spelling(xpath: str) -> None:
    with pytest.raises(SpecError) as info:
        hvlib.render(_edited(XmlEdit.set("./on_crash", "preserve"), XmlEdit.set(xpath, "evil")))
    assert info.value.field == "xml_edits[1]" and info.value.value == xpath


@pytest.mark.parametrize("xpath", _IDENTITY_DELETES)
def test_a_delete_that_reaches_an_identity_node_is_refused(xpath: str) -> None:
    with pytest.raises(SpecError) as info:
        hvlib.render(_edited(XmlEdit.delete(xpath)))
    assert info.value.field == "xml_edits[0]"


@pytest.mark.parametrize(
    "edit",
    [
        XmlEdit.set("./os/type/@machine", "q35"),  # the os type's attributes are not identity
        XmlEdit.set("./devices/memballoon/@model", "none"),
        XmlEdit.set("//on_crash", "preserve"),
        XmlEdit.delete("./devices/memballoon"),
        XmlEdit.delete("./nosuch/name"),
        XmlEdit.delete("./os/type/@machine"),
        XmlEdit.delete("./devices/interface"),  # a NIC may go, not its MAC alone
        XmlEdit.set("./devices/interface/model/@type", "e1000"),
    ],
)
def test_edits_elsewhere_are_applied(edit: XmlEdit) -> None:
    hvlib.validate(hvlib.render(_edited(edit)))


@pytest.mark.parametrize(
    "xpath", ["count(//disk)", "string(./name)", "./name/text()", "//@type", "./os/type/@*"]
)
def test_an_xpath_that_selects_no_elements_is_a_spec_error(xpath: str) -> None:
    with pytest.raises(SpecError) as info:
        hvlib.render(_edited(XmlEdit.set(xpath, "x")))
    assert info.value.field == "xml_edits[0]"


def test_a_hook_that_changes_identity_is_refused() -> None:
    def rename(el: etree._Element) -> None:
        el.find("name").text = "evil"  # type: ignore[union-attr]

    spec = DomainSpec(name="h", virt=VirtType.QEMU, kernel="/k", xml_hook=rename)
    with pytest.raises(SpecError) as info:
        hvlib.render(spec)
    assert info.value.field == "xml_hook"


def test_ensure_with_a_renaming_edit_is_refused_before_anything_is_defined(
    host: Host, unique: str
) -> None:
    """``XmlEdit.set("./name", "evil")`` once defined "evil", and the second ensure (not
    finding its name) recursed until RecursionError."""
    spec = DomainSpec(
        name=unique, virt=VirtType.QEMU, kernel="/k", xml_edits=[XmlEdit.set("./name", "evil")]
    )
    for _ in range(2):
        with pytest.raises(SpecError) as info:
            host.domains.ensure(spec, State.SHUT_OFF)
        assert info.value.field == "xml_edits[0]"
    assert host.domains.find(unique) is None and host.domains.find("evil") is None


# -- issue 16 item 8: validate() takes a document and a schema name, nothing else ------------


@pytest.mark.parametrize(
    ("xml", "schema", "field"),
    [
        ("<garbage", "domain", "xml"),
        ("", "domain", "xml"),
        (b"\x00<domain/>", "domain", "xml"),
        ("<a><b></a>", "domain", "xml"),
        (None, "domain", "xml"),
        (42, "domain", "xml"),
        ("<domain/>", "../../../etc/passwd", "schema"),
        ("<domain/>", "/usr/share/libvirt/schemas/domain", "schema"),
        ("<domain/>", "domain.rng", "schema"),
        ("<domain/>", "domain/../network", "schema"),
        ("<domain/>", "", "schema"),
        ("<domain/>", None, "schema"),
    ],
)
def test_validate_refuses_what_is_not_a_document_or_a_schema_name(
    xml: object, schema: object, field: str
) -> None:
    with pytest.raises(SpecError) as info:
        hvlib.validate(xml, schema=schema)  # type: ignore[arg-type]
    assert info.value.field == field


def test_validate_takes_every_installed_schema_by_name() -> None:
    names = schema_names()
    assert {"domain", "network", "storagevol", "storagepool"} <= set(names)
    hvlib.validate("<network><name>n</name></network>", schema="network")
    with pytest.raises(SpecError, match=r"does not validate against network\.rng"):
        hvlib.validate("<domain/>", schema="network")


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_validate_refuses_any_other_schema_name(name: str) -> None:
    if name in schema_names():
        return
    with pytest.raises(SpecError) as info:
        hvlib.validate("<domain/>", schema=name)
    assert info.value.field == "schema"


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60)))
def test_validate_of_any_text_is_a_pass_or_a_spec_error(text: str | bytes) -> None:
    try:
        hvlib.validate(text)
    except SpecError as e:
        assert e.field == "xml"


# -- issue 16 item 20: a VM without a kernel or a disk boots the network --------------------

MAC = "52:54:00:ab:cd:02"


@pytest.mark.parametrize("virt", [VirtType.KVM, VirtType.QEMU, VirtType.XEN_HVM])
def test_a_vm_with_only_a_nic_boots_the_network(virt: VirtType) -> None:
    spec = DomainSpec(name="pxe", virt=virt, nics=[Nic.network("default", mac=MAC)])
    xml = hvlib.render(spec)
    hvlib.validate(xml)
    assert [b.get("dev") for b in DomainXML.from_xml(xml).el.findall("os/boot")] == ["network"]


@pytest.mark.parametrize(
    ("disks", "kernel", "boots"),
    [
        ([Disk.file("/a.img")], None, ["hd"]),
        ([Disk.cdrom("/s.iso"), Disk.file("/a.img")], None, ["hd"]),
        ([Disk.cdrom("/s.iso")], None, ["cdrom"]),
        ([], None, ["network"]),
        ([Disk.file("/a.img")], "/k", []),
        ([], "/k", []),
    ],
)
def test_what_a_vm_boots(disks: list[Disk], kernel: str | None, boots: list[str]) -> None:
    spec = DomainSpec(
        name="b", virt=VirtType.QEMU, kernel=kernel, disks=disks, nics=[Nic.network("n")]
    )
    doc = render_tree(spec)
    assert [b.get("dev") for b in doc.el.findall("os/boot")] == boots


def test_a_definition_that_booted_its_disk_boots_the_network_once_the_disk_is_gone() -> None:
    nic = Nic.network("default", mac=MAC)
    with_disk = DomainSpec(name="b", virt=VirtType.QEMU, disks=[Disk.file("/a.img")], nics=[nic])
    pxe = replace(with_disk, disks=())
    doc = merge(DomainXML.from_xml(hvlib.render(with_disk)), pxe)
    assert [b.get("dev") for b in doc.el.findall("os/boot")] == ["network"]
    hvlib.validate(doc.to_xml())


def test_a_container_with_a_nic_has_no_boot_device() -> None:
    spec = DomainSpec(
        name="c",
        virt=VirtType.LXC,
        init=["/sbin/init"],
        filesystems=[hvlib.Filesystem.mount("/srv/r")],
        nics=[Nic.network("default")],
    )
    assert render_tree(spec).el.find("os/boot") is None


def test_a_pxe_guest_is_defined_and_started_on_the_test_driver(host: Host, unique: str) -> None:
    spec = DomainSpec(name=unique, virt=VirtType.QEMU, nics=[Nic.network("default")])
    result = host.domains.ensure(spec)
    assert result.domain is not None and result.domain.state is State.RUNNING
    boots = result.domain.xml_doc(inactive=True).el.findall("os/boot")
    assert [b.get("dev") for b in boots] == ["network"]
    assert not host.domains.ensure(spec).changed
    host.domains.ensure(spec, State.ABSENT)


# -- issue 16 item 13: a volume disk is read in the volume's own format unless told ---------


def _volume(host: Host, name: str, fmt: str) -> str:
    host.volumes.ensure("default-pool", name, size_mib=8, format=fmt)
    return name


def _disk_types(host: Host, name: str) -> list[str | None]:
    return [d.driver_type for d in host.domains.get(name).xml_doc(inactive=True).disks]


def test_a_volume_disk_without_a_format_is_read_in_the_volumes_format(
    host: Host, unique: str
) -> None:
    qcow = _volume(host, f"{unique}-overlay.qcow2", "qcow2")
    raw = _volume(host, f"{unique}-data.img", "raw")
    spec = DomainSpec(
        name=unique,
        virt=VirtType.QEMU,
        kernel="/k",
        disks=[Disk.volume("default-pool", qcow), Disk.volume("default-pool", raw)],
    )
    host.domains.define(spec)
    assert _disk_types(host, unique) == ["qcow2", "raw"]
    assert not host.domains.ensure(spec, State.SHUT_OFF).changed
    host.domains.ensure(spec, State.ABSENT)


def test_an_explicit_format_wins_and_a_defined_disk_keeps_its_format(
    host: Host, unique: str
) -> None:
    """A later ensure without a format keeps the format the domain was defined with: what a
    volume's pool reports follows its bytes, which a guest may write."""
    qcow = _volume(host, f"{unique}.qcow2", "qcow2")
    explicit = DomainSpec(
        name=unique,
        virt=VirtType.QEMU,
        kernel="/k",
        disks=[Disk.volume("default-pool", qcow, format="raw")],
    )
    host.domains.ensure(explicit, State.SHUT_OFF)
    assert _disk_types(host, unique) == ["raw"]
    implicit = replace(explicit, disks=[Disk.volume("default-pool", qcow)])
    assert not host.domains.ensure(implicit, State.SHUT_OFF).changed
    assert _disk_types(host, unique) == ["raw"]
    host.domains.ensure(explicit, State.ABSENT)
    host.domains.ensure(implicit, State.SHUT_OFF)  # defined anew: the volume's own format
    assert _disk_types(host, unique) == ["qcow2"]
    host.domains.ensure(implicit, State.ABSENT)


@pytest.mark.parametrize(
    ("pool", "volume", "field"),
    [("nosuchpool", "v", "disks[0].pool"), ("default-pool", "nosuchvolume", "disks[0].volume")],
)
def test_a_volume_disk_without_a_format_needs_its_volume(
    host: Host, unique: str, pool: str, volume: str, field: str
) -> None:
    spec = DomainSpec(
        name=unique, virt=VirtType.QEMU, kernel="/k", disks=[Disk.volume(pool, volume)]
    )
    for call in (host.domains.define, host.domains.ensure, host.domains.check_host_refs):
        with pytest.raises(SpecError) as info:
            call(spec)
        assert info.value.field == field
    assert host.domains.find(unique) is None


def test_a_volume_disk_with_a_format_may_name_a_volume_made_later(host: Host, unique: str) -> None:
    spec = DomainSpec(
        name=unique,
        virt=VirtType.QEMU,
        kernel="/k",
        disks=[Disk.volume("default-pool", f"{unique}-later", format="qcow2")],
    )
    host.domains.define(spec)
    assert _disk_types(host, unique) == ["qcow2"]
    host.domains.ensure(spec, State.ABSENT)
