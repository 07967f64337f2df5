"""Desired state: compare a DomainSpec with what a host has, and plan how to converge.

Pure planning, no libvirt: :func:`merge` lays the spec over the domain's current persistent
definition (keeping uuid, MAC addresses, device addresses and everything the spec does not
own), :func:`owned` projects a definition onto the fields a spec owns, and :func:`plan`
classifies each difference by how it can be applied (:class:`ChangeHow`). The Host layer
(:meth:`hvlib.virt.host.Domains.ensure`, through :mod:`hvlib.virt.converge`) carries the plan
out.
"""

from __future__ import annotations

import difflib
import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

from hvlib.enums import State
from hvlib.model import profiles
from hvlib.model.cpu import cpu_key_of
from hvlib.model.domxml import ID_KINDS, DiskXML, DomainXML, IdRanges, InterfaceXML
from hvlib.model.render import (
    apply_caller_changes,
    apply_fields,
    disk_node,
    disk_targets,
    firmware_of,
    fs_node,
    is_spec_rng,
    nic_node,
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
    """Needs the domain undefined and defined again (keeping its uuid and MAC addresses)."""
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

    def diff(self) -> str:
        """A unified diff of the persistent XML, before -> after ("" when unchanged)."""
        lines = difflib.unified_diff(
            self.before_xml.splitlines(True), self.after_xml.splitlines(True), "before", "after"
        )
        return "".join(lines)


# Fields whose change a running guest can take without a restart, given its maximums.
_LIVE_FIELDS = ("memory_mib", "vcpus")
_RECREATE_FIELDS = ("virt",)


def owned(doc: DomainXML, spec: DomainSpec) -> dict[str, Any]:
    """The fields ``spec`` owns, as ``doc`` has them (devices keyed by target or MAC)."""
    vcpu = doc.vcpu or 1
    view: dict[str, Any] = {
        "virt": virt_of(doc),
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
    profile = profiles.profile_for(spec.virt)
    if profile.platform:
        view.update(_platform_view(doc))
    if profile.is_container:
        view["idmap"] = _idmap_view(doc)
    for d in doc.disks:
        view[f"disks[{d.target_dev}]"] = _disk_view(d)
    for i in doc.interfaces:
        view[f"nics[{i.mac}]"] = _nic_view(i)
    for f in doc.filesystems:
        view[f"filesystems[{f.target_dir}]"] = (f.source_dir, f.readonly)
    return view


def _platform_view(doc: DomainXML) -> dict[str, Any]:
    """Machine family, firmware, CPU request and virtio RNG: comparable between a persistent
    definition and a running guest's (which shows a versioned machine, a pflash loader and an
    expanded ``<cpu>`` instead of what was asked). The RNG is a config change: the guest gets
    (or loses) it when it next boots."""
    firmware, secure_boot = firmware_of(doc)
    return {
        "machine": profiles.machine_family(doc.os_machine),
        "firmware": firmware,
        "secure_boot": secure_boot,
        "cpu": cpu_key_of(doc),
        "rng": any(is_spec_rng(r) for r in doc.rngs),
    }


def _idmap_view(doc: DomainXML) -> tuple[IdRanges, IdRanges] | None:
    """(uid ranges, gid ranges), each in container-id order; None without an id map. A
    change is a config change: the container's user namespace is made when it starts."""
    idmap = doc.idmap
    if not idmap:
        return None
    uids, gids = (tuple(sorted(idmap.get(kind, ()))) for kind in ID_KINDS)
    return uids, gids


def _disk_view(d: DiskXML) -> tuple[Any, ...]:
    source = d.source_file if d.kind == "file" else (d.source_pool, d.source_volume)
    return (d.kind, d.device, source, d.target_bus, d.readonly)


def _nic_view(i: InterfaceXML) -> tuple[Any, ...]:
    return (i.kind, i.source_network or i.source_bridge, i.model)


def merge(current: DomainXML, spec: DomainSpec) -> DomainXML:
    """``current`` (a persistent definition, modified in place) with ``spec`` laid over it.

    The spec's device lists replace the current ones, matched by disk target, NIC MAC (or,
    for a NIC without one, the next current NIC on the same network or bridge) and
    filesystem target; a matched device keeps its MAC and ``<address>``. A virtio RNG of the
    spec's kind is kept, added or removed as ``spec.rng`` says.
    """
    profile = profiles.check(spec)
    apply_fields(current, spec, profile)
    _sync(
        current,
        current.disks,
        lambda n: n.target_dev,
        [
            (t, disk_node(d, t, profile))
            for d, t in zip(spec.disks, disk_targets(spec.disks, profile), strict=True)
        ],
    )
    _sync_nics(current, spec, profile)
    fs_nodes = [(f.target, fs_node(f, profile)) for f in spec.filesystems]
    _sync(
        current,
        current.filesystems,
        lambda n: n.target_dir,
        [(t, n) for t, n in fs_nodes if n is not None],
    )
    if profile.platform:
        set_rng(current, spec, profile)
    apply_caller_changes(current, spec)
    return current


def _sync(
    doc: DomainXML, existing: list[Any], key: Any, wanted: list[tuple[str | None, XmlNode]]
) -> None:
    by_key = {key(n): n for n in existing}
    for k, node in wanted:
        old = by_key.pop(k, None)
        _replace(doc, old, node)
    for leftover in by_key.values():
        doc.remove_device(leftover)


def _replace(doc: DomainXML, old: XmlNode | None, new: XmlNode) -> None:
    """Put ``new`` where ``old`` was, keeping old's ``<address>`` (and MAC, for NICs)."""
    if old is None:
        doc.insert_device(new)
        return
    for attr, value in old.el.attrib.items():  # what libvirt added (accessmode, ...)
        if attr not in new.el.attrib:
            new.el.set(attr, value)
    for tag in ("mac", "address"):
        kept = old.el.find(tag)
        if kept is not None and new.el.find(tag) is None:
            new.el.insert(0 if tag == "mac" else len(new.el), kept)
    old.el.addprevious(new.el)
    doc.remove_device(old)


def _sync_nics(doc: DomainXML, spec: DomainSpec, profile: profiles.Profile) -> None:
    unmatched = list(doc.interfaces)
    for nic in spec.nics:
        old = next((i for i in unmatched if nic.mac and i.mac == nic.mac), None)
        if old is None and not nic.mac:
            old = next(
                (
                    i
                    for i in unmatched
                    if _nic_view(i)[:2] == (nic.kind, nic.source) and not _claimed(i, spec)
                ),
                None,
            )
        node = nic_node(nic, profile)
        if old is not None:
            unmatched.remove(old)
        elif not nic.mac:
            node.mac = random_mac()  # chosen here so the live and persistent NIC agree
        _replace(doc, old, node)
    for leftover in unmatched:
        doc.remove_device(leftover)


def random_mac() -> str:
    """A random MAC in QEMU's locally administered 52:54:00 range."""
    tail = secrets.token_bytes(3)
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)


def _claimed(iface: InterfaceXML, spec: DomainSpec) -> bool:
    return any(n.mac == iface.mac for n in spec.nics if n.mac)


def plan(
    before: dict[str, Any], after: dict[str, Any], running: bool, live_limits: tuple[int, int]
) -> list[Change]:
    """Classify each difference between two :func:`owned` views.

    ``live_limits`` are the running guest's (max memory MiB, max vcpus): a change within
    them can be applied live.
    """
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old != new:
            changes.append(Change(name, old, new, _how(name, new, running, live_limits)))
    return changes


def _how(name: str, new: Any, running: bool, limits: tuple[int, int]) -> ChangeHow:
    if name in _RECREATE_FIELDS:
        return ChangeHow.RECREATE
    if not running:
        return ChangeHow.NEXT_BOOT
    if name == "memory_mib" and new is not None and new <= limits[0]:
        return ChangeHow.LIVE
    if name == "vcpus" and new is not None and new <= limits[1]:
        return ChangeHow.LIVE
    if name.startswith(("nics[", "disks[")):
        return ChangeHow.LIVE  # hot-plugged (added, removed; a changed one is replaced)
    return ChangeHow.RESTART


def state_change(current: State, wanted: State) -> Change | None:
    """The run-state transition from ``current`` to ``wanted`` (None if already there)."""
    if current is wanted or (wanted is State.RUNNING and current is State.BLOCKED):
        return None
    return Change("state", current, wanted, ChangeHow.STATE)


ENSURE_STATES = (State.RUNNING, State.SHUT_OFF, State.PAUSED, State.ABSENT)
"""The states ``ensure`` can converge on."""
