"""Real Xen: PV and HVM guests driven through hvlib in a nested Xen dom0.

One Xen host (Xen 4.17 + Debian dom0, booted as a QEMU/TCG domain of the session's sandboxed
libvirtd, see :mod:`hvlib.testkit.xenhost`) serves the whole module. The tests reach dom0's
libvirtd as a user reaches a Xen server: ``hvlib.connect("xen+ssh://root@HOST:PORT/system",
known_hosts=..., keyfile=...)`` (hvlib switches to ``+libssh``, which checks the pinned key).
The guests are the specs that tests/golden_specs.py holds as ``xen-pv-kit`` and ``xen-hvm-kit``:
the kit's kernel and initramfs, read by dom0 from :data:`DOM0_KIT_DIR`. Each step's duration
is printed (``pytest -s``) as ``xen-timing STEP SECONDS``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

import hvlib
from hvlib import Disk, Domain, DomainSpec, Nic, State
from hvlib.fleet_capacity import virt_types_of
from hvlib.model.domxml import DomainXML
from hvlib.model.render import render, virt_of
from hvlib.testkit import guestkit as gk
from hvlib.testkit.forward import LOOPBACK, LoopbackForwarder, free_loopback_port, in_netns
from hvlib.testkit.sandbox import SandboxHost
from hvlib.testkit.xenhost import XenHost, dom0_domain_xml
from tests.golden_specs import GOLDEN_SPECS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DOMAIN_RNG = Path("/usr/share/libvirt/schemas/domain.rng")
GOLDEN_DIR = Path(__file__).resolve().parent.parent / "tests" / "golden"


def timing(step: str, seconds: float) -> None:
    print(f"xen-timing {step} {seconds:.2f}")


@pytest.fixture(scope="module")
def xen(
    sandbox: SandboxHost, kit: gk.GuestKit, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[XenHost]:
    """A Xen host booted on the session's sandbox, with the guest kit's kernel and initramfs
    in dom0 under DOM0_KIT_DIR; its serial console is kept in pytest's temporary directory."""
    files = {"vmlinuz": kit.kernel, "initrd.img": kit.initrd}
    log = tmp_path_factory.mktemp("xen") / "dom0-console.log"
    with XenHost.boot(sandbox, files=files, console_log=log) as host:
        for step, seconds in host.timings.items():
            timing(f"boot.{step}", seconds)
        yield host
    timing("stop", host.timings["stop"])


@pytest.fixture(scope="module")
def host(xen: XenHost) -> Iterator[hvlib.Host]:
    """hvlib's Host on dom0's libvirtd, over SSH with dom0's host key pinned."""
    assert xen.image is not None
    started = time.monotonic()
    h = hvlib.connect(
        f"xen+ssh://root@{LOOPBACK}:{xen.ssh_port}/system",
        known_hosts=xen.known_hosts,
        keyfile=xen.image.client_key,
    )
    timing("connect", time.monotonic() - started)
    with h:
        yield h


def golden_spec(name: str) -> DomainSpec:
    """The golden spec ``name``, after checking that hvlib renders it as the golden file."""
    spec = GOLDEN_SPECS[name]
    assert render(spec) + "\n" == (GOLDEN_DIR / f"{name}.xml").read_text()
    return spec


def timed_step(step: str, started: float) -> float:
    now = time.monotonic()
    timing(step, now - started)
    return now


def ensure_twice(host: hvlib.Host, spec: DomainSpec, state: State, step: str) -> Domain:
    """ensure(spec, state) changes something the first time, nothing the second time."""
    t = time.monotonic()
    first = host.domains.ensure(spec, state)
    t = timed_step(f"{step}.ensure", t)
    assert first.changed, first
    assert first.domain is not None
    again = host.domains.ensure(spec, state)
    timed_step(f"{step}.ensure_again", t)
    assert not again.changed, f"second ensure changed: {again}"
    return first.domain


def undefine_and_check(host: hvlib.Host, dom: Domain) -> None:
    name = dom.name
    dom.destroy()
    dom.undefine()
    assert host.domains.find(name) is None
    assert name not in [d.name for d in host.domains.list()]


@pytest.mark.parametrize(
    ("golden", "virt", "step"),
    [
        pytest.param("xen-pv-kit", hvlib.VirtType.XEN_PV, "pv", marks=pytest.mark.xen_pv),
        pytest.param("xen-pvh-kit", hvlib.VirtType.XEN_PVH, "pvh", marks=pytest.mark.xen_pvh),
    ],
)
def test_paravirtualized_guest_through_hvlib(
    host: hvlib.Host, golden: str, virt: hvlib.VirtType, step: str
) -> None:
    """PV and PVH: defined, then started, by ensure (each idempotent), ready on hvc0, shut
    down gracefully through xenstore, undefined."""
    spec = golden_spec(golden)
    dom = ensure_twice(host, spec, State.SHUT_OFF, f"{step}.defined")
    try:
        assert dom.virt is virt
        assert virt_of(DomainXML.from_xml(dom.xml(inactive=True))) is virt
        t = time.monotonic()
        dom.start()
        t = timed_step(f"{step}.start", t)
        dom.wait_for_console(f"^{re.escape(gk.READY_LINE)}$", timeout=90)
        t = timed_step(f"{step}.ready_line", t)
        assert not host.domains.ensure(spec, State.RUNNING).changed
        # libxl's default shutdown: xenstore control/shutdown -> the PV kernel's orderly
        # poweroff -> busybox poweroff -> the kit's trap prints POWEROFF_LINE.
        result = dom.shutdown(timeout=60, force=False)
        timing(f"{step}.shutdown", result.elapsed)
        assert result.graceful
        assert gk.POWEROFF_LINE in dom.console_log().decode(errors="replace").splitlines()
        assert dom.state is State.SHUT_OFF
    finally:
        undefine_and_check(host, dom)


@pytest.mark.parametrize(
    ("virt", "step"),
    [
        pytest.param(hvlib.VirtType.XEN_PV, "pv", marks=pytest.mark.xen_pv),
        pytest.param(hvlib.VirtType.XEN_PVH, "pvh", marks=pytest.mark.xen_pvh),
    ],
)
def test_paravirtualized_guest_sees_its_disk(
    xen: XenHost, host: hvlib.Host, virt: hvlib.VirtType, step: str
) -> None:
    """A file in dom0 given as ``Disk.file`` is the guest's xvda, of the file's size."""
    image = f"/var/lib/xen/hvlib-{step}-disk.img"
    xen.run(["truncate", "-s", "16M", image])
    kit = GOLDEN_SPECS["xen-pv-kit"]
    spec = DomainSpec(
        name=f"hvlib-{step}-disk",
        virt=virt,
        memory_mib=128,
        kernel=kit.kernel,
        initrd=kit.initrd,
        cmdline=gk.kernel_cmdline("hvc0", gk.FLAG_NOSSH, gk.FLAG_DISKS),
        disks=[Disk.file(image)],
    )
    dom = host.domains.ensure(spec, State.RUNNING).domain
    assert dom is not None
    try:
        line = dom.wait_for_console(f"^{re.escape(gk.DISK_PREFIX)}xvda ", timeout=90)
        assert line == f"{gk.DISK_PREFIX}xvda {16 * 2**20 // 512}"
        dom.wait_for_console(f"^{re.escape(gk.READY_LINE)}$", timeout=30)
        assert not host.domains.ensure(spec, State.RUNNING).changed
    finally:
        undefine_and_check(host, dom)
        xen.run(["rm", "-f", image])


@pytest.mark.xen_pv
def test_pv_guest_gets_its_nic_on_a_dom0_bridge(xen: XenHost, host: hvlib.Host) -> None:
    """A ``Nic.bridge`` on a bridge in dom0 is the guest's eth0 with the MAC the spec gave
    (netfront in the guest, netback and Xen's vif-bridge hotplug script in dom0). The bridge
    lives inside dom0, itself a guest in the sandbox's network namespace."""
    bridge, mac = "hvlibbr0", "00:16:3e:00:10:01"
    xen.run(["sh", "-c", f"ip link show {bridge} || ip link add {bridge} type bridge"])
    xen.run(["ip", "link", "set", bridge, "up"])
    kit = GOLDEN_SPECS["xen-pv-kit"]
    spec = DomainSpec(
        name="hvlib-pv-nic",
        virt=hvlib.VirtType.XEN_PV,
        memory_mib=128,
        kernel=kit.kernel,
        initrd=kit.initrd,
        cmdline=gk.kernel_cmdline("hvc0", gk.FLAG_NOSSH, gk.FLAG_NICS),
        nics=[Nic.bridge(bridge, mac=mac)],
    )
    dom = host.domains.ensure(spec, State.RUNNING).domain
    assert dom is not None
    try:
        line = dom.wait_for_console(f"^{re.escape(gk.NIC_PREFIX)}", timeout=90)
        assert line == f"{gk.NIC_PREFIX}eth0 {mac}"
        assert bridge in xen.run(["sh", "-c", "ip -o link show master " + bridge])
        assert not host.domains.ensure(spec, State.RUNNING).changed
    finally:
        undefine_and_check(host, dom)


def test_capabilities_offer_every_xen_type(host: hvlib.Host) -> None:
    """What a Fleet reads to place specs: dom0's libvirt offers PV, PVH and HVM guests."""
    xen_types = {hvlib.VirtType.XEN_PV, hvlib.VirtType.XEN_PVH, hvlib.VirtType.XEN_HVM}
    assert virt_types_of(host.capabilities()) == xen_types


@pytest.mark.xen_hvm
def test_hvm_guest_through_hvlib(host: hvlib.Host) -> None:
    """Started by ensure (idempotent), ready on its emulated serial port, stopped, undefined."""
    spec = golden_spec("xen-hvm-kit")
    dom = ensure_twice(host, spec, State.RUNNING, "hvm.running")
    try:
        assert dom.virt is hvlib.VirtType.XEN_HVM
        t = time.monotonic()
        dom.wait_for_console(f"^{re.escape(gk.READY_LINE)}$", timeout=180)
        t = timed_step("hvm.ready_line", t)
        result = dom.shutdown(timeout=60)
        timing("hvm.shutdown", result.elapsed)
        print(f"hvm shutdown graceful={result.graceful} requests={result.requests}")
        assert dom.state is State.SHUT_OFF
    finally:
        undefine_and_check(host, dom)


@pytest.mark.skipif(not DOMAIN_RNG.is_file(), reason=f"{DOMAIN_RNG} not installed")
def test_domain_xml_is_valid_for_libvirt(xen: XenHost) -> None:
    """dom0's QEMU domain and both guests' Xen domains pass libvirt's own RelaxNG schema."""
    schema = etree.RelaxNG(etree.parse(str(DOMAIN_RNG)))
    assert xen.image is not None
    dom0 = dom0_domain_xml("dom0", xen.image, Path("/o.qcow2"), Path("/k.img"), Path("/c"), 2222)
    kits = ("xen-pv-kit", "xen-pvh-kit", "xen-hvm-kit")
    guests = [etree.fromstring(render(GOLDEN_SPECS[n])) for n in kits]
    for dom in (dom0, *guests):
        assert schema.validate(dom), schema.error_log


def test_forwarder_reaches_only_into_the_sandbox(xen: XenHost) -> None:
    """A port on the sandbox's loopback is closed here and open through a forwarder."""
    netns = xen.sandbox.netns
    port = free_loopback_port(netns)
    server = in_netns(netns, lambda: socket.create_server(("127.0.0.1", port)))

    def echo_once() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(conn.recv(100).upper())

    thread = threading.Thread(target=echo_once, daemon=True)
    thread.start()
    with server, LoopbackForwarder(netns, port) as forwarder:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with socket.create_connection(("127.0.0.1", forwarder.port), timeout=5) as client:
            client.sendall(b"ping")
            assert client.recv(100) == b"PING"
    thread.join(timeout=5)


def test_console_log_kept(xen: XenHost) -> None:
    """The dom0 console (Xen and Linux) is in a file on the test side, for diagnostics."""
    text = xen.console_text()
    assert "Xen version 4.17" in text
    assert "hvlib-dom0: ready" in text
    assert Path(xen.console_log).is_file()
    print(f"xen-ssh-sessions {xen.ssh_sessions} errors {xen.ssh_errors}")
