"""Policy: what each virtualization type is, allows and defaults to.

One :class:`Profile` per :class:`hvlib.VirtType` (data, not subclasses): its template, the
libvirt domain type and OS type, disk bus and naming, NIC model, and what it refuses.
:func:`check` raises before anything is rendered or sent to libvirt. No XML, no libvirt here.
"""

from __future__ import annotations

from dataclasses import dataclass

from hvlib.enums import VirtType
from hvlib.errors import SpecError, Unsupported
from hvlib.spec import DomainSpec


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
}
PROFILES: dict[VirtType, Profile] = {
    VirtType.KVM: Profile(VirtType.KVM, domain_type="kvm", **_HVM),  # type: ignore[arg-type]
    VirtType.QEMU: Profile(VirtType.QEMU, domain_type="qemu", **_HVM),  # type: ignore[arg-type]
    VirtType.XEN_PV: Profile(
        VirtType.XEN_PV,
        template="xen-pv",
        domain_type="xen",
        os_type="xen",
        disk_bus="xen",
        cdrom_bus="xen",
        nic_model=None,
        boots_kernel_only=True,
        filesystems=False,
        console_device="hvc0",
    ),
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
    ),
}


def profile_for(virt: VirtType) -> Profile:
    """The profile of ``virt``."""
    return PROFILES[virt]


def check(spec: DomainSpec) -> Profile:
    """Check that ``spec`` fits its virtualization type; return the type's profile.

    Raises:
        Unsupported: the type cannot do something the spec asks (a cdrom on LXC, a kernel
            command line on Xen HVM without a kernel, ...).
        SpecError: a container without a root filesystem (unless explicitly the host's).
    """
    profile = PROFILES[spec.virt]
    if profile.is_container:
        _check_container(spec)
    else:
        _check_vm(spec, profile)
    return profile


def _check_container(spec: DomainSpec) -> None:
    what = spec.virt.value
    for attr in ("kernel", "initrd", "cmdline"):
        if getattr(spec, attr) is not None:
            raise Unsupported(f"{what} containers share the host's kernel: {attr} is not allowed")
    if spec.disks:
        raise Unsupported(f"{what} containers take filesystems, not disks (or cdroms)")
    if spec.max_vcpus is not None:
        raise Unsupported(f"{what} containers have no vcpu hotplug (max_vcpus)")
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
    if spec.init:
        raise Unsupported(f"{what} guests boot a kernel or a disk; init is for containers")
    if spec.filesystems and not profile.filesystems:
        raise Unsupported(f"{what} guests cannot take host filesystems in hvlib")
    if any(f.is_host_root for f in spec.filesystems):
        raise Unsupported("Filesystem.host_root() is for containers only")
    if spec.cmdline is not None and spec.kernel is None:
        raise Unsupported(f"{what}: a kernel command line needs a kernel (direct kernel boot)")
    if profile.boots_kernel_only and spec.kernel is None:
        raise Unsupported(f"{what} guests need a kernel (hvlib sets no PV bootloader)")
    if not spec.kernel and not spec.disks:
        raise SpecError("disks", f"a {what} guest needs a kernel or at least one disk to boot")
    if spec.virt is VirtType.XEN_PV and any(d.device == "cdrom" for d in spec.disks):
        raise Unsupported("xen-pv guests have no emulated cdrom; attach the image as a disk")
