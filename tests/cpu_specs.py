"""CPU requests whose comparison by a real host is captured in tests/fixtures/domcaps/.

``scripts/capture-domcaps.py`` asks a sandboxed libvirtd (``compareHypervisorCPU``) about the
``<cpu>`` each spec renders to and records libvirt's answer, word for word, in
``cpu-compare.json``; the tests replay those answers. Add a spec here, then re-run the capture.
"""

from __future__ import annotations

from hvlib import DomainSpec, VirtType
from hvlib.model.cpuspec import Cpu

KERNEL = "/var/lib/hvlib/vmlinuz"


def _spec(name: str, virt: VirtType, cpu: Cpu | None = None, **kw: object) -> DomainSpec:
    return DomainSpec(name=name, virt=virt, kernel=KERNEL, cpu=cpu, **kw)  # type: ignore[arg-type]


CPU_SPECS: dict[str, DomainSpec] = {
    "qemu-nehalem-aes-nopopcnt": _spec(
        "c1", VirtType.QEMU, Cpu.model("Nehalem", require=["aes"], disable=["popcnt"])
    ),
    "qemu-nehalem-avx512f": _spec("c2", VirtType.QEMU, Cpu.model("Nehalem", require=["avx512f"])),
    "qemu-nehalem-avx512f-fallback": _spec(
        "c3", VirtType.QEMU, Cpu.model("Nehalem", require=["avx512f"], fallback=True)
    ),
    "qemu-epyc": _spec("c4", VirtType.QEMU, Cpu.model("EPYC")),
    "qemu-epyc-xen-dom0": _spec(
        "c5",
        VirtType.QEMU,
        Cpu.model("EPYC", disable=["smap", "monitor", "rdtscp"]),
        nested=True,
    ),
    "qemu-nested-default": _spec("c6", VirtType.QEMU, nested=True),
    "qemu-nehalem-bogus-feature": _spec(
        "c7", VirtType.QEMU, Cpu.model("Nehalem", require=["bogus"])
    ),
    "qemu-host-model-avx512f": _spec("c8", VirtType.QEMU, Cpu.host_model(require=["avx512f"])),
    "qemu-host-model-topology": _spec(
        "c9", VirtType.QEMU, Cpu.host_model(sockets=1, cores=2, threads=1), vcpus=2
    ),
    "kvm-host-passthrough": _spec("c10", VirtType.KVM, Cpu.host_passthrough()),
    "kvm-host-passthrough-vmx": _spec("c11", VirtType.KVM, Cpu.host_passthrough(require=["vmx"])),
    "kvm-nehalem": _spec("c12", VirtType.KVM, Cpu.model("Nehalem")),
    "kvm-host-model": _spec("c13", VirtType.KVM, Cpu.host_model()),
}


LIVE_SPECS: dict[str, DomainSpec] = {
    "efi-host-model": _spec(
        "live-efi",
        VirtType.QEMU,
        Cpu.host_model(require=["aes"], cores=2),
        vcpus=2,
        machine="q35",
        firmware="efi",
        secure_boot=True,
    ),
    "nehalem-nested": _spec(
        "live-nested", VirtType.QEMU, Cpu.model("Nehalem", disable=["popcnt"]), nested=True
    ),
}
"""Specs booted by the capture (kernel and initrd replaced by the test kit's); the persistent
and the running guest's XML libvirt then reports are kept as ``live-NAME-{inactive,live}.xml``."""
