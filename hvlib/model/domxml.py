"""The libvirt domain XML, modelled field by field on top of :mod:`hvlib.model.xmlmodel`.

These classes hold no policy (no defaults, no checks of what a virt type allows: that is
:mod:`hvlib.model.profiles`) and never call libvirt. They read templates, rendered documents and
live ``XMLDesc()`` output alike, keeping every element they do not model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from lxml import etree

from hvlib.model.xmlmodel import (
    Attr,
    Element,
    Flag,
    IntAttr,
    IntText,
    MemoryKiB,
    Text,
    XmlNode,
    ensure_path,
)

DevT = TypeVar("DevT", bound=XmlNode)
IdRanges = tuple[tuple[int, int, int], ...]
"""``(start, target, count)`` of each ``<uid>`` (or ``<gid>``) of an ``<idmap>``."""
ID_KINDS = ("uid", "gid")


class DiskXML(XmlNode):
    """``<disk>``: a block device (file, volume, cdrom)."""

    tag = "disk"
    kind = Attr(".", "type")
    device = Attr(".", "device")
    driver_name = Attr("driver", "name")
    driver_type = Attr("driver", "type")
    source_file = Attr("source", "file")
    source_pool = Attr("source", "pool")
    source_volume = Attr("source", "volume")
    target_dev = Attr("target", "dev")
    target_bus = Attr("target", "bus")
    readonly = Flag("readonly")
    address_type = Attr("address", "type")


class InterfaceXML(XmlNode):
    """``<interface>``: a NIC on a libvirt network or a host bridge."""

    tag = "interface"
    kind = Attr(".", "type")
    mac = Attr("mac", "address")
    source_network = Attr("source", "network")
    source_bridge = Attr("source", "bridge")
    model = Attr("model", "type")
    target_dev = Attr("target", "dev")
    address_type = Attr("address", "type")


class FilesystemXML(XmlNode):
    """``<filesystem>``: a host directory passed into the guest."""

    tag = "filesystem"
    kind = Attr(".", "type")
    accessmode = Attr(".", "accessmode")
    source_dir = Attr("source", "dir")
    target_dir = Attr("target", "dir")
    readonly = Flag("readonly")


class RngXML(XmlNode):
    """``<rng>``: a random number generator device and the host source it reads."""

    tag = "rng"
    model = Attr(".", "model")
    backend_model = Attr("backend", "model")
    backend_path = Text("backend")
    address_type = Attr("address", "type")


class ChannelXML(XmlNode):
    """``<channel>``: a host-guest channel (the QEMU guest agent's is a virtio-serial port)."""

    tag = "channel"
    kind = Attr(".", "type")
    target_type = Attr("target", "type")
    target_name = Attr("target", "name")
    address_type = Attr("address", "type")


class CpuXML(XmlNode):
    """``<cpu>``: the guest CPU's mode, model, topology and features."""

    tag = "cpu"
    mode = Attr(".", "mode")
    match = Attr(".", "match")
    check = Attr(".", "check")
    model = Text("model")
    fallback = Attr("model", "fallback")
    sockets = IntAttr("topology", "sockets")
    dies = IntAttr("topology", "dies")
    cores = IntAttr("topology", "cores")
    threads = IntAttr("topology", "threads")

    @property
    def features(self) -> list[tuple[str, str]]:
        """Every ``<feature>`` as (policy, name), in document order."""
        return [(el.get("policy") or "", el.get("name") or "") for el in self.el.findall("feature")]

    @features.setter
    def features(self, wanted: list[tuple[str, str]]) -> None:
        for el in self.el.findall("feature"):
            self.el.remove(el)
        for policy, name in wanted:
            etree.SubElement(self.el, "feature", policy=policy, name=name)


class DomainXML(XmlNode):
    """``<domain>``: the whole definition."""

    tag = "domain"
    domain_type = Attr(".", "type")
    name = Text("name")
    uuid = Text("uuid")
    description = Text("description")
    memory_kib = MemoryKiB("memory")
    max_memory_kib = MemoryKiB("maxMemory")
    current_memory_kib = MemoryKiB("currentMemory")
    vcpu = IntText("vcpu")
    vcpu_current = IntAttr("vcpu", "current")
    os_type = Text("os/type")
    os_arch = Attr("os/type", "arch")
    os_machine = Attr("os/type", "machine")
    os_firmware = Attr("os", "firmware")
    loader_type = Attr("os/loader", "type")
    loader_secure = Attr("os/loader", "secure")
    kernel = Text("os/kernel")
    initrd = Text("os/initrd")
    cmdline = Text("os/cmdline")
    init = Text("os/init")
    on_poweroff = Text("on_poweroff")
    on_reboot = Text("on_reboot")
    on_crash = Text("on_crash")
    privnet = Flag("features/privnet")

    @property
    def cpu(self) -> CpuXML | None:
        """The ``<cpu>`` element, or None."""
        el = self.el.find("cpu")
        return None if el is None else CpuXML(el)

    def ensure_cpu(self) -> CpuXML:
        """The ``<cpu>`` element, created (after ``<features>``, where libvirt writes it) if
        missing."""
        cpu = self.cpu
        if cpu is not None:
            return cpu
        node = CpuXML.new()
        anchor = self.el.find("features")
        if anchor is None:
            anchor = self.el.find("os")
        if anchor is None:
            self.el.append(node.el)
        else:
            anchor.addnext(node.el)
        return node

    def remove(self, path: str) -> None:
        """Remove every element at the simple path ``path`` (``os/loader``, ``cpu``)."""
        for el in self.el.findall(path):
            parent = el.getparent()
            if parent is not None:
                parent.remove(el)

    @property
    def firmware_features(self) -> dict[str, bool]:
        """``<os><firmware><feature name=.. enabled=..>`` as name -> enabled."""
        return {
            el.get("name") or "": el.get("enabled") == "yes"
            for el in self.el.findall("os/firmware/feature")
        }

    @firmware_features.setter
    def firmware_features(self, wanted: dict[str, bool]) -> None:
        self.remove("os/firmware")
        if not wanted:
            return
        fw = etree.Element("firmware")
        for name, enabled in wanted.items():
            etree.SubElement(fw, "feature", enabled="yes" if enabled else "no", name=name)
        os_type = ensure_path(self.el, "os/type")
        os_type.addnext(fw)

    @property
    def idmap(self) -> dict[str, IdRanges]:
        """``<idmap>`` as ``{"uid": ((start, target, count), ...), "gid": (...)}`` in
        document order; ``{}`` without one.

        Raises:
            ValueError: an attribute that is not an integer.
        """
        el = self.el.find("idmap")
        if el is None:
            return {}
        return {
            kind: tuple(
                (int(r.get("start", "")), int(r.get("target", "")), int(r.get("count", "")))
                for r in el.findall(kind)
            )
            for kind in ID_KINDS
        }

    @idmap.setter
    def idmap(self, wanted: Mapping[str, Sequence[tuple[int, int, int]]]) -> None:
        """Replace ``<idmap>`` (none for an empty mapping), placed after ``<os>`` where libvirt
        writes it."""
        self.remove("idmap")
        if not wanted:
            return
        idmap = etree.Element("idmap")
        for kind in ID_KINDS:
            for start, target, count in wanted.get(kind, ()):
                etree.SubElement(
                    idmap, kind, start=str(start), target=str(target), count=str(count)
                )
        anchor = self.el.find("os")
        if anchor is not None:
            anchor.addnext(idmap)
        else:
            self.devices.addprevious(idmap)

    @property
    def devices(self) -> Element:
        """The ``<devices>`` element (created if missing)."""
        return ensure_path(self.el, "devices")

    @property
    def disks(self) -> list[DiskXML]:
        """Every ``<disk>``, in document order."""
        return list(self.children(DiskXML, "devices/disk"))

    @property
    def interfaces(self) -> list[InterfaceXML]:
        """Every ``<interface>``, in document order."""
        return list(self.children(InterfaceXML, "devices/interface"))

    @property
    def filesystems(self) -> list[FilesystemXML]:
        """Every ``<filesystem>``, in document order."""
        return list(self.children(FilesystemXML, "devices/filesystem"))

    @property
    def channels(self) -> list[ChannelXML]:
        """Every ``<channel>``, in document order."""
        return list(self.children(ChannelXML, "devices/channel"))

    @property
    def rngs(self) -> list[RngXML]:
        """Every ``<rng>``, in document order."""
        return list(self.children(RngXML, "devices/rng"))

    @property
    def initargs(self) -> list[str]:
        """The container init's arguments (``<os><initarg>``), in order."""
        return [el.text or "" for el in self.el.findall("os/initarg")]

    @initargs.setter
    def initargs(self, args: list[str]) -> None:
        os_el = ensure_path(self.el, "os")
        for el in os_el.findall("initarg"):
            os_el.remove(el)
        for arg in args:
            etree.SubElement(os_el, "initarg").text = arg

    def add_device(self, node_type: type[DevT]) -> DevT:
        """Append a new, empty device of ``node_type`` to ``<devices>`` and return it."""
        return self.insert_device(node_type.new())

    def insert_device(self, node: DevT) -> DevT:
        """Put ``node`` into ``<devices>`` where libvirt writes it: after the last device of
        its kind; else a disk, controller, filesystem or NIC before the first of the devices
        libvirt writes after those (serial, console, ..., memballoon, rng, ...), and one of
        those before the first device libvirt writes after it."""
        tag = node.el.tag
        same = self.devices.findall(tag)
        if same:
            same[-1].addnext(node.el)
            return node
        rank = _TAIL_RANK.get(tag, -1)
        anchor = next((el for el in self.devices if _TAIL_RANK.get(el.tag, -1) > rank), None)
        if anchor is None:
            self.devices.append(node.el)
        else:
            anchor.addprevious(node.el)
        return node

    def remove_device(self, node: XmlNode) -> None:
        """Remove ``node`` from ``<devices>``."""
        self.devices.remove(node.el)

    def set_metadata(self, namespace: str, prefix: str, tag: str, text: str | None) -> None:
        """Set (or with None remove) ``<metadata><prefix:tag xmlns:prefix=namespace>``."""
        meta = ensure_path(self.el, "metadata")
        qname = f"{{{namespace}}}{tag}"
        for el in meta.findall(qname):
            meta.remove(el)
        if text is not None:
            etree.SubElement(meta, qname, nsmap={prefix: namespace}).text = text
        if len(meta) == 0:
            self.el.remove(meta)

    def get_metadata(self, namespace: str, tag: str) -> str | None:
        """The text of ``<metadata><ns:tag>``, or None."""
        el = self.el.find(f"metadata/{{{namespace}}}{tag}")
        return None if el is None else (el.text or "")


_TAIL_DEVICES = (
    "smartcard",
    "serial",
    "parallel",
    "console",
    "channel",
    "input",
    "tpm",
    "graphics",
    "sound",
    "audio",
    "video",
    "hostdev",
    "redirdev",
    "redirfilter",
    "hub",
    "watchdog",
    "memballoon",
    "rng",
    "nvram",
    "panic",
    "shmem",
    "memory",
    "iommu",
    "vsock",
    "crypto",
)
"""The devices libvirt writes after disks, controllers, leases, filesystems and NICs, in the
order it writes them (seen on libvirt 9.0's test driver, but ``crypto``, which it drops)."""
_TAIL_RANK = {tag: rank for rank, tag in enumerate(_TAIL_DEVICES)}
