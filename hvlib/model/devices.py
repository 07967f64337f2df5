"""The devices of a DomainSpec: disks, NICs, host filesystems, and the XML edits laid over
what is rendered. Each is validated on construction and names the field at fault
(``disk.target``, ``nic.mac``); the spec that holds them names the item (``disks[1]``).

Pure data with their checks: this module neither renders XML nor talks to libvirt.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from hvlib.errors import SpecError
from hvlib.model.checks import (
    PathArg,
    as_path_text,
    check_bool,
    check_fields,
    check_name,
    check_path,
    check_text,
)

# Matched whole (``fullmatch``), as every pattern of hvlib's checks.
_MAC_RE = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
_TARGET_RE = re.compile(r"(vd|sd|hd|xvd)[a-z]{1,2}")
DISK_DEVICES = ("disk", "cdrom")
"""``Disk.device`` values."""
DISK_FORMATS = ("raw", "qcow2")
"""``Disk.format`` values (None: raw for a file, the volume's own format for a volume)."""


class DiskKind(enum.Enum):
    """Where a disk's bytes come from."""

    FILE = "file"
    VOLUME = "volume"


@dataclass(frozen=True)
class Disk:
    """A block device of a VM. Build with :meth:`file`, :meth:`volume` or :meth:`cdrom`.

    ``target`` (``vda``, ``xvdb``, ...) is chosen per virt type when None. ``format``
    (``raw`` or ``qcow2``) is how the guest's disk reads the image: a file disk without one
    is raw; a volume disk without one takes the volume's own format, read from its pool when
    a host defines or ensures the domain (see :meth:`volume`). ``kind`` takes a
    :class:`DiskKind` or its value (``"file"``, ``"volume"``).

    Raises:
        SpecError: on construction, naming ``disk.FIELD`` and the rule broken (a value of
            the wrong type included).
    """

    kind: DiskKind
    path: str | None = None
    pool: str | None = None
    volume_name: str | None = None
    device: str = "disk"
    target: str | None = None
    format: str | None = None
    readonly: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "disk.", names={"volume_name": "volume"}, paths=("path",))
        if self.kind is DiskKind.FILE:
            check_path("disk.path", self.path or "")
        else:
            check_name("disk.pool", self.pool or "")
            check_name("disk.volume", self.volume_name or "")
        if self.device not in DISK_DEVICES:
            raise SpecError("disk.device", "must be 'disk' or 'cdrom'", self.device)
        if self.target is not None and not _TARGET_RE.fullmatch(self.target):
            raise SpecError("disk.target", "must look like vda, sdb, hdc or xvda", self.target)
        if self.format is not None and self.format not in DISK_FORMATS:
            raise SpecError("disk.format", "must be 'raw' or 'qcow2'", self.format)

    @classmethod
    def file(
        cls,
        path: PathArg,
        *,
        target: str | None = None,
        format: str | None = None,
        readonly: bool = False,
    ) -> Disk:
        """A disk backed by a host file, read as ``format`` (``raw`` or ``qcow2``; None:
        raw. hvlib never lets libvirt guess a file's format from its contents: a guest
        that can write a raw image could otherwise make it look like a qcow2 overlay of a
        host file)."""
        path = as_path_text("disk.path", path)
        return cls(DiskKind.FILE, path=path, target=target, format=format, readonly=readonly)

    @classmethod
    def volume(
        cls,
        pool: str,
        name: str,
        *,
        device: str = "disk",
        target: str | None = None,
        format: str | None = None,
        readonly: bool = False,
    ) -> Disk:
        """A disk backed by the libvirt storage volume ``name`` in ``pool``, read as
        ``format`` (``raw`` or ``qcow2``).

        ``format`` None takes the volume's own format: when a host defines or ensures the
        domain (:func:`hvlib.virt.hostfit.fit`), a domain that already has this disk keeps the
        format it was defined with, and a new one gets the format the pool reports (qcow2
        for a qcow2 volume, raw for raw, ISO or unformatted ones). The volume must then exist.
        A format given here wins over the volume's.
        """
        return cls(
            DiskKind.VOLUME,
            pool=pool,
            volume_name=name,
            device=device,
            target=target,
            format=format,
            readonly=check_bool("disk.readonly", readonly) or device == "cdrom",
        )

    @classmethod
    def cdrom(cls, path: PathArg, *, target: str | None = None) -> Disk:
        """A read-only cdrom backed by an ISO image file."""
        return cls(
            DiskKind.FILE,
            path=as_path_text("disk.path", path),
            device="cdrom",
            target=target,
            format="raw",
            readonly=True,
        )


@dataclass(frozen=True)
class Nic:
    """A network interface. Build with :meth:`network` or :meth:`bridge`.

    ``mac`` None lets libvirt generate one (``ensure`` then keeps it across re-defines).

    Raises:
        SpecError: on construction, naming ``nic.FIELD`` (``nic.network`` or ``nic.bridge``
            for the source) and the rule broken.
    """

    kind: str
    source: str
    mac: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in NIC_KINDS:
            raise SpecError("nic.kind", "must be 'network' or 'bridge'", self.kind)
        check_fields(self, "nic.", names={"source": self.kind})
        check_name(f"nic.{self.kind}", self.source)
        if self.mac is not None and not _MAC_RE.fullmatch(self.mac):
            raise SpecError(
                "nic.mac", "must be six lowercase hex pairs like 52:54:00:12:34:56", self.mac
            )
        if self.model is not None:
            check_name("nic.model", self.model)

    @classmethod
    def network(cls, name: str, *, mac: str | None = None, model: str | None = None) -> Nic:
        """An interface on the libvirt network ``name``."""
        return cls("network", name, mac=mac, model=model)

    @classmethod
    def bridge(cls, name: str, *, mac: str | None = None, model: str | None = None) -> Nic:
        """An interface on the host bridge ``name``."""
        return cls("bridge", name, mac=mac, model=model)


NIC_KINDS = ("network", "bridge")
"""``Nic.kind`` values."""
HOST_ROOT = "<host-root>"


@dataclass(frozen=True)
class Filesystem:
    """A host directory passed into a container (or a VM, via virtiofs/9p).

    Raises:
        SpecError: on construction, naming ``filesystem.FIELD`` and the rule broken.
    """

    source: str
    target: str
    readonly: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "filesystem.", paths=("source", "target"))
        if self.source != HOST_ROOT:
            check_path("filesystem.source", self.source)
        check_path("filesystem.target", self.target)

    @classmethod
    def mount(
        cls,
        source_dir: PathArg,
        target: PathArg = "/",
        *,
        readonly: bool = False,
    ) -> Filesystem:
        """Bind ``source_dir`` of the host at ``target`` in the guest."""
        source = as_path_text("filesystem.source", source_dir)
        return cls(source, as_path_text("filesystem.target", target), readonly)

    @classmethod
    def host_root(cls) -> Filesystem:
        """Explicitly share the host's own root (read-write!) with a container.

        Without a root filesystem a libvirt container shares the host's root; hvlib refuses
        that unless this marker is passed, so it is never done by accident.
        """
        return cls(HOST_ROOT, "/")

    @property
    def is_host_root(self) -> bool:
        """True for the explicit host-root marker."""
        return self.source == HOST_ROOT


@dataclass(frozen=True)
class XmlEdit:
    """An escape hatch applied after rendering: set or delete what an XPath selects.

    ``XmlEdit.set("./on_crash", "preserve")`` sets the text of every element the XPath
    selects (it must select at least one), ``XmlEdit.set("./devices/graphics/@type", "vnc")``
    an attribute of each (added where missing); ``XmlEdit.delete("./devices/memballoon")``
    removes every element it selects (none is fine), ``XmlEdit.delete("./devices/disk/@x")``
    that attribute. An edit runs on what hvlib rendered (or, in ``ensure``, on the current
    definition with the spec laid over it), before the ``xml_hook``.

    Edits may not touch what hvlib owns to find and tell apart its domains and their NICs
    (:data:`hvlib.model.xmledits.IDENTITY`): the domain's ``<name>``, ``<uuid>``, ``type``
    attribute, ``<os><type>`` (hvm, xen, exe: the virt type), hvlib's own ``<metadata>``
    entries and each NIC's ``<mac>``, nor delete an element holding one of the first five.
    Which nodes an XPath reaches is decided by evaluating it on the document, so any spelling
    (``./name``, ``/domain/name``, ``name``, ``//name``, ``*[1]``) counts; set the spec's
    own fields (``name``, ``uuid``, ``virt``, ``Nic.mac``) instead.

    Raises:
        SpecError: on construction, naming ``xml_edits.FIELD`` (a value of the wrong type,
            or XML cannot carry it); when rendered, naming ``xml_edits[i]``: an XPath that
            does not parse, selects no element for a set, or touches an identity node.
    """

    xpath: str
    value: str | None
    remove: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "xml_edits.")
        check_text("xml_edits.xpath", self.xpath)
        if self.remove and self.value is not None:
            raise SpecError("xml_edits.value", "a delete takes no value", self.value)
        if not self.remove:
            if self.value is None:
                raise SpecError("xml_edits.value", "a set needs a value (a string)")
            check_text(
                "xml_edits.value", self.value, max_len=65536, allow_empty=True, multiline=True
            )

    @classmethod
    def set(cls, xpath: str, value: str) -> XmlEdit:
        """Set the text (or, for ``.../@attr``, the attribute) of every match."""
        return cls(xpath, value)

    @classmethod
    def delete(cls, xpath: str) -> XmlEdit:
        """Remove every element (or, for ``.../@attr``, that attribute) ``xpath`` selects."""
        return cls(xpath, None, remove=True)
