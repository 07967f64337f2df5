"""From a DomainSpec to libvirt domain XML, through the per-type templates and lxml.

:func:`render_tree` loads the type's skeleton from ``templates/`` (shipped in the wheel as
``hvlib.templates``) and sets the spec's values through :mod:`hvlib.model.domxml`; no string is ever
formatted into XML, so any name or path is escaped by lxml. For kvm and qemu it also sets the
machine type, the firmware (UEFI through libvirt's autoselection), the CPU
(:mod:`hvlib.model.cpu`) and the virtio RNG (``<rng>``); for a container, its user-namespace id map
(``<idmap>``). The caller's
:class:`XmlEdit` list (:mod:`hvlib.model.xmledits`) and ``xml_hook`` run last.
:func:`validate` checks a document against libvirt's own RelaxNG schema. This module does not
talk to libvirt.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from lxml import etree

from hvlib.enums import VirtType
from hvlib.errors import SpecError
from hvlib.model import profiles
from hvlib.model.agent import set_agent
from hvlib.model.cpu import HVLIB_CPU_NS, cpu_node, cpu_request, request_of
from hvlib.model.devices import Disk, DiskKind, Filesystem, Nic
from hvlib.model.domxml import DiskXML, DomainXML, FilesystemXML, IdRanges, InterfaceXML, RngXML
from hvlib.model.idmap import IdRange
from hvlib.model.profiles import Profile, machine_family
from hvlib.model.spec import DomainSpec
from hvlib.model.xmledits import HVLIB_NS, IDENTITY, apply_edits, identity_of
from hvlib.model.xmlmodel import Element, XmlNode, parse, parse_checked

SCHEMA_DIR = Path("/usr/share/libvirt/schemas")
RNG_SOURCE = "/dev/urandom"
"""The host file a spec's virtio RNG (``DomainSpec.rng``) reads (libvirt's ``random`` backend)."""


@functools.cache
def template_text(name: str) -> bytes:
    """The bytes of ``templates/NAME.xml``, read once from the installed package."""
    return resources.files("hvlib.templates").joinpath(f"{name}.xml").read_bytes()


def load_template(name: str) -> DomainXML:
    """A fresh, editable copy of the template ``name`` (a copy of the tree parsed once)."""
    return DomainXML(copy.deepcopy(_template_tree(name)))


@functools.cache
def _template_tree(name: str) -> etree._Element:
    return parse(template_text(name))


def render(spec: DomainSpec) -> str:
    """The domain XML for ``spec``.

    Raises:
        SpecError, Unsupported: the spec does not fit its virt type (nothing is rendered).
    """
    return render_tree(spec).to_xml()


def render_tree(spec: DomainSpec, profile: Profile | None = None) -> DomainXML:
    """Like :func:`render`, but return the editable document. ``profile``: what
    :func:`hvlib.model.profiles.check` returned for ``spec``, if the caller ran it (else it
    runs here)."""
    profile = profiles.check(spec) if profile is None else profile
    doc = load_template(profile.template)
    apply_fields(doc, spec, profile)
    for disk, target in zip(spec.disks, disk_targets(spec.disks, profile), strict=True):
        doc.insert_device(disk_node(disk, target, profile))
    for nic in spec.nics:
        doc.insert_device(nic_node(nic, profile))
    for fs in spec.filesystems:
        node = fs_node(fs, profile)
        if node is not None:
            doc.insert_device(node)
    if profile.platform:
        set_rng(doc, spec, profile)
        set_agent(doc, spec.guest_agent)
    apply_caller_changes(doc, spec)
    return doc


def apply_caller_changes(doc: DomainXML, spec: DomainSpec) -> None:
    """Apply the spec's XPath edits, then its lxml hook (the escape hatches), to ``doc``; then
    record the CPU the document now asks for in its metadata (see :mod:`hvlib.model.cpu`).

    Raises:
        SpecError: an edit is malformed or touches an identity node (naming
            ``xml_edits[i]``), or the hook changed one (naming ``xml_hook``).
    """
    before = identity_of(doc)
    apply_edits(doc, spec.xml_edits)
    if spec.xml_hook is not None:
        spec.xml_hook(doc.el)
        if identity_of(doc) != before:
            raise SpecError(
                "xml_hook",
                f"must not change {IDENTITY}: set the spec's name, uuid or virt instead",
            )
    if profiles.profile_for(spec.virt).platform:
        node = doc.cpu
        key = None if node is None else request_of(node).key()
        doc.set_metadata(HVLIB_CPU_NS, "hvlibcpu", "cpu", key)


def apply_fields(doc: DomainXML, spec: DomainSpec, profile: Profile) -> None:
    """Set every non-device field the spec owns on ``doc`` (a template or a live definition:
    what the spec does not own is left as it is)."""
    _set_basics(doc, spec, profile)
    _set_boot(doc, spec, profile)
    if profile.is_container:
        doc.idmap = idmap_ranges(spec)
    if profile.platform:
        _set_machine(doc, profile)
        _set_firmware(doc, spec)
        _set_cpu(doc, spec, profile)


def _set_basics(doc: DomainXML, spec: DomainSpec, profile: Profile) -> None:
    doc.domain_type = profile.domain_type
    doc.name = spec.name
    if spec.uuid is not None:
        doc.uuid = spec.uuid
    doc.description = spec.description
    max_mib = spec.max_memory_mib or spec.memory_mib
    doc.memory_kib = max_mib * 1024
    doc.current_memory_kib = spec.memory_mib * 1024
    doc.vcpu = spec.max_vcpus or spec.vcpus
    doc.vcpu_current = spec.vcpus if spec.max_vcpus else None
    doc.on_poweroff, doc.on_reboot, doc.on_crash = spec.on_poweroff, spec.on_reboot, spec.on_crash
    doc.set_metadata(HVLIB_NS, "hvlib", "virt", spec.virt.value)
    _keep_order(doc, ("name", "uuid", "description", "metadata"))


def _keep_order(doc: DomainXML, tags: tuple[str, ...]) -> None:
    """Put the identity elements right after ``<name>``, where libvirt writes them."""
    anchor = doc.el.find(tags[0])
    for tag in tags[1:]:
        el = doc.el.find(tag)
        if el is not None and anchor is not None:
            anchor.addnext(el)
            anchor = el


def _set_boot(doc: DomainXML, spec: DomainSpec, profile: Profile) -> None:
    doc.kernel, doc.initrd, doc.cmdline = spec.kernel, spec.initrd, spec.cmdline
    if spec.init:
        doc.init = spec.init[0]
        doc.initargs = list(spec.init[1:])
    dev = None if profile.is_container else boot_device(spec)
    if dev is None or doc.el.find("devices/*/boot") is not None:
        return  # a kernel boots directly; a per-device boot order excludes <os><boot>
    boots = doc.el.findall("os/boot")
    if not boots:
        etree.SubElement(ensure_os(doc), "boot", dev=dev)
    elif len(boots) == 1 and boots[0].get("dev") in BOOT_DEVICES:
        boots[0].set("dev", dev)  # what hvlib chose before, for the devices the spec had


BOOT_DEVICES = ("hd", "cdrom", "network")
"""The ``<os><boot dev>`` values hvlib chooses (see :func:`boot_device`)."""


def boot_device(spec: DomainSpec) -> str | None:
    """What the firmware of a VM without a kernel boots: ``hd`` (its first disk) when it
    has a disk, else ``cdrom`` when it has only cdroms, else ``network`` (PXE, on its first
    NIC); None when it boots its ``kernel`` directly."""
    if spec.kernel:
        return None
    if any(d.device != "cdrom" for d in spec.disks):
        return "hd"
    return "cdrom" if spec.disks else "network"


def ensure_os(doc: DomainXML) -> Element:
    """The ``<os>`` element of ``doc`` (every template has one)."""
    os_el = doc.el.find("os")
    if os_el is None:
        os_el = etree.SubElement(doc.el, "os")
    return os_el


def idmap_ranges(spec: DomainSpec) -> dict[str, IdRanges]:
    """The spec's user-namespace id map as :attr:`DomainXML.idmap` holds it ({} for none),
    each list in container-id order (the order libvirt keeps it in)."""
    if spec.idmap is None:
        return {}
    return {
        "uid": _ordered(spec.idmap.uids),
        "gid": _ordered(spec.idmap.gids),
    }


def _ordered(ranges: Sequence[IdRange]) -> IdRanges:
    return tuple(sorted((r.start, r.target, r.count) for r in ranges))


def _set_machine(doc: DomainXML, profile: Profile) -> None:
    """Set the machine type, keeping libvirt's versioned name (``pc-i440fx-7.2``) when it is
    of the wanted family. A change of family drops controllers and device addresses: libvirt
    lays them out anew for the new machine (a q35 has PCIe root ports, a microvm no PCI)."""
    if machine_family(doc.os_machine) == profile.machine:
        return
    if doc.os_machine is not None:
        doc.remove("devices/controller")
        doc.remove("devices/*/address")
    doc.os_machine = profile.machine
    balloon = doc.el.find("devices/memballoon")
    if profile.machine == "microvm":
        doc.insert_device(XmlNode(etree.Element("controller", type="usb", model="none")))
        if balloon is not None:
            balloon.set("model", "none")  # a virtio-pci device: a microvm has no PCI
    elif balloon is not None and balloon.get("model") == "none":
        balloon.set("model", "virtio")


def _set_firmware(doc: DomainXML, spec: DomainSpec) -> None:
    """UEFI through libvirt's firmware autoselection (``<os firmware='efi'>`` and the
    secure-boot feature), or the default BIOS. A change drops what libvirt filled in for the
    old firmware (``<loader>``, ``<nvram>``) so it selects again."""
    efi = spec.firmware == "efi"
    wanted: dict[str, bool] = {}
    if efi:
        wanted = {"enrolled-keys": True, "secure-boot": True} if spec.secure_boot else {}
        wanted.setdefault("secure-boot", False)
    changed = firmware_of(doc) != (spec.firmware, spec.secure_boot)
    if (efi and changed) or (not efi and doc.loader_type == "pflash"):
        doc.remove("os/loader")
        doc.remove("os/nvram")
    doc.os_firmware = "efi" if efi else None
    if doc.firmware_features != wanted:
        doc.firmware_features = wanted


def firmware_of(doc: DomainXML) -> tuple[str, bool]:
    """(firmware, secure boot) of a definition: ``efi`` by autoselection (persistent XML) or
    by a pflash loader (what a running guest's XML shows instead)."""
    efi = doc.os_firmware == "efi" or doc.loader_type == "pflash"
    secure = doc.firmware_features.get("secure-boot", doc.loader_secure == "yes")
    return ("efi" if efi else "bios", bool(efi and secure))


def _set_cpu(doc: DomainXML, spec: DomainSpec, profile: Profile) -> None:
    """Make ``<cpu>`` what the spec asks (left as it is when it already says that)."""
    want = cpu_request(spec, profile)
    key = want.key() if want is not None else None
    current = doc.cpu
    if current is not None and request_of(current).key() == key:
        return
    doc.remove("cpu")
    if want is not None and key is not None:
        cpu_node(doc.ensure_cpu(), want)


def disk_targets(disks: Sequence[Disk], profile: Profile) -> list[str]:
    """The target name of each disk: its own, or the next free one on its bus, in order."""
    taken: set[str | None] = {d.target for d in disks if d.target}
    counters: dict[str, int] = {}
    return [
        d.target or _next_target(profile.target_prefix(d.device == "cdrom"), taken, counters)
        for d in disks
    ]


def _next_target(prefix: str, taken: set[str | None], counters: dict[str, int]) -> str:
    """The first unused name with ``prefix`` (counting on from the last one handed out)."""
    while True:
        name = profiles.target_name(prefix, counters.get(prefix, 0))
        counters[prefix] = counters.get(prefix, 0) + 1
        if name not in taken:
            taken.add(name)
            return name


def disk_node(disk: Disk, target: str, profile: Profile) -> DiskXML:
    """A new, detached ``<disk>`` for ``disk`` at ``target``."""
    node = DiskXML.new()
    node.kind = "file" if disk.kind is DiskKind.FILE else "volume"
    node.device = disk.device
    if profile.domain_type in ("kvm", "qemu"):
        node.driver_name = "qemu"
    node.driver_type = disk.format or ("raw" if disk.kind is DiskKind.FILE else None)
    if disk.kind is DiskKind.FILE:
        node.source_file = disk.path
    else:
        node.source_pool, node.source_volume = disk.pool, disk.volume_name
    node.target_dev = target
    node.target_bus = profile.cdrom_bus if disk.device == "cdrom" else profile.disk_bus
    node.readonly = disk.readonly or disk.device == "cdrom"  # libvirt makes a cdrom read-only
    if profile.device_address and node.target_bus == "virtio":
        node.address_type = profile.device_address
    return node


def nic_node(nic: Nic, profile: Profile) -> InterfaceXML:
    """A new, detached ``<interface>`` for ``nic``."""
    node = InterfaceXML.new()
    node.kind = nic.kind
    if nic.mac:
        node.mac = nic.mac
    if nic.kind == "network":
        node.source_network = nic.source
    else:
        node.source_bridge = nic.source
    node.model = nic.model or profile.nic_model
    if profile.device_address and node.model == "virtio":
        node.address_type = profile.device_address
    return node


def fs_node(fs: Filesystem, profile: Profile) -> FilesystemXML | None:
    """A new, detached ``<filesystem>`` for ``fs`` (None for the host-root marker: no element
    at all, so that libvirt shares the host's root)."""
    if fs.is_host_root:
        return None
    node = FilesystemXML.new()
    node.kind = "mount"
    if not profile.is_container:
        node.accessmode = "passthrough"
    node.source_dir = fs.source
    node.target_dir = fs.target
    node.readonly = fs.readonly
    return node


def rng_node(profile: Profile) -> RngXML:
    """A new, detached ``<rng>``: a virtio RNG reading the host's :data:`RNG_SOURCE`."""
    node = RngXML.new()
    node.model = "virtio"
    node.backend_model = "random"
    node.backend_path = RNG_SOURCE
    if profile.device_address:
        node.address_type = profile.device_address
    return node


def is_spec_rng(node: RngXML) -> bool:
    """Whether ``node`` is the kind of ``<rng>`` ``DomainSpec.rng`` asks for (a virtio RNG
    reading :data:`RNG_SOURCE`); other RNGs (another backend, an EGD daemon) are not the
    spec's."""
    return (node.model, node.backend_model, node.backend_path) == ("virtio", "random", RNG_SOURCE)


def set_rng(doc: DomainXML, spec: DomainSpec, profile: Profile) -> None:
    """Give ``doc`` the spec's virtio RNG (``spec.rng``) or remove it; an existing one is kept
    (with its address, or the machine's virtio address type when it has none). RNGs that are
    not of the spec's kind are left as they are."""
    ours = [r for r in doc.rngs if is_spec_rng(r)]
    if not spec.rng:
        for node in ours:
            doc.remove_device(node)
    elif not ours:
        doc.insert_device(rng_node(profile))
    elif profile.device_address:
        for node in ours:
            if node.address_type is None:
                node.address_type = profile.device_address


@functools.cache
def _relaxng(name: str) -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA_DIR / f"{name}.rng")))


def schema_names() -> tuple[str, ...]:
    """The names :func:`validate` takes: libvirt's installed schemas (``domain``,
    ``network``, ``storagevol``, ...), read from :data:`SCHEMA_DIR`.

    Raises:
        FileNotFoundError: libvirt's schemas are not installed on this machine.
    """
    if not SCHEMA_DIR.is_dir():
        raise FileNotFoundError(f"libvirt's RelaxNG schemas are not installed in {SCHEMA_DIR}")
    return tuple(sorted(p.name[: -len(".rng")] for p in SCHEMA_DIR.glob("*.rng")))


def validate(xml: str | bytes, schema: str = "domain") -> None:
    """Validate ``xml`` against libvirt's installed RelaxNG schema ``schema``, one of
    :func:`schema_names` (a bare name: no path, no ``.rng``).

    Raises:
        SpecError: ``xml`` is not well-formed XML or does not validate (the schema's first
            complaint is quoted), or ``schema`` names no installed schema.
        FileNotFoundError: libvirt's schemas are not installed on this machine.
    """
    names = schema_names()
    if not isinstance(schema, str) or schema not in names:
        raise SpecError("schema", f"must be one of {', '.join(names)}", schema)
    root = parse_checked("xml", xml)
    rng = _relaxng(schema)
    if not rng.validate(root):
        raise SpecError(
            "xml", f"does not validate against {schema}.rng: {rng.error_log.last_error}"
        )


def virt_of(doc: DomainXML) -> VirtType:
    """The VirtType a domain document describes (hvlib's metadata first, then its XML): the
    profile hvlib drives the domain with. A domain of a type hvlib does not model (libvirt's
    test driver's own ``<domain type='test'>``, say) is driven as a QEMU VM, the nearest
    profile; :func:`type_label` says what it really is."""
    return _modeled_virt(doc) or VirtType.QEMU


def type_label(doc: DomainXML) -> str:
    """What a listing (``hvlib ls``) calls the domain: its VirtType's value, or for a
    domain of a type hvlib does not model, libvirt's own type (``test``), so that such a
    domain is not shown as a QEMU guest. VirtType keeps its meaning: hvlib's types only."""
    modeled = _modeled_virt(doc)
    if modeled is not None:
        return modeled.value
    return doc.domain_type or VirtType.QEMU.value


def _modeled_virt(doc: DomainXML) -> VirtType | None:
    """The VirtType of ``doc``, or None when it is of a type hvlib does not model."""
    recorded = doc.get_metadata(HVLIB_NS, "virt")
    if recorded:
        try:
            return VirtType(recorded)
        except ValueError:
            pass
    dtype = doc.domain_type
    if dtype == "xen":
        return {"hvm": VirtType.XEN_HVM, "xenpvh": VirtType.XEN_PVH}.get(
            doc.os_type or "", VirtType.XEN_PV
        )
    if dtype == "lxc" or doc.os_type == "exe":
        return VirtType.LXC
    return {"kvm": VirtType.KVM, "qemu": VirtType.QEMU}.get(dtype or "")
