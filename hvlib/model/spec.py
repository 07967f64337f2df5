"""What a user asks for: DomainSpec, validated on construction.

Every check here runs before libvirt is called, so a bad spec never half-defines a domain.
A failed check raises :class:`hvlib.SpecError` naming the field and the rule. The spec's
parts check themselves: its devices (:mod:`hvlib.model.devices`), its CPU
(:mod:`hvlib.model.cpuspec`) and a container's id map (:mod:`hvlib.model.idmap`); the text,
name and path rules are :mod:`hvlib.model.checks`'. Checks that depend on the
virtualization type (a cdrom on LXC, say) live in :mod:`hvlib.model.profiles`; checks that
need a host (does that network exist?) live in :mod:`hvlib.virt.host`. This module neither
renders XML nor talks to libvirt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hvlib.enums import VirtType
from hvlib.errors import SpecError
from hvlib.model.checks import check_fields, check_int, check_name, check_path, check_text
from hvlib.model.cpuspec import VCPUS_MAX, Cpu
from hvlib.model.devices import Disk, Filesystem, Nic, XmlEdit
from hvlib.model.idmap import IdMap

MEMORY_MIB_MAX = 4 * 1024 * 1024  # 4 TiB
CMDLINE_MAX = 4096
# Matched whole (``fullmatch``), as every pattern of hvlib's checks.
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}")
MACHINES = ("pc", "q35", "microvm")
"""``DomainSpec.machine`` values (None: the type's default, ``pc`` for kvm and qemu)."""
FIRMWARES = ("bios", "efi")
"""``DomainSpec.firmware`` values."""

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
