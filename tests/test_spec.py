"""Spec validation: every bad input is a SpecError naming the field, before libvirt is called;
what a virt type cannot do is Unsupported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hvlib
from hvlib import (
    Cpu,
    Disk,
    DomainSpec,
    Filesystem,
    IdMap,
    IdRange,
    Nic,
    SpecError,
    State,
    Unsupported,
    VirtType,
    XmlEdit,
)
from hvlib.model.addresses import AddressSource
from hvlib.virt.host import Host

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
    with pytest.raises(SpecError, match="kernel or at least one disk") as info:
        hvlib.render(vm(kernel=None))
    assert "or a NIC" in str(info.value)


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


# -- user-namespace id maps (LXC) -----------------------------------------------------------

ROOT_MAP = IdRange(0, 100000, 65536)


def ct(**kw: Any) -> DomainSpec:
    return DomainSpec(name="c", virt=VirtType.LXC, init=["/sbin/init"], filesystems=ROOTFS, **kw)


def test_idmap_shifted_maps_uids_and_gids_alike() -> None:
    idmap = IdMap.shifted(100000)
    assert idmap.uids == idmap.gids == (IdRange(0, 100000, 65536),)
    assert IdMap.shifted(5000, 10).uids == (IdRange(0, 5000, 10),)
    spec = ct(idmap=idmap)
    assert spec.idmap == IdMap.shifted(100000)
    assert hash(spec) == hash(ct(idmap=IdMap.shifted(100000)))


def test_idmap_lists_are_stored_as_tuples() -> None:
    idmap = IdMap(uids=[ROOT_MAP, IdRange(65536, 300000, 10)], gids=[ROOT_MAP])
    assert isinstance(idmap.uids, tuple) and isinstance(idmap.gids, tuple)
    assert hash(ct(idmap=idmap)) == hash(
        ct(idmap=IdMap((ROOT_MAP, IdRange(65536, 300000, 10)), (ROOT_MAP,)))
    )


@pytest.mark.parametrize(
    ("uids", "field"),
    [
        ([IdRange(0, 100000, 0)], "idmap.uids[0].count"),
        ([IdRange(0, 100000, -1)], "idmap.uids[0].count"),
        ([IdRange(0, 100000, True)], "idmap.uids[0].count"),
        ([IdRange(0, 100000, 2**32)], "idmap.uids[0].count"),
        ([IdRange(0, 2**32 - 10, 10)], "idmap.uids[0].count"),
        ([IdRange(-1, 100000, 10)], "idmap.uids[0].start"),
        ([IdRange(False, 100000, 10)], "idmap.uids[0].start"),
        ([IdRange(2**32, 100000, 10)], "idmap.uids[0].start"),
        ([IdRange(0, -5, 10)], "idmap.uids[0].target"),
        ([IdRange(0, 2**32, 1)], "idmap.uids[0].target"),
        ([IdRange(0, "100000", 10)], "idmap.uids[0].target"),  # type: ignore[arg-type]
        ([IdRange(0, 1.5, 10)], "idmap.uids[0].target"),  # type: ignore[arg-type]
        ([ROOT_MAP, IdRange(10, 200000, 10)], "idmap.uids[1]"),  # container ids overlap
        ([IdRange(1000, 200000, 10), ROOT_MAP], "idmap.uids[1]"),  # overlap, given out of order
        ([ROOT_MAP, IdRange(65536, 165535, 10)], "idmap.uids[1]"),  # host ids overlap
        ([ROOT_MAP, IdRange(65536, 99995, 10)], "idmap.uids[1]"),  # host ids overlap from below
        ([], "idmap.uids"),
        ([IdRange(1, 100000, 10)], "idmap.uids"),  # container root not mapped
        ("0 100000 65536", "idmap.uids"),
        ((0, 100000, 65536), "idmap.uids[0]"),
        ([ROOT_MAP] + [IdRange(70000 + i, 200000 + i, 1) for i in range(340)], "idmap.uids"),
    ],
)
def test_bad_idmap_is_a_spec_error_naming_the_range(uids: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        IdMap(uids=uids, gids=[ROOT_MAP])
    assert info.value.field == field
    with pytest.raises(SpecError) as info:
        IdMap(uids=[ROOT_MAP], gids=uids)
    assert info.value.field == field.replace("uids", "gids")


def test_idmap_ranges_that_only_touch_are_fine() -> None:
    ranges = [IdRange(10, 100010, 10), IdRange(0, 100000, 10), IdRange(20, 5, 1)]
    idmap = IdMap(uids=ranges, gids=[IdRange(0, 0, 2**32 - 1)])
    assert idmap.uids == tuple(ranges)  # kept as given; rendered in container-id order
    IdMap(
        uids=[ROOT_MAP] + [IdRange(70000 + i, 200000 + i, 1) for i in range(339)], gids=[ROOT_MAP]
    )


def test_idmap_shifted_checks_its_arguments() -> None:
    with pytest.raises(SpecError) as info:
        IdMap.shifted(-1)
    assert info.value.field == "idmap.uids[0].target"
    with pytest.raises(SpecError) as info:
        IdMap.shifted(100000, 0)
    assert info.value.field == "idmap.uids[0].count"


def test_spec_idmap_must_be_an_idmap() -> None:
    with pytest.raises(SpecError) as info:
        ct(idmap=[ROOT_MAP])
    assert info.value.field == "idmap"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"target": 100000}, IdMap.shifted(100000)),
        ({"target": 100000, "count": 1000}, IdMap.shifted(100000, 1000)),
        (
            {
                "uids": [{"start": 0, "target": 100000, "count": 65536}],
                "gids": [{"start": 0, "target": 200000, "count": 10}],
            },
            IdMap((ROOT_MAP,), (IdRange(0, 200000, 10),)),
        ),
    ],
)
def test_idmap_from_a_mapping(data: dict[str, Any], expected: IdMap) -> None:
    assert IdMap.from_dict(data) == expected
    assert ct(idmap=data).idmap == expected  # a spec file's mapping is taken as it is


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"shift": 100000}, "idmap.shift"),
        ({"count": 10}, "idmap.target"),
        ({"target": 100000, "uids": []}, "idmap.uids"),
        ({"uids": [{"start": 0, "target": 1, "count": 1}]}, "idmap.gids"),
        ({"uids": [[0, 1, 1]], "gids": []}, "idmap.uids[0]"),
        ({"uids": [{"start": 0, "target": 1}], "gids": []}, "idmap.uids[0]"),
        ({"uids": [{"start": 0, "target": 1, "count": 0}], "gids": []}, "idmap.uids[0].count"),
        ({"target": "lots"}, "idmap.uids[0].target"),
    ],
)
def test_bad_idmap_mapping_names_the_key(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        IdMap.from_dict(data)
    assert info.value.field == field


@pytest.mark.parametrize("virt", [v for v in VirtType if v is not VirtType.LXC])
def test_idmap_is_for_containers_only(virt: VirtType) -> None:
    disks = [Disk.file("/d")] if virt is not VirtType.XEN_PV else []
    spec = vm(virt=virt, disks=disks, idmap=IdMap.shifted(100000))
    with pytest.raises(Unsupported, match="idmap is for lxc containers"):
        hvlib.render(spec)


def test_lxc_renders_its_idmap() -> None:
    assert "<idmap>" not in hvlib.render(ct())
    assert "<idmap>" in hvlib.render(ct(idmap=IdMap.shifted(100000)))


def test_rng_must_be_a_bool() -> None:
    assert vm().rng is False and vm(rng=True).rng is True
    with pytest.raises(SpecError) as info:
        vm(rng="yes")
    assert info.value.field == "rng"


def test_new_fields_come_last_so_positional_arguments_keep_their_place() -> None:
    import dataclasses

    names = [f.name for f in dataclasses.fields(DomainSpec)]
    assert names[-3:] == ["idmap", "rng", "guest_agent"]


@pytest.mark.parametrize("virt", [VirtType.XEN_PV, VirtType.XEN_PVH, VirtType.XEN_HVM])
def test_rng_is_refused_for_xen(virt: VirtType) -> None:
    disks = [Disk.file("/d")] if virt is VirtType.XEN_HVM else []
    with pytest.raises(Unsupported, match=f"{virt.value} guests take no virtio random number"):
        hvlib.render(vm(virt=virt, disks=disks, rng=True))


def test_rng_is_refused_for_lxc() -> None:
    with pytest.raises(Unsupported, match=r"lxc containers take no .*rng is for kvm and qemu"):
        hvlib.render(ct(rng=True))


# -- issue 16 items 4, 6, 8: the examples of the classes the property tests cover ------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Nic.network("default", mac="52:54:00:00:00:01\n"), "nic.mac"),
        (lambda: Cpu.model("Nehalem", require=["aes\n"]), "cpu.require"),
        (lambda: Cpu.model("Nehalem\n"), "cpu.model"),
        (lambda: Disk.file("/a.img", target="vdb\n"), "disk.target"),
        (lambda: vm(name="web-1\n"), "name"),
        (lambda: vm(uuid="5b3f8f8e-6f2a-4c47-9a3e-2f5d8f0b6c11\n"), "uuid"),
        (lambda: vm(uuid=" 5b3f8f8e6f2a4c479a3e2f5d8f0b6c1"), "uuid"),
    ],
)
def test_a_trailing_newline_or_space_is_refused(make: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        make()
    assert info.value.field == field


def test_a_uuid_is_kept_in_libvirts_spelling() -> None:
    assert vm(uuid="5B3F8F8E6F2A4C479A3E2F5D8F0B6C11").uuid == (
        "5b3f8f8e-6f2a-4c47-9a3e-2f5d8f0b6c11"
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"virt": VirtType.LXC, "kernel": None, "init": "/sbin/init"}, "init"),
        ({"disks": Disk.file("/a.img")}, "disks"),
        ({"disks": "/a.img"}, "disks"),
        ({"disks": ["/a.img"]}, "disks[0]"),
        ({"disks": {"file": "/a.img"}}, "disks"),
        ({"nics": Nic.network("default")}, "nics"),
        ({"nics": [Nic.network("a"), "b"]}, "nics[1]"),
        ({"filesystems": Filesystem.mount("/srv")}, "filesystems"),
        ({"xml_edits": XmlEdit.set("./on_crash", "preserve")}, "xml_edits"),
        ({"vcpus": 2.0}, "vcpus"),
        ({"vcpus": True}, "vcpus"),
        ({"vcpus": None}, "vcpus"),
        ({"memory_mib": "512"}, "memory_mib"),
        ({"name": None}, "name"),
        ({"kernel": 42}, "kernel"),
        ({"kernel": b"/k"}, "kernel"),
        ({"autostart": 1}, "autostart"),
        ({"autostart": "yes"}, "autostart"),
        ({"cpu": "Nehalem"}, "cpu"),
        ({"cpu": {"fallback": "no"}}, "cpu.fallback"),
        ({"idmap": 100000}, "idmap"),
        ({"xml_hook": "not a function"}, "xml_hook"),
        ({"virt": "KVM"}, "virt"),
        ({"virt": 1}, "virt"),
        ({"on_crash": None}, "on_crash"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_spec_error_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(SpecError) as info:
        vm(**kwargs)
    assert info.value.field == field


def test_enums_and_paths_are_accepted_in_their_documented_spellings() -> None:
    spec = vm(virt="qemu", kernel=Path("/boot/vmlinuz"), disks=(d for d in [Disk.file("/a")]))
    assert spec.virt is VirtType.QEMU and spec.kernel == "/boot/vmlinuz"
    assert spec.disks == (Disk.file("/a"),)
    assert Disk("file", path=Path("/a")) == Disk.file("/a")  # type: ignore[arg-type]
    assert Disk.file(Path("/a")).path == "/a"
    assert Filesystem.mount(Path("/srv/r")).source == "/srv/r"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Disk.file(42), "disk.path"),  # type: ignore[arg-type]
        (lambda: Disk.file("/a", readonly="no"), "disk.readonly"),  # type: ignore[arg-type]
        (lambda: Disk.volume("p", "v", readonly=1), "disk.readonly"),  # type: ignore[arg-type]
        (lambda: Disk("disk", path="/a"), "disk.kind"),  # type: ignore[arg-type]
        (lambda: Nic.network(["default"]), "nic.network"),  # type: ignore[arg-type]
        (lambda: Nic("network", "default", mac=0x525400000001), "nic.mac"),  # type: ignore[arg-type]
        (lambda: Cpu.model("Nehalem", require="aes"), "cpu.require"),
        (lambda: Cpu.model("Nehalem", require=[1]), "cpu.require[0]"),  # type: ignore[list-item]
        (lambda: Cpu(sockets=1.0), "cpu.sockets"),  # type: ignore[arg-type]
        (lambda: IdMap(uids=IdRange(0, 1, 1), gids=[]), "idmap.uids"),  # type: ignore[arg-type]
        (lambda: IdMap(uids=[(0, 1, 1)], gids=[]), "idmap.uids[0]"),  # type: ignore[list-item]
        (lambda: XmlEdit.set(["./name"], "x"), "xml_edits.xpath"),  # type: ignore[arg-type]
        (lambda: XmlEdit.set("./on_crash", 5), "xml_edits.value"),  # type: ignore[arg-type]
        (lambda: XmlEdit.set("./on_crash", "a\x00b"), "xml_edits.value"),
        (lambda: XmlEdit("./on_crash", None), "xml_edits.value"),
    ],
)
def test_devices_of_the_wrong_type_are_spec_errors(make: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        make()
    assert info.value.field == field


# -- the public methods: a state as a State or its value string, everything else refused -----


def test_wait_for_takes_a_state_or_its_value_string(host: Host) -> None:
    dom = host.domains.get("test")  # the test driver's stock domain, running
    assert dom.wait_for("running", timeout=1) is State.RUNNING
    assert dom.wait_for(["paused", State.RUNNING], timeout=1) is State.RUNNING
    for bad, field in (("runing", "state"), (["running", 3], "state[1]"), ([], "state")):
        with pytest.raises(SpecError) as info:
            dom.wait_for(bad, timeout=1)  # type: ignore[arg-type]
        assert info.value.field == field


def test_domains_list_and_stats_take_a_state_or_its_value_string(host: Host) -> None:
    running = [d.name for d in host.domains.list(State.RUNNING)]
    assert running and [d.name for d in host.domains.list(state="running")] == running
    assert sorted(host.domains.stats("running")) == sorted(running)
    for call in (host.domains.list, host.domains.stats):
        for bad in ("Running", "up", 1, State):
            with pytest.raises(SpecError) as info:
                call(bad)  # type: ignore[arg-type]
            assert info.value.field == "state"


@pytest.mark.parametrize("bad", [42, None, b"test", ["test"], "te\x00st"])
def test_domains_get_and_find_refuse_a_name_that_is_not_one(host: Host, bad: object) -> None:
    for call in (host.domains.get, host.domains.find):
        with pytest.raises(SpecError) as info:
            call(bad)  # type: ignore[arg-type]
        assert info.value.field == "name"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda d: d.set_memory_live(-1), "kib"),  # libvirt said "numerical overflow"
        (lambda d: d.set_memory_live(2**64), "kib"),
        (lambda d: d.set_memory_live(262144.0), "kib"),
        (lambda d: d.set_memory_live(True), "kib"),
        (lambda d: d.set_vcpus_live(0), "count"),
        (lambda d: d.set_vcpus_live(-1), "count"),
        (lambda d: d.set_vcpus_live(1.0), "count"),
        (lambda d: d.set_vcpus_live("2"), "count"),
        (lambda d: d.attach_live("<disk"), "device_xml"),
        (lambda d: d.detach_live(None), "device_xml"),
        (lambda d: d.wait_for_console("(", timeout=1), "pattern"),
        (lambda d: d.wait_for_console(42, timeout=1), "pattern"),
        (lambda d: d.wait_for_address(1, family=5), "family"),
        (lambda d: d.wait_for_address(1, family=True), "family"),
        (lambda d: d.wait_for_address(1, nics=["all"]), "nics"),
        (lambda d: d.wait_for_address(1, source="dhcp"), "source"),
        (lambda d: d.addresses("dhcp"), "source"),
        (lambda d: d.shutdown(force="yes"), "force"),
        (lambda d: d.xml(inactive="yes"), "inactive"),
        (lambda d: d.start(capture_console=None), "capture_console"),
        (lambda d: setattr(d, "autostart", "no"), "autostart"),
    ],
)
def test_domain_methods_refuse_bad_arguments_naming_them(host: Host, call: Any, field: str) -> None:
    dom = host.domains.get("test")
    with pytest.raises(SpecError) as info:
        call(dom)
    assert info.value.field == field
    assert dom.state is State.RUNNING  # nothing was done


def test_enum_arguments_take_their_value_strings(host: Host) -> None:
    dom = host.domains.get("test")
    assert dom.addresses("lease") == dom.addresses(AddressSource.LEASE)
