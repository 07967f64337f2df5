"""SandboxHost for real: private libvirtds side by side, an LXC container and a QEMU guest in
them, and cleanup after stop(), after Ctrl-C, and after the owner was SIGKILLed.

Every sandbox is stopped by a fixture or a ``with`` block even when a test fails; every wait has
a deadline. Guest networks exist only inside the sandboxes' network namespaces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from hvlib.testkit.sandbox import (
    SandboxHost,
    diff_snapshots,
    host_network_snapshot,
    leftovers,
    reap_stale,
)
from hvlib.virt.lxcmonitor import monitor_lost
from hvlib.virt.lxcstart import INIT_POLL, INIT_WAITS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="a sandbox needs root"),
    pytest.mark.skipif(
        shutil.which("libvirtd", path="/usr/sbin:/usr/bin:/sbin:/bin") is None,
        reason="libvirtd not installed (scripts/install-deps.sh)",
    ),
]

BUSYBOX = Path("/bin/busybox")  # busybox-static: runs with no libraries in the container


# ---- helpers ---------------------------------------------------------------------------------


def lxc_xml(name: str, rootfs: Path) -> str:
    """A container whose root is rootfs and whose init is ``/bin/sh -c 'sleep 1000'``."""
    dom = etree.Element("domain", type="lxc")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "64"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type").text = "exe"
    etree.SubElement(os_el, "init").text = "/bin/sh"
    for arg in ("-c", "sleep 1000"):
        etree.SubElement(os_el, "initarg").text = arg
    devices = etree.SubElement(dom, "devices")
    fs = etree.SubElement(devices, "filesystem", type="mount")
    etree.SubElement(fs, "source", dir=str(rootfs))
    etree.SubElement(fs, "target", dir="/")
    etree.SubElement(devices, "console", type="pty")
    return etree.tostring(dom, encoding="unicode")


def qemu_xml(name: str) -> str:
    """A TCG guest with no disk and no OS: the firmware just waits, which is enough to run."""
    dom = etree.Element("domain", type="qemu")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "64"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    return etree.tostring(dom, encoding="unicode")


def make_rootfs(path: Path) -> Path:
    """A container root: busybox-static plus the applet links the init uses."""
    if not BUSYBOX.exists():
        pytest.skip("busybox-static not installed (scripts/install-deps.sh)")
    (path / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, path / "bin/busybox")
    for applet in ("sh", "sleep"):
        (path / "bin" / applet).symlink_to("busybox")
    return path


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in "ZX"


def comm_names(pids: set[int]) -> set[str]:
    """The short names of those pids that still run."""
    names = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            names.add(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def mine(name: str, lines: list[str]) -> list[str]:
    """The lines of leftovers()/reap_stale() about sandbox name."""
    return [line for line in lines if line.startswith(f"sandbox {name} ") or f" {name}:" in line]


def qemu_pid(sb: SandboxHost, name: str) -> int:
    return int((sb.root / "run/libvirt/qemu" / f"{name}.pid").read_text())


def assert_all_gone(name: str, netns: str, root: Path, pids: set[int]) -> None:
    assert mine(name, leftovers()) == []
    assert not netns_exists(netns)
    assert not root.exists()
    assert [p for p in pids if alive(p)] == []
    assert not Path("/run/hvlib-sandboxes", name).exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/**/{netns}"))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHost]:
    """One sandbox shared by the guest tests of this module."""
    with SandboxHost() as sb:
        yield sb


# ---- side by side ------------------------------------------------------------------------------


def test_two_sandboxes_side_by_side_leave_nothing_behind() -> None:
    before = host_network_snapshot()
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        a = stack.enter_context(SandboxHost())
        b = stack.enter_context(SandboxHost())
        print(f"two sandboxes started in {time.monotonic() - started:.2f} s")
        assert len({a.bridge, b.bridge}) == 2 and len({a.netns, b.netns}) == 2
        for sb in (a, b):
            check_sandbox_serves(sb)
        assert diff_snapshots(before, host_network_snapshot()).leaks == []
        pids = a.pids() | b.pids()
        assert a.libvirtd_pid in pids and b.libvirtd_pid in pids
        gone = [(sb.name, sb.netns, sb.root) for sb in (a, b)]
    assert diff_snapshots(before, host_network_snapshot()).leaks == []
    for name, netns, root in gone:
        assert_all_gone(name, netns, root, pids)


def check_sandbox_serves(sb: SandboxHost) -> None:
    """Both URIs answer; network `default` runs inside the netns only; pool `default` runs."""
    for uri in (sb.qemu_uri, sb.lxc_uri):
        conn = libvirt.open(uri)
        try:
            assert conn.getLibVersion() >= 9_000_000 and conn.getVersion() > 0
            assert conn.listAllDomains() == []
        finally:
            conn.close()
    conn = libvirt.open(sb.qemu_uri)
    try:
        net = conn.networkLookupByName("default")
        assert net.isActive() and net.autostart() and net.bridgeName() == sb.bridge
        pool = conn.storagePoolLookupByName("default")
        assert pool.isActive() and pool.autostart()
        assert etree.fromstring(pool.XMLDesc()).findtext("target/path") == str(sb.root / "images")
    finally:
        conn.close()
    assert not os.path.exists(f"/sys/class/net/{sb.bridge}")  # not in the host namespace
    links = subprocess.run(sb.in_netns(["ip", "-br", "link"]), capture_output=True, text=True)
    assert sb.bridge in links.stdout
    listeners = subprocess.run(sb.in_netns(["ss", "-H", "-ltnu"]), capture_output=True, text=True)
    assert ":53 " in listeners.stdout  # dnsmasq, inside the sandbox's netns


# ---- guests ------------------------------------------------------------------------------------


@pytest.mark.lxc
def test_lxc_container_starts_and_stops(sandbox: SandboxHost, tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs")
    conn = libvirt.open(sandbox.lxc_uri)
    try:
        started = time.monotonic()
        dom = conn.createXML(lxc_xml("c1", rootfs))
        print(f"LXC start took {time.monotonic() - started:.3f} s")
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        # the container's init runs among the sandbox's processes once sh has exec'd sleep
        deadline = time.monotonic() + 10
        while not {"libvirt_lxc", "sleep"} <= (comms := comm_names(sandbox.pids())):
            assert time.monotonic() < deadline, f"container processes not found: {sorted(comms)}"
            time.sleep(0.05)
        dom.destroy()
        assert [d.name() for d in conn.listAllDomains()] == []
    finally:
        conn.close()


@pytest.mark.qemu
def test_qemu_guest_runs_inside_the_sandbox_netns(sandbox: SandboxHost) -> None:
    conn = libvirt.open(sandbox.qemu_uri)
    try:
        dom = conn.createXML(qemu_xml("q1"))
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        pid = qemu_pid(sandbox, "q1")
        netns_ino = os.stat(f"/proc/{pid}/ns/net").st_ino
        assert netns_ino == os.stat(f"/run/netns/{sandbox.netns}").st_ino
        assert netns_ino != os.stat("/proc/self/ns/net").st_ino
        assert pid in sandbox.pids()
        dom.destroy()
        assert not alive(pid)
    finally:
        conn.close()


@pytest.mark.qemu
def test_same_domain_name_in_two_sandboxes_gets_separate_cgroups(sandbox: SandboxHost) -> None:
    """What a migration test needs: libvirt names the cgroup qemu-ID-NAME in each daemon."""
    with SandboxHost() as other:
        conns = [libvirt.open(sb.qemu_uri) for sb in (sandbox, other)]
        try:
            doms = [c.createXML(qemu_xml("twin")) for c in conns]
            groups = []
            for sb in (sandbox, other):
                text = Path(f"/proc/{qemu_pid(sb, 'twin')}/cgroup").read_text()
                groups.append({ln.split(":", 2)[2] for ln in text.splitlines() if "machine" in ln})
            assert groups[0] and groups[1] and not groups[0] & groups[1]
            assert all(f"/{sandbox.netns}/machine/" in g for g in groups[0])
            for dom in doms:
                dom.destroy()
        finally:
            for c in conns:
                c.close()


def test_start_interrupted_midway_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def ctrl_c(self: SandboxHost) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(SandboxHost, "_define_network_and_pool", ctrl_c)
    sb = SandboxHost()
    with pytest.raises(KeyboardInterrupt):
        sb.start()
    assert_all_gone(sb.name, sb.netns, sb.root, set())


# ---- an owner interrupted or killed ------------------------------------------------------------

CHILD = """
import signal, sys, time, libvirt
from hvlib.testkit.sandbox import SandboxHost
# Ctrl-C raises KeyboardInterrupt, as in a program started from a terminal, even when this
# test runs under a shell's background job (bash gives those SIGINT ignored, and Python then
# keeps it ignored): the cause of this test's 60 s hangs in fresh-clone runs.
signal.signal(signal.SIGINT, signal.default_int_handler)
name, lxc, qemu = sys.argv[1:4]
started = time.monotonic()
with SandboxHost(name) as sb:
    for uri, xml in ((sb.lxc_uri, lxc), (sb.qemu_uri, qemu)):
        conn = libvirt.open(uri)
        conn.createXML(xml)
        conn.close()
    took = round(time.monotonic() - started, 2)
    print("UP", took, sb.watcher_pid, *sorted(sb.pids()), flush=True)
    time.sleep(600)
"""
OWNER_UP = 60.0
"""Seconds for the owner to start its sandbox, an LXC container and a QEMU guest. Measured
(2 cores): 1.1-1.7 s idle, 1.6-2.2 s with a CPU hog on one core, also after test_faults.py;
a cold QEMU capability probe (no cache yet) adds ~8 s. 60 s is ~6x that cold worst."""
CTRL_C_EXIT = 30.0
"""Seconds from SIGINT to the owner's exit (its stop(): destroy 2 guests, stop libvirtd,
delete the netns). Measured: 2.4 s idle, 2.35-2.75 s with a CPU hog (5 runs); ~11x margin."""
OWNER_DEATH_GONE = 20.0
"""Seconds from the owner's death (SIGTERM or SIGKILL) until its watcher removed everything.
Measured: 2.3-2.4 s idle, 2.75-2.85 s with a CPU hog (8 runs); ~7x margin."""


def catches(pid: int, sig: signal.Signals) -> bool:
    """True if process pid has a handler installed for sig (``SigCgt`` in its status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def process_report(pid: int) -> str:
    """What a process that did not exit is doing: state, signal masks, kernel wait, children."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError as e:
        return f"pid {pid}: {e}"
    keep = ("State", "SigBlk", "SigIgn", "SigCgt", "Threads")
    fields = [line for line in status if line.split(":")[0] in keep]
    kids = subprocess.run(["ps", "-o", "pid,stat,wchan:20,cmd", "--ppid", str(pid)], **TEXT)
    return f"pid {pid}: {'; '.join(fields)}; wchan {wchan}; children:\n{kids.stdout}"


TEXT: dict[str, object] = {"capture_output": True, "text": True, "check": False}


def what_remains(name: str, pids: set[int]) -> list[str]:
    """What of sandbox name still exists (empty: all gone)."""
    netns, root = f"hvlib-{name}", Path("/var/tmp/hvlib-sandboxes", name)
    found = [f"process {p}" for p in sorted(pids) if alive(p)]
    found += [f"netns {netns}"] if netns_exists(netns) else []
    found += [f"directory {root}"] if root.exists() else []
    found += [f"state entry {name}"] if Path("/run/hvlib-sandboxes", name).exists() else []
    try:
        found += [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/**/{netns}")]
    except FileNotFoundError as e:  # a cgroup removed while glob walked it: look again
        found.append(f"cgroups being removed ({e.filename})")
    return found


def wait_all_gone(name: str, pids: set[int], bound: float) -> float:
    """Seconds until nothing of sandbox name remains; fails with what remains after bound."""
    started = time.monotonic()
    while remains := what_remains(name, pids):
        if time.monotonic() - started > bound:
            pytest.fail(f"{bound} s after its owner died, sandbox {name} still has {remains}")
        time.sleep(0.05)
    return time.monotonic() - started


@dataclasses.dataclass
class Owner:
    proc: subprocess.Popen[str]
    name: str
    watcher: int
    pids: set[int]
    err: Path

    def wait_exit(self, bound: float, after: str) -> float:
        """Seconds until the owner exits; fails with what it is doing after bound."""
        started = time.monotonic()
        try:
            self.proc.wait(bound)
        except subprocess.TimeoutExpired:
            report = process_report(self.proc.pid)
            tail = self.err.read_text()[-2000:]
            pytest.fail(f"owner did not exit within {bound} s {after}: {report}\nstderr: {tail}")
        return time.monotonic() - started


@contextlib.contextmanager
def owner_process(tmp_path: Path) -> Iterator[Owner]:
    """A child process owning a sandbox with an LXC container and a QEMU guest running.

    Kills the child (and reaps the sandbox) if still there after.
    """
    name = f"own{os.getpid()}x{time.monotonic_ns() % 10**6}"
    rootfs = make_rootfs(tmp_path / "rootfs")
    args = [sys.executable, "-c", CHILD, name, lxc_xml("c1", rootfs), qemu_xml("q1")]
    err = tmp_path / "child.err"
    with err.open("w") as out:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=out, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], OWNER_UP)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("UP "), f"no sandbox within {OWNER_UP} s: {err.read_text()[-3000:]}"
        _, took, watcher, *pids = line.split()
        print(f"owner's sandbox and guests up in {took} s")
        yield Owner(proc, name, int(watcher), {int(p) for p in pids}, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(CTRL_C_EXIT)
        reap_stale()


@pytest.mark.lxc
@pytest.mark.qemu
def test_ctrl_c_in_owner_cleans_up(tmp_path: Path) -> None:
    with owner_process(tmp_path) as owner:
        assert len(owner.pids) >= 4  # libvirtd, dnsmasq, libvirt_lxc + container init, QEMU
        assert catches(owner.proc.pid, signal.SIGINT), process_report(owner.proc.pid)
        owner.proc.send_signal(signal.SIGINT)
        took = owner.wait_exit(CTRL_C_EXIT, "after its SIGINT")
        print(f"owner exited {took:.2f} s after SIGINT")
    assert "KeyboardInterrupt" in owner.err.read_text()
    assert_all_gone(owner.name, f"hvlib-{owner.name}", sandbox_root(owner.name), owner.pids)


@pytest.mark.lxc
@pytest.mark.qemu
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_owner_takes_its_sandbox_along(tmp_path: Path, sig: signal.Signals) -> None:
    """No stop() runs (Python dies of SIGTERM as of SIGKILL): the watcher sees the owner's
    pidfd become readable and tears everything down by itself, at once."""
    with owner_process(tmp_path) as owner:
        owner.proc.send_signal(sig)
        owner.wait_exit(CTRL_C_EXIT, f"after {sig.name}")
        took = wait_all_gone(owner.name, owner.pids | {owner.watcher}, OWNER_DEATH_GONE)
        print(f"{sig.name}: sandbox gone {took:.2f} s after its owner died")
    assert_all_gone(owner.name, f"hvlib-{owner.name}", sandbox_root(owner.name), owner.pids)


@pytest.mark.lxc
@pytest.mark.qemu
def test_owner_and_watcher_killed_is_reported_then_reaped(tmp_path: Path) -> None:
    """What outlives the watcher too (a reboot, a killed watcher): leftovers() reports it and
    the next reap_stale() removes it."""
    with owner_process(tmp_path) as owner:
        os.kill(owner.watcher, signal.SIGKILL)
        owner.proc.kill()
        owner.wait_exit(CTRL_C_EXIT, "after SIGKILL")
        found = mine(owner.name, leftovers())
        text = "\n".join(found)
        assert "libvirtd pid" in text and "qemu-system" in text and "libvirt_lxc" in text, text
        assert f"netns hvlib-{owner.name}" in text and "hvbr-" in text, text
        assert all(alive(p) for p in owner.pids)  # leftovers() only reads
        removed = "\n".join(mine(owner.name, reap_stale()))
        assert "destroyed qemu domain q1" in removed, removed
        assert "destroyed lxc domain c1" in removed, removed
        assert f"deleted netns hvlib-{owner.name}" in removed, removed
    assert_all_gone(owner.name, f"hvlib-{owner.name}", sandbox_root(owner.name), owner.pids)


def sandbox_root(name: str) -> Path:
    return Path("/var/tmp/hvlib-sandboxes", name)


# ---- the LXC start race (README, Reliability) ------------------------------------------

RACE_STARTS = 300
"""Raw starts tried until libvirt loses one container's init: measured 4.5-13 % of raw
libvirt-python starts lose it, so 300 find one but for p < 1e-6 (typically within 20)."""


def init_known(dom: libvirt.virDomain) -> bool:
    """True if libvirt can open the container's namespaces (it knows the init pid)."""
    import libvirt_lxc

    try:
        fds = libvirt_lxc.lxcOpenNamespace(dom, 0)
    except libvirt.libvirtError:
        return False
    for fd in fds:
        os.close(fd)
    return True


def init_known_within(dom: libvirt.virDomain, seconds: float) -> bool:
    """True once libvirt knows the init pid, polled for ``seconds`` (hvlib's own longest wait
    for a loaded host, ``INIT_WAITS``; when libvirt learns it at all, it is within 6 ms)."""
    deadline = time.monotonic() + seconds
    while not init_known(dom):
        if time.monotonic() >= deadline:
            return False
        time.sleep(INIT_POLL)
    return True


def start_outcome(dom: libvirt.virDomain, name: str, seconds: float) -> str:
    """How a raw start ends: "known" (libvirt learned the init within ``seconds``, hvlib's
    longest wait), "lost" (it did not, and monitor_lost says libvirt holds no monitor
    connection) or "late" (it did not, yet the connection is held: a loaded host)."""
    if init_known_within(dom, seconds):
        return "known"
    return "lost" if monitor_lost(dom.ID(), name) else "late"


@pytest.mark.lxc
def test_a_start_whose_monitor_libvirt_dropped_is_recognised(
    sandbox: SandboxHost, tmp_path: Path
) -> None:
    """hvlib.virt.lxcmonitor.monitor_lost agrees with libvirt on every start once it has
    settled: False where libvirt learned the init pid, True for the start whose init event
    libvirt 9.0 dropped. (Before it settles it may read True while libvirtd's connection
    waits to be accepted: hvlib's start asks it to hold for LOST_CONFIRM s.)"""

    xml = lxc_xml("race", make_rootfs(tmp_path / "rootfs"))
    late = 0
    conn = libvirt.open(sandbox.lxc_uri)
    try:
        for i in range(RACE_STARTS):
            dom = conn.createXML(xml)
            try:
                seen = start_outcome(dom, "race", max(INIT_WAITS))
                if seen == "known":  # a known init: libvirt holds its monitor connection
                    assert monitor_lost(dom.ID(), "race") is False, f"start {i + 1}"
                elif seen == "late":
                    late += 1  # monitor held, init late past hvlib's longest wait: a loaded
                    continue  # host, where hvlib starts again too; not what this test is about
            finally:
                dom.destroy()
            if seen == "lost":
                print(f"libvirt dropped the monitor on start {i + 1}; recognised")
                return
    finally:
        conn.close()
    pytest.fail(
        f"no start of {RACE_STARTS} lost its init ({late} were late): the race is gone "
        "(update README)"
    )
