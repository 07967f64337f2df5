"""Named values hvlib uses instead of libvirt's bare integers: virtualization types and states.

Pure data: no libvirt import, no policy.
"""

from __future__ import annotations

import enum


class VirtType(enum.Enum):
    """The kind of guest. The value is the spelling used in spec files and on the CLI."""

    KVM = "kvm"
    """Hardware-assisted virtualization: QEMU with the KVM accelerator."""
    QEMU = "qemu"
    """Pure software emulation: QEMU with TCG."""
    XEN_PV = "xen-pv"
    """A paravirtualized Xen guest (its kernel is Xen-aware; no emulated firmware)."""
    XEN_PVH = "xen-pvh"
    """A Xen PVH guest: paravirtualized like PV, but run in a hardware-assisted container
    (no emulated devices or firmware; the kernel is booted directly, console on hvc0)."""
    XEN_HVM = "xen-hvm"
    """A fully virtualized Xen guest (hardware-assisted, firmware and emulated devices)."""
    LXC = "lxc"
    """An OS-level container run by libvirt's LXC driver (the host's kernel, namespaces)."""

    @property
    def is_container(self) -> bool:
        """True for types that share the host's kernel (no kernel, disks or firmware)."""
        return self is VirtType.LXC

    @property
    def is_xen(self) -> bool:
        """True for the Xen types."""
        return self in (VirtType.XEN_PV, VirtType.XEN_PVH, VirtType.XEN_HVM)


class State(enum.Enum):
    """A domain's run state: libvirt's states by name, plus ABSENT (no such domain)."""

    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    SHUT_OFF = "shut-off"
    CRASHED = "crashed"
    PM_SUSPENDED = "pm-suspended"
    UNKNOWN = "unknown"
    ABSENT = "absent"

    @property
    def is_active(self) -> bool:
        """True while the domain has a running instance (a process, a container)."""
        return self not in (State.SHUT_OFF, State.ABSENT, State.UNKNOWN)
