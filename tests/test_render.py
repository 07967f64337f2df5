"""Rendering: goldens per type, libvirt's RelaxNG schema, escaping, edits, templates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

import hvlib
from hvlib import Disk, DomainSpec, IdMap, SpecError, VirtType, XmlEdit
from hvlib.model.domxml import DomainXML
from hvlib.model.plan import merge
from hvlib.model.render import load_template, render_tree, template_text
from hvlib.model.xmlmodel import XmlNode
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
