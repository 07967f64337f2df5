"""CPU, nested virtualization, machine type and firmware: spec rules, per-type policy, the XML
they render to, and the views ensure compares (stable between a persistent definition and a
running guest's)."""

from __future__ import annotations

from typing import Any

import pytest

import hvlib
from hvlib import Disk, DomainSpec, Filesystem, Nic, SpecError, Unsupported, VirtType
from hvlib.model.cpu import HVLIB_CPU_NS, cpu_key_of
from hvlib.model.cpuspec import Cpu
from hvlib.model.domxml import DomainXML
from hvlib.model.plan import merge, owned
from hvlib.model.render import firmware_of, render_tree
from hvlib.model.xmlmodel import parse
from tests.cpu_specs import LIVE_SPECS
from tests.hostfakes import FIXTURES


def vm(**kw: Any) -> DomainSpec:
    base: dict[str, Any] = {"name": "v", "virt": VirtType.QEMU, "kernel": "/k"}
    base.update(kw)
    return DomainSpec(**base)


# -- spec rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Cpu(mode="turbo"), "cpu.mode"),
        (lambda: Cpu(mode="custom"), "cpu.model"),
        (lambda: Cpu(mode="host-model", name="Nehalem"), "cpu.model"),
        (lambda: Cpu.model("Ne halem"), "cpu.model"),
        (lambda: Cpu.model("Nehalem", require=["AES"]), "cpu.require"),
        (lambda: Cpu.model("Nehalem", require="aes"), "cpu.require"),
        (lambda: Cpu.model("Nehalem", require=["aes", "aes"]), "cpu.require"),
        (lambda: Cpu.model("Nehalem", require=["aes"], disable=["aes"]), "cpu.disable"),
        (lambda: Cpu(require=["aes"]), "cpu.require"),
        (lambda: Cpu(disable=["aes"]), "cpu.disable"),
        (lambda: Cpu(sockets=0), "cpu.sockets"),
        (lambda: Cpu(cores=True), "cpu.cores"),
        (lambda: Cpu.model("Nehalem", fallback="yes"), "cpu.fallback"),  # type: ignore[arg-type]
        (lambda: Cpu.from_dict({"model": "Nehalem", "flags": []}), "cpu.flags"),
    ],
)
def test_bad_cpu_is_a_spec_error_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        make()
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cpu": Cpu(sockets=2)}, "cpu.topology"),
        ({"vcpus": 2, "max_vcpus": 4, "cpu": Cpu(cores=2)}, "cpu.topology"),
        ({"cpu": "Nehalem"}, "cpu"),
        ({"machine": "isapc"}, "machine"),
        ({"firmware": "uboot"}, "firmware"),
        ({"secure_boot": True}, "secure_boot"),
        ({"secure_boot": True, "firmware": "efi"}, "secure_boot"),
        ({"machine": "microvm", "firmware": "efi"}, "firmware"),
        ({"nested": "yes"}, "nested"),
    ],
)
def test_platform_fields_are_checked_on_construction(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        vm(**kwargs)
    assert info.value.field == field


def test_topology_multiplies_to_the_maximum_vcpus() -> None:
    assert vm(vcpus=2, max_vcpus=4, cpu=Cpu(sockets=2, cores=2)).cpu is not None
    assert vm(vcpus=4, cpu=Cpu(cores=2, threads=2)).cpu.topology == (1, 2, 2)  # type: ignore[union-attr]


def test_cpu_from_a_mapping_as_spec_files_give_it() -> None:
    spec = vm(cpu={"model": "Nehalem", "require": ["aes"], "disable": ["popcnt"]})
    assert spec.cpu == Cpu.model("Nehalem", require=["aes"], disable=["popcnt"])
    assert Cpu.from_dict({"mode": "host-model"}) == Cpu.host_model()


# -- per-type policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cpu": Cpu.host_model()},
        {"nested": True},
        {"machine": "q35"},
        {"firmware": "efi"},
    ],
)
@pytest.mark.parametrize("virt", [VirtType.XEN_PV, VirtType.XEN_HVM])
def test_xen_takes_no_platform_fields(virt: VirtType, kwargs: dict[str, Any]) -> None:
    with pytest.raises(Unsupported, match="kvm and qemu"):
        hvlib.render(vm(virt=virt, **kwargs))


def test_containers_take_no_platform_fields() -> None:
    spec = DomainSpec(
        name="c",
        virt=VirtType.LXC,
        filesystems=[Filesystem.mount("/srv/c")],
        cpu=Cpu.host_model(),
    )
    with pytest.raises(Unsupported, match="take no cpu"):
        hvlib.render(spec)


def test_software_emulation_cannot_pass_the_host_cpu_through() -> None:
    with pytest.raises(Unsupported, match="cannot pass the host CPU through"):
        hvlib.render(vm(cpu=Cpu.host_passthrough()))
    hvlib.render(vm(virt=VirtType.KVM, cpu=Cpu.host_passthrough()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel": None, "disks": [Disk.file("/d")]}, "needs a kernel"),
        ({"disks": [Disk.cdrom("/c.iso")]}, "no cdrom bus"),
        ({"filesystems": [Filesystem.mount("/srv", "/srv")]}, "no PCI bus"),
    ],
)
def test_microvm_rules(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(Unsupported, match=message):
        hvlib.render(vm(machine="microvm", **kwargs))


def test_nested_refuses_disabled_extensions() -> None:
    with pytest.raises(SpecError, match="needs svm"):
        hvlib.render(vm(nested=True, cpu=Cpu.model("EPYC", disable=["svm"])))
    hvlib.render(vm(virt=VirtType.KVM, nested=True, cpu=Cpu.model("EPYC", disable=["svm"])))


# -- rendering ----------------------------------------------------------------------------------


def test_q35_puts_cdroms_on_sata() -> None:
    doc = render_tree(vm(machine="q35", disks=[Disk.cdrom("/c.iso")]))
    assert doc.os_machine == "q35"
    assert [(d.target_dev, d.target_bus) for d in doc.disks] == [("sda", "sata")]


def test_microvm_devices_get_mmio_addresses_and_no_pci_devices() -> None:
    doc = render_tree(vm(machine="microvm", disks=[Disk.file("/d")], nics=[Nic.bridge("br0")]))
    assert doc.disks[0].address_type == "virtio-mmio"
    assert doc.interfaces[0].address_type == "virtio-mmio"
    assert doc.xpath("devices/memballoon/@model") == ["none"]
    assert doc.xpath("devices/controller[@type='usb']/@model") == ["none"]


def test_nested_under_emulation_gives_svm_and_npt() -> None:
    doc = render_tree(vm(nested=True))
    cpu = doc.cpu
    assert cpu is not None and (cpu.mode, cpu.model) == ("custom", "qemu64")
    assert cpu.features == [("require", "svm"), ("require", "npt")]


def test_nested_under_kvm_passes_the_host_cpu_through() -> None:
    cpu = render_tree(vm(virt=VirtType.KVM, nested=True)).cpu
    assert cpu is not None and cpu.mode == "host-passthrough" and cpu.features == []


def test_efi_uses_firmware_autoselection() -> None:
    doc = render_tree(vm(machine="q35", firmware="efi", secure_boot=True))
    assert doc.os_firmware == "efi"
    assert doc.firmware_features == {"enrolled-keys": True, "secure-boot": True}
    assert firmware_of(doc) == ("efi", True)
    off = render_tree(vm(machine="q35", firmware="efi"))
    assert off.firmware_features == {"secure-boot": False}
    assert firmware_of(render_tree(vm())) == ("bios", False)


def test_the_cpu_request_is_recorded_in_its_own_metadata_namespace() -> None:
    doc = render_tree(vm(cpu=Cpu.model("Nehalem", require=["aes"], disable=["popcnt"])))
    key = "mode=custom model=Nehalem fallback=forbid +aes -popcnt"
    assert doc.get_metadata(HVLIB_CPU_NS, "cpu") == key
    assert cpu_key_of(doc) == key
    assert render_tree(vm()).get_metadata(HVLIB_CPU_NS, "cpu") is None


# -- what ensure compares -----------------------------------------------------------------------

LIBVIRT_DEFAULT_CPU = (
    "<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>"
)


def _with(doc: DomainXML, xml: str) -> DomainXML:
    doc.remove("cpu")
    doc.el.find("features").addnext(parse(xml))
    return doc


def _persisted(spec: DomainSpec, cpu_xml: str | None = None) -> DomainXML:
    """The spec as libvirt writes it back: versioned machine, default CPU filled in."""
    doc = render_tree(spec)
    doc.os_machine = {"pc": "pc-i440fx-7.2", "q35": "pc-q35-7.2"}.get(doc.os_machine or "")
    if cpu_xml is not None:
        doc = _with(doc, cpu_xml)
    return doc


def test_libvirts_default_cpu_counts_as_no_cpu() -> None:
    spec = vm()
    current = _persisted(spec, LIBVIRT_DEFAULT_CPU)
    merged = merge(DomainXML.from_xml(current.to_xml()), spec)
    assert owned(current, spec) == owned(merged, spec)
    assert owned(current, spec)["cpu"] is None
    assert owned(current, spec)["machine"] == "pc"


def test_libvirts_additions_to_a_named_cpu_are_not_a_change() -> None:
    spec = vm(vcpus=2, cpu=Cpu.model("Nehalem", require=["aes"], cores=2))
    libvirt_cpu = (
        "<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>Nehalem</model>"
        "<topology sockets='1' dies='1' cores='2' threads='1'/>"
        "<feature policy='require' name='aes'/></cpu>"
    )
    current = _persisted(spec, libvirt_cpu)
    merged = merge(DomainXML.from_xml(current.to_xml()), spec)
    assert owned(current, spec) == owned(merged, spec)
    assert merged.cpu is not None and merged.cpu.check == "none", "left as libvirt wrote it"


def test_a_running_guests_expanded_cpu_compares_by_its_recorded_request() -> None:
    spec = vm(cpu=Cpu.host_model())
    persistent = _persisted(spec)
    live = _persisted(spec, "<cpu mode='custom' check='full'><model>EPYC</model></cpu>")
    live.el.set("id", "7")
    live.os_firmware = None
    assert owned(live, spec) == owned(persistent, spec)
    live.set_metadata(HVLIB_CPU_NS, "hvlibcpu", "cpu", None)  # started before the cpu changed
    assert owned(live, spec)["cpu"] is None


def test_a_running_guests_pflash_loader_is_efi() -> None:
    spec = vm(machine="q35", firmware="efi", secure_boot=True)
    live = _persisted(spec)
    live.el.set("id", "3")
    live.os_firmware = None
    loader = parse(
        "<loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/x.fd</loader>"
    )
    live.el.find("os").append(loader)
    assert owned(live, spec)["firmware"] == "efi"
    assert owned(live, spec) == owned(_persisted(spec), spec)


def test_changing_machine_family_drops_controllers_and_addresses() -> None:
    current = _persisted(vm(disks=[Disk.file("/d")]))
    devices = current.el.find("devices")
    devices.append(parse("<controller type='pci' model='pci-root'/>"))
    current.disks[0].el.append(parse("<address type='pci'/>"))
    merged = merge(current, vm(disks=[Disk.file("/d")], machine="q35"))
    assert merged.os_machine == "q35"
    assert not merged.xpath("devices/controller") and not merged.xpath("devices/*/address")


def test_switching_firmware_drops_what_libvirt_filled_in() -> None:
    spec = vm(machine="q35", firmware="efi")
    current = _persisted(spec)
    os_el = current.el.find("os")
    for xml in ("<loader type='pflash'>/x.fd</loader>", "<nvram>/var/lib/v.fd</nvram>"):
        os_el.append(parse(xml))
    kept = merge(DomainXML.from_xml(current.to_xml()), spec)
    assert kept.loader_type == "pflash", "unchanged firmware keeps its loader"
    bios = merge(DomainXML.from_xml(current.to_xml()), vm(machine="q35"))
    assert bios.os_firmware is None and bios.loader_type is None and not bios.xpath("os/nvram")
    assert firmware_of(bios) == ("bios", False)


PLATFORM_KEYS = ("machine", "firmware", "secure_boot", "cpu")


@pytest.mark.parametrize("name", sorted(LIVE_SPECS))
def test_real_persistent_and_running_definitions_compare_equal(name: str) -> None:
    """On XML a real libvirtd wrote (scripts/capture-domcaps.py): the running guest's expanded
    CPU and pflash loader, the persistent definition and the spec merged over it all say the
    same about what the spec owns."""
    spec = LIVE_SPECS[name]
    inactive = DomainXML.from_xml((FIXTURES / f"live-{name}-inactive.xml").read_text())
    live = DomainXML.from_xml((FIXTURES / f"live-{name}-live.xml").read_text())
    merged = merge(DomainXML.from_xml(inactive.to_xml()), spec)
    views = [{k: owned(doc, spec)[k] for k in PLATFORM_KEYS} for doc in (inactive, live, merged)]
    assert views[0] == views[1] == views[2]
    assert views[0]["cpu"] == cpu_key_of(render_tree(spec))
    assert merged.cpu is not None and merged.cpu.check is not None, "libvirt's <cpu> is kept"


def test_the_recorded_cpu_is_the_one_rendered_after_the_callers_edits() -> None:
    spec = vm(xml_hook=lambda el: el.find("features").addnext(parse("<cpu mode='host-model'/>")))
    doc = render_tree(spec)
    assert doc.get_metadata(HVLIB_CPU_NS, "cpu") == "mode=host-model"
    live = DomainXML.from_xml(doc.to_xml())
    live.el.set("id", "1")
    assert owned(live, spec) == owned(merge(DomainXML.from_xml(doc.to_xml()), spec), spec)
