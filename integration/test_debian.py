"""Real distributions on a real, sandboxed libvirtd: a Debian 12 cloud VM (QEMU, TCG) booted
with a NoCloud seed built by hvlib, and a Debian 12 system container whose init is systemd.

The VM (:func:`hvlib.testkit.debian.ensure_debian_vm_image`, direct kernel boot on a qcow2
overlay of the cached image) is checked for what real cloud-init did with hvlib's seed: the
user and its key, the pinned SSH host key (every exec connects with ``RejectPolicy`` and
that key), the hostname, ``write_files``, ``runcmd``, and the network-config v2 that matches
the NIC by MAC (renamed, DHCP); then a graceful ACPI shutdown. The container
(:func:`hvlib.testkit.debian.ensure_debian_rootfs`, a private copy per test) boots systemd,
runs commands through ``exec``, gets a DHCP lease through systemd-networkd and shuts down
gracefully, with and without an id map. Waits are bounded by what was measured under TCG on
2 shared cores (SSH ready 28-44 s, cloud-init done 35-51 s after start) with room for load.
Every network here is the sandbox's, inside its own network namespace.
"""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hvlib import Disk, DomainSpec, Filesystem, IdMap, Nic, VirtType
from hvlib.errors import GuestAccessError
from hvlib.guest.config import SshConfig
from hvlib.model.cloudinit import seed
from hvlib.testkit import debian
from hvlib.testkit.sandbox import SandboxHost
from hvlib.virt.domain import Domain
from hvlib.virt.host import Host
from hvlib.virt.network import Network, Networks
from hvlib.virt.pools import Pool, Pools
from hvlib.virt.storage import Volumes
from integration.conftest import MakeDomain

pytestmark = [pytest.mark.integration]

NET = "hvlib-it-deb"
NET_CIDR = "10.213.61.0/24"  # netns only: exists inside the sandbox's network namespace
NET_RANGE = ("10.213.61.100", "10.213.61.199")  # netns only
POOL = "hvlib-it-deb"
VM_MAC = "52:54:00:de:b1:01"
VM_HOSTNAME = "it-deb-vm"
SSH_READY_TIMEOUT = 300.0
"""Seconds from start to a command over SSH: 28-44 s measured under TCG, x7 for a loaded host."""
SYSTEMD_TIMEOUT = 60.0
"""Seconds for a container's systemd to reach running: 0.3-2.8 s measured."""
SHIFT = 100000


def _keypair() -> tuple[str, str]:
    """An ed25519 key pair: (OpenSSH private key text, public key line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode()


@pytest.fixture(scope="module")
def vm_image() -> debian.DebianImage:
    started = time.monotonic()
    image = debian.ensure_debian_vm_image()
    print(f"ensure_debian_vm_image took {time.monotonic() - started:.1f} s")
    return image


@pytest.fixture(scope="module")
def ct_rootfs() -> debian.DebianRootfs:
    started = time.monotonic()
    rootfs = debian.ensure_debian_rootfs()
    print(f"ensure_debian_rootfs took {time.monotonic() - started:.1f} s")
    return rootfs


@pytest.fixture(scope="module")
def pool(qemu_host: Host, sandbox: SandboxHost) -> Iterator[Pool]:
    made = Pools(qemu_host).ensure_dir(POOL, str(sandbox.root / "it-deb"))
    yield made
    for vol in sorted(made.volumes(), key=lambda v: v.backing is None):  # overlays first
        vol.delete()
    made.delete()


@pytest.fixture(scope="module")
def net(qemu_host: Host) -> Iterator[Network]:
    made = Networks(qemu_host).ensure(NET, ipv4=NET_CIDR, dhcp_range=NET_RANGE)
    yield made
    made.delete()


@dataclass
class BootedVm:
    dom: Domain
    started: float
    host_key: str
    key_file: Path
    marker: str


def _base_volume(qemu_host: Host, pool: Pool, image: debian.DebianImage) -> str:
    """The cached image as a volume of ``pool``, imported by ``host.images.ensure`` (a second
    call, as a rerun of the session would make, transfers nothing)."""
    name = f"debian-{image.directory.name}.qcow2"
    started = time.monotonic()
    got = qemu_host.images.ensure(name, str(image.disk), pool=pool)
    took = time.monotonic() - started
    print(f"images.ensure of the Debian image: {got.transferred} bytes in {took:.1f} s")
    assert got.format == "qcow2" and got.volume.capacity == debian.VM_DISK_BYTES
    again = qemu_host.images.ensure(name, str(image.disk), pool=pool)
    assert not again.changed and again.transferred == 0
    return name


@pytest.fixture(scope="module")
def booted_vm(
    qemu_host: Host,
    vm_image: debian.DebianImage,
    pool: Pool,
    net: Network,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BootedVm]:
    """The Debian VM, started with a seed that sets everything the tests check."""
    tmp = tmp_path_factory.mktemp("deb-vm")
    host_private, host_public = _keypair()
    client_private, client_public = _keypair()
    key_file = tmp / "client_key"
    key_file.write_text(client_private)
    key_file.chmod(0o600)
    marker = f"hvlib-{time.time_ns()}"
    user_data = {
        "hostname": VM_HOSTNAME,
        "users": [
            {
                "name": "tester",
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": [client_public],
            }
        ],
        "ssh_keys": {"ed25519_private": host_private, "ed25519_public": host_public},
        "write_files": [{"path": "/etc/hvlib-marker", "content": marker + "\n"}],
        "runcmd": [["sh", "-c", f"echo runcmd-{marker} > /run/hvlib-runcmd"]],
    }
    network = {
        "version": 2,
        "ethernets": {"lan": {"match": {"macaddress": VM_MAC}, "set-name": "lan0", "dhcp4": True}},
    }
    meta = {"instance-id": f"it-deb-{marker}", "local-hostname": VM_HOSTNAME}
    vols = Volumes(qemu_host)
    base = _base_volume(qemu_host, pool, vm_image)
    overlay = vols.ensure(pool, "it-deb-vm.qcow2", backing=(pool.name, base)).volume
    seed_vol = vols.ensure(pool, "it-deb-vm-seed.iso", data=seed(user_data, meta, network)).volume
    assert overlay is not None and seed_vol is not None
    spec = DomainSpec(
        name="it-deb-vm",
        virt=VirtType.QEMU,
        memory_mib=1024,
        vcpus=2,
        kernel=str(vm_image.kernel),
        initrd=str(vm_image.initrd),
        cmdline=vm_image.cmdline,
        disks=[overlay.disk(), Disk.volume(pool.name, seed_vol.name, readonly=True)],
        nics=[Nic.network(NET, mac=VM_MAC)],
        rng=True,
    )
    dom = qemu_host.domains.define(spec)
    try:
        dom.ssh = SshConfig(user="tester", key=key_file, host_key=host_public)
        started = time.monotonic()
        dom.start()
        yield BootedVm(dom, started, host_public, key_file, marker)
    finally:
        dom.destroy()
        dom.undefine()
        overlay.delete()
        seed_vol.delete()


@pytest.fixture(scope="module")
def ready_vm(booted_vm: BootedVm) -> BootedVm:
    waited = booted_vm.dom.wait_ready(timeout=SSH_READY_TIMEOUT)
    print(f"Debian VM: start -> SSH ready {time.monotonic() - booted_vm.started:.1f} s")
    assert waited >= 0
    return booted_vm


def _run(dom: Domain, command: str, timeout: float = 120.0) -> str:
    return dom.exec(command, check=True, timeout=timeout).text.strip()


@pytest.mark.qemu
def test_cloud_init_consumed_the_seed(ready_vm: BootedVm) -> None:
    dom = ready_vm.dom
    status = dom.exec("cloud-init status --wait --long", timeout=240)
    print(f"Debian VM: start -> cloud-init done {time.monotonic() - ready_vm.started:.1f} s")
    assert status.exit_status == 0 and "status: done" in status.text, status.text
    datasource = _run(dom, "cloud-init query ds.meta_data.instance-id; cloud-id")
    assert f"it-deb-{ready_vm.marker}" in datasource
    assert _run(dom, "id -un") == "tester"
    assert _run(dom, "sudo -n id -u") == "0"
    assert _run(dom, "hostname") == VM_HOSTNAME
    assert _run(dom, "cat /etc/hvlib-marker") == ready_vm.marker
    assert _run(dom, "cat /run/hvlib-runcmd") == f"runcmd-{ready_vm.marker}"
    offered = _run(dom, "sudo -n cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
    assert offered == ready_vm.host_key.split()[:2]  # and exec connected pinning it


@pytest.mark.qemu
def test_network_config_matched_the_nic_by_mac(ready_vm: BootedVm) -> None:
    dom = ready_vm.dom
    link = _run(dom, "cat /sys/class/net/lan0/address")
    assert link == VM_MAC
    lease = ipaddress.IPv4Interface(_run(dom, "ip -4 -o addr show dev lan0").split()[3])
    assert lease in ipaddress.IPv4Network(NET_CIDR) or lease.ip in ipaddress.IPv4Network(NET_CIDR)
    found = dom.wait_for_address(timeout=60)
    assert lease.ip in {a.ip for a in found[VM_MAC]}, found


@pytest.mark.qemu
def test_vm_shuts_down_gracefully(ready_vm: BootedVm) -> None:
    result = ready_vm.dom.shutdown(timeout=90)
    print(f"Debian VM: graceful shutdown {result.elapsed:.1f} s, {result.requests} request(s)")
    assert result.graceful, result


# -- the systemd container --------------------------------------------------------------------


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A fresh directory any uid may pass through (an id-mapped root must reach its rootfs)."""
    top = Path(tempfile.mkdtemp(prefix="hvlib-deb-ct-"))
    try:
        top.chmod(0o711)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _wait_systemd(dom: Domain, timeout: float) -> tuple[float, str]:
    """Wait until ``systemctl is-system-running`` says running or degraded; return the
    seconds waited and the state. Right after a start, exec may get "Failed to connect to
    bus" (systemd not up yet): retried."""
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        try:
            result = dom.exec(["systemctl", "is-system-running"], timeout=10)
            last = result.text.strip() or result.stderr_text.strip()
        except GuestAccessError as e:
            last = str(e)
        if last in ("running", "degraded"):
            return time.monotonic() - started, last
        time.sleep(0.2)
    raise AssertionError(f"systemd not running within {timeout} s; last: {last!r}")


@pytest.mark.lxc
@pytest.mark.parametrize("shift", [0, SHIFT], ids=["no-idmap", "idmap"])
def test_systemd_container_boots_execs_gets_dhcp_and_stops(
    lxc_host: Host,
    ct_rootfs: debian.DebianRootfs,
    net: Network,
    private_dir: Path,
    make_domain: MakeDomain,
    shift: int,
) -> None:
    started = time.monotonic()
    rootfs = debian.copy_rootfs(ct_rootfs, private_dir / "rootfs", shift=shift)
    print(f"copy_rootfs (shift={shift}) took {time.monotonic() - started:.1f} s")
    spec = DomainSpec(
        name=f"it-deb-ct-{'idmap' if shift else 'plain'}",
        virt=VirtType.LXC,
        memory_mib=256,
        init=[ct_rootfs.init],
        filesystems=[Filesystem.mount(str(rootfs), "/")],
        nics=[Nic.network(NET)],
        idmap=IdMap.shifted(shift) if shift else None,
    )
    dom = make_domain(lxc_host, spec)
    started = time.monotonic()
    dom.start()
    _waited, state = _wait_systemd(dom, SYSTEMD_TIMEOUT)
    print(f"container (shift={shift}): start -> systemd {state} {time.monotonic() - started:.1f} s")
    if state == "degraded":
        failed = dom.exec(["systemctl", "--failed", "--no-legend"]).text
        print(f"failed units: {failed.strip()}")
    assert _run(dom, "cat /proc/1/comm") == "systemd"
    assert _run(dom, "id -u") == "0"
    found = dom.wait_for_address(timeout=60)
    addresses = [a for per_mac in found.values() for a in per_mac]
    assert any(a.ip in ipaddress.IPv4Network(NET_CIDR) for a in addresses), found
    inside = _run(dom, "ip -4 -o addr show scope global")
    assert any(str(a.ip) in inside for a in addresses), inside
    result = dom.shutdown(timeout=60)
    print(
        f"container (shift={shift}): graceful shutdown {result.elapsed:.2f} s, "
        f"{result.requests} request(s)"
    )
    assert result.graceful, result
