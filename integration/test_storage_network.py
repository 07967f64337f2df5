"""Storage pools and volumes, networks with DHCP reservations and cloud-init seeds on a real,
sandboxed libvirtd: a QEMU guest boots with a qcow2 overlay disk and a NoCloud seed volume,
gets exactly its reserved address, and reads the seed; volume bytes round-trip through
libvirt streams; a base with an overlay refuses deletion; a full pool leaves nothing behind.

Every network here is created on the sandbox's libvirtd, inside the sandbox's own network
namespace; none exists in the host's namespace.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

import hvlib
from hvlib import Disk, DomainSpec, InvalidState, Nic, VirtType
from hvlib.model.cloudinit import seed
from hvlib.model.netplan import DhcpHost
from hvlib.model.plan import ChangeHow
from hvlib.model.volplan import MIB
from hvlib.testkit import guestkit
from hvlib.testkit.guestkit import GuestKit
from hvlib.testkit.sandbox import SandboxHost
from hvlib.virt import _virt
from hvlib.virt.host import Host
from hvlib.virt.network import Network, Networks
from hvlib.virt.pools import Pool, Pools
from hvlib.virt.storage import Volumes
from integration.conftest import MakeDomain
from tests.counting import WRITE_CALLS, CountingLibvirt

pytestmark = [pytest.mark.integration, pytest.mark.qemu]

NET = "hvlib-it-net"
NET_CIDR = "10.213.57.0/24"  # netns only: exists inside the sandbox's network namespace
NET_RANGE = ("10.213.57.100", "10.213.57.199")  # netns only
GUEST_IP = "10.213.57.42"  # netns only: the guest's reservation
OTHER_IP = "10.213.57.43"  # netns only: a second reservation added live
GUEST_MAC = "52:54:00:5e:ed:01"
OTHER_MAC = "52:54:00:5e:ed:02"
POOL = "hvlib-it-stor"
WRITES = WRITE_CALLS | {
    "networkDefineXML",
    "storagePoolDefineXML",
    "update",
    "build",
    "delete",
    "upload",
    "resize",
    "createXMLFrom",
}


@pytest.fixture(scope="module")
def pool(qemu_host: Host, sandbox: SandboxHost) -> Iterator[Pool]:
    """A directory pool of this module's own; its volumes and itself are removed after."""
    made = Pools(qemu_host).ensure_dir(POOL, str(sandbox.root / "it-stor"))
    yield made
    for vol in sorted(made.volumes(), key=lambda v: v.backing is None):  # overlays first
        vol.delete()
    made.delete()


@pytest.fixture
def counted(
    sandbox: SandboxHost, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Host, CountingLibvirt]]:
    """A second connection to the sandbox whose every libvirt call is counted."""
    proxy = CountingLibvirt(libvirt)
    monkeypatch.setattr(_virt, "libvirt", proxy)
    with hvlib.connect(sandbox.qemu_uri, netns=sandbox.netns, poll_interval=None) as host:
        yield host, proxy


def _writes(proxy: CountingLibvirt) -> dict[str, int]:
    return {k: v for k, v in proxy.calls.items() if k in WRITES}


def test_pool_ensure_is_idempotent(
    pool: Pool, sandbox: SandboxHost, counted: tuple[Host, CountingLibvirt]
) -> None:
    host, proxy = counted
    again = Pools(host).ensure_dir(POOL, str(sandbox.root / "it-stor"))
    assert again.active and again.autostart and again.path == str(sandbox.root / "it-stor")
    assert _writes(proxy) == {}, proxy.calls


def test_volume_bytes_round_trip_through_streams(qemu_host: Host, pool: Pool) -> None:
    vols = Volumes(qemu_host)
    data = os.urandom(32 * MIB)
    started = time.perf_counter()
    vol = vols.create(pool, "it-roundtrip.img", data=data)
    up = time.perf_counter() - started
    started = time.perf_counter()
    back = vol.download()
    down = time.perf_counter() - started
    print(f"upload {32 / up:.0f} MB/s, download {32 / down:.0f} MB/s (32 MiB)")
    assert back == data
    assert vol.format == "raw" and vol.capacity == len(data)
    same = vols.ensure(pool, "it-roundtrip.img", data=data)
    assert not same.changed and same.volume is not None and same.volume.path == vol.path
    vol.upload(b"hvlib" * 10)
    assert vol.download(length=50) == b"hvlib" * 10
    vol.delete()
    vol.delete()  # absent is success
    assert vols.find(pool, "it-roundtrip.img") is None


def test_volume_ensure_with_data_writes_only_when_the_bytes_differ(
    pool: Pool, counted: tuple[Host, CountingLibvirt]
) -> None:
    host, proxy = counted
    vols = Volumes(host)
    first = seed("#cloud-config\n", {"instance-id": "one"})
    vol = vols.ensure(pool.name, "it-ensure.iso", data=first).volume
    assert vol is not None
    proxy.calls.clear()
    same = vols.ensure(pool.name, "it-ensure.iso", data=first)
    assert not same.changed and same.volume is not None and same.volume.path == vol.path
    assert _writes(proxy) == {}, proxy.calls
    second = seed("#cloud-config\n", {"instance-id": "two"})
    vols.ensure(pool.name, "it-ensure.iso", data=second)
    assert _writes(proxy) == {"delete": 1, "upload": 1, "createXML": 1}, proxy.calls
    assert vols.get(pool.name, "it-ensure.iso").download() == second
    vols.get(pool.name, "it-ensure.iso").delete()


def test_a_seed_built_again_later_is_not_rewritten_and_check_mode_writes_nothing(
    pool: Pool, counted: tuple[Host, CountingLibvirt], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 17: ``volumes.ensure(data=seed(...))`` run again (the seed built anew, a day
    later) makes no write call; a changed seed is reported (content, sha256 before -> after)
    and, in check mode, not written."""
    host, proxy = counted
    vols = Volumes(host)
    user, meta = "#cloud-config\n", {"instance-id": "it-again", "local-hostname": "again"}
    made = vols.ensure(pool.name, "it-again.iso", data=seed(user, meta))
    assert made.changed and [c.field for c in made.changes] == ["volume"]
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86400)
    proxy.calls.clear()
    again = vols.ensure(pool.name, "it-again.iso", data=seed(user, meta))
    assert (again.changed, again.changes) == (False, [])
    assert vols.ensure(pool.name, "it-again.iso", data=seed(user, meta), check=True).changes == []
    assert _writes(proxy) == {}, proxy.calls
    other = seed(user, {**meta, "instance-id": "it-again-2"})
    check = vols.ensure(pool.name, "it-again.iso", data=other, check=True)
    assert _writes(proxy) == {}, proxy.calls
    [content] = [c for c in check.changes if c.field == "content"]
    assert content.before.startswith("sha256:") and content.after.startswith("sha256:")
    assert content.before != content.after and content.how is ChangeHow.RECREATE
    applied = vols.ensure(pool.name, "it-again.iso", data=other)
    assert applied.changes == check.changes
    assert applied.volume is not None and applied.volume.download() == other
    assert not vols.ensure(pool.name, "it-again.iso", data=other).changed
    applied.volume.delete()


def test_overlay_resize_clone_and_base_refuses_deletion(qemu_host: Host, pool: Pool) -> None:
    vols = Volumes(qemu_host)
    base = vols.create(pool, "it-base.img", data=b"hvlib-base\n" + bytes(MIB - 11))
    overlay = vols.create(pool, "it-over.qcow2", backing=base)
    assert overlay.format == "qcow2" and overlay.backing == base.path
    assert overlay.capacity == base.capacity
    with pytest.raises(InvalidState, match=r"it-base\.img is the base of .*it-over\.qcow2"):
        base.delete()
    assert vols.find(pool, "it-base.img") is not None
    overlay.resize(4)
    assert overlay.capacity == 4 * MIB
    clone = overlay.clone("it-clone.qcow2")
    assert clone.format == "qcow2" and clone.backing is None, "a clone is flattened"
    for vol in (clone, overlay, base):
        vol.delete()
    assert vols.find(pool, "it-base.img") is None


@pytest.fixture
def tiny_pool(qemu_host: Host, sandbox: SandboxHost, tmp_path: Path) -> Iterator[Pool]:
    """A pool on a 16 MiB tmpfs, mounted in libvirtd's own mount namespace (mounts made in
    ours do not propagate to it) and unmounted after the test."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    in_daemon = ["nsenter", "-t", str(sandbox.libvirtd_pid), "-m", "--"]
    subprocess.run(
        [*in_daemon, "mount", "-t", "tmpfs", "-o", "size=16m", "hvlib-it-tiny", str(mnt)],
        check=True,
    )
    try:
        made = Pools(qemu_host).ensure_dir("hvlib-it-tiny", str(mnt))
        yield made
        made.delete()
    finally:
        subprocess.run([*in_daemon, "umount", str(mnt)], check=True)


def test_full_pool_fails_clearly_and_leaves_no_volume(
    qemu_host: Host, tiny_pool: Pool, sandbox: SandboxHost
) -> None:
    vols = Volumes(qemu_host)
    with pytest.raises(hvlib.HvlibError) as caught:
        vols.create(tiny_pool, "too-big.img", size_mib=64)
    print(f"disk full: {type(caught.value).__name__}: {caught.value}")
    assert "too-big.img" in str(caught.value) and "available" in str(caught.value)
    assert vols.find(tiny_pool, "too-big.img") is None
    assert [v.name for v in tiny_pool.volumes()] == []
    listing = subprocess.run(
        ["nsenter", "-t", str(sandbox.libvirtd_pid), "-m", "--", "ls", "-A", tiny_pool.path or ""],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert listing == "", f"files left in the pool: {listing!r}"
    fits = vols.create(tiny_pool, "fits.img", size_mib=4)
    fits.delete()


@pytest.fixture(scope="module")
def net(qemu_host: Host) -> Iterator[Network]:
    """This module's NAT network (on the sandbox's libvirtd, so in its netns), with one
    reservation; deleted after."""
    nets = Networks(qemu_host)
    made = nets.ensure(
        NET, ipv4=NET_CIDR, dhcp_range=NET_RANGE, hosts=[DhcpHost(GUEST_MAC, GUEST_IP, "it-sn")]
    )
    yield made
    made.delete()
    made.delete()  # absent is success
    assert nets.find(NET) is None


def test_guest_on_overlay_and_seed_gets_its_reserved_address(
    qemu_host: Host,
    kit: GuestKit,
    pool: Pool,
    net: Network,
    make_domain: MakeDomain,
) -> None:
    assert net.result is not None and net.result.changed and net.active
    vols = Volumes(qemu_host)
    base = vols.ensure(pool, "it-guest-base.img", size_mib=8).volume
    assert base is not None
    overlay = vols.ensure(pool, "it-guest.qcow2", backing=base).volume
    assert overlay is not None
    started = time.perf_counter()
    image = seed(
        "#cloud-config\n" + guestkit.SEED_MARKER_DIRECTIVE + "seed-ok\n",
        {"instance-id": "it-sn", "local-hostname": "it-sn"},
        {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}},
    )
    print(f"seed built in {1000 * (time.perf_counter() - started):.1f} ms ({len(image)} bytes)")
    seed_vol = vols.ensure(pool, "it-seed.iso", data=image).volume
    assert seed_vol is not None
    dom = make_domain(
        qemu_host,
        DomainSpec(
            name="it-storage-net",
            virt=VirtType.QEMU,
            kernel=str(kit.kernel),
            initrd=str(kit.initrd),
            cmdline=guestkit.kernel_cmdline("ttyS0", guestkit.FLAG_NOSSH),
            disks=[overlay.disk(), Disk.volume(pool.name, seed_vol.name)],
            nics=[Nic.network(NET, mac=GUEST_MAC)],
            rng=True,
        ),
    )
    dom.start()
    dom.wait_for_console(re.escape(guestkit.SEED_MARKER_PREFIX + "seed-ok"), timeout=120)
    found = dom.wait_for_address(timeout=90)
    assert found == {GUEST_MAC: [ipaddress.IPv4Interface(GUEST_IP + "/24")]}, found
    assert dom.addresses() == found
    live_disks = {d.target_dev: d for d in dom.xml_doc().disks}
    assert live_disks["vda"].driver_type == "qcow2"
    assert "user-data" in dom.console_log().decode(errors="replace")


def test_reservations_change_live_without_restart(
    net: Network, counted: tuple[Host, CountingLibvirt]
) -> None:
    host, proxy = counted
    nets = Networks(host)
    hosts = [DhcpHost(GUEST_MAC, GUEST_IP, "it-sn")]
    same = nets.ensure(NET, ipv4=NET_CIDR, dhcp_range=NET_RANGE, hosts=hosts)
    assert same.result is not None
    assert not same.result.changed, same.result.changes
    assert _writes(proxy) == {}, proxy.calls
    bridge_before = same.bridge
    more = nets.ensure(
        NET, ipv4=NET_CIDR, dhcp_range=NET_RANGE, hosts=[*hosts, DhcpHost(OTHER_MAC, OTHER_IP)]
    )
    assert more.result is not None
    assert [(c.field, c.how) for c in more.result.changes] == [
        (f"hosts[{OTHER_MAC}]", ChangeHow.LIVE)
    ]
    assert _writes(proxy) == {"update": 1}, "one networkUpdate, no restart"
    for inactive in (False, True):
        ip = more.doc(inactive=inactive).ipv4
        assert ip is not None and {h.mac for h in ip.hosts} == {GUEST_MAC, OTHER_MAC}
    assert more.active and more.bridge == bridge_before
    moved = nets.ensure(
        NET, ipv4=NET_CIDR, dhcp_range=NET_RANGE, hosts=[DhcpHost(OTHER_MAC, GUEST_IP)]
    )
    assert moved.result is not None
    assert sorted(c.field for c in moved.result.changes) == [
        f"hosts[{GUEST_MAC}]",
        f"hosts[{OTHER_MAC}]",
    ]
    assert [h.mac for h in moved.hosts] == [OTHER_MAC]
    narrower = ("10.213.57.100", "10.213.57.149")  # netns only
    ranged = nets.ensure(NET, ipv4=NET_CIDR, dhcp_range=narrower, hosts=moved.hosts)
    assert ranged.result is not None
    assert [(c.field, c.how) for c in ranged.result.changes] == [("dhcp_range", ChangeHow.LIVE)]
    for inactive in (False, True):
        ip = ranged.doc(inactive=inactive).ipv4
        assert ip is not None and (ip.range_start, ip.range_end) == narrower
    assert proxy.calls["destroy"] == 0 and proxy.calls["create"] == 0
    assert ranged.active and ranged.bridge == bridge_before
