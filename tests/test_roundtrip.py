"""Round trips of real XMLDesc() output (captured from a sandboxed libvirtd by
`make fixtures`): hvlib's model reads it, and writing it back keeps everything it does not
model (addresses, aliases, controllers, seclabels, libvirt's own additions)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from hvlib import VirtType
from hvlib.model.domxml import DomainXML
from hvlib.model.render import virt_of
from hvlib.model.xmlmodel import parse

FIXTURES = Path(__file__).parent / "fixtures"
ALL = sorted(FIXTURES.glob("*.xml"))


def canonical(xml: str | bytes) -> bytes:
    return etree.tostring(parse(xml), method="c14n")


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_parse_and_write_back_loses_nothing(path: Path) -> None:
    text = path.read_text()
    assert canonical(DomainXML.from_xml(text).to_xml()) == canonical(text)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_editing_a_modelled_field_keeps_the_rest(path: Path) -> None:
    doc = DomainXML.from_xml(path.read_text())
    doc.memory_kib = 1024 * 1024
    doc.on_crash = "preserve"
    before, after = parse(path.read_text()), parse(doc.to_xml())
    for tree in (before, after):
        for tag in ("memory", "on_crash"):
            tree.remove(tree.find(tag))  # type: ignore[arg-type]
    assert etree.tostring(before, method="c14n") == etree.tostring(after, method="c14n")
    assert DomainXML.from_xml(doc.to_xml()).memory_kib == 1024 * 1024


def test_qemu_live_fields_are_read() -> None:
    doc = DomainXML.from_xml((FIXTURES / "qemu-live.xml").read_text())
    assert (doc.name, doc.domain_type, doc.os_type) == ("fixture-vm", "qemu", "hvm")
    assert doc.memory_kib == 512 * 1024
    assert [(d.kind, d.device, d.target_dev) for d in doc.disks] == [
        ("volume", "disk", "vda"),
        ("file", "cdrom", "hda"),
    ]
    assert doc.disks[0].source_pool == "default" and doc.disks[1].readonly
    (nic,) = doc.interfaces
    assert nic.source_network == "default" and nic.mac and nic.mac.startswith("52:54:00:")
    assert doc.el.find("devices/interface/address") is not None, "libvirt's addresses are kept"
    assert virt_of(doc) is VirtType.QEMU


def test_lxc_live_fields_are_read() -> None:
    doc = DomainXML.from_xml((FIXTURES / "lxc-live.xml").read_text())
    assert (doc.domain_type, doc.os_type, doc.init) == ("lxc", "exe", "/sbin/hvlib-init")
    (fs,) = doc.filesystems
    assert fs.target_dir == "/" and fs.source_dir and fs.source_dir.endswith("lxc-rootfs")
    assert virt_of(doc) is VirtType.LXC


def test_virt_type_without_hvlib_metadata_is_derived_from_the_xml() -> None:
    for name, virt in (("qemu-live.xml", VirtType.QEMU), ("lxc-live.xml", VirtType.LXC)):
        doc = DomainXML.from_xml((FIXTURES / name).read_text())
        doc.el.remove(doc.el.find("metadata"))  # type: ignore[arg-type]
        assert virt_of(doc) is virt
