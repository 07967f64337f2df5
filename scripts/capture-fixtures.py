"""Capture live and persistent XMLDesc() of real domains for the round-trip tests (make fixtures).

Boots, on a sandboxed libvirt host, a QEMU guest (kernel, a pool volume, a cdrom, a NIC) and an
LXC container (root filesystem, a NIC), both through hvlib, and writes their XML as libvirt
reports it to tests/fixtures/. The tests only read these files.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hvlib  # noqa: E402
from hvlib import Disk, DomainSpec, Filesystem, Nic, VirtType  # noqa: E402
from hvlib.testkit.guestkit import ensure_guest_kit, kernel_cmdline  # noqa: E402
from hvlib.testkit.sandbox import SandboxHost  # noqa: E402

OUT = ROOT / "tests" / "fixtures"


def _write(name: str, text: str) -> None:
    (OUT / name).write_text(text if text.endswith("\n") else text + "\n")
    print(f"wrote tests/fixtures/{name}")


def main() -> None:
    kit = ensure_guest_kit()
    OUT.mkdir(exist_ok=True)
    with SandboxHost("fixtures") as sb:
        image = sb.root / "images" / "data.img"
        image.write_bytes(b"\0" * 1024 * 1024)
        iso = sb.root / "seed.iso"
        iso.write_bytes(b"\0" * 64 * 1024)
        with hvlib.connect(sb.qemu_uri) as qemu:
            qemu.conn.storagePoolLookupByName("default").refresh(0)
            vm = qemu.domains.define(
                DomainSpec(
                    name="fixture-vm",
                    virt=VirtType.QEMU,
                    memory_mib=256,
                    max_memory_mib=512,
                    kernel=str(kit.kernel),
                    initrd=str(kit.initrd),
                    cmdline=kernel_cmdline(),
                    disks=[Disk.volume("default", "data.img"), Disk.cdrom(str(iso))],
                    nics=[Nic.network("default")],
                )
            )
            _write("qemu-inactive.xml", vm.xml(inactive=True))
            vm.start()
            vm.wait_for_console("hvlib-guest: ready", 90)
            _write("qemu-live.xml", vm.xml())
            vm.destroy()
            vm.undefine()
        with hvlib.connect(sb.lxc_uri) as lxc:
            ct = lxc.domains.define(
                DomainSpec(
                    name="fixture-ct",
                    virt=VirtType.LXC,
                    memory_mib=64,
                    init=["/sbin/hvlib-init"],
                    filesystems=[Filesystem.mount(str(kit.lxc_rootfs))],
                    nics=[Nic.network("default")],
                )
            )
            _write("lxc-inactive.xml", ct.xml(inactive=True))
            ct.start()
            _write("lxc-live.xml", ct.xml())
            ct.destroy()
            ct.undefine()


if __name__ == "__main__":
    main()
