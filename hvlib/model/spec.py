"""What a user asks for: DomainSpec and its devices, validated on construction.

Every check here runs before libvirt is called, so a bad spec never half-defines a domain.
A failed check raises :class:`hvlib.SpecError` naming the field and the rule. Checks that
depend on the virtualization type (a cdrom on LXC, say) live in :mod:`hvlib.model.profiles`;
checks that need a host (does that network exist?) live in :mod:`hvlib.virt.host`.
This module neither renders XML nor talks to libvirt.
"""

from __future__ import annotations

import enum
import itertools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from hvlib.enums import VirtType
from hvlib.errors import SpecError
from hvlib.model.checks import as_path_text, check_bool, check_fields, check_int

NAME_MAX = 64
MEMORY_MIB_MAX = 4 * 1024 * 1024  # 4 TiB
VCPUS_MAX = 512
CMDLINE_MAX = 4096
# Every pattern is matched whole (``fullmatch``): ``$`` would also match before a trailing
# newline, and a value libvirt normalises differently from the spec never converges.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_MAC_RE = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
_TARGET_RE = re.compile(r"(vd|sd|hd|xvd)[a-z]{1,2}")
_CPU_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_CPU_FEATURE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}")
DISK_DEVICES = ("disk", "cdrom")
"""``Disk.device`` values."""
DISK_FORMATS = ("raw", "qcow2")
"""``Disk.format`` values (None: raw for a file, the volume's own format for a volume)."""
CPU_MODES = ("host-passthrough", "host-model", "custom")
"""``Cpu.mode`` values (None: the hypervisor's default model)."""
MACHINES = ("pc", "q35", "microvm")
"""``DomainSpec.machine`` values (None: the type's default, ``pc`` for kvm and qemu)."""
FIRMWARES = ("bios", "efi")
"""``DomainSpec.firmware`` values."""
ID_LIMIT = 2**32
"""User and group ids are 32-bit; ``start + count`` of a mapped range stays below this."""
IDMAP_RANGES_MAX = 340
"""The most ranges the kernel takes in one ``uid_map`` or ``gid_map`` (Linux 4.15 and later)."""


def check_text(
    fieldname: str,
    value: str,
    *,
    max_len: int = 4096,
    allow_empty: bool = False,
    multiline: bool = False,
) -> str:
    """Reject strings XML cannot carry (NUL, control characters) or of absurd length. A tab
    is allowed; line breaks (``\\n``, ``\\r``) only with ``multiline``.

    Raises:
        SpecError: naming ``fieldname`` and the rule broken.
    """
    if not isinstance(value, str):
        raise SpecError(fieldname, "must be a string", value)
    if not value and not allow_empty:
        raise SpecError(fieldname, "must not be empty")
    if len(value) > max_len:
        raise SpecError(fieldname, f"must be at most {max_len} characters", len(value))
    allowed = "\t\n\r" if multiline else "\t"
    if any((ord(c) < 32 and c not in allowed) or ord(c) == 127 for c in value):
        raise SpecError(fieldname, "must not contain NUL or control characters", value)
    if any(0xD800 <= ord(c) <= 0xDFFF or ord(c) in (0xFFFE, 0xFFFF) for c in value):
        raise SpecError(fieldname, "must not contain characters XML cannot carry", value)
    return value


def check_name(fieldname: str, value: str) -> str:
    """Check an object name (domain, network, pool, volume) against libvirt-safe rules.

    Raises:
        SpecError: empty, longer than 64, or not ``[A-Za-z0-9][A-Za-z0-9_.+-]*``.
    """
    check_text(fieldname, value, max_len=NAME_MAX)
    if not _NAME_RE.fullmatch(value):
        raise SpecError(
            fieldname, "must start with a letter or digit and use only A-Z a-z 0-9 _ . + -", value
        )
    return value


def check_path(fieldname: str, value: str) -> str:
    """Check a host path: absolute, normalised, no ``..`` component. A path is otherwise
    free-form: any character a file name may hold but NUL and control characters (a
    trailing space or U+2028 is part of a name, not a typo hvlib could tell).

    Raises:
        SpecError: relative, containing ``..``, or not valid text.
    """
    check_text(fieldname, value)
    if not value.startswith("/"):
        raise SpecError(fieldname, "must be an absolute path", value)
    if ".." in PurePosixPath(value).parts:
        raise SpecError(fieldname, "must not contain '..'", value)
    return value


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
        path: str | os.PathLike[str],
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
    def cdrom(cls, path: str | os.PathLike[str], *, target: str | None = None) -> Disk:
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
        source_dir: str | os.PathLike[str],
        target: str | os.PathLike[str] = "/",
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
    (:data:`hvlib.model.render.IDENTITY`): the domain's ``<name>``, ``<uuid>``, ``type`` attribute,
    ``<os><type>`` (hvm, xen, exe: the virt type), hvlib's own ``<metadata>`` entries and
    each NIC's ``<mac>``, nor delete an element holding one of the first five. Which nodes
    an XPath reaches is decided by evaluating it on the document, so any spelling
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


@dataclass(frozen=True)
class Cpu:
    """The guest CPU: mode, named model, features and topology.

    Build with :meth:`model` (a named model such as ``Nehalem``), :meth:`host_model`,
    :meth:`host_passthrough`, or ``Cpu(sockets=.., cores=.., threads=..)`` for a topology on
    the hypervisor's default model. ``require`` and ``disable`` are libvirt feature names
    (``aes``, ``sse4.2``, ``svm``). ``fallback`` lets libvirt fall back to another model, and
    lets a required feature the host cannot provide pass with a logged warning instead of a
    :class:`hvlib.SpecError` when the spec is checked against a host. Topology fields left
    out count as 1; their product must equal the domain's maximum vcpu count.

    Raises:
        SpecError: on construction, naming ``cpu.FIELD`` and the rule broken.
    """

    mode: str | None = None
    name: str | None = None
    require: Sequence[str] = ()
    disable: Sequence[str] = ()
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None
    fallback: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "cpu.", names={"name": "model"})
        self._check_mode()
        self._check_features()
        for attr in ("sockets", "cores", "threads"):
            if getattr(self, attr) is not None:
                check_int(f"cpu.{attr}", getattr(self, attr), 1, VCPUS_MAX)

    def _check_mode(self) -> None:
        if self.mode is not None and self.mode not in CPU_MODES:
            raise SpecError("cpu.mode", f"must be one of {', '.join(CPU_MODES)}", self.mode)
        if self.mode == "custom" and self.name is None:
            raise SpecError("cpu.model", "a custom CPU needs a model name (Cpu.model(NAME))")
        if self.name is not None:
            if self.mode != "custom":
                raise SpecError("cpu.model", "a model name needs mode 'custom'", self.name)
            check_text("cpu.model", self.name, max_len=64)
            if not _CPU_MODEL_RE.fullmatch(self.name):
                raise SpecError("cpu.model", "must use only A-Z a-z 0-9 _ . + -", self.name)

    def _check_features(self) -> None:
        for attr in ("require", "disable"):
            for name in getattr(self, attr):
                if not _CPU_FEATURE_RE.fullmatch(name):
                    raise SpecError(
                        f"cpu.{attr}", "feature names use only a-z 0-9 _ . - (e.g. sse4.2)", name
                    )
            names = getattr(self, attr)
            if len(set(names)) != len(names):
                raise SpecError(f"cpu.{attr}", "lists a feature twice", list(names))
        both = sorted(set(self.require) & set(self.disable))
        if both:
            raise SpecError("cpu.disable", "a feature cannot be both required and disabled", both)
        if (self.require or self.disable) and self.mode is None:
            raise SpecError(
                "cpu.require" if self.require else "cpu.disable",
                "features need a CPU mode: Cpu.model(NAME), Cpu.host_model() or "
                "Cpu.host_passthrough()",
            )

    @classmethod
    def model(
        cls,
        name: str,
        *,
        require: Sequence[str] = (),
        disable: Sequence[str] = (),
        sockets: int | None = None,
        cores: int | None = None,
        threads: int | None = None,
        fallback: bool = False,
    ) -> Cpu:
        """A named CPU model (``mode='custom'``), e.g. ``Cpu.model("Nehalem", require=["aes"])``."""
        return cls("custom", name, require, disable, sockets, cores, threads, fallback)

    @classmethod
    def host_model(
        cls,
        *,
        require: Sequence[str] = (),
        disable: Sequence[str] = (),
        sockets: int | None = None,
        cores: int | None = None,
        threads: int | None = None,
        fallback: bool = False,
    ) -> Cpu:
        """The model closest to what the host (its hypervisor) provides, as libvirt picks it."""
        return cls("host-model", None, require, disable, sockets, cores, threads, fallback)

    @classmethod
    def host_passthrough(
        cls,
        *,
        require: Sequence[str] = (),
        disable: Sequence[str] = (),
        sockets: int | None = None,
        cores: int | None = None,
        threads: int | None = None,
    ) -> Cpu:
        """The host CPU exactly as it is (KVM only: software emulation cannot pass it through)."""
        return cls("host-passthrough", None, require, disable, sockets, cores, threads)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cpu:
        """A Cpu from a plain mapping (a spec file's ``cpu:``): ``mode``, ``model``,
        ``require``, ``disable``, ``sockets``, ``cores``, ``threads``, ``fallback``. A
        ``model`` alone implies mode ``custom``.

        Raises:
            SpecError: an unknown key (naming it) or any rule of the Cpu itself.
        """
        known = ("mode", "model", "require", "disable", "sockets", "cores", "threads", "fallback")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SpecError(f"cpu.{unknown[0]}", f"unknown key; known keys: {', '.join(known)}")
        name = data.get("model")
        mode = data.get("mode") or ("custom" if name is not None else None)
        return cls(
            mode,
            name,
            data.get("require") or (),
            data.get("disable") or (),
            data.get("sockets"),
            data.get("cores"),
            data.get("threads"),
            False if data.get("fallback") is None else data["fallback"],
        )

    @property
    def topology(self) -> tuple[int, int, int] | None:
        """(sockets, cores, threads), missing ones as 1; None when no topology is given."""
        parts = (self.sockets, self.cores, self.threads)
        if all(p is None for p in parts):
            return None
        return (self.sockets or 1, self.cores or 1, self.threads or 1)


@dataclass(frozen=True)
class IdRange:
    """Container ids ``[start, start + count)`` seen as host ids ``[target, target + count)``.

    A range is checked where it is used: building an :class:`IdMap` checks each of its
    ranges and names the one at fault (``idmap.uids[0].count``).
    """

    start: int
    target: int
    count: int

    def check(self, fieldname: str) -> None:
        """Check this range as ``fieldname`` (``idmap.uids[0]``).

        Raises:
            SpecError: naming ``fieldname.start``, ``.target`` or ``.count``: not an integer
                (bools are refused), negative, a count of 0, or a range reaching 2**32.
        """
        check_int(f"{fieldname}.start", self.start, 0, ID_LIMIT - 1)
        check_int(f"{fieldname}.target", self.target, 0, ID_LIMIT - 1)
        check_int(f"{fieldname}.count", self.count, 1, ID_LIMIT - 1)
        for side in ("start", "target"):
            if getattr(self, side) + self.count >= ID_LIMIT:
                raise SpecError(
                    f"{fieldname}.count",
                    f"{side} + count must stay below 2**32 (ids are 32-bit; -1 is no id)",
                    self.count,
                )


@dataclass(frozen=True)
class IdMap:
    """A user-namespace id map for an LXC container: which host uids and gids its ids are.

    Without one, a container shares the host's user namespace: root in the container is
    root on the host. ``IdMap.shifted(100000)`` runs container ids 0..65535 as host ids
    100000..165535, so container root is an unprivileged host uid.

    Each list needs at least one range and must map container id 0 (root: libvirt refuses a
    map without it); the ranges of one list may not overlap, neither the container ids nor
    the host ids (the kernel refuses such a map when the container starts).

    Raises:
        SpecError: on construction, naming ``idmap.uids[i].FIELD`` (or ``idmap.gids``) and
            the rule broken.
    """

    uids: Sequence[IdRange]
    gids: Sequence[IdRange]

    def __post_init__(self) -> None:
        check_fields(self, "idmap.")
        for attr in ("uids", "gids"):
            _check_id_ranges(f"idmap.{attr}", getattr(self, attr))

    @classmethod
    def shifted(cls, target: int, count: int = 65536) -> IdMap:
        """Container uids and gids ``0..count-1`` as host ids ``target..target+count-1``.

        Raises:
            SpecError: ``target`` or ``count`` out of range (see :class:`IdMap`).
        """
        return cls((IdRange(0, target, count),), (IdRange(0, target, count),))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdMap:
        """An IdMap from a plain mapping (a spec file's ``idmap:``): either ``target`` and
        an optional ``count`` (:meth:`shifted`), or ``uids`` and ``gids``, each a list of
        mappings with ``start``, ``target`` and ``count``.

        Raises:
            SpecError: an unknown key or a mix of both forms (naming it), or any rule of the
                IdMap itself.
        """
        known = ("target", "count", "uids", "gids")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SpecError(f"idmap.{unknown[0]}", f"unknown key; known keys: {', '.join(known)}")
        if "target" in data or "count" in data:
            mixed = sorted({"uids", "gids"} & set(data))
            if mixed:
                raise SpecError(f"idmap.{mixed[0]}", "give either target (and count) or lists")
            if "target" not in data:
                raise SpecError("idmap.target", "is required with count")
            return cls.shifted(data["target"], data.get("count", 65536))
        return cls(
            _ranges_from("idmap.uids", data.get("uids")),
            _ranges_from("idmap.gids", data.get("gids")),
        )


def _ranges_from(fieldname: str, items: Any) -> tuple[IdRange, ...]:
    if items is None or isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise SpecError(fieldname, "must be a list of {start, target, count}", items)
    ranges = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or set(item) != {"start", "target", "count"}:
            raise SpecError(f"{fieldname}[{i}]", "must have exactly start, target, count", item)
        ranges.append(IdRange(item["start"], item["target"], item["count"]))
    return tuple(ranges)


def _check_id_ranges(fieldname: str, ranges: tuple[IdRange, ...]) -> None:
    """Each range valid; at least one, at most the kernel's limit; no overlap; id 0 mapped."""
    if not ranges:
        raise SpecError(fieldname, "must not be empty: container id 0 (root) must be mapped")
    if len(ranges) > IDMAP_RANGES_MAX:
        raise SpecError(fieldname, f"takes at most {IDMAP_RANGES_MAX} ranges", len(ranges))
    for i, r in enumerate(ranges):
        r.check(f"{fieldname}[{i}]")
    for side in ("start", "target"):
        _check_disjoint(fieldname, ranges, side)
    if not any(r.start == 0 for r in ranges):
        raise SpecError(fieldname, "must map container id 0 (root): libvirt refuses without")


def _check_disjoint(fieldname: str, ranges: tuple[IdRange, ...], side: str) -> None:
    """No two ranges share an id on ``side`` (``start``: container, ``target``: host)."""
    order = sorted(range(len(ranges)), key=lambda i: getattr(ranges[i], side))
    for a, b in itertools.pairwise(order):
        if getattr(ranges[a], side) + ranges[a].count > getattr(ranges[b], side):
            where = "container" if side == "start" else "host"
            raise SpecError(
                f"{fieldname}[{max(a, b)}]",
                f"overlaps {fieldname}[{min(a, b)}] on the {where} side",
                ranges[max(a, b)],
            )


LIFECYCLE_ACTIONS = (
    "destroy",
    "restart",
    "preserve",
    "rename-restart",
    "coredump-destroy",
    "coredump-restart",
)


@dataclass(frozen=True)
class DomainSpec:
    """The whole desired definition of one domain, whatever its virtualization type.

    Units are in the names (``memory_mib``). A VM with a ``kernel`` boots it directly (with
    ``initrd`` and ``cmdline``); without one, its firmware boots its first disk
    (``<boot dev='hd'/>``), or its cdrom when all its disks are cdroms, or else the network
    (``<boot dev='network'/>``: PXE through its NICs); a VM with no kernel, disk or NIC is
    refused. Containers (LXC) run ``init`` (an argv list) in ``filesystems``, in a user
    namespace of their own when ``idmap`` (an :class:`IdMap`) is given. For kvm and qemu,
    ``cpu`` (a :class:`Cpu`), ``nested`` (hardware virtualization for the guest: vmx/svm under
    KVM, svm+npt under software emulation), ``machine`` (``pc``, ``q35``, ``microvm``) and
    ``firmware`` (``bios``, ``efi``; ``secure_boot`` needs efi on q35) shape the virtual
    hardware; a host checks them against what it offers before defining. ``rng`` gives a kvm
    or qemu guest a virtio random number generator fed from the host's ``/dev/urandom``, so
    its kernel's random pool is ready early in boot (a guest without a hardware random source,
    software-emulated above all, can otherwise wait seconds for its first ``getrandom()``).
    ``guest_agent`` gives a kvm or qemu guest the QEMU guest agent's virtio-serial channel
    (``org.qemu.guest_agent.0``; the guest must run qemu-guest-agent): addresses from the
    agent (``AddressSource.AGENT``) and ``exec(..., transport="agent")``.

    Every field takes a value of its annotated type, checked by :mod:`hvlib.model.checks`: an
    ``int`` field no bool or float, a list field (``disks``, ``init``, ...) a list or tuple
    but never a string or a single item, ``virt`` a :class:`VirtType` or its value string
    (``"qemu"``), ``kernel`` and ``initrd`` a ``str`` or ``os.PathLike``; ``cpu`` and
    ``idmap`` also take the mappings of a spec file (:meth:`Cpu.from_dict`,
    :meth:`IdMap.from_dict`).

    Raises:
        SpecError: on construction, for any malformed, out-of-range or wrongly typed field,
            naming it (``disks[0]``, ``cpu.require[1]``).
    """

    name: str
    virt: VirtType = VirtType.KVM
    vcpus: int = 1
    memory_mib: int = 256
    max_memory_mib: int | None = None
    max_vcpus: int | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    disks: Sequence[Disk] = ()
    nics: Sequence[Nic] = ()
    filesystems: Sequence[Filesystem] = ()
    init: Sequence[str] = ()
    uuid: str | None = None
    description: str | None = None
    autostart: bool = False
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    cpu: Cpu | None = None
    nested: bool = False
    machine: str | None = None
    firmware: str = "bios"
    secure_boot: bool = False
    xml_edits: Sequence[XmlEdit] = ()
    xml_hook: Callable[[Any], None] | None = field(default=None, compare=False)
    idmap: IdMap | None = None
    rng: bool = False
    guest_agent: bool = False

    def __post_init__(self) -> None:
        self._from_mappings()
        check_fields(self, paths=("kernel", "initrd"))
        check_name("name", self.name)
        self._check_sizes()
        self._check_boot()
        self._check_devices()
        self._check_misc()
        self._check_platform()

    def _check_sizes(self) -> None:
        check_int("vcpus", self.vcpus, 1, VCPUS_MAX)
        check_int("memory_mib", self.memory_mib, 16, MEMORY_MIB_MAX)
        if self.max_vcpus is not None:
            check_int("max_vcpus", self.max_vcpus, self.vcpus, VCPUS_MAX)
        if self.max_memory_mib is not None:
            check_int("max_memory_mib", self.max_memory_mib, self.memory_mib, MEMORY_MIB_MAX)

    def _check_boot(self) -> None:
        for name in ("kernel", "initrd"):
            value = getattr(self, name)
            if value is not None:
                check_path(name, value)
        if self.cmdline is not None:
            check_text("cmdline", self.cmdline, max_len=CMDLINE_MAX, allow_empty=True)
        if self.initrd is not None and self.kernel is None:
            raise SpecError("initrd", "needs a kernel")
        for i, arg in enumerate(self.init):
            check_text(f"init[{i}]", arg, allow_empty=i > 0)
        if self.init and not self.init[0].startswith("/"):
            raise SpecError(
                "init[0]", "must be an absolute path inside the container", self.init[0]
            )

    def _check_devices(self) -> None:
        targets = [d.target for d in self.disks if d.target is not None]
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise SpecError("disks", "targets must be unique", dupes)
        macs = [n.mac for n in self.nics if n.mac is not None]
        if len(macs) != len(set(macs)):
            raise SpecError("nics", "MAC addresses must be unique", macs)
        mounts = [f.target for f in self.filesystems]
        if len(mounts) != len(set(mounts)):
            raise SpecError("filesystems", "targets must be unique", mounts)

    def _check_misc(self) -> None:
        if self.uuid is not None:
            if not _UUID_RE.fullmatch(self.uuid):
                raise SpecError(
                    "uuid", "must be a UUID: 32 hex digits, dashed 8-4-4-4-12 or not", self.uuid
                )
            object.__setattr__(self, "uuid", _dashed_uuid(self.uuid))
        if self.description is not None:
            check_text("description", self.description, max_len=65536, allow_empty=True)
        for name in ("on_poweroff", "on_reboot", "on_crash"):
            if getattr(self, name) not in LIFECYCLE_ACTIONS:
                raise SpecError(
                    name, f"must be one of {', '.join(LIFECYCLE_ACTIONS)}", getattr(self, name)
                )

    def _check_platform(self) -> None:
        if self.machine is not None and self.machine not in MACHINES:
            raise SpecError("machine", f"must be one of {', '.join(MACHINES)}", self.machine)
        if self.firmware not in FIRMWARES:
            raise SpecError("firmware", f"must be one of {', '.join(FIRMWARES)}", self.firmware)
        if self.secure_boot and self.firmware != "efi":
            raise SpecError("secure_boot", "needs firmware 'efi'")
        if self.secure_boot and self.machine != "q35":
            raise SpecError("secure_boot", "needs machine 'q35' (secure boot needs SMM)")
        if self.machine == "microvm" and self.firmware != "bios":
            raise SpecError("firmware", "a microvm has no UEFI: it boots a kernel directly")
        self._check_topology()

    def _check_topology(self) -> None:
        topology = self.cpu.topology if self.cpu is not None else None
        if topology is None:
            return
        want = self.max_vcpus or self.vcpus
        sockets, cores, threads = topology
        if sockets * cores * threads != want:
            which = "max_vcpus" if self.max_vcpus else "vcpus"
            raise SpecError(
                "cpu.topology",
                f"sockets x cores x threads must equal {which} ({want})",
                f"{sockets}x{cores}x{threads}",
            )

    def _from_mappings(self) -> None:
        """``cpu`` and ``idmap`` given as plain mappings (a spec file's) become their classes."""
        if isinstance(self.cpu, Mapping):
            object.__setattr__(self, "cpu", Cpu.from_dict(self.cpu))
        if isinstance(self.idmap, Mapping):
            object.__setattr__(self, "idmap", IdMap.from_dict(self.idmap))

    @property
    def root_filesystem(self) -> Filesystem | None:
        """The filesystem mounted at ``/``, if any."""
        return next((f for f in self.filesystems if f.target == "/"), None)


def _dashed_uuid(text: str) -> str:
    """A UUID in libvirt's spelling: lowercase, dashed 8-4-4-4-12."""
    hexdigits = text.replace("-", "").lower()
    return "-".join(hexdigits[a:b] for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32)))
