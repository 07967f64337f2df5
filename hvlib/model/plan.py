"""Desired state: compare a DomainSpec with what a host has, and plan how to converge.

Pure planning, no libvirt: :func:`merge` lays the spec over the domain's current persistent
definition (keeping uuid, MAC addresses, device addresses and everything the spec does not
own), :func:`recreated` is what a recreate defines (exactly what ``render(spec)`` gives, with
the domain's uuid and MAC addresses), :func:`owned` projects a definition onto the fields a
spec owns (:data:`DEVICES` declares them for each kind of device), and :func:`plan`
classifies each difference by how it can be applied (:class:`ChangeHow`). The Host layer
carries the plan out (:mod:`hvlib.virt.converge`, behind :meth:`hvlib.virt.domains.Domains.ensure`).

One owned view serves every comparison: the persistent definition against the spec merged
over it (what changes), the running guest against the same (what is still pending), and the
report's diff (empty whenever nothing is written).
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import itertools
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from hvlib.enums import State, VirtType
from hvlib.model import profiles
from hvlib.model.agent import has_agent, set_agent
from hvlib.model.cpu import cpu_key_of
from hvlib.model.devices import XmlEdit
from hvlib.model.domxml import (
    ID_KINDS,
    DiskXML,
    DomainXML,
    FilesystemXML,
    IdRanges,
    InterfaceXML,
)
from hvlib.model.render import (
    apply_caller_changes,
    apply_fields,
    disk_node,
    disk_targets,
    firmware_of,
    fs_node,
    is_spec_rng,
    nic_node,
    render_tree,
    set_rng,
    virt_of,
)
from hvlib.model.spec import DomainSpec
from hvlib.model.xmlmodel import XmlNode


class ChangeHow(enum.Enum):
    """How a change is (or would be) applied."""

    LIVE = "live"
    """To the running guest and its persistent definition at once (balloon, hotplug)."""
    NEXT_BOOT = "next-boot"
    """To the persistent definition only: the guest sees it when it next boots."""
    RESTART = "restart"
    """Needs the running guest restarted to take effect."""
    RECREATE = "recreate"
    """Needs the domain undefined and defined again from the spec (keeping its uuid, unless
    the spec names another, and its MAC addresses)."""
    STATE = "state"
    """A run-state transition (start, stop, pause, resume) or creation/removal."""


@dataclass(frozen=True)
class Change:
    """One difference between what is and what the spec wants."""

    field: str
    before: Any
    after: Any
    how: ChangeHow


@dataclass
class ChangeReport:
    """What an ``ensure`` changed (or, with ``check=True``, would change)."""

    changed: bool
    changes: list[Change] = field(default_factory=list)
    pending: list[Change] = field(default_factory=list)
    """Changes not applied: they need a restart or a recreate that was not allowed."""
    before_xml: str = ""
    after_xml: str = ""
    """The persistent definition this ensure wrote (or would write); ``before_xml`` when it
    writes none."""

    def diff(self) -> str:
        """A unified diff of the persistent XML, before -> after ("" when unchanged)."""
        lines = difflib.unified_diff(
            self.before_xml.splitlines(True), self.after_xml.splitlines(True), "before", "after"
        )
        return "".join(lines)


# Fields whose change a running guest can take without a restart, given its maximums.
_LIVE_FIELDS = ("memory_mib", "vcpus")
_RECREATE_FIELDS = ("virt", "uuid")


# -- what a spec owns ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceFields:
    """Which of the modelled fields of one kind of device (:mod:`hvlib.model.domxml`) a spec owns.

    Every field the device's XML class declares is in exactly one of ``key``, ``owned``,
    ``defaulted`` and ``ignored`` (a unit test holds the classes to it).
    """

    node: type[XmlNode]
    key: str
    """The field a device is known by: ``disks[vda]``, ``nics[52:54:00:..]``."""
    owned: tuple[str, ...]
    """Compared exactly: what the spec renders, or its absence."""
    defaulted: tuple[str, ...] = ()
    """Compared where the wanted definition sets them. Where it leaves one unset, the value is
    libvirt's to choose and whatever the definition (or the running guest) has is kept: a
    volume disk's format without ``format``, a NIC model on Xen, device addresses, the host
    bridge a running guest's NIC on a libvirt network shows (a NIC's kind says which of its
    sources is wanted)."""
    ignored: tuple[str, ...] = ()
    """Never compared: libvirt's own (the host-side device name of a NIC)."""

    @property
    def compared(self) -> tuple[str, ...]:
        """The fields of a device's view, in order."""
        return self.owned + self.defaulted

    def view(self, node: XmlNode) -> tuple[Any, ...]:
        """The values of :attr:`compared` on ``node``."""
        return tuple(getattr(node, name) for name in self.compared)

    def differs(self, have: tuple[Any, ...] | None, want: tuple[Any, ...] | None) -> bool:
        """Whether a device viewed as ``have`` is not the wanted ``want`` (None: no device);
        a defaulted field that ``want`` leaves unset matches anything."""
        if have is None or want is None:
            return have != want
        n = len(self.owned)
        if have[:n] != want[:n]:
            return True
        return any(w is not None and w != h for h, w in zip(have[n:], want[n:], strict=True))


DEVICES: dict[str, DeviceFields] = {
    "disks": DeviceFields(
        DiskXML,
        key="target_dev",
        owned=(
            "kind",
            "device",
            "source_file",
            "source_pool",
            "source_volume",
            "target_bus",
            "readonly",
        ),
        defaulted=("driver_type", "driver_name", "address_type"),
    ),
    "nics": DeviceFields(
        InterfaceXML,
        key="mac",
        owned=("kind",),
        defaulted=("source_network", "source_bridge", "model", "address_type"),
        ignored=("target_dev",),
    ),
    "filesystems": DeviceFields(
        FilesystemXML,
        key="target_dir",
        owned=("kind", "source_dir", "readonly"),
        defaulted=("accessmode",),
    ),
}
"""The owned fields of each kind of device, by the name its changes carry."""

LIVE_ALL = frozenset({"memory_mib", "vcpus", "disks", "nics"})
"""Every kind of change a running guest can take live (what QEMU and libxl can)."""
HOTPLUG_BUSES = ("virtio", "scsi", "usb", "xen")
"""Disk buses a running guest can have a disk added to or removed from (not IDE or SATA)."""


def live_abilities(virt: VirtType, test_driver: bool) -> frozenset[str]:
    """What a running ``virt`` guest can take live, of :data:`LIVE_ALL`: libvirt's test driver
    balloons and sets vcpus but hot-plugs nothing; an LXC container takes a memory limit and
    NICs but has no vcpu hotplug (and no disks)."""
    if test_driver:
        return frozenset({"memory_mib", "vcpus"})
    if profiles.profile_for(virt).is_container:
        return frozenset({"memory_mib", "nics"})
    return LIVE_ALL


def owned(doc: DomainXML, spec: DomainSpec) -> dict[str, Any]:
    """The fields ``spec`` owns, as ``doc`` has them (devices keyed as :data:`DEVICES` says).

    The platform fields (machine, firmware, cpu, rng, guest_agent) are in the view when
    either the spec's type or the document's has them, the id map when either is a
    container: a view of one type's definition and another's wanted one compare on every
    field of both. The spec's
    XPath edits (``xml_edits``) are compared as the definition records them
    (:func:`record_edits`), not by the values they set: libvirt rewrites some edited values
    (a machine ``q35`` becomes ``pc-q35-7.2``), which would never converge. A domain hvlib
    did not define (or defined before it recorded edits) has no record: its first ensure
    with edits writes them once.
    """
    virt = virt_of(doc)
    vcpu = doc.vcpu or 1
    view: dict[str, Any] = {
        "virt": virt,
        "memory_mib": (doc.current_memory_kib or doc.memory_kib or 0) // 1024,
        "max_memory_mib": (doc.memory_kib or 0) // 1024,
        "vcpus": doc.vcpu_current or vcpu,
        "max_vcpus": vcpu,
        "kernel": doc.kernel,
        "initrd": doc.initrd,
        "cmdline": doc.cmdline,
        "init": [doc.init, *doc.initargs] if doc.init else [],
        "description": doc.description,
        "on_poweroff": doc.on_poweroff,
        "on_reboot": doc.on_reboot,
        "on_crash": doc.on_crash,
    }
    kinds = (profiles.profile_for(spec.virt), profiles.profile_for(virt))
    if any(p.platform for p in kinds):
        view.update(_platform_view(doc))
    if any(p.is_container for p in kinds):
        view["idmap"] = _idmap_view(doc)
    if spec.uuid is not None:
        view["uuid"] = doc.uuid
    view["xml_edits"] = doc.get_metadata(HVLIB_EDITS_NS, "edits")
    for family, fields in DEVICES.items():
        for node in _devices(doc, family):
            view[f"{family}[{getattr(node, fields.key)}]"] = fields.view(node)
    return view


def _devices(doc: DomainXML, family: str) -> list[Any]:
    if family == "disks":
        return doc.disks
    return doc.interfaces if family == "nics" else doc.filesystems


def _platform_view(doc: DomainXML) -> dict[str, Any]:
    """Machine family, firmware, CPU request, virtio RNG and guest agent channel: comparable
    between a persistent definition and a running guest's (which shows a versioned machine, a
    pflash loader and an expanded ``<cpu>`` instead of what was asked, and the agent channel
    with its socket path and address filled in). The RNG and the agent channel are config
    changes: the guest gets (or loses) them when it next boots."""
    firmware, secure_boot = firmware_of(doc)
    return {
        "machine": profiles.machine_family(doc.os_machine),
        "firmware": firmware,
        "secure_boot": secure_boot,
        "cpu": cpu_key_of(doc),
        "rng": any(is_spec_rng(r) for r in doc.rngs),
        "guest_agent": has_agent(doc),
    }


def _idmap_view(doc: DomainXML) -> tuple[IdRanges, IdRanges] | None:
    """(uid ranges, gid ranges), each in container-id order; None without an id map. A
    change is a config change: the container's user namespace is made when it starts."""
    idmap = doc.idmap
    if not idmap:
        return None
    uids, gids = (tuple(sorted(idmap.get(kind, ()))) for kind in ID_KINDS)
    return uids, gids


HVLIB_EDITS_NS = "https://hvlib.dev/xmlns/hvlib-edits/1"
"""Namespace of the spec's ``xml_edits`` recorded in ``<metadata>`` by every definition hvlib
writes (:func:`defined_xml`, :func:`merge`, :func:`recreated`)."""


def edits_record(edits: Collection[XmlEdit]) -> str | None:
    """The canonical text of a spec's XPath edits (None for none): what is compared."""
    if not edits:
        return None
    return json.dumps([[e.xpath, e.value, e.remove] for e in edits], ensure_ascii=False)


def record_edits(doc: DomainXML, spec: DomainSpec) -> None:
    """Record ``spec``'s XPath edits in ``doc``'s metadata (or remove the record)."""
    doc.set_metadata(HVLIB_EDITS_NS, "hvlibedits", "edits", edits_record(spec.xml_edits))


def defined_xml(spec: DomainSpec) -> str:
    """What hvlib defines for a new domain: ``render(spec)`` with its edits recorded.

    Raises:
        SpecError, Unsupported: as :func:`hvlib.model.render.render`.
    """
    return defined_doc(spec).to_xml()


def defined_doc(spec: DomainSpec, profile: profiles.Profile | None = None) -> DomainXML:
    """:func:`defined_xml` as an editable document; ``profile`` as for
    :func:`hvlib.model.render.render_tree`.

    Raises:
        SpecError, Unsupported: as :func:`hvlib.model.render.render`.
    """
    doc = render_tree(spec, profile)
    record_edits(doc, spec)
    return doc


# -- the wanted definition -----------------------------------------------------------------

MacFor = Callable[[int, Collection[str]], str]
"""Chooses the MAC of the spec's NIC number ``index`` that has none (given the MACs taken)."""


def derived_mac(seed: str, index: int, taken: Collection[str]) -> str:
    """A MAC in QEMU's locally administered ``52:54:00`` range derived from ``seed`` (hvlib
    uses the host's and the domain's uuids) and the NIC's index in the spec: the same on
    every run, so a check reports the MAC its apply then defines; the first one not in
    ``taken``."""
    for attempt in itertools.count():
        digest = hashlib.sha256(f"{seed}/nic{index}/{attempt}".encode()).digest()
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
        if mac not in taken:
            return mac
    raise AssertionError("unreachable")  # pragma: no cover


def _default_mac_for(doc: DomainXML) -> MacFor:
    return lambda index, taken: derived_mac(doc.uuid or "", index, taken)


def merge(
    current: DomainXML,
    spec: DomainSpec,
    mac_for: MacFor | None = None,
    *,
    profile: profiles.Profile | None = None,
) -> DomainXML:
    """``current`` (a persistent definition, modified in place) with ``spec`` laid over it.

    The spec's device lists replace the current ones, matched by disk target, NIC MAC (or,
    for a NIC without one, the next current NIC on the same network or bridge) and
    filesystem target. A matched device the spec does not change (:data:`DEVICES`) is left
    exactly as it is; a changed one is replaced, keeping its MAC and ``<address>``. A new NIC
    without a MAC gets ``mac_for(index, taken)`` (default: :func:`derived_mac` of the
    definition's uuid). A virtio RNG of the spec's kind is kept, added or removed as
    ``spec.rng`` says. ``profile``: what :func:`hvlib.model.profiles.check` returned for
    ``spec``, if the caller ran it (else it runs here).

    Raises:
        SpecError, Unsupported: as :func:`hvlib.model.render.render`.
    """
    profile = profiles.check(spec) if profile is None else profile
    apply_fields(current, spec, profile)
    disks = zip(spec.disks, disk_targets(spec.disks, profile), strict=True)
    _sync(current, "disks", [(t, disk_node(d, t, profile)) for d, t in disks])
    macs = nic_macs(current.interfaces, spec, mac_for or _default_mac_for(current))
    nodes = [nic_node(n, profile) for n in spec.nics]
    for node, mac in zip(nodes, macs, strict=True):
        node.mac = mac
    _sync(current, "nics", [(n.mac, n) for n in nodes])
    fs_nodes = [(f.target, fs_node(f, profile)) for f in spec.filesystems]
    _sync(current, "filesystems", [(t, n) for t, n in fs_nodes if n is not None])
    if profile.platform:
        set_rng(current, spec, profile)
        set_agent(current, spec.guest_agent)
    apply_caller_changes(current, spec)
    record_edits(current, spec)
    return current


def recreated(
    current: DomainXML,
    spec: DomainSpec,
    mac_for: MacFor | None = None,
    *,
    fresh: DomainXML | None = None,
) -> DomainXML:
    """What a recreate defines: exactly what :func:`defined_xml` gives (``render(spec)``),
    with ``current``'s uuid (unless the spec names one) and the MAC of each NIC matched as
    :func:`merge` matches them (a new NIC without a MAC gets ``mac_for``'s). Nothing else of
    ``current`` survives: not its devices' addresses, nor what its virt type had and the new
    one has not. ``fresh``: :func:`defined_doc` of ``spec`` if the caller has it (modified
    in place; else rendered here).

    Raises:
        SpecError, Unsupported: as :func:`hvlib.model.render.render`.
    """
    fresh = render_tree(spec) if fresh is None else fresh
    if spec.uuid is None and current.uuid:
        fresh.uuid = current.uuid
    macs = nic_macs(current.interfaces, spec, mac_for or _default_mac_for(current))
    for node, mac in zip(fresh.interfaces, macs, strict=True):
        node.mac = mac
    record_edits(fresh, spec)
    return fresh


def nic_macs(existing: list[InterfaceXML], spec: DomainSpec, mac_for: MacFor) -> list[str]:
    """The MAC of each of the spec's NICs: its own; else that of the next existing NIC on the
    same network or bridge not claimed by another NIC's MAC; else ``mac_for``'s."""
    taken = {i.mac for i in existing if i.mac} | {n.mac for n in spec.nics if n.mac}
    claimed = {n.mac for n in spec.nics if n.mac}
    unmatched = [i for i in existing if i.mac not in claimed]
    macs = []
    for index, nic in enumerate(spec.nics):
        mac = nic.mac
        if mac is None:
            old = next((i for i in unmatched if _nic_source(i) == (nic.kind, nic.source)), None)
            if old is not None:
                unmatched.remove(old)
                mac = old.mac
        if mac is None:
            mac = mac_for(index, taken)
            taken.add(mac)
        macs.append(mac)
    return macs


def _nic_source(iface: InterfaceXML) -> tuple[str | None, str | None]:
    return iface.kind, iface.source_network or iface.source_bridge


def _sync(doc: DomainXML, family: str, wanted: list[tuple[str | None, XmlNode]]) -> None:
    """Make ``doc``'s devices of ``family`` the ``wanted`` ones (by key, in order)."""
    fields = DEVICES[family]
    by_key = {getattr(n, fields.key): n for n in _devices(doc, family)}
    for key, node in wanted:
        old = by_key.pop(key, None)
        if old is None:
            doc.insert_device(node)
        elif fields.differs(fields.view(old), fields.view(node)):
            _replace(doc, old, node)
    for leftover in by_key.values():
        doc.remove_device(leftover)


def _replace(doc: DomainXML, old: XmlNode, new: XmlNode) -> None:
    """Put ``new`` where ``old`` was, keeping old's ``<address>`` (and MAC, for NICs)."""
    for attr, value in old.el.attrib.items():  # what libvirt added (accessmode, ...)
        if attr not in new.el.attrib:
            new.el.set(attr, value)
    for tag in ("mac", "address"):
        kept = old.el.find(tag)
        if kept is not None and new.el.find(tag) is None:
            new.el.insert(0 if tag == "mac" else len(new.el), kept)
    old.el.addprevious(new.el)
    doc.remove_device(old)


# -- classifying the differences -------------------------------------------------------------


def differs(name: str, before: Any, after: Any) -> bool:
    """Whether the owned field ``name`` differs between two views (``after`` the wanted)."""
    fields = DEVICES.get(name.partition("[")[0])
    if fields is not None and "[" in name:
        return fields.differs(before, after)
    return bool(before != after)


def plan(
    before: dict[str, Any],
    after: dict[str, Any],
    running: bool,
    live_limits: tuple[int, int],
    live: Collection[str] = LIVE_ALL,
) -> list[Change]:
    """Classify each difference between two :func:`owned` views.

    ``running``: the guest is (and stays) up. ``live_limits`` are its (max memory MiB, max
    vcpus): a change within them can be applied live, when ``live`` (of :data:`LIVE_ALL`,
    see :func:`live_abilities`) says its driver can.
    """
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if differs(name, old, new):
            how = _how(name, old, new, running, live_limits, live)
            changes.append(Change(name, old, new, how))
    return changes


def _how(
    name: str, old: Any, new: Any, running: bool, limits: tuple[int, int], live: Collection[str]
) -> ChangeHow:
    if name in _RECREATE_FIELDS:
        return ChangeHow.RECREATE
    if not running:
        return ChangeHow.NEXT_BOOT
    family = name.partition("[")[0]
    if family not in live:
        return ChangeHow.RESTART
    if name in _LIVE_FIELDS:
        limit = limits[_LIVE_FIELDS.index(name)]
        return ChangeHow.LIVE if new is not None and new <= limit else ChangeHow.RESTART
    if family == "nics" or (family == "disks" and _hotpluggable(old, new)):
        return ChangeHow.LIVE  # hot-plugged (added, removed; a changed NIC is replaced)
    return ChangeHow.RESTART


def _hotpluggable(old: tuple[Any, ...] | None, new: tuple[Any, ...] | None) -> bool:
    """A disk added or removed on a bus that takes hotplug. A changed disk (another source,
    format, ...) is not replaced under a running guest, which may have it mounted: that
    waits for a restart."""
    bus = DEVICES["disks"].compared.index("target_bus")
    view = new if old is None else old
    return (old is None) != (new is None) and view is not None and view[bus] in HOTPLUG_BUSES


def state_change(current: State, wanted: State) -> Change | None:
    """The run-state transition from ``current`` to ``wanted`` (None if already there)."""
    if current is wanted or (wanted is State.RUNNING and current is State.BLOCKED):
        return None
    return Change("state", current, wanted, ChangeHow.STATE)


BALLOON_SLACK_MIB = 4
"""How far (MiB, or 1/64 of the size if more) a running guest's memory may be from the wanted
size and still count as there: a balloon reports what the guest gave back, in pages."""


def balloon_reached(have_mib: int, want_mib: int) -> bool:
    """Whether a guest whose balloon reports ``have_mib`` runs with ``want_mib``."""
    return abs(have_mib - want_mib) <= max(BALLOON_SLACK_MIB, want_mib // 64)


def device_of(doc: DomainXML, name: str) -> XmlNode | None:
    """The device a change called ``name`` (``nics[52:54:..]``) is about, in ``doc``."""
    family, _, key = name.partition("[")
    fields = DEVICES[family]
    key = key.rstrip("]")
    return next((n for n in _devices(doc, family) if getattr(n, fields.key) == key), None)


ENSURE_STATES = (State.RUNNING, State.SHUT_OFF, State.PAUSED, State.ABSENT)
