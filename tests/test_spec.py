"""Spec validation: every bad input is a SpecError naming the field, before libvirt is called;
what a virt type cannot do is Unsupported."""

from __future__ import annotations

from typing import Any

import pytest

import hvlib
from hvlib import Disk, DomainSpec, Filesystem, Nic, SpecError, Unsupported, VirtType

ROOTFS = [Filesystem.mount("/srv/ct", "/")]


def vm(**kw: Any) -> DomainSpec:
    base: dict[str, Any] = {"name": "v", "virt": VirtType.QEMU, "kernel": "/k"}
    base.update(kw)
    return DomainSpec(**base)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "a" * 65}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": "-leading"}, "name"),
        ({"memory_mib": 0}, "memory_mib"),
        ({"memory_mib": 10**9}, "memory_mib"),
        ({"memory_mib": True}, "memory_mib"),
        ({"vcpus": 0}, "vcpus"),
        ({"vcpus": 100000}, "vcpus"),
        ({"max_vcpus": 0}, "max_vcpus"),
        ({"memory_mib": 512, "max_memory_mib": 256}, "max_memory_mib"),
        ({"kernel": "relative/vmlinuz"}, "kernel"),
        ({"kernel": "/boot/../etc/shadow"}, "kernel"),
        ({"cmdline": "a\x07b"}, "cmdline"),
        ({"cmdline": "x" * 5000}, "cmdline"),
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"on_crash": "explode"}, "on_crash"),
        ({"virt": "vmware"}, "virt"),
        ({"disks": [Disk.file("/a", target="vda"), Disk.file("/b", target="vda")]}, "disks"),
    ],
)
def test_bad_input_is_a_spec_error_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        vm(**kwargs)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Disk.file("relative.img"), "disk.path"),
        (lambda: Disk.file("/a/../b.img"), "disk.path"),
        (lambda: Disk.volume("bad/pool", "v"), "disk.pool"),
        (lambda: Disk.file("/a", target="sdz0"), "disk.target"),
        (lambda: Disk.file("/a", format="vmdk"), "disk.format"),
        (lambda: Nic.network("net work"), "nic.network"),
        (lambda: Nic.network("default", mac="52:54:00:ZZ:00:00"), "nic.mac"),
        (lambda: Filesystem.mount("rel", "/"), "filesystem.source"),
        (lambda: Filesystem.mount("/srv", "relative"), "filesystem.target"),
    ],
)
def test_bad_devices_are_spec_errors(make: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        make()
    assert info.value.field == field


def test_duplicate_macs_are_refused() -> None:
    mac = "52:54:00:00:00:01"
    with pytest.raises(SpecError, match="MAC"):
        vm(nics=[Nic.network("a", mac=mac), Nic.network("b", mac=mac)])


def test_virt_type_accepts_its_string_value() -> None:
    assert vm(virt="xen-hvm").virt is VirtType.XEN_HVM


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"disks": [Disk.cdrom("/s.iso")]}, "filesystems, not disks"),
        ({"kernel": "/k"}, "share the host's kernel"),
        ({"cmdline": "x"}, "share the host's kernel"),
        ({"max_vcpus": 2}, "hotplug"),
    ],
)
def test_lxc_refuses_vm_things(kwargs: dict[str, Any], message: str) -> None:
    spec = DomainSpec(
        name="c", virt=VirtType.LXC, init=["/sbin/init"], filesystems=ROOTFS, **kwargs
    )
    with pytest.raises(Unsupported, match=message):
        hvlib.render(spec)


def test_lxc_without_root_filesystem_is_refused() -> None:
    spec = DomainSpec(name="c", virt=VirtType.LXC, init=["/sbin/init"])
    with pytest.raises(SpecError, match="host_root"):
        hvlib.render(spec)


def test_lxc_with_explicit_host_root_renders_no_filesystem() -> None:
    spec = DomainSpec(
        name="c", virt=VirtType.LXC, init=["/bin/sh"], filesystems=[Filesystem.host_root()]
    )
    assert "<filesystem" not in hvlib.render(spec)


def test_host_root_is_for_containers_only() -> None:
    with pytest.raises(Unsupported):
        hvlib.render(vm(filesystems=[Filesystem.host_root()]))


def test_init_must_be_absolute() -> None:
    with pytest.raises(SpecError, match=r"init\[0\]"):
        DomainSpec(name="c", virt=VirtType.LXC, init=["sbin/init"], filesystems=ROOTFS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {
                "virt": VirtType.XEN_HVM,
                "kernel": None,
                "cmdline": "console=ttyS0",
                "disks": [Disk.file("/d")],
            },
            "command line needs a kernel",
        ),
        ({"virt": VirtType.XEN_PV, "kernel": None, "disks": [Disk.file("/d")]}, "need a kernel"),
        ({"virt": VirtType.XEN_PV, "disks": [Disk.cdrom("/s.iso")]}, "no emulated cdrom"),
        ({"virt": VirtType.XEN_PV, "filesystems": [Filesystem.mount("/a", "/b")]}, "filesystems"),
        ({"virt": VirtType.KVM, "init": ["/sbin/init"]}, "init is for containers"),
    ],
)
def test_vm_types_refuse_what_they_cannot_do(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(Unsupported, match=message):
        hvlib.render(vm(**kwargs))


def test_vm_needs_something_to_boot() -> None:
    with pytest.raises(SpecError, match="kernel or at least one disk"):
        hvlib.render(vm(kernel=None))


def test_error_tree() -> None:
    assert issubclass(hvlib.SpecError, ValueError)
    assert issubclass(hvlib.WaitTimeout, TimeoutError)
    assert issubclass(hvlib.DomainNotFound, hvlib.NotFound)
    for cls in (
        hvlib.SpecError,
        hvlib.Unsupported,
        hvlib.HostError,
        hvlib.NotFound,
        hvlib.AlreadyExists,
        hvlib.InvalidState,
        hvlib.WaitTimeout,
        hvlib.LibvirtError,
    ):
        assert issubclass(cls, hvlib.HvlibError)
