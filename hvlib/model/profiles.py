"""Policy: what each virtualization type is, allows and defaults to.

One :class:`Profile` per :class:`hvlib.VirtType` (data, not subclasses): its template, the
libvirt domain type and OS type, disk bus and naming, NIC model, and what it refuses.
:func:`check` raises before anything is rendered or sent to libvirt. No XML, no libvirt here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hvlib.enums import VirtType
from hvlib.errors import SpecError, Unsupported
from hvlib.model.spec import DomainSpec

NESTED_TCG_FEATURES = ("svm", "npt")
"""What software emulation's CPU gets for ``nested=True``: AMD SVM with nested paging (a
nested Xen or KVM host then runs HVM guests; TCG emulates no VMX)."""
VIRT_EXTENSIONS = {"Intel": "vmx", "AMD": "svm", "Hygon": "svm"}
"""The hardware virtualization extension of each x86 CPU vendor (as libvirt names both)."""


@dataclass(frozen=True)
class Profile:
    """What one virtualization type means in libvirt terms."""

    virt: VirtType
    template: str
    domain_type: str
    os_type: str
    disk_bus: str
    cdrom_bus: str
    nic_model: str | None
    is_container: bool = False
    boots_kernel_only: bool = False
    filesystems: bool = True
    console_device: str = "ttyS0"
    machine: str | None = None
    """The machine type rendered (the spec's, else this type's default; None: the template's)."""
    platform: bool = False
    """Whether the spec's cpu, nested, machine, firmware and rng apply (QEMU-run types)."""
    device_address: str | None = None
    """The address type of virtio devices when the machine has no PCI (``virtio-mmio``)."""
    transport: str = "ssh"
    """How commands reach inside the guest (:data:`hvlib.guest.access.TRANSPORTS`): ``ssh``
    to a VM's address, ``container`` into a container's namespaces."""

    def target_prefix(self, cdrom: bool) -> str:
        """The device-name prefix of a disk (or cdrom) on this type's bus (vd, sd, hd, xvd)."""
        return _BUS_PREFIX[self.cdrom_bus if cdrom else self.disk_bus]


_BUS_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "ide": "hd", "xen": "xvd", "": ""}


def target_name(prefix: str, index: int) -> str:
    """The ``index``-th device name with ``prefix``: vda, vdb, ..., vdz, vdaa."""
    return prefix + _letters(index)


def _letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa (the kernel's disk naming)."""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(ord("a") + rem) + out
    return out


_HVM = {
    "template": "hvm",
    "os_type": "hvm",
    "disk_bus": "virtio",
    "cdrom_bus": "ide",
    "nic_model": "virtio",
    "machine": "pc",
    "platform": True,
}


def _xen_paravirt(virt: VirtType, template: str, os_type: str) -> Profile:
    """Xen PV or PVH: a kernel booted directly, Xen's own disk bus and console (hvc0)."""
    return Profile(
        virt,
        template=template,
        domain_type="xen",
        os_type=os_type,
        disk_bus="xen",
        cdrom_bus="xen",
        nic_model=None,
        boots_kernel_only=True,
        filesystems=False,
        console_device="hvc0",
    )


_NO_CDROM = (VirtType.XEN_PV, VirtType.XEN_PVH)
"""Types without emulated devices: no cdrom drive to put an image in."""
PROFILES: dict[VirtType, Profile] = {
    VirtType.KVM: Profile(VirtType.KVM, domain_type="kvm", **_HVM),  # type: ignore[arg-type]
    VirtType.QEMU: Profile(VirtType.QEMU, domain_type="qemu", **_HVM),  # type: ignore[arg-type]
    VirtType.XEN_PV: _xen_paravirt(VirtType.XEN_PV, "xen-pv", "xen"),
    VirtType.XEN_PVH: _xen_paravirt(VirtType.XEN_PVH, "xen-pvh", "xenpvh"),
    VirtType.XEN_HVM: Profile(
        VirtType.XEN_HVM,
        template="xen-hvm",
        domain_type="xen",
        os_type="hvm",
        disk_bus="xen",
        cdrom_bus="ide",
        nic_model=None,
        filesystems=False,
    ),
    VirtType.LXC: Profile(
        VirtType.LXC,
        template="lxc",
        domain_type="lxc",
        os_type="exe",
        disk_bus="",
        cdrom_bus="",
        nic_model=None,
        is_container=True,
        console_device="",
        transport="container",
    ),
}


def machine_family(machine: str | None) -> str | None:
    """The machine type family (``pc``, ``q35``, ``microvm``) of a libvirt machine name, which
    libvirt writes versioned (``pc-i440fx-7.2``, ``pc-q35-7.2``); other names as they are."""
    if machine is None:
        return None
    if machine == "q35" or machine.startswith("pc-q35"):
        return "q35"
    if machine == "pc" or machine.startswith("pc-"):
        return "pc"
    return machine


def profile_for(virt: VirtType) -> Profile:
    """The profile of ``virt``."""
    return PROFILES[virt]


def check(spec: DomainSpec) -> Profile:
    """Check that ``spec`` fits its virtualization type; return the type's profile.

    The profile returned is the type's, adjusted to the spec's machine (a q35 puts cdroms on
    SATA, a microvm gives virtio devices MMIO addresses).

    Raises:
        Unsupported: the type cannot do something the spec asks (a cdrom on LXC, a kernel
            command line on Xen HVM without a kernel, a CPU model on Xen, host-passthrough
            under software emulation, a cdrom on a microvm, an id map on a VM, a virtio RNG
            on Xen or LXC, ...).
        SpecError: a container without a root filesystem (unless explicitly the host's).
    """
    profile = PROFILES[spec.virt]
    _check_platform(spec, profile)
    if profile.is_container:
        _check_container(spec)
    else:
        _check_vm(spec, profile)
    return for_machine(profile, spec.machine)


def for_machine(profile: Profile, machine: str | None) -> Profile:
    """``profile`` adjusted to ``machine`` (None: the profile's default machine)."""
    if not profile.platform:
        return profile
    machine = machine or profile.machine
    if machine == "q35":
        return replace(profile, machine=machine, cdrom_bus="sata")
    if machine == "microvm":
        return replace(profile, machine=machine, device_address="virtio-mmio")
    return replace(profile, machine=machine)


def _check_platform(spec: DomainSpec, profile: Profile) -> None:
    """The virtual hardware fields: only for QEMU-run guests, and what TCG cannot do."""
    asked = [
        name
        for name, given in (
            ("cpu", spec.cpu is not None),
            ("nested", spec.nested),
            ("machine", spec.machine is not None),
            ("firmware", spec.firmware != "bios"),
            ("secure_boot", spec.secure_boot),
        )
        if given
    ]
    if asked and not profile.platform:
        raise Unsupported(
            f"{spec.virt.value} guests take no {', '.join(asked)} in hvlib "
            "(cpu, nested, machine and firmware are for kvm and qemu guests)",
            field=asked[0],
        )
    if spec.rng and not profile.platform:
        kind = "containers" if profile.is_container else "guests"
        raise Unsupported(
            f"{spec.virt.value} {kind} take no virtio random number generator in hvlib "
            "(rng is for kvm and qemu guests)",
            field="rng",
        )
    if spec.guest_agent and not profile.platform:
        kind = "containers" if profile.is_container else "guests"
        raise Unsupported(
            f"{spec.virt.value} {kind} take no QEMU guest agent channel in hvlib "
            "(guest_agent is for kvm and qemu guests)",
            field="guest_agent",
        )
    if spec.virt is VirtType.QEMU and spec.cpu is not None and spec.cpu.mode == "host-passthrough":
        raise Unsupported(
            "qemu (software emulation) cannot pass the host CPU through: "
            "use Cpu.host_model() or Cpu.model(NAME)",
            field="cpu.mode",
        )
    if spec.nested and spec.cpu is not None:
        needed = NESTED_TCG_FEATURES if spec.virt is VirtType.QEMU else ("vmx", "svm")
        clash = sorted(set(needed) & set(spec.cpu.disable))
        if clash and (spec.virt is VirtType.QEMU or len(clash) == len(needed)):
            raise SpecError("cpu.disable", f"nested virtualization needs {', '.join(clash)}")
    if spec.machine == "microvm":
        _check_microvm(spec)


def _check_microvm(spec: DomainSpec) -> None:
    if spec.kernel is None:
        raise Unsupported("a microvm boots a kernel directly: it needs a kernel", field="machine")
    cdrom = _first_cdrom(spec)
    if cdrom is not None:
        raise Unsupported("a microvm has no cdrom bus: attach the image as a disk", field=cdrom)
    if spec.filesystems:
        raise Unsupported("a microvm has no PCI bus for host filesystems", field="filesystems")


def _first_cdrom(spec: DomainSpec) -> str | None:
    """``disks[i]`` of the spec's first cdrom, or None."""
    return next((f"disks[{i}]" for i, d in enumerate(spec.disks) if d.device == "cdrom"), None)


def _check_container(spec: DomainSpec) -> None:
    what = spec.virt.value
    for attr in ("kernel", "initrd", "cmdline"):
        if getattr(spec, attr) is not None:
            raise Unsupported(
                f"{what} containers share the host's kernel: {attr} is not allowed", field=attr
            )
    if spec.disks:
        raise Unsupported(
            f"{what} containers take filesystems, not disks (or cdroms)", field="disks"
        )
    if spec.max_vcpus is not None:
        raise Unsupported(f"{what} containers have no vcpu hotplug (max_vcpus)", field="max_vcpus")
    if spec.root_filesystem is None:
        raise SpecError(
            "filesystems",
            "a container needs a root filesystem (Filesystem.mount(dir, '/')); without one it "
            "would share the host's root read-write: pass Filesystem.host_root() to mean that",
        )
    if any(f.is_host_root and f.target != "/" for f in spec.filesystems):
        raise SpecError("filesystems", "Filesystem.host_root() can only be mounted at '/'")


def _check_vm(spec: DomainSpec, profile: Profile) -> None:
    what = spec.virt.value
    if spec.idmap is not None:
        rule = f"{what} guests have no user namespace: idmap is for lxc containers"
        raise Unsupported(rule, field="idmap")
    if spec.init:
        raise Unsupported(
            f"{what} guests boot a kernel or a disk; init is for containers", field="init"
        )
    if spec.filesystems and not profile.filesystems:
        raise Unsupported(
            f"{what} guests cannot take host filesystems in hvlib", field="filesystems"
        )
    root = next((i for i, f in enumerate(spec.filesystems) if f.is_host_root), None)
    if root is not None:
        rule = "Filesystem.host_root() is for containers only"
        raise Unsupported(rule, field=f"filesystems[{root}]")
    if spec.cmdline is not None and spec.kernel is None:
        rule = f"{what}: a kernel command line needs a kernel (direct kernel boot)"
        raise Unsupported(rule, field="cmdline")
    if profile.boots_kernel_only and spec.kernel is None:
        rule = f"{what} guests need a kernel (hvlib sets no PV bootloader)"
        raise Unsupported(rule, field="virt")
    if not spec.kernel and not spec.disks and not spec.nics:
        raise SpecError(
            "disks",
            f"a {what} guest needs a kernel or at least one disk to boot, or a NIC to boot "
            "from the network (PXE)",
        )
    cdrom = _first_cdrom(spec)
    if spec.virt in _NO_CDROM and cdrom is not None:
        rule = f"{what} guests have no emulated cdrom; attach the image as a disk"
        raise Unsupported(rule, field=cdrom)
