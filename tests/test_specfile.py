"""Spec files: YAML maps one-to-one onto DomainSpec, NetworkSpec and the arguments of
Volumes.ensure; every error names the file, the line and the field (as a path into the
document), and the rule; the README's examples are valid."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hvlib
from hvlib import Disk, DomainSpec, Filesystem, IdMap, IdRange, Nic, VirtType, XmlEdit, specfile
from hvlib.errors import SpecError, SpecFileError
from hvlib.model.cpuspec import Cpu
from hvlib.model.netplan import DhcpHost, NetworkSpec
from hvlib.specfile import (
    DOMAIN_KEYS,
    KEYS,
    KINDS,
    NETWORK_KEYS,
    VOLUME_KEYS,
    VolumeDocument,
    load,
    load_all,
    loads,
)
from hvlib.specyaml import (
    MAX_ALIASES,
    MAX_CHARS,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_ITEMS,
    MAX_KEY_CHARS,
    MAX_NODES,
    MAX_SCALAR_CHARS,
)
from hvlib.virt.storage import Volumes
from tests import fuzz_worker

README = Path(__file__).resolve().parent.parent / "README.md"
README_SECTION = "## Command line and spec files"


def one(text: str) -> DomainSpec:
    sf = loads(text, "f.yaml")
    assert len(sf.domains) == 1 and not sf.networks and not sf.volumes
    return sf.domains[0].spec


def error(text: str) -> SpecFileError:
    with pytest.raises(SpecFileError) as info:
        loads(text, "f.yaml")
    return info.value


def test_every_spec_field_has_a_key() -> None:
    fields = {f.name for f in dataclasses.fields(DomainSpec)} - {"xml_hook"}
    assert set(DOMAIN_KEYS) == fields | {"kind"}
    network_fields = tuple(f.name for f in dataclasses.fields(NetworkSpec))
    assert ["kind", *network_fields] == list(NETWORK_KEYS)
    params = list(inspect.signature(Volumes.ensure).parameters)
    assert params[:3] == ["self", "pool", "name"]
    # data: bytes, library only; check: the --check of `hvlib up`, not a key
    assert set(VOLUME_KEYS) == {"kind", *params[1:]} - {"data", "check"}


def test_a_vm_maps_onto_the_same_domainspec() -> None:
    spec = one(
        """
name: web-1
virt: qemu
vcpus: 2
max_vcpus: 4
memory_mib: 512
max_memory_mib: 1024
kernel: /srv/vmlinuz
initrd: /srv/initrd.img
cmdline: console=ttyS0 quiet
disks:
  - file: /srv/web-1.qcow2
    format: qcow2
  - cdrom: /srv/seed.iso
    target: hdc
  - volume: {pool: default, name: data}
    target: vdc
    readonly: true
nics:
  - network: default
    mac: 52:54:00:12:34:56
  - bridge: br0
    model: e1000
uuid: 4d2ba8a2-7c2e-4b0f-a2b3-111111111111
description: the web server
autostart: true
on_poweroff: destroy
on_reboot: restart
on_crash: preserve
rng: true
xml_edits:
  - set: ./devices/console/@type
    value: pty
  - remove: ./devices/memballoon
"""
    )
    assert spec == DomainSpec(
        name="web-1",
        virt=VirtType.QEMU,
        vcpus=2,
        max_vcpus=4,
        memory_mib=512,
        max_memory_mib=1024,
        kernel="/srv/vmlinuz",
        initrd="/srv/initrd.img",
        cmdline="console=ttyS0 quiet",
        disks=[
            Disk.file("/srv/web-1.qcow2", format="qcow2"),
            Disk.cdrom("/srv/seed.iso", target="hdc"),
            Disk.volume("default", "data", target="vdc", readonly=True),
        ],
        nics=[Nic.network("default", mac="52:54:00:12:34:56"), Nic.bridge("br0", model="e1000")],
        uuid="4d2ba8a2-7c2e-4b0f-a2b3-111111111111",
        description="the web server",
        autostart=True,
        on_crash="preserve",
        rng=True,
        xml_edits=[
            XmlEdit.set("./devices/console/@type", "pty"),
            XmlEdit.delete("./devices/memballoon"),
        ],
    )


def test_a_container_maps_onto_the_same_domainspec() -> None:
    spec = one(
        """
name: ct-1
virt: lxc
memory_mib: 128
init: [/sbin/init, --log, "2"]
filesystems:
  - source: /srv/ct-1/rootfs
  - {source: /srv/data, target: /data, readonly: true}
"""
    )
    assert spec == DomainSpec(
        name="ct-1",
        virt=VirtType.LXC,
        memory_mib=128,
        init=["/sbin/init", "--log", "2"],
        filesystems=[
            Filesystem.mount("/srv/ct-1/rootfs", "/"),
            Filesystem.mount("/srv/data", "/data", readonly=True),
        ],
    )


def test_host_root_is_spelled_out() -> None:
    spec = one("name: ct\nvirt: lxc\ninit: [/sbin/init]\nfilesystems: [host_root]\n")
    assert spec.filesystems == (Filesystem.host_root(),)


def test_defaults_and_nulls_mean_the_field_default() -> None:
    assert one("name: vm\nkernel: /k\nvcpus:\ndisks: ~\n") == DomainSpec(name="vm", kernel="/k")


def test_unquoted_scalars_of_string_fields_are_taken_as_written() -> None:
    # YAML 1.1 reads these as a number, a bool and an int; the fields are strings
    spec = one(
        "name: 2024\nvirt: qemu\nkernel: /k\ncmdline: no\n"
        "nics: [{network: on, mac: 52:54:00:00:00:01}]\n"
    )
    assert (spec.name, spec.cmdline) == ("2024", "no")
    assert spec.nics == (Nic.network("on", mac="52:54:00:00:00:01"),)


def test_several_documents_and_kinds() -> None:
    sf = loads(
        "---\nname: a\nkernel: /k\n---\n---\nkind: network\nname: net0\nipv4: 192.0.2.0/24\n"
        "---\nkind: volume\npool: p\nname: v\nsize_mib: 1\n---\nkind: domain\nname: b\n"
        "kernel: /k\n",
        "f.yaml",
    )
    assert [d.spec.name for d in sf.domains] == ["a", "b"]
    assert [(d.location.line) for d in sf.domains] == [2, 15]
    assert [(n.spec.name, n.location.line) for n in sf.networks] == [("net0", 6)]
    assert [(v.key, v.location.line) for v in sf.volumes] == [("p/v", 10)]


NETWORK = """\
kind: network
name: lan
ipv4: 192.0.2.0/24
mode: isolated
dhcp_range: [192.0.2.100, 192.0.2.199]
hosts:
  - mac: 52:54:00:00:00:01
    ip: 192.0.2.10
    name: web-1
  - {mac: 52:54:00:00:00:0B, ip: 192.0.2.11}
bridge: virbr-lan
autostart: false
"""


def test_a_network_maps_onto_the_same_networkspec() -> None:
    (doc,) = loads(NETWORK, "f.yaml").networks
    assert doc.spec == NetworkSpec(
        name="lan",
        ipv4="192.0.2.0/24",
        mode="isolated",
        dhcp_range=("192.0.2.100", "192.0.2.199"),
        hosts=[
            DhcpHost("52:54:00:00:00:01", "192.0.2.10", "web-1"),
            DhcpHost("52:54:00:00:00:0b", "192.0.2.11"),
        ],
        bridge="virbr-lan",
        autostart=False,
    )
    assert doc.locate("hosts[1].ip").line == 10 and doc.locate("bridge").line == 11


def test_a_network_takes_the_spec_defaults() -> None:
    (doc,) = loads("kind: network\nname: n\nipv4: 192.0.2.1/24\nhosts: ~\n", "f.yaml").networks
    assert doc.spec == NetworkSpec("n", "192.0.2.1/24")


def test_volumes_map_onto_the_arguments_of_volumes_ensure() -> None:
    sf = loads(
        "kind: volume\npool: {name: images, dir: /srv/images}\nname: base.img\nsize_mib: 64\n"
        "---\nkind: volume\npool: images\nname: web-1.qcow2\n"
        "backing: {pool: images, name: base.img}\nsize_mib: 128\n",
        "f.yaml",
    )
    base, over = sf.volumes
    assert (base.pool, base.name, base.pool_dir, base.image_format) == (
        "images",
        "base.img",
        "/srv/images",
        "raw",
    )
    assert base.ensure_args() == {"size_mib": 64, "format": None, "backing": None}
    assert (over.pool_dir, over.image_format) == (None, "qcow2")
    assert over.ensure_args() == {
        "size_mib": 128,
        "format": None,
        "backing": ("images", "base.img"),
    }
    assert over.locate("backing.name").line == 9


def test_anchors_and_merge_keys_are_yaml_as_usual() -> None:
    sf = loads(
        "name: a\nvirt: qemu\nkernel: &k /srv/vmlinuz\n---\n"
        "name: b\nvirt: qemu\nkernel: /srv/other\ndisks: &d [{file: /srv/b.img}]\n",
        "f.yaml",
    )
    assert sf.domains[0].spec.kernel == "/srv/vmlinuz"
    merged = loads("name: c\n<<: {virt: qemu, kernel: /k, vcpus: 2}\nvcpus: 3\n", "f.yaml").domains[
        0
    ]
    assert (merged.spec.kernel, merged.spec.vcpus) == ("/k", 3)


VM = "name: v\nvirt: qemu\nkernel: /k\n"
CT = "name: c\nvirt: lxc\ninit: [/sbin/init]\nfilesystems:\n  - {source: /srv/c, target: /}\n"


@pytest.mark.parametrize(
    ("text", "line", "field", "rule"),
    [
        ("name: v\nvcpu: 2\n", 2, "vcpu", "unknown key (did you mean 'vcpus'?)"),
        ("name: v\nxml_hook: x\n", 2, "xml_hook", "unknown key"),
        ("name: v\nname: w\n", 2, "name", "is given twice"),
        ("vcpus: 2\n", 1, "name", "is required"),
        ("- a\n", 1, "document", "must be a mapping"),
        ("name: v\n  x: [\n", 2, "yaml", "mapping values are not allowed"),
        ("name: [v]\n", 1, "name", "must be a single value"),
        ("name: a/b\n", 1, "name", "must start with a letter or digit"),
        ("name: v\nvirt: vmware\n", 2, "virt", "must be one of kvm, qemu, xen-pv"),
        ("name: v\nkind: pod\n", 2, "kind", "must be one of domain, network, volume"),
        (VM + "vcpus: two\n", 4, "vcpus", "must be an integer"),
        (VM + "idmap: {target: 100000}\n", 4, "idmap", "idmap is for lxc containers"),
        (CT + "idmap: 100000\n", 6, "idmap", "must be a mapping"),
        (CT + "idmap: {target: 100000, shift: 2}\n", 6, "idmap.shift", "unknown key"),
        (
            CT + "idmap:\n  uids: [{start: 0, target: 1, count: 9}]\n  gids:\n"
            "    - {start: 0, target: 1, count: 9}\n    - {start: 5, target: 50, count: 0}\n",
            10,
            "idmap.gids[1].count",
            "must be between 1",
        ),
        (VM + "cpu: {model: EPYC, sockets: many}\n", 4, "cpu.sockets", "must be an integer"),
        (VM + "vcpus: 0\n", 4, "vcpus", "must be between 1 and 512"),
        (VM + "memory_mib: 1G\n", 4, "memory_mib", "must be an integer"),
        (VM + "memory_mib: 512\nmax_memory_mib: 256\n", 5, "max_memory_mib", "between 512"),
        (VM + "autostart: sometimes\n", 4, "autostart", "must be true or false"),
        (VM + "rng: 1\n", 4, "rng", "must be true or false"),
        (CT + "rng: true\n", 6, "rng", "rng is for kvm and qemu guests"),
        (VM + "uuid: nope\n", 4, "uuid", "must be a UUID"),
        (VM + "on_crash: explode\n", 4, "on_crash", "must be one of destroy"),
        ("name: v\nvirt: qemu\ninitrd: /i\n", 3, "initrd", "needs a kernel"),
        ("name: v\nvirt: qemu\nkernel: vmlinuz\n", 3, "kernel", "must be an absolute path"),
        (VM + "disks:\n  - file: rel.img\n", 5, "disks[0].file", "must be an absolute path"),
        (
            VM + "disks:\n  - {file: /a}\n  - file: /b\n    target: sda1\n",
            7,
            "disks[1].target",
            "must look like vda",
        ),
        (VM + "disks:\n  - file: /a\n    format: vmdk\n", 6, "disks[0].format", "raw' or 'qcow2"),
        (VM + "disks:\n  - file: /a\n    size: 5\n", 6, "disks[0].size", "unknown key"),
        (VM + "disks:\n  - {file: /a, cdrom: /b}\n", 5, "disks[0]", "exactly one of file"),
        (VM + "disks:\n  - /a.img\n", 5, "disks[0]", "must be a mapping"),
        (VM + "disks: /a.img\n", 4, "disks", "must be a list"),
        (VM + "disks:\n  - volume: {pool: p}\n", 5, "disks[0].volume.name", "is required"),
        (
            VM + "disks:\n  - volume: {pool: p, name: n, size: 1}\n",
            5,
            "disks[0].volume.size",
            "unknown key",
        ),
        (
            VM + "disks:\n  - volume:\n      pool: 'a b'\n      name: n\n",
            6,
            "disks[0].volume.pool",
            "must start with a letter",
        ),
        (
            VM + "disks:\n  - cdrom: /x.iso\n    readonly: false\n",
            6,
            "disks[0].readonly",
            "always read-only",
        ),
        (
            VM + "disks:\n  - {file: /a, target: vda}\n  - {file: /b, target: vda}\n",
            4,
            "disks",
            "targets must be unique",
        ),
        (
            VM + "nics:\n  - network: default\n    mac: 52:54:00:AA:00:01\n",
            6,
            "nics[0].mac",
            "six lowercase hex pairs",
        ),
        (VM + "nics:\n  - {network: a, bridge: b}\n", 5, "nics[0]", "exactly one of network"),
        (
            VM + "nics:\n  - network: default\n    modle: e1000\n",
            6,
            "nics[0].modle",
            "did you mean 'model'",
        ),
        (VM + "nics:\n  - bridge: 'br 0'\n", 5, "nics[0].bridge", "must start with a letter"),
        ("name: c\nvirt: lxc\ninit: /sbin/init\n", 3, "init", "must be a list"),
        ("name: c\nvirt: lxc\ninit: [/sbin/init, [x]]\n", 3, "init[1]", "single value"),
        (
            "name: c\nvirt: lxc\ninit: [sbin/init]\nfilesystems: [host_root]\n",
            3,
            "init[0]",
            "absolute path inside the container",
        ),
        (
            "name: c\nvirt: lxc\ninit: [/i]\nfilesystems:\n  - source: srv\n",
            5,
            "filesystems[0].source",
            "must be an absolute path",
        ),
        (
            "name: c\nvirt: lxc\ninit: [/i]\nfilesystems:\n  - target: /\n",
            5,
            "filesystems[0].source",
            "is required",
        ),
        (
            "name: c\nvirt: lxc\ninit: [/i]\nfilesystems:\n  - {source: /s, mode: rw}\n",
            5,
            "filesystems[0].mode",
            "unknown key",
        ),
        (
            "name: c\nvirt: lxc\ninit: [/i]\nfilesystems: [host-root]\n",
            4,
            "filesystems[0]",
            "the word host_root",
        ),
        (VM + "xml_edits:\n  - set: ./on_crash\n", 5, "xml_edits[0].value", "is required"),
        (VM + "xml_edits:\n  - {set: ./a, remove: ./b}\n", 5, "xml_edits[0]", "exactly one"),
        (VM + "xml_edits:\n  - remove: ''\n", 5, "xml_edits[0].remove", "must not be empty"),
        # what the virt type refuses is blamed on the key that asks for it
        ("name: c\nvirt: lxc\ninit: [/i]\n", 1, "filesystems", "needs a root filesystem"),
        (
            "name: c\nvirt: lxc\ninit: [/i]\nfilesystems: [host_root]\nkernel: /k\n",
            5,
            "kernel",
            "share the host's kernel",
        ),
        (
            "name: c\nvirt: lxc\ninit: [/i]\nfilesystems: [host_root]\ndisks: [{file: /a}]\n",
            5,
            "disks",
            "not disks",
        ),
        (VM + "init: [/sbin/init]\n", 4, "init", "init is for containers"),
        ("name: v\nvirt: xen-pv\ndisks: [{file: /a}]\n", 2, "virt", "need a kernel"),
        (
            "name: v\nvirt: qemu\ncmdline: quiet\ndisks: [{file: /a}]\n",
            3,
            "cmdline",
            "command line needs a kernel",
        ),
        (
            "name: v\nvirt: xen-pv\nkernel: /k\ndisks: [{cdrom: /a.iso}]\n",
            4,
            "disks[0]",
            "no emulated cdrom",
        ),
        ("name: v\nvirt: kvm\n", 1, "disks", "needs a kernel or at least one disk"),
    ],
)
def test_errors_carry_file_line_field_and_rule(text: str, line: int, field: str, rule: str) -> None:
    e = error(text)
    assert (e.path, e.line, e.field) == ("f.yaml", line, field), str(e)
    assert rule in e.rule
    assert re.match(rf"f\.yaml:{line}(:\d+)?: {re.escape(field)}: ", str(e)), str(e)
    assert isinstance(e, SpecError) and isinstance(e, ValueError)


NET = "kind: network\nname: n\nipv4: 192.0.2.0/24\n"
VOL = "kind: volume\npool: p\nname: v\n"


@pytest.mark.parametrize(
    ("text", "line", "field", "rule"),
    [
        ("kind: network\nname: n\n", 1, "ipv4", "is required"),
        ("kind: network\nipv4: 192.0.2.0/24\n", 1, "name", "is required"),
        (NET + "host: []\n", 4, "host", "unknown key (did you mean 'hosts'?)"),
        (NET + "data: x\n", 4, "data", "unknown key"),
        ("kind: network\nname: n\nipv4: 192.0.2.0\n", 3, "ipv4", "must be a CIDR"),
        (NET + "mode: bridge\n", 4, "mode", "must be 'nat' or 'isolated'"),
        (NET + "autostart: maybe\n", 4, "autostart", "must be true or false"),
        (NET + "dhcp_range: 192.0.2.9\n", 4, "dhcp_range", "must be a list"),
        (NET + "dhcp_range: [192.0.2.9]\n", 4, "dhcp_range", "pair"),
        (NET + "dhcp_range: [192.0.2.1, 192.0.2.9]\n", 4, "dhcp_range", "bridge's own address"),
        (NET + "bridge: 'br 0'\n", 4, "bridge", "must be 1-15 of"),
        (NET + "hosts:\n  - ip: 192.0.2.3\n", 5, "hosts[0].mac", "is required"),
        (
            NET + "hosts:\n  - mac: 52:54:00:00:00:zz\n    ip: 192.0.2.3\n",
            5,
            "hosts[0].mac",
            "six hex pairs",
        ),
        (
            NET + "hosts:\n  - mac: 52:54:00:00:00:01\n    ip: 198.51.100.3\n",
            6,
            "hosts[0].ip",
            "must be a host address inside 192.0.2.0/24",
        ),
        (
            NET + "hosts:\n  - mac: 52:54:00:00:00:01\n    ip: 192.0.2.3\n    name: a_b\n",
            7,
            "hosts[0].name",
            "DNS label",
        ),
        (
            NET + "hosts:\n  - {mac: 52:54:00:00:00:01, ip: 192.0.2.3}\n"
            "  - {mac: 52:54:00:00:00:02, ip: 192.0.2.3}\n",
            4,
            "hosts",
            "each ip must be reserved once",
        ),
        (
            NET + "hosts:\n  - {mac: 52:54:00:00:00:01, ip: 192.0.2.3, mask: 24}\n",
            5,
            "hosts[0].mask",
            "unknown key",
        ),
        ("kind: volume\nname: v\nsize_mib: 1\n", 1, "pool", "is required"),
        ("kind: volume\npool: p\nsize_mib: 1\n", 1, "name", "is required"),
        (VOL, 1, "size_mib", "is required when there is no backing volume"),
        (VOL + "size_mib: 0\n", 4, "size_mib", "must be between 1 and"),
        (VOL + "size_mib: 1G\n", 4, "size_mib", "must be an integer number of MiB"),
        (VOL + "size_mib: 1\nformat: vmdk\n", 5, "format", "must be 'raw' or 'qcow2'"),
        (VOL + "size_mib: 1\nsize: 2\n", 5, "size", "unknown key (did you mean 'size_mib'?)"),
        (VOL + "data: hello\n", 4, "data", "has no spelling in a file"),
        (VOL + "format: raw\nbacking: {pool: p, name: b}\n", 4, "format", "must be qcow2"),
        (VOL + "backing: {pool: p}\n", 4, "backing.name", "is required"),
        (VOL + "backing: p/b\n", 4, "backing", "must be a mapping"),
        (VOL + "backing: {pool: p, name: ../b}\n", 4, "backing.name", "must start with"),
        ("kind: volume\npool: p\nname: ../v\nsize_mib: 1\n", 3, "name", "must start with"),
        ("kind: volume\npool: 'a b'\nname: v\nsize_mib: 1\n", 2, "pool", "must start with"),
        ("kind: volume\npool: {name: p}\nname: v\nsize_mib: 1\n", 2, "pool.dir", "is required"),
        (
            "kind: volume\npool:\n  name: p\n  dir: srv/p\nname: v\nsize_mib: 1\n",
            4,
            "pool.dir",
            "must be an absolute path",
        ),
        (
            "kind: volume\npool: {name: p, dir: /p, type: dir}\nname: v\nsize_mib: 1\n",
            2,
            "pool.type",
            "unknown key",
        ),
    ],
)
def test_network_and_volume_errors_carry_file_line_field_and_rule(
    text: str, line: int, field: str, rule: str
) -> None:
    e = error(text)
    assert (e.path, e.line, e.field) == ("f.yaml", line, field), str(e)
    assert rule in e.rule, str(e)
    assert str(e).startswith(f"f.yaml:{line}: {field}: "), str(e)


def test_networks_volumes_and_pool_dirs_are_declared_once_across_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(NET + "---\n" + VOL + "size_mib: 1\n")
    b.write_text("# again\n" + NET)
    with pytest.raises(SpecFileError) as info:
        load_all([a, b])
    assert str(info.value).startswith(f"{b}:3: name: is already declared at {a}:1")
    b.write_text(VOL + "size_mib: 2\n")
    with pytest.raises(SpecFileError) as info:
        load_all([a, b])
    assert str(info.value).startswith(f"{b}:3: name: is already declared at {a}:5 (got 'p/v')")
    a.write_text("kind: volume\npool: {name: p, dir: /srv/p/}\nname: v1\nsize_mib: 1\n")
    b.write_text("kind: volume\npool: {name: p, dir: /srv/q}\nname: v2\nsize_mib: 1\n")
    with pytest.raises(SpecFileError) as info:
        load_all([a, b])
    assert str(info.value).startswith(
        f"{b}:2: pool.dir: pool p is declared at {a}:2 with dir /srv/p/"
    )
    b.write_text("kind: volume\npool: {name: p, dir: /srv/p}\nname: v2\nsize_mib: 1\n")
    assert [v.pool_dir for sf in load_all([a, b]) for v in sf.volumes] == ["/srv/p/", "/srv/p"]
    assert isinstance(load_all([a])[0].volumes[0], VolumeDocument)


def test_reading_domains_does_not_import_libvirt() -> None:
    # hvlib.virt.network and hvlib.virt.storage load libvirt: only a network or volume document does
    code = (
        "import sys; from hvlib.specfile import loads; loads('name: v\\nkernel: /k\\n'); "
        "print('libvirt' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_unknown_key_names_the_known_ones() -> None:
    e = error("name: v\nmemory: 512\n")
    assert "known keys: kind, name, virt, vcpus, memory_mib" in e.rule


def test_the_first_error_of_several_documents_is_reported() -> None:
    e = error("name: a\nkernel: /k\n---\nname: b\nkernel: /k\nvcpus: -1\n")
    assert (e.line, e.field) == (6, "vcpus")


def test_later_errors_about_a_document_get_its_lines() -> None:
    doc = loads(VM + "nics:\n  - network: nowhere\n  - network: default\n", "f.yaml").domains[0]
    located = doc.error(SpecError("nics[1].network", "does not exist on this host", "x"))
    assert (located.line, located.field) == (6, "nics[1].network")
    assert str(located) == "f.yaml:6: nics[1].network: does not exist on this host (got 'x')"
    assert doc.locate("disks[3].pool") == doc.location  # no such key: the document's line
    assert doc.locate("kernel").line == 3


def test_files_are_read_and_names_are_unique_across_them(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(VM)
    b.write_text("# same name\n" + VM)
    assert load(a).domains[0].spec.name == "v"
    with pytest.raises(SpecFileError) as info:
        load_all([a, b])
    assert str(info.value).startswith(f"{b}:2: name: is already declared at {a}:1")


def test_an_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SpecFileError) as info:
        load(tmp_path / "missing.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'missing.yaml'}:0: file: cannot be read")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"name: v\ndescription: caf\xe9\n")
    with pytest.raises(SpecFileError, match=r"bin\.yaml:2:17: file: is not UTF-8 text \(byte 0xe9"):
        load(bad)


def readme_examples() -> list[str]:
    text = README.read_text()
    assert README_SECTION in text, "README has no spec-file section"
    section = text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]  # up to the next section
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


def test_readme_has_a_valid_example_per_virt_type() -> None:
    seen: set[VirtType] = set()
    for i, block in enumerate(readme_examples()):
        sf = loads(block, f"README example {i}")
        for doc in sf.domains:
            hvlib.validate(hvlib.render(doc.spec))  # libvirt's own RelaxNG schema
            seen.add(doc.spec.virt)
    assert seen == set(VirtType)


def test_idmap_and_cpu_map_onto_their_spec_types() -> None:
    short = loads(CT + "idmap: {target: 100000, count: 1000}\n", "f.yaml").domains[0].spec
    assert short.idmap == IdMap.shifted(100000, 1000)
    ranges = "[{start: 0, target: 200000, count: 10}, {start: 10, target: 300000, count: 5}]"
    long = loads(CT + f"idmap:\n  uids: {ranges}\n  gids: {ranges}\n", "f.yaml").domains[0]
    pairs = (IdRange(0, 200000, 10), IdRange(10, 300000, 5))
    assert long.spec.idmap == IdMap(pairs, pairs)
    vm = loads(VM + "cpu: {model: EPYC, disable: [smap]}\n", "f.yaml").domains[0].spec
    assert vm.cpu == Cpu.model("EPYC", disable=["smap"])


# -- issue 16, items 2 and 8: bounded reading; every error a SpecFileError at FILE:LINE ------

LOCATED = re.compile(r"f\.yaml:(\d+)(?::(\d+))?: ")
LISTS_OF_SCALARS = {  # a document, and a key in it whose value is a list of strings
    "cpu.require": (VM + "cpu:\n  model: EPYC\n  require: ", ""),
    "cpu.disable": (VM + "cpu:\n  model: EPYC\n  disable: ", ""),
    "init": (CT.replace("init: [/sbin/init]\n", "") + "init: ", ""),
    "dhcp_range": ("kind: network\nname: n\nipv4: 192.0.2.0/24\ndhcp_range: ", ""),
    "xml_edits": (VM + "xml_edits: ", ""),
    "disks": (VM + "disks: ", ""),
    "hosts": ("kind: network\nname: n\nipv4: 192.0.2.0/24\nhosts: ", ""),
    "idmap.uids": (CT + "idmap:\n  gids: [{start: 0, target: 1000, count: 1}]\n  uids: ", ""),
}


def located(e: SpecFileError) -> tuple[int, int | None]:
    """The line and column ``str(e)`` names (and the attributes agree)."""
    m = LOCATED.match(str(e))
    assert m, str(e)
    line, col = int(m[1]), None if m[2] is None else int(m[2])
    assert (e.line, e.column) == (line, col)
    assert "\n" not in str(e)
    return line, col


def bomb(levels: int, width: int, leaf: str = "aes") -> str:
    """A flow list of anchors, each a list of ``width`` aliases of the one before."""
    parts = [f"&b0 [{leaf}]"]
    parts += [f"&b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return f"[{', '.join(parts)}]"


def loads_bounded(text: str, tmp: Path) -> dict[str, Any] | None:
    """``load`` of ``text`` in a child under 1 GiB and 10 s (tests/fuzz_worker.py), so that
    what once took 4.3 GB fails this test instead of eating the machine: None when valid,
    else the SpecFileError's attributes (``path``, ``line``, ``column``, ``field``, ``rule``,
    ``message``), checked to name FILE:LINE:COL on one line."""
    path = tmp / "f.yaml"
    path.write_text(text)
    outcome, detail = fuzz_worker.run_isolated(str(path), mode="load")
    assert outcome in ("ok", "refused"), detail
    if outcome == "ok":
        return None
    info: dict[str, Any] = json.loads(detail)
    col = "" if info["column"] is None else f":{info['column']}"
    assert info["message"].startswith(f"{path}:{info['line']}{col}: {info['field']}: ")
    assert "\n" not in info["message"]
    return info


@given(
    where=st.sampled_from(sorted(LISTS_OF_SCALARS)),
    levels=st.integers(2, 30),
    width=st.integers(2, 40),
)
@settings(max_examples=30, deadline=None)
def test_alias_bombs_are_refused_in_bounded_time(
    tmp_path_factory: pytest.TempPathFactory, where: str, levels: int, width: int
) -> None:
    """Item 2: a list whose aliases expand past MAX_NODES is refused at the alias that
    crosses the limit (whatever key it is under), in well under a second."""
    head, tail = LISTS_OF_SCALARS[where]
    text = head + bomb(levels, width) + "\n" + tail
    expanded = sum(width**i for i in range(levels + 1))
    started = time.monotonic()
    refused = loads_bounded(text, tmp_path_factory.mktemp("b"))
    assert time.monotonic() - started < 5
    if expanded > MAX_NODES:
        assert refused is not None and refused["field"] == "yaml", refused
        assert "expands to more than" in refused["rule"] or "aliases" in refused["rule"]
        assert text.splitlines()[refused["line"] - 1][refused["column"] - 1] == "*"  # an alias


def test_the_issue_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """Item 2: 9 levels of 9 aliases under a cpu feature list (~470 bytes; 4.3 GB before)."""
    levels = ["&l0 [aes, aes, aes, aes, aes, aes, aes, aes, aes]"]
    levels += [f"&l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = "name: v\nvirt: kvm\ncpu:\n  model: EPYC\n  require:\n"
    text += "".join(f"    - {level}\n" for level in levels)
    assert len(text) < 520
    started = time.monotonic()
    refused = loads_bounded(text, tmp_path)
    assert time.monotonic() - started < 2
    assert refused is not None and refused["line"] == 10, refused
    assert "expands to more than 50000 YAML nodes" in refused["rule"]


@given(levels=st.integers(1, 40), how=st.sampled_from(["merge", "alias"]))
@settings(max_examples=20, deadline=None)
def test_aliases_count_through_merge_keys_and_mappings(
    tmp_path_factory: pytest.TempPathFactory, levels: int, how: str
) -> None:
    """Item 2: mappings that merge or alias the one before twice double at each level."""
    lines = ["  a0: &a0 {x: 1}"]
    for i in range(1, levels + 1):
        ref = f"*a{i - 1}"
        body = f"<<: [{ref}, {ref}], k{i}: 1" if how == "merge" else f"l: {ref}, r: {ref}"
        lines.append(f"  a{i}: &a{i} {{{body}}}")
    text = VM + "idmap:\n" + "\n".join(lines) + "\n"
    # an unknown idmap key, or a bound crossed: never anything else
    assert loads_bounded(text, tmp_path_factory.mktemp("m")) is not None


@given(
    depth=st.one_of(st.integers(33, 200), st.sampled_from([1000, 100_000])),
    style=st.sampled_from(["[]", "{}", "block-list", "block-map"]),
    key=st.sampled_from(["cpu", "idmap", "disks", "description", "name"]),
)
@settings(max_examples=40, deadline=None)
def test_nesting_deeper_than_the_limit_is_refused(depth: int, style: str, key: str) -> None:
    """Item 8: a 100,000-deep list gave RecursionError; any nesting past MAX_DEPTH is
    refused where it crosses the limit, in flow or block style."""
    if style in ("[]", "{}"):
        value = " " + "[" * depth + "]" * depth if style == "[]" else " " + "{a: " * depth + "}"
        value = value if style == "[]" else " " + "{a: " * depth + "1" + "}" * depth
        text = f"{VM}{key}:{value}\n"
    else:
        depth = min(depth, 300)
        step = "- " if style == "block-list" else "a: "
        nest = "".join("  " * i + step.rstrip() + "\n" for i in range(depth))
        text = f"{VM}{key}:\n" + "\n".join("  " + line for line in nest.splitlines()) + " 1\n"
    with pytest.raises(SpecFileError, match=f"nested more than {MAX_DEPTH}") as info:
        loads(text, "f.yaml")
    located(info.value)


def test_nesting_to_the_limit_is_not_refused_for_depth() -> None:
    value = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    with pytest.raises(SpecFileError) as info:
        loads(VM + f"cpu: {{model: EPYC, require: {value}}}\n", "f.yaml")
    assert "nested" not in info.value.rule  # refused by Cpu (a feature must be a string)


def test_an_alias_cycle_is_refused() -> None:
    with pytest.raises(SpecFileError, match=r"f\.yaml:4:33: yaml: alias \*c is used inside"):
        loads(VM + "cpu: &c {model: EPYC, require: [*c]}\n", "f.yaml")


YAML_REFUSES = [
    *(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"),
    "\x7f",
    *(chr(c) for c in range(0x80, 0xA0) if c != 0x85),
    "\ufffe",
    "\uffff",
]


@given(
    char=st.sampled_from(YAML_REFUSES),
    line=st.integers(1, 3),
    where=st.sampled_from(["value", "key", "comment"]),
)
@settings(max_examples=120, deadline=None)
def test_every_character_yaml_refuses_names_its_line_and_column(
    char: str, line: int, where: str
) -> None:
    """Item 8: a NUL or other control character gave a ReaderError traceback (exit 1)."""
    lines = VM.splitlines()
    text = lines[line - 1]
    if where == "comment":
        lines[line - 1], col = f"{text} #{char}", len(text) + 3
    elif where == "key":
        lines[line - 1], col = text[:1] + char + text[1:], 2
    else:
        lines[line - 1], col = text + char, len(text) + 1
    with pytest.raises(SpecFileError) as info:
        loads("\n".join(lines) + "\n", "f.yaml")
    assert located(info.value) == (line, col)
    assert info.value.field == "yaml" and "is not allowed" in info.value.rule


@given(
    bad=st.sampled_from([b"\xff", b"\xe9", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80\x80"]),
    line=st.integers(1, 3),
    prefix=st.sampled_from(["", "é", "日本"]),
)
@settings(max_examples=60, deadline=None)
def test_bytes_that_are_not_utf8_name_their_line_and_column(
    tmp_path_factory: pytest.TempPathFactory, bad: bytes, line: int, prefix: str
) -> None:
    """Item 8: a non-UTF-8 file is refused at the first bad byte (column in characters)."""
    lines = [s.encode() for s in VM.splitlines()]
    head = lines[line - 1] + b" # " + prefix.encode()
    lines[line - 1] = head + bad
    path = tmp_path_factory.mktemp("u") / "f.yaml"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(SpecFileError, match="is not UTF-8 text") as info:
        load(path)
    assert (info.value.line, info.value.column) == (line, len(head.decode()) + 1)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "holds no document"),
        ("# only a comment\n---\n...\n", "holds no document"),
        ("hello\n", "must be a mapping"),
        ("- name: v\n", "must be a mapping"),
        ("42\n", "must be a mapping"),
        (VM + "vcpus: " + "9" * 5000 + "\n", "is too large (more than 64 bits)"),
        (VM + "vcpus: " + ":".join(["59"] * 3000) + "\n", "is too large (more than 64 bits)"),
        (VM + "vcpus: 18446744073709551616\n", "is too large (more than 64 bits)"),
        (VM + "vcpus: !!int x\n", "is not a valid int"),
        (VM + "vcpus: !!int ''\n", "is not a valid int"),
        (VM + "autostart: !!bool maybe\n", "is not a valid bool"),
        (VM + "description: !!timestamp 2001-13-45\n", "is not a valid timestamp"),
        ("kind: !!timestamp domain\nname: v\n", "is not a valid timestamp"),
        (VM + "description: !!binary a\n", "failed to decode base64"),
        (VM + "description: !!python/object:os.system x\n", "could not determine a constructor"),
        (VM + "description: *nowhere\n", "undefined alias"),
        (VM + "description: &d x\ncmdline: &d y\n", "duplicate anchor"),
        (VM + "? [a, b]\n: 1\n", "keys must be strings, not a list"),
        (VM + "k" * 65 + ": 1\n", "keys are at most 64 characters"),
        (VM + "cpu: {<<: 1, model: EPYC}\n", "bad merge"),
        (VM + "cpu: {model: EPYC, require: [" + ",".join(["a"] * 1025) + "]}\n", "more than 1024"),
        (VM + "description: " + "x" * 65537 + "\n", "a value longer than 65536 characters"),
        (VM + "disks:\n\t- file: /a.img\n", "yaml"),
        (VM + "disks: [{file: /a.img}\n", "yaml"),
    ],
)
def test_every_raw_exception_path_is_a_located_spec_file_error(text: str, rule: str) -> None:
    """Item 8: each of these once escaped as a YAML, Unicode, Value or Recursion error, or
    misled (an empty file 'succeeded' having done nothing)."""
    with pytest.raises(SpecFileError) as info:
        loads(text, "f.yaml")
    located(info.value)
    assert rule in str(info.value)
    assert len(str(info.value)) < 400  # one short line, whatever the value's size


def test_file_level_errors(tmp_path: Path) -> None:
    """Item 8: directories, missing paths, bad path types and oversized files."""
    with pytest.raises(SpecFileError, match=r":0: file: cannot be read: Is a directory"):
        load(tmp_path)
    with pytest.raises(SpecFileError, match=r"cannot be read: embedded null byte"):
        load(str(tmp_path / "a\x00b"))
    with pytest.raises(SpecError, match="path: must be a str or a Path"):
        load(3)  # type: ignore[arg-type]  # open(3) would read file descriptor 3
    big = tmp_path / "big.yaml"
    big.write_bytes(VM.encode() + b"#" * (MAX_FILE_BYTES - len(VM)))
    assert load(big).domains[0].spec.name == "v"  # exactly the limit is read
    big.write_bytes(big.read_bytes() + b"\n")
    with pytest.raises(SpecFileError, match=r"big\.yaml:4: file: is larger than 1048576"):
        load(big)
    with pytest.raises(SpecFileError, match=r"f\.yaml:1: file: is larger than"):
        loads("x" * (MAX_FILE_BYTES + 1), "f.yaml")


WRONG_TYPES = st.one_of(
    st.sampled_from(["[1, 2]", "{a: 1}", "[[[x]]]", "{}", "[]", "3.5", "-7", "true", "1e400"]),
    st.sampled_from(["!!binary aGk=", "!!float 1", "2001-12-14", "9" * 40, "[{}]", ".nan"]),
)


def _keyed_documents() -> list[tuple[str, str, str]]:
    """(document, key path, how to write KEY: VALUE into it) for every key of every kind."""
    bases = {"domain": VM, "network": NET, "volume": VOL + "size_mib: 1\n"}
    out = [(bases[kind], key, "{key}: {value}\n") for kind in KINDS for key in KEYS[kind]]
    devices = {
        "disks[]": (VM, "disks: [{{file: /a.img, {key}: {value}}}]\n"),
        "disks[].volume": (VM, "disks: [{{volume: {{pool: p, {key}: {value}}}}}]\n"),
        "nics[]": (VM, "nics: [{{network: default, {key}: {value}}}]\n"),
        "filesystems[]": (CT, "filesystems: [{{source: /s, {key}: {value}}}]\n"),
        "xml_edits[]": (VM, "xml_edits: [{{set: ./description, {key}: {value}}}]\n"),
        "hosts[]": (NET, "hosts: [{{mac: '52:54:00:00:00:01', {key}: {value}}}]\n"),
        "pool": (VOL.replace("pool: p\n", ""), "pool: {{name: p, {key}: {value}}}\n"),
        "backing": (VOL, "backing: {{pool: p, {key}: {value}}}\n"),
    }
    for path, (base, how) in devices.items():
        out += [(base, f"{path.rstrip('[]')}.{key}", how) for key in KEYS[path]]
    return out


KEYED = _keyed_documents()


@given(which=st.sampled_from(range(len(KEYED))), value=WRONG_TYPES)
@settings(max_examples=300, deadline=None)
def test_a_wrong_type_for_any_key_of_any_kind_is_refused_naming_it(which: int, value: str) -> None:
    """Item 8: every key of every kind (from specfile.KEYS, so new keys are covered) with a
    value of the wrong type is read as that value (a string field takes it as written) or
    refused naming FILE:LINE and a field at or under that key (or the document it breaks)."""
    base, key, how = KEYED[which]
    name = key.rsplit(".", 1)[-1]
    lines = [line for line in base.splitlines(keepends=True) if not line.startswith(f"{name}:")]
    text = "".join(lines) + how.format(key=name, value=value)
    try:
        loads(text, "f.yaml")
    except SpecFileError as e:
        located(e)
        assert isinstance(e, SpecError)
    except Exception as e:  # the failure this test looks for
        raise AssertionError(f"{type(e).__name__} escaped for {key}: {value}") from e


def test_the_limits_are_written_in_the_module_docstring() -> None:
    doc = specfile.__doc__ or ""
    for number in (MAX_NODES, MAX_ALIASES, MAX_SCALAR_CHARS, MAX_ITEMS):
        assert f"{number:,}" in doc
    assert f"{MAX_DEPTH}  " in doc and f"{MAX_KEY_CHARS} chars" in doc
    assert MAX_FILE_BYTES == MAX_CHARS == 1024 * 1024 and doc.count("1 MiB") >= 2
    longest = max(len(k) for keys in KEYS.values() for k in keys)
    assert longest == 14 and "longest key has 14 characters" in doc
