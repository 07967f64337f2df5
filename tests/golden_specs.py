"""The specs whose rendered XML is held as golden files in tests/golden/.

`make goldens` (scripts/regen-goldens.py) rewrites the files from these specs; the tests only
read them, so a change in rendering shows up as a reviewable diff of the goldens.
"""

from __future__ import annotations

from hvlib import Disk, DomainSpec, Filesystem, IdMap, IdRange, Nic, VirtType, XmlEdit
from hvlib.model.cpuspec import Cpu
from hvlib.testkit import guestkit as gk
from hvlib.testkit.xenimage import DOM0_KIT_DIR

UUID = "5b3f8f8e-6f2a-4c47-9a3e-2f5d8f0b6c11"
MAC = "52:54:00:ab:cd:01"
KERNEL = {
    "kernel": "/var/lib/hvlib/vmlinuz",
    "initrd": "/var/lib/hvlib/initrd.img",
    "cmdline": "console=ttyS0",
}

GOLDEN_SPECS: dict[str, DomainSpec] = {
    "kvm": DomainSpec(
        name="web-1",
        virt=VirtType.KVM,
        vcpus=2,
        memory_mib=512,
        uuid=UUID,
        kernel="/var/lib/hvlib/vmlinuz",
        initrd="/var/lib/hvlib/initrd.img",
        cmdline="console=ttyS0 quiet",
        disks=[Disk.file("/var/lib/hvlib/web-1.qcow2", format="qcow2")],
        nics=[Nic.network("default", mac=MAC)],
    ),
    "qemu": DomainSpec(
        name="emu-1",
        virt=VirtType.QEMU,
        memory_mib=256,
        max_memory_mib=512,
        max_vcpus=4,
        uuid=UUID,
        kernel="/var/lib/hvlib/vmlinuz",
        initrd="/var/lib/hvlib/initrd.img",
        cmdline="console=ttyS0",
        disks=[Disk.volume("default", "emu-1.qcow2"), Disk.cdrom("/var/lib/hvlib/seed.iso")],
        nics=[Nic.network("default", mac=MAC)],
    ),
    "qemu-disk-boot": DomainSpec(
        name="disk-boot",
        virt=VirtType.QEMU,
        uuid=UUID,
        disks=[
            Disk.file("/var/lib/hvlib/root.img"),
            Disk.file("/var/lib/hvlib/data.img", readonly=True),
        ],
        nics=[Nic.bridge("br0", mac=MAC, model="e1000")],
        on_crash="preserve",
        xml_edits=[XmlEdit.set("./devices/memballoon/@model", "none")],
    ),
    # -- no kernel and no disk: the firmware boots the network (PXE through the NIC) --
    "qemu-pxe": DomainSpec(
        name="pxe-1",
        virt=VirtType.QEMU,
        uuid=UUID,
        nics=[Nic.network("default", mac=MAC)],
    ),
    # -- only a cdrom: the firmware boots it (not the hard disk it does not have) --
    "qemu-cdrom-boot": DomainSpec(
        name="iso-1",
        virt=VirtType.QEMU,
        uuid=UUID,
        disks=[Disk.cdrom("/var/lib/hvlib/install.iso")],
        nics=[Nic.network("default", mac=MAC)],
    ),
    "xen-pv": DomainSpec(
        name="pv-1",
        virt=VirtType.XEN_PV,
        uuid=UUID,
        kernel="/var/lib/hvlib/vmlinuz",
        initrd="/var/lib/hvlib/initrd.img",
        cmdline="console=hvc0",
        disks=[Disk.file("/var/lib/hvlib/pv-1.img")],
        nics=[Nic.network("default", mac=MAC)],
    ),
    "xen-pvh": DomainSpec(
        name="pvh-1",
        virt=VirtType.XEN_PVH,
        uuid=UUID,
        kernel="/var/lib/hvlib/vmlinuz",
        initrd="/var/lib/hvlib/initrd.img",
        cmdline="console=hvc0",
        disks=[Disk.file("/var/lib/hvlib/pvh-1.img")],
        nics=[Nic.network("default", mac=MAC)],
    ),
    "xen-hvm": DomainSpec(
        name="hvm-1",
        virt=VirtType.XEN_HVM,
        uuid=UUID,
        memory_mib=512,
        disks=[Disk.file("/var/lib/hvlib/hvm-1.img"), Disk.cdrom("/var/lib/hvlib/seed.iso")],
        nics=[Nic.network("default", mac=MAC)],
    ),
    "xen-hvm-kernel": DomainSpec(
        name="hvm-2",
        virt=VirtType.XEN_HVM,
        uuid=UUID,
        kernel="/var/lib/hvlib/vmlinuz",
        initrd="/var/lib/hvlib/initrd.img",
        cmdline="console=ttyS0",
    ),
    # The guests integration/test_xen.py runs on the nested Xen host: the kit's kernel and
    # initramfs as dom0 holds them, no network, no SSH (its ready line is on the console).
    "xen-pv-kit": DomainSpec(
        name="hvlib-pv",
        virt=VirtType.XEN_PV,
        uuid="0c6f3a4e-1d2b-4c5d-8e9f-a0b1c2d3e4f5",
        memory_mib=128,
        kernel=f"{DOM0_KIT_DIR}/vmlinuz",
        initrd=f"{DOM0_KIT_DIR}/initrd.img",
        cmdline=gk.kernel_cmdline("hvc0", gk.FLAG_NOSSH),
    ),
    "xen-pvh-kit": DomainSpec(
        name="hvlib-pvh",
        virt=VirtType.XEN_PVH,
        uuid="2e8b5c6a-3f4d-4e7f-a0b1-c2d3e4f5a6b7",
        memory_mib=128,
        kernel=f"{DOM0_KIT_DIR}/vmlinuz",
        initrd=f"{DOM0_KIT_DIR}/initrd.img",
        cmdline=gk.kernel_cmdline("hvc0", gk.FLAG_NOSSH),
    ),
    "xen-hvm-kit": DomainSpec(
        name="hvlib-hvm",
        virt=VirtType.XEN_HVM,
        uuid="1d7a4b5f-2e3c-4d6e-9fa0-b1c2d3e4f5a6",
        kernel=f"{DOM0_KIT_DIR}/vmlinuz",
        initrd=f"{DOM0_KIT_DIR}/initrd.img",
        cmdline=gk.kernel_cmdline("ttyS0", gk.FLAG_NOSSH, "quiet"),
    ),
    "lxc": DomainSpec(
        name="ct-1",
        virt=VirtType.LXC,
        uuid=UUID,
        memory_mib=128,
        init=["/sbin/hvlib-init", "--verbose"],
        filesystems=[
            Filesystem.mount("/var/lib/hvlib/rootfs", "/"),
            Filesystem.mount("/srv/data", "/data", readonly=True),
        ],
        nics=[Nic.network("default", mac=MAC)],
    ),
    # -- an LXC container in a user namespace of its own (issue 7): ranges given out of order
    # are rendered in container-id order, as libvirt keeps them --
    "lxc-idmap": DomainSpec(
        name="ct-2",
        virt=VirtType.LXC,
        uuid=UUID,
        memory_mib=128,
        init=["/sbin/init"],
        filesystems=[Filesystem.mount("/var/lib/hvlib/rootfs-100000", "/")],
        idmap=IdMap(
            uids=[
                IdRange(1000, 1000, 1),  # container uid 1000 is host uid 1000
                IdRange(0, 100000, 1000),
                IdRange(1001, 101001, 64535),
            ],
            gids=[IdRange(0, 100000, 65536)],
        ),
    ),
    "escaping": DomainSpec(
        name="esc-1",
        virt=VirtType.QEMU,
        uuid=UUID,
        kernel="/var/lib/hvlib/a&b <c>/vmlinuz",
        cmdline="console=ttyS0 x=\"1\" y='2' <z> & ]]>",
        description="<b>bold</b> & 'q'",
    ),
    # -- CPU modes, features, topology, nested; machine types and firmware (issue 12) --
    "cpu-host-passthrough": DomainSpec(
        name="cpu-hp", virt=VirtType.KVM, uuid=UUID, cpu=Cpu.host_passthrough(), **KERNEL
    ),
    "cpu-host-model": DomainSpec(
        name="cpu-hm",
        virt=VirtType.QEMU,
        uuid=UUID,
        cpu=Cpu.host_model(require=["aes"], disable=["monitor"]),
        **KERNEL,
    ),
    "cpu-named-features": DomainSpec(
        name="cpu-named",
        virt=VirtType.QEMU,
        uuid=UUID,
        cpu=Cpu.model("Nehalem", require=["aes", "sse4.2"], disable=["popcnt"]),
        **KERNEL,
    ),
    "cpu-named-fallback": DomainSpec(
        name="cpu-fb",
        virt=VirtType.KVM,
        uuid=UUID,
        cpu=Cpu.model("Skylake-Server", fallback=True),
        **KERNEL,
    ),
    "cpu-topology": DomainSpec(
        name="cpu-topo",
        virt=VirtType.QEMU,
        uuid=UUID,
        vcpus=2,
        max_vcpus=4,
        cpu=Cpu.model("Westmere", sockets=2, cores=2, threads=1),
        **KERNEL,
    ),
    "cpu-topology-default-model": DomainSpec(
        name="cpu-topo-d",
        virt=VirtType.KVM,
        uuid=UUID,
        vcpus=4,
        cpu=Cpu(sockets=1, cores=2, threads=2),
        **KERNEL,
    ),
    "nested-kvm": DomainSpec(name="nest-kvm", virt=VirtType.KVM, uuid=UUID, nested=True, **KERNEL),
    "nested-qemu": DomainSpec(
        name="nest-qemu", virt=VirtType.QEMU, uuid=UUID, nested=True, **KERNEL
    ),
    "nested-qemu-xen-dom0": DomainSpec(
        name="xen-dom0",
        virt=VirtType.QEMU,
        uuid=UUID,
        memory_mib=2048,
        nested=True,
        cpu=Cpu.model("EPYC", disable=["smap", "monitor", "rdtscp"]),
        **KERNEL,
    ),
    "q35": DomainSpec(
        name="q35-1",
        virt=VirtType.QEMU,
        uuid=UUID,
        machine="q35",
        disks=[Disk.file("/var/lib/hvlib/root.img"), Disk.cdrom("/var/lib/hvlib/seed.iso")],
        nics=[Nic.network("default", mac=MAC)],
    ),
    "uefi": DomainSpec(
        name="uefi-1",
        virt=VirtType.QEMU,
        uuid=UUID,
        machine="q35",
        firmware="efi",
        disks=[Disk.file("/var/lib/hvlib/esp.img", format="raw")],
    ),
    "uefi-secure-boot": DomainSpec(
        name="uefi-sb",
        virt=VirtType.KVM,
        uuid=UUID,
        machine="q35",
        firmware="efi",
        secure_boot=True,
        disks=[Disk.file("/var/lib/hvlib/esp.img", format="raw")],
    ),
    "microvm": DomainSpec(
        name="micro-1",
        virt=VirtType.QEMU,
        uuid=UUID,
        machine="microvm",
        disks=[Disk.file("/var/lib/hvlib/data.img")],
        nics=[Nic.network("default", mac=MAC)],
        **KERNEL,
    ),
    # -- a virtio RNG fed from the host's /dev/urandom (what the kit's VMs boot with): after
    # the memballoon, where libvirt writes it --
    "qemu-rng": DomainSpec(
        name="rng-1",
        virt=VirtType.QEMU,
        uuid=UUID,
        nics=[Nic.network("default", mac=MAC)],
        rng=True,
        **KERNEL,
    ),
    # -- the QEMU guest agent's virtio-serial channel (libvirt fills in the socket path) --
    "qemu-agent": DomainSpec(
        name="agent-1",
        virt=VirtType.QEMU,
        uuid=UUID,
        nics=[Nic.network("default", mac=MAC)],
        guest_agent=True,
        **KERNEL,
    ),
    "lifecycle": DomainSpec(
        name="life-1",
        virt=VirtType.KVM,
        uuid=UUID,
        autostart=True,  # not XML: virDomainSetAutostart after define
        on_poweroff="preserve",
        on_reboot="destroy",
        on_crash="coredump-restart",
        **KERNEL,
    ),
}
