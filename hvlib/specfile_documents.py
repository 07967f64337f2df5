"""What a spec file holds: the kinds of document, the keys each may have, and the validated
documents (:class:`DomainDocument`, :class:`NetworkDocument`, :class:`VolumeDocument`), each
remembering the line of every field so that a later error can say where it is
(:func:`in_document`). The format itself is described in :mod:`hvlib.specfile`.

Pure data: no YAML is read here, nothing talks to libvirt.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hvlib.errors import Location, SpecError, SpecFileError, Unsupported
from hvlib.model.netplan import NetworkSpec
from hvlib.model.spec import DomainSpec

KINDS = ("domain", "network", "volume")
"""The ``kind:`` values a document may have (``domain`` when absent)."""
NOT_IN_FILES = ("xml_hook",)
"""DomainSpec fields that have no spelling in a file (a Python callable)."""
DOMAIN_KEYS = (
    "kind",
    *(f.name for f in dataclasses.fields(DomainSpec) if f.name not in NOT_IN_FILES),
)
"""Every key a domain document may have: ``kind`` and DomainSpec's field names."""
NETWORK_KEYS = ("kind", "name", "ipv4", "mode", "dhcp_range", "hosts", "bridge", "autostart")
"""Every key a network document may have: ``kind`` and NetworkSpec's field names."""
VOLUME_KEYS = ("kind", "pool", "name", "size_mib", "format", "backing")
"""Every key a volume document may have: ``kind`` and the parameters of ``Volumes.ensure``
(but ``data``)."""
DISK_SOURCES = ("file", "volume", "cdrom")
"""The keys of a disk that say what it is (exactly one is given)."""
DISK_OPTIONS = ("target", "format", "readonly")
NIC_SOURCES = ("network", "bridge")
"""The keys of a nic that say what it plugs into (exactly one is given)."""
NIC_OPTIONS = ("mac", "model")
FILESYSTEM_KEYS = ("source", "target", "readonly")
XML_EDIT_KEYS = ("set", "value", "remove")
DHCP_HOST_KEYS = ("mac", "ip", "name")
POOL_DIR_KEYS = ("name", "dir")
VOLUME_REF_KEYS = ("pool", "name")
KEYS: Mapping[str, tuple[str, ...]] = {
    "domain": DOMAIN_KEYS,
    "network": NETWORK_KEYS,
    "volume": VOLUME_KEYS,
    "disks[]": (*DISK_SOURCES, *DISK_OPTIONS),
    "disks[].volume": VOLUME_REF_KEYS,
    "nics[]": (*NIC_SOURCES, *NIC_OPTIONS),
    "filesystems[]": FILESYSTEM_KEYS,
    "xml_edits[]": XML_EDIT_KEYS,
    "hosts[]": DHCP_HOST_KEYS,
    "pool": POOL_DIR_KEYS,
    "backing": VOLUME_REF_KEYS,
}
"""Every mapping of a document and its keys: a kind, or a path into that kind's document
(``[]``: each item of the list; ``cpu`` and ``idmap`` are :class:`~hvlib.model.cpuspec.Cpu`'s and
:class:`~hvlib.model.idmap.IdMap`'s own ``from_dict`` keys)."""
_FIELD_TAIL = re.compile(r"(\.[^.\[\]]*|\[[^\]]*\])$")


class _Located:
    """What every document has: where it starts and where each of its fields was written."""

    location: Location
    fields: Mapping[str, Location]
    """Document paths (``name``, ``disks[0].file``, ``disks[0]``, ...) to their lines."""

    def locate(self, fieldname: str) -> Location:
        """The line of ``fieldname`` (or of the nearest enclosing field; else the document).

        ``fieldname`` may be a document path or a field name from a :class:`SpecError` raised
        later by hvlib (``nics[0].network`` from a host check, say).
        """
        return locate(self.fields, self.location, fieldname)

    def error(self, err: SpecError | Unsupported) -> SpecFileError:
        """``err`` (raised by hvlib about this document) with its file and line."""
        return in_document(err, self.locate)


@dataclass(frozen=True)
class DomainDocument(_Located):
    """One ``kind: domain`` document: the validated spec and where each field was written."""

    spec: DomainSpec
    location: Location
    fields: Mapping[str, Location] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class NetworkDocument(_Located):
    """One ``kind: network`` document: the validated :class:`~hvlib.model.netplan.NetworkSpec`
    (what ``host.networks.apply`` takes) and where each field was written."""

    spec: NetworkSpec
    location: Location
    fields: Mapping[str, Location] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class VolumeDocument(_Located):
    """One ``kind: volume`` document: the arguments of ``host.volumes.ensure`` (checked as it
    checks them before calling libvirt) and, with ``pool_dir``, the directory pool to make
    exist first."""

    pool: str
    name: str
    location: Location
    size_mib: int | None = None
    format: str | None = None
    """``raw`` or ``qcow2``; None: qcow2 with ``backing``, else raw (:attr:`image_format`)."""
    backing: tuple[str, str] | None = None
    """(pool, name) of the volume this one is a qcow2 overlay on."""
    pool_dir: str | None = None
    """The directory of ``pool`` when the file declares it (``pool: {name: P, dir: PATH}``)."""
    fields: Mapping[str, Location] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> str:
        """``pool/name``: how the volume is named in messages."""
        return f"{self.pool}/{self.name}"

    @property
    def image_format(self) -> str:
        """The format the volume gets: ``format``, else qcow2 with ``backing``, else raw."""
        return self.format or ("qcow2" if self.backing is not None else "raw")

    def ensure_args(self) -> dict[str, Any]:
        """The keyword arguments of ``host.volumes.ensure(pool, name, **these)``."""
        return {"size_mib": self.size_mib, "format": self.format, "backing": self.backing}


Document = DomainDocument | NetworkDocument | VolumeDocument
"""Any document of a spec file."""


def in_document(err: SpecError | Unsupported, locate: Callable[[str], Location]) -> SpecFileError:
    """``err``, raised by hvlib about a document, at the line ``locate`` gives its field.

    An :class:`Unsupported` names its field (``err.field``); one that names none was refused
    by the virtualization type as a whole, so it is put at ``virt``.
    """
    if isinstance(err, SpecFileError):
        return err
    if isinstance(err, SpecError):
        return SpecFileError(locate(err.field), err.field, err.rule, err.value)
    fieldname = err.field or "virt"
    return SpecFileError(locate(fieldname), fieldname, str(err))


def locate(fields: Mapping[str, Location], default: Location, fieldname: str) -> Location:
    """The line of ``fieldname`` in ``fields``, or of the nearest field enclosing it
    (``disks[0].target``, then ``disks[0]``, then ``disks``); else ``default``."""
    name = fieldname
    while name:
        if name in fields:
            return fields[name]
        shorter = _FIELD_TAIL.sub("", name)
        name = "" if shorter == name else shorter
    return default


@dataclass
class SpecFile:
    """The documents of one file, each kind in the file's order."""

    path: str
    domains: list[DomainDocument] = field(default_factory=list)
    networks: list[NetworkDocument] = field(default_factory=list)
    volumes: list[VolumeDocument] = field(default_factory=list)
