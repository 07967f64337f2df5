"""Real Xen: PV and HVM guests through libvirt's libxl driver in a nested Xen dom0.

One Xen host (Xen 4.17 + Debian dom0, booted as a QEMU/TCG domain of the session's sandboxed
libvirtd, see :mod:`hvlib.testkit.xenhost`) serves the whole module; the tests reach dom0's libvirtd
over ``xen+libssh://`` with a pinned host key and read guest consoles in dom0 over SSH
(paramiko, same key). They use libvirt-python directly; each step's duration is printed
(``pytest -s``) as ``xen-timing STEP SECONDS``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from hvlib.testkit import guestkit as gk
from hvlib.testkit.forward import LoopbackForwarder, free_loopback_port, in_netns
from hvlib.testkit.sandbox import SandboxHost
from hvlib.testkit.xenhost import XenHost, dom0_domain_xml
from hvlib.testkit.xenimage import DOM0_HVMLOADER, DOM0_KIT_DIR

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

GUEST_KERNEL = f"{DOM0_KIT_DIR}/vmlinuz"
GUEST_INITRD = f"{DOM0_KIT_DIR}/initrd.img"
HVM_SERIAL_LOG = "/var/log/xen/hvlib-hvm-serial.log"
DOMAIN_RNG = Path("/usr/share/libvirt/schemas/domain.rng")


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
def conn(xen: XenHost) -> Iterator[libvirt.virConnect]:
    started = time.monotonic()
    connection = libvirt.open(xen.uri)
    timing("connect", time.monotonic() - started)
    yield connection
    connection.close()


def pv_xml(name: str) -> str:
    """A PV guest booting the kit's kernel with its console on hvc0 (no network, no disk)."""
    dom = _domain(name, memory_mib=128)
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="xenpv").text = "linux"
    _direct_boot(os_el, gk.kernel_cmdline("hvc0", gk.FLAG_NOSSH))
    devices = etree.SubElement(dom, "devices")
    console = etree.SubElement(devices, "console", type="pty")
    etree.SubElement(console, "target", type="xen", port="0")
    return etree.tostring(dom, encoding="unicode")


def hvm_xml(name: str) -> str:
    """An HVM guest: hvmloader, direct kernel boot, serial console written to a dom0 file."""
    dom = _domain(name, memory_mib=256)
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="xenfv").text = "hvm"
    etree.SubElement(os_el, "loader").text = DOM0_HVMLOADER
    _direct_boot(os_el, gk.kernel_cmdline("ttyS0", gk.FLAG_NOSSH, "quiet"))
    features = etree.SubElement(dom, "features")
    for feature in ("acpi", "apic", "pae"):
        etree.SubElement(features, feature)
    devices = etree.SubElement(dom, "devices")
    serial = etree.SubElement(devices, "serial", type="file")
    etree.SubElement(serial, "source", path=HVM_SERIAL_LOG)
    etree.SubElement(serial, "target", port="0")
    return etree.tostring(dom, encoding="unicode")


def _domain(name: str, memory_mib: int) -> etree._Element:
    dom = etree.Element("domain", type="xen")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    etree.SubElement(dom, "vcpu").text = "1"
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        etree.SubElement(dom, event).text = "destroy"
    return dom


def _direct_boot(os_el: etree._Element, cmdline: str) -> None:
    etree.SubElement(os_el, "kernel").text = GUEST_KERNEL
    etree.SubElement(os_el, "initrd").text = GUEST_INITRD
    etree.SubElement(os_el, "cmdline").text = cmdline


def wait_shutoff(dom: libvirt.virDomain, timeout: float) -> float:
    """Wait until ``dom`` is no longer active; return seconds waited (fails the test on timeout)."""
    started = time.monotonic()
    while dom.isActive():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{dom.name()} still {dom.state()} after {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - started


def timed_step(step: str, started: float) -> float:
    now = time.monotonic()
    timing(step, now - started)
    return now


@pytest.mark.xen_pv
def test_pv_guest_boots_shuts_down_and_undefines(xen: XenHost, conn: libvirt.virConnect) -> None:
    name = "hvlib-pv"
    log = xen.guest_console_path(name)
    t = time.monotonic()
    dom = conn.defineXML(pv_xml(name))
    t = timed_step("pv.define", t)
    try:
        dom.create()
        t = timed_step("pv.start", t)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        xen.wait_for_line(log, gk.READY_LINE, timeout=90)
        t = timed_step("pv.ready_line", t)
        # xenstore control/shutdown -> the PV kernel's orderly_poweroff -> /sbin/poweroff
        # (busybox: SIGUSR2 to PID 1) -> the kit's trap prints POWEROFF_LINE and poweroff -f.
        dom.shutdown()
        timing("pv.shutdown", wait_shutoff(dom, timeout=60))
        assert gk.POWEROFF_LINE in xen.run(["cat", log]).splitlines()
        assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    finally:
        if dom.isActive():
            dom.destroy()
        t = time.monotonic()
        dom.undefine()
        timed_step("pv.undefine", t)
    assert name not in [d.name() for d in conn.listAllDomains()]


@pytest.mark.xen_hvm
def test_hvm_guest_reaches_ready_on_serial(xen: XenHost, conn: libvirt.virConnect) -> None:
    name = "hvlib-hvm"
    xen.run(["rm", "-f", HVM_SERIAL_LOG])
    t = time.monotonic()
    dom = conn.defineXML(hvm_xml(name))
    t = timed_step("hvm.define", t)
    try:
        dom.create()
        t = timed_step("hvm.start", t)
        xen.wait_for_line(HVM_SERIAL_LOG, gk.READY_LINE, timeout=180)
        t = timed_step("hvm.ready_line", t)
        dom.destroy()
        timed_step("hvm.destroy", t)
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    assert name not in [d.name() for d in conn.listAllDomains()]


@pytest.mark.skipif(not DOMAIN_RNG.is_file(), reason=f"{DOMAIN_RNG} not installed")
def test_domain_xml_is_valid_for_libvirt(xen: XenHost) -> None:
    """dom0's QEMU domain and both guests' Xen domains pass libvirt's own RelaxNG schema."""
    schema = etree.RelaxNG(etree.parse(str(DOMAIN_RNG)))
    assert xen.image is not None
    dom0 = dom0_domain_xml("dom0", xen.image, Path("/o.qcow2"), Path("/k.img"), Path("/c"), 2222)
    for dom in (dom0, etree.fromstring(pv_xml("pv")), etree.fromstring(hvm_xml("hvm"))):
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
