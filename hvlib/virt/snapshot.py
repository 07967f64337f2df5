"""Snapshots of a domain: ``dom.snapshots.create/list/get/find/revert/delete``.

Two kinds (:class:`SnapshotKind`):

- INTERNAL (the default): the disks' state, and for an active guest its memory, stored inside
  the domain's qcow2 images (QEMU's ``savevm``). Every writable disk must be qcow2. Revert
  brings the guest back to that moment, running if it was running.
- EXTERNAL (``disk_only=True``): each writable disk gets a new overlay file (named by libvirt,
  next to the image) that takes the writes from then on; the images as they were are the
  snapshot. No memory. libvirt 9.0 cannot revert to such a snapshot (that came in 9.7), so
  :meth:`Snapshots.revert` refuses it, naming the daemon's version, instead of half-doing it.

Idempotence as elsewhere in hvlib: creating a name that exists with the same kind changes
nothing and returns it (its description is not compared); with the other kind,
:class:`hvlib.AlreadyExists`. Deleting an absent snapshot is success. LXC containers have no
snapshots (:class:`hvlib.Unsupported`).

Snapshot XML is built and read only through lxml. libvirt is called only through the
domain's ``_read``/``_write`` helpers (reads retried on transient errors, writes made once).
"""

from __future__ import annotations

import builtins
import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from lxml import etree

from hvlib.enums import State
from hvlib.errors import (
    AlreadyExists,
    DomainNotFound,
    HvlibError,
    NotFound,
    Unsupported,
)
from hvlib.model.checks import check_name, check_path, check_text
from hvlib.model.xmlmodel import parse
from hvlib.virt import _virt
from hvlib.virt.deadline import LONG_CALL_TIMEOUT

if TYPE_CHECKING:
    from hvlib.model.domxml import DiskXML
    from hvlib.virt._parts import DomainParts

log = logging.getLogger("hvlib")

EXTERNAL_REVERT_VERSION = 9_007_000
"""libvirt learned to revert to external snapshots in 9.7.0."""
_QEMU_DOMAIN_TYPES = ("qemu", "kvm")


class SnapshotKind(enum.Enum):
    """Where a snapshot keeps its data."""

    INTERNAL = "internal"
    """Inside the qcow2 images (disks, and memory for an active guest)."""
    EXTERNAL = "external"
    """The images as they were; new overlay files take the writes (disks only)."""


@dataclass(frozen=True)
class Snapshot:
    """One snapshot of a domain, as libvirt describes it."""

    name: str
    kind: SnapshotKind
    state: str
    """The domain's state when it was taken: ``running``, ``paused``, ``shutoff``, or
    ``disk-snapshot`` (an external snapshot)."""
    created: int
    """Unix time of creation."""
    description: str | None = None
    parent: str | None = None
    current: bool = False
    """libvirt's current snapshot (the one the domain last was at)."""
    has_memory: bool = False
    disks: dict[str, str] = field(default_factory=dict)
    """Disk target -> ``internal``, ``external`` or ``no``."""
    overlays: dict[str, str] = field(default_factory=dict)
    """For an external snapshot: disk target -> the overlay file that took the writes."""


def snapshot_xml(
    name: str,
    description: str | None = None,
    *,
    external: Mapping[str, str | None] | None = None,
    skip: Sequence[str] = (),
) -> str:
    """The ``<domainsnapshot>`` document asking for a snapshot ``name``. Pure.

    ``external`` maps disk targets to their overlay file (None: libvirt names it, which it
    can only do for file disks); ``skip`` lists disks left out (``snapshot='no'``).

    Raises:
        SpecError: a malformed name, description or overlay path.
    """
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = check_name("snapshot.name", name)
    if description is not None:
        text = check_text("snapshot.description", description, allow_empty=True)
        etree.SubElement(root, "description").text = text
    if external or skip:
        disks = etree.SubElement(root, "disks")
        for target, overlay in (external or {}).items():
            disk = etree.SubElement(disks, "disk", name=target, snapshot="external")
            if overlay is not None:
                disk.set("type", "file")
                etree.SubElement(disk, "source", file=check_path("snapshot.overlay", overlay))
        for target in skip:
            etree.SubElement(disks, "disk", name=target, snapshot="no")
    return etree.tostring(root, encoding="unicode")


def parse_snapshot(xml: str, *, current: bool = False) -> Snapshot:
    """A :class:`Snapshot` from libvirt's snapshot XML. Pure.

    Raises:
        lxml.etree.XMLSyntaxError: the text is not XML.
    """
    root = parse(xml)
    disks: dict[str, str] = {}
    overlays: dict[str, str] = {}
    for disk in root.iterfind("disks/disk"):
        target, mode = disk.get("name", ""), disk.get("snapshot", "")
        disks[target] = mode
        source = disk.find("source")
        if mode == "external" and source is not None and source.get("file"):
            overlays[target] = source.get("file", "")
    memory = root.find("memory")
    memory_mode = memory.get("snapshot", "") if memory is not None else ""
    external = "external" in disks.values() or memory_mode == "external"
    return Snapshot(
        name=(root.findtext("name") or "").strip(),
        kind=SnapshotKind.EXTERNAL if external else SnapshotKind.INTERNAL,
        state=(root.findtext("state") or "").strip(),
        created=int((root.findtext("creationTime") or "0").strip() or 0),
        description=root.findtext("description"),
        parent=(root.findtext("parent/name") or "").strip() or None,
        current=current,
        has_memory=memory_mode in ("internal", "external"),
        disks=disks,
        overlays=overlays,
    )


def version_text(version: int) -> str:
    """libvirt's packed version number (9000000) as text (``9.0.0``)."""
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


class Snapshots:
    """The snapshots of one domain: ``dom.snapshots``."""

    def __init__(self, domain: DomainParts) -> None:
        self.domain = domain

    def __repr__(self) -> str:
        return f"<Snapshots of {self.domain.name}>"

    def _check_type(self) -> None:
        if self.domain.virt.is_container:
            raise Unsupported(
                f"{self.domain.name}: libvirt has no snapshots of LXC containers",
                name=self.domain.name,
                field=None,
            )

    # -- reading -------------------------------------------------------------------------

    def find(self, name: str) -> Snapshot | None:
        """The snapshot called ``name``, or None.

        Raises:
            DomainNotFound: the domain is gone. Unsupported: an LXC container.
        """
        self._check_type()
        try:
            xml = self.domain._read(lambda h: h.snapshotLookupByName(name, 0).getXMLDesc(0))
        except DomainNotFound:
            raise
        except NotFound:
            return None
        return parse_snapshot(xml, current=self._current_name() == name)

    def get(self, name: str) -> Snapshot:
        """The snapshot called ``name``.

        Raises:
            NotFound: there is none. DomainNotFound: the domain is gone.
            Unsupported: an LXC container.
        """
        found = self.find(name)
        if found is None:
            raise NotFound(f"{self.domain.name} has no snapshot {name}", name=name)
        return found

    def list(self) -> builtins.list[Snapshot]:
        """Every snapshot of the domain, oldest first.

        Raises:
            DomainNotFound: the domain is gone. Unsupported: an LXC container.
        """
        self._check_type()
        xmls: builtins.list[str] = self.domain._read(
            lambda h: [s.getXMLDesc(0) for s in h.listAllSnapshots(0)]
        )
        current = self._current_name()
        snaps = [parse_snapshot(x) for x in xmls]
        snaps = [replace(s, current=True) if s.name == current else s for s in snaps]
        return sorted(snaps, key=lambda s: (s.created, s.name))

    def _current_name(self) -> str | None:
        try:
            return str(self.domain._read(lambda h: h.snapshotCurrent(0).getName()))
        except DomainNotFound:
            raise
        except NotFound:
            return None

    # -- changing ------------------------------------------------------------------------

    def create(
        self, name: str, *, disk_only: bool = False, description: str | None = None
    ) -> Snapshot:
        """Take a snapshot called ``name`` (internal; external disk-only with ``disk_only``)
        and return it. A snapshot of that name and kind that exists already is returned as
        it is (nothing is taken).

        Raises:
            SpecError: a malformed name or description.
            AlreadyExists: ``name`` exists as the other kind.
            Unsupported: an LXC container; an internal snapshot of a QEMU/KVM domain with a
                writable disk that is not qcow2 (or of a running one without a disk to hold
                its memory); a disk-only snapshot of a domain without writable disks; or
                the driver has no snapshots.
            DomainNotFound: the domain is gone. LibvirtError: libvirt refused.
        """
        snapshot_xml(name, description)  # check the input before asking libvirt anything
        kind = SnapshotKind.EXTERNAL if disk_only else SnapshotKind.INTERNAL
        self._check_type()
        existing = self.find(name)
        if existing is not None:
            return self._same_kind(existing, kind)
        xml = self._request(name, description, kind)
        flags = _virt.C.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        if disk_only:
            flags |= _virt.C.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        try:
            self.domain._write(lambda h: h.snapshotCreateXML(xml, flags), timeout=LONG_CALL_TIMEOUT)
        except (DomainNotFound, Unsupported):
            raise
        except HvlibError:
            raced = self.find(name)  # another caller made it meanwhile?
            if raced is None:
                raise
            return self._same_kind(raced, kind)
        log.info("%s: took %s snapshot %s", self.domain.name, kind.value, name)
        return self.get(name)

    def _same_kind(self, snap: Snapshot, kind: SnapshotKind) -> Snapshot:
        if snap.kind is not kind:
            raise AlreadyExists(
                f"{self.domain.name} has a snapshot {snap.name} already, {snap.kind.value} "
                f"(not {kind.value})",
                name=snap.name,
            )
        return snap

    def _request(self, name: str, description: str | None, kind: SnapshotKind) -> str:
        """The snapshot XML for ``kind``, after refusing what the disks cannot do."""
        doc = self.domain.xml_doc()
        disks = doc.disks
        writable = [d for d in disks if d.device in (None, "disk") and not d.readonly]
        readonly = [
            d.target_dev or "" for d in disks if d.readonly or d.device not in (None, "disk")
        ]
        if kind is SnapshotKind.EXTERNAL:
            if not writable:
                raise Unsupported(
                    f"{self.domain.name}: no writable disk to take a disk-only snapshot of",
                    name=self.domain.name,
                    field="disk_only",
                )
            overlays = {d.target_dev or "": self._overlay(d, name) for d in writable}
            return snapshot_xml(name, description, external=overlays, skip=readonly)
        if doc.domain_type in _QEMU_DOMAIN_TYPES:
            self._check_internal(writable)
        return snapshot_xml(name, description)

    def _overlay(self, disk: DiskXML, snapshot: str) -> str | None:
        """Where a disk's overlay goes: libvirt's own choice for a file disk (``IMAGE.SNAP``),
        the same naming next to the volume's file for a volume disk (libvirt names none)."""
        if disk.source_pool and disk.source_volume:
            from hvlib.virt.storage import Volumes

            path = Volumes(self.domain.host).get(disk.source_pool, disk.source_volume).path
            return f"{path}.{snapshot}"
        return None

    def _check_internal(self, writable: builtins.list[DiskXML]) -> None:
        name = self.domain.name
        for disk in writable:
            if disk.driver_type != "qcow2":
                raise Unsupported(
                    f"{name}: internal snapshots need qcow2 disks; {disk.target_dev} is "
                    f"{disk.driver_type or 'raw'} (disk_only=True takes an external one)",
                    name=name,
                    field=None,
                )
        if not writable and self.domain.state.is_active:
            raise Unsupported(
                f"{name}: an internal snapshot of a running guest is stored in its qcow2 "
                "disks, and it has none",
                name=name,
                field=None,
            )

    def revert(self, name: str) -> None:
        """Bring the domain back to snapshot ``name``: its disks, and for a snapshot of an
        active guest its memory and run state (a snapshot of a shut-off domain leaves it shut
        off). Where hvlib captured the console, a new capture starts at the revert (the
        guest is reverted paused, its console opened again, then resumed: no line is lost).

        Raises:
            NotFound: no such snapshot. DomainNotFound: the domain is gone.
            Unsupported: an LXC container; an external snapshot on libvirt older than 9.7
                (the message names the daemon's version).
            LibvirtError: libvirt refused.
        """
        snap = self.get(name)
        if snap.kind is SnapshotKind.EXTERNAL:
            version = self.domain.host.call(lambda c: int(c.getLibVersion()), safe=True)
            if version < EXTERNAL_REVERT_VERSION:
                raise Unsupported(
                    f"{self.domain.name}: libvirt {version_text(version)} cannot revert to "
                    f"the external snapshot {name} (reverting external snapshots came in "
                    f"libvirt {version_text(EXTERNAL_REVERT_VERSION)})",
                    name=self.domain.name,
                    field=None,
                )
        active = snap.state in ("running", "paused")
        flags = _virt.C.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED if active else 0
        self.domain._write(
            lambda h: h.revertToSnapshot(h.snapshotLookupByName(name, 0), flags),
            timeout=LONG_CALL_TIMEOUT,
        )
        if active:
            self._recapture_console()
            if snap.state == "running":
                self.domain._write(lambda h: h.resume())
        log.info("%s: reverted to snapshot %s", self.domain.name, name)

    def _recapture_console(self) -> None:
        """Open a new console capture: libvirt 9.0 closes console streams when it reverts a
        running guest (seen here), so the old capture ends at the revert."""
        capture = self.domain.console
        if capture is None or self.domain.host.is_test_driver:
            return
        capture.close()
        self.domain._capture_console()

    def delete(self, name: str) -> None:
        """Delete snapshot ``name`` (its children are kept); absent: nothing to do.

        Raises:
            DomainNotFound: the domain is gone. Unsupported: an LXC container, or libvirt
                cannot delete that snapshot. LibvirtError: libvirt refused.
        """
        if self.find(name) is None:
            return
        try:
            self.domain._write(lambda h: h.snapshotLookupByName(name, 0).delete(0))
        except DomainNotFound:
            raise
        except NotFound:
            return  # deleted meanwhile
        log.info("%s: deleted snapshot %s", self.domain.name, name)


def snapshot_state(snap: Snapshot) -> State:
    """The hvlib State a snapshot brings the domain back to (SHUT_OFF for disk-only)."""
    return {"running": State.RUNNING, "paused": State.PAUSED}.get(snap.state, State.SHUT_OFF)
