"""Pure parts of hvlib.testkit.sandbox: names, XML, scripts, parsers, the owner registry.

Nothing here starts a daemon, creates a namespace or needs root.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

from hvlib.testkit import sandbox as sbx
from hvlib.testkit import sandbox_base as sbbase
from hvlib.testkit import sandbox_netcheck as sbnet
from hvlib.testkit import sandbox_procs as sbprocs
from hvlib.testkit import sandbox_registry as sbreg

SCHEMAS = Path("/usr/share/libvirt/schemas")

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
"""


def _validate(xml: bytes, schema: str) -> None:
    if not (SCHEMAS / schema).exists():
        pytest.skip(f"libvirt schema {schema} not installed")
    rng = etree.RelaxNG(etree.parse(str(SCHEMAS / schema)))
    doc = etree.fromstring(xml)
    assert rng.validate(doc), rng.error_log


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_out())
    return int(proc.stdout)


def _out() -> dict[str, object]:
    return {"capture_output": True, "text": True, "check": True}


# ---- names and paths ---------------------------------------------------------------------


def test_bridge_names_fit_ifnamsiz_and_differ_per_sandbox() -> None:
    names = {sbbase.bridge_name(f"sb{i}") for i in range(200)}
    assert len(names) == 200
    assert all(n.startswith("hvbr-") and len(n) <= 15 for n in names)
    assert sbbase.bridge_name("a") == sbbase.bridge_name("a")


@pytest.mark.parametrize("name", ["a", "sb0123abcd", "mig-src_1", "x" * 32])
def test_check_name_accepts(name: str) -> None:
    sbbase.check_name(name)


@pytest.mark.parametrize("name", ["", "-a", "A", "a b", "a/b", "x" * 33, "ä"])
def test_check_name_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="sandbox name"):
        sbbase.check_name(name)


@pytest.mark.parametrize("root", ["rel/path", "/with space", "/q?x=1", "/" + "d" * 90])
def test_check_root_rejects(root: str) -> None:
    with pytest.raises(ValueError, match="sandbox root"):
        sbbase.check_root(Path(root))


def test_host_attributes_before_start() -> None:
    host = sbx.SandboxHost("unit1")
    assert host.netns == "hvlib-unit1"
    assert host.root == sbx.ROOT_BASE / "unit1"
    sock = host.root / "run/libvirt/libvirt-sock"
    assert host.qemu_uri == f"qemu+unix:///system?socket={sock}"
    assert host.lxc_uri == f"lxc+unix:///system?socket={sock}"
    assert host.bridge == sbbase.bridge_name("unit1")
    with pytest.raises(sbx.SandboxError):
        _ = host.libvirtd_pid
    host.stop()  # never started: a no-op


def test_default_names_are_unique_and_valid() -> None:
    names = {sbx.SandboxHost().name for _ in range(50)}
    assert len(names) == 50
    for name in names:
        sbbase.check_name(name)


def test_custom_root(tmp_path: Path) -> None:
    host = sbx.SandboxHost("unit2", root=tmp_path / "r")
    assert str(tmp_path / "r/run/libvirt/libvirt-sock") in host.qemu_uri


# ---- XML -------------------------------------------------------------------------------------


def test_network_xml_is_valid_nat_with_dhcp() -> None:
    xml = sbx.network_xml("hvbr-12345678")
    _validate(xml, "network.rng")
    net = etree.fromstring(xml)
    assert net.findtext("name") == "default"
    assert net.find("forward").get("mode") == "nat"
    assert net.find("bridge").get("name") == "hvbr-12345678"
    assert net.find("bridge").get("stp") == "off"
    rng = net.find("ip/dhcp/range")
    assert (rng.get("start"), rng.get("end")) == (sbx.NET_DHCP_START, sbx.NET_DHCP_END)


def test_pool_xml_is_valid_dir_pool(tmp_path: Path) -> None:
    xml = sbx.pool_xml(tmp_path / "images")
    _validate(xml, "storagepool.rng")
    pool = etree.fromstring(xml)
    assert (pool.get("type"), pool.findtext("name")) == ("dir", "default")
    assert pool.findtext("target/path") == str(tmp_path / "images")


# ---- launch scripts --------------------------------------------------------------------------


def _need_tools() -> None:
    for tool in ("libvirtd", "nsenter", "unshare", "taskset", "mountpoint"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            pytest.skip(f"{tool} not installed")


def test_launch_script_unmounts_remounts_binds_and_execs(tmp_path: Path) -> None:
    _need_tools()
    mounts = sbprocs.cgroup_v1_mounts(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    script = sbx.launch_script(tmp_path / "my root", tmp_path / "pid", mounts, 1)
    lines = script.splitlines()
    assert lines[0] == "set -e"
    assert any("-q /sys/fs/cgroup/unified; then" in line for line in lines)
    assert any("umount -l /run/netns" in line for line in lines)
    assert any("-t cgroup -o name=systemd cgroup /sys/fs/cgroup/systemd" in line for line in lines)
    for d in sbbase.LIBVIRT_DIRS:
        assert f"--bind {shlex.quote(str(tmp_path / 'my root' / d))} /{d}" in script
    assert lines[-1].startswith("exec ") and " -c 1 " in lines[-1]
    assert " -m hvlib.testkit._reaper " in lines[-1], "libvirtd runs under the subreaper"
    assert lines[-1].endswith(f"libvirtd -p {shlex.quote(str(tmp_path / 'pid'))}")
    subprocess.run(["sh", "-n", "-c", script], check=True)  # it parses


def test_launch_argv_moves_into_cgroups_before_namespaces() -> None:
    _need_tools()
    argv = sbx.launch_argv("hvlib-x", "exec true", ["/sys/fs/cgroup/cpu/hvlib-x"])
    assert argv[1] == "-c"
    outer = argv[2]
    assert outer.index("> /sys/fs/cgroup/cpu/hvlib-x/cgroup.procs") < outer.index("nsenter")
    inside = shlex.split(outer.split("exec ", 1)[1])
    assert inside[1] == "--net=/run/netns/hvlib-x"
    assert "-m" in inside and "-C" in inside and inside[-2:] == ["-c", "exec true"]
    plain = shlex.split(sbx.launch_argv("hvlib-x", "exec true", [])[2].split("exec ", 1)[1])
    assert "-C" not in plain


# ---- cgroups ---------------------------------------------------------------------------------


def test_cgroup_v1_mounts_hybrid() -> None:
    mounts = sbprocs.cgroup_v1_mounts(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert [(m.mountpoint, m.options, m.ours) for m in mounts] == [
        ("/sys/fs/cgroup/cpu", "cpu", "/"),
        ("/sys/fs/cgroup/cpuacct", "cpuacct", "/"),
        ("/sys/fs/cgroup/memory", "memory", "/process_api/abc"),
        ("/sys/fs/cgroup/systemd", "name=systemd", "/"),
    ]


def test_cgroup_v1_mounts_combined_controllers() -> None:
    info = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    mounts = sbprocs.cgroup_v1_mounts(info, "3:cpu,cpuacct:/user.slice\n0::/\n")
    assert [(m.mountpoint, m.options, m.ours) for m in mounts] == [
        ("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct", "/user.slice")
    ]


def test_cgroup_v1_mounts_pure_v2_is_empty() -> None:
    info = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    assert sbprocs.cgroup_v1_mounts(info, "0::/user.slice\n") == []


def test_cgroup_dirs_made_and_removed(tmp_path: Path) -> None:
    # a plain directory tree stands in for a cgroup hierarchy
    (tmp_path / "cpuset").mkdir()
    (tmp_path / "cpuset/cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset/cpuset.mems").write_text("0\n")
    mounts = [sbprocs.CgroupMount(str(tmp_path / "cpuset"), "cpuset", "/")]
    [made] = sbprocs._make_cgroups(mounts, "hvlib-x")
    assert Path(made, "cpuset.cpus").read_text() == "0-1\n"
    for f in Path(made).iterdir():
        f.unlink()  # real cgroup dirs hold only virtual files, which rmdir ignores
    Path(made, "machine/vm").mkdir(parents=True)
    assert sbprocs._remove_cgroups([made]) == [f"removed cgroups {made}"]
    assert not Path(made).exists()


# ---- host network snapshots ------------------------------------------------------------------

IP_BR_LINK = """\
lo               UNKNOWN        00:00:00:00:00:00 <LOOPBACK,UP,LOWER_UP>
eth0             UP             02:fc:00:00:00:01 <BROADCAST,MULTICAST,UP,LOWER_UP>
veth1a2b@if5     UP             52:54:00:aa:bb:cc <BROADCAST,MULTICAST,UP,LOWER_UP>
"""
SS = """\
tcp LISTEN 0      128    0.0.0.0:2024 0.0.0.0:*
tcp LISTEN 0      4096   127.0.0.53%lo:53 0.0.0.0:*
udp UNCONN 0      0      0.0.0.0%hvbr-1:67 0.0.0.0:*
tcp LISTEN 0      5      [::1]:8080 [::]:*
"""


def test_parse_ip_br_link_drops_peer_suffix() -> None:
    assert sbnet.parse_ip_br_link(IP_BR_LINK) == {"lo", "eth0", "veth1a2b"}


def test_parse_ss_listeners() -> None:
    assert sbnet.parse_ss_listeners(SS) == {
        "tcp 0.0.0.0:2024",
        "tcp 127.0.0.53%lo:53",
        "udp 0.0.0.0%hvbr-1:67",
        "tcp [::1]:8080",
    }


@pytest.mark.parametrize(
    ("listener", "loopback"),
    [
        ("tcp 127.0.0.1:80", True),
        ("tcp 127.9.9.9:80", True),
        ("tcp 127.0.0.53%lo:53", True),
        ("tcp [::1]:8080", True),
        ("tcp [::ffff:127.0.0.1]:1", True),
        ("tcp 0.0.0.0:2024", False),
        ("tcp *:22", False),
        ("tcp [::]:22", False),
        ("udp 0.0.0.0%hvbr-1:67", False),
        ("tcp 192.168.122.1:53", False),  # an address that belongs in a netns only
    ],
)
def test_is_loopback_listener(listener: str, loopback: bool) -> None:
    assert sbnet.is_loopback_listener(listener) is loopback


def test_diff_snapshots_reports_only_non_loopback_additions() -> None:
    before = sbx.NetSnapshot(frozenset({"lo", "eth0"}), frozenset({"tcp 0.0.0.0:2024"}))
    after = sbx.NetSnapshot(
        frozenset({"lo", "hvbr-1"}),
        frozenset({"tcp 127.0.0.1:41000", "udp 0.0.0.0:67"}),
    )
    diff = sbx.diff_snapshots(before, after)
    assert diff.added_links == ("hvbr-1",)
    assert diff.removed_links == ("eth0",)
    assert diff.added_listeners == ("udp 0.0.0.0:67",)
    assert diff.removed_listeners == ("tcp 0.0.0.0:2024",)
    assert diff.leaks == ["new interface hvbr-1", "new listener udp 0.0.0.0:67"]
    assert sbx.diff_snapshots(before, before).leaks == []


# ---- owner registry, leftovers, reap -----------------------------------------------------------


def _stale_record(tmp_path: Path, name: str = "stale1") -> tuple[Path, Path]:
    """A registration whose owner is dead and whose only remains are its tree."""
    state, root = tmp_path / "state", tmp_path / "root"
    root.mkdir()
    (root / ".hvlib-sandbox").write_text(name)
    (root / "etc").mkdir()
    rec = sbreg._Record(name, "hvlib-" + name, str(root), sbbase.bridge_name(name), _dead_pid())
    fd = sbreg._register(state / name, rec)
    os.close(fd)  # what the kernel does when the owner dies
    return state, root


def test_leftovers_and_reap_of_a_dead_owner(tmp_path: Path) -> None:
    state, root = _stale_record(tmp_path)
    found = sbx.leftovers(state_dir=state)
    assert len(found) == 1 and found[0].startswith("sandbox stale1 (owner pid")
    assert "gone" in found[0] and f"directory {root}" in found[0]
    assert root.exists()  # leftovers() only reads
    removed = sbx.reap_stale(state_dir=state)
    assert f"sandbox stale1: removed {root}" in removed
    assert any("state entry" in line for line in removed)
    assert not root.exists() and not (state / "stale1").exists()
    assert sbx.leftovers(state_dir=state) == []
    assert sbx.reap_stale(state_dir=state) == []


def test_live_owner_is_not_a_leftover(tmp_path: Path) -> None:
    rec = sbreg._Record("live1", "hvlib-live1", str(tmp_path / "r"), "hvbr-0", os.getpid())
    fd = sbreg._register(tmp_path / "state/live1", rec)
    try:
        assert sbx.leftovers(state_dir=tmp_path / "state") == []
        assert sbx.reap_stale(state_dir=tmp_path / "state") == []
        with pytest.raises(sbx.SandboxError, match="registered already"):
            sbreg._register(tmp_path / "state/live1", rec)
    finally:
        os.close(fd)
    assert sbx.leftovers(state_dir=tmp_path / "state")  # the lock is free: now stale


def test_unreadable_record_is_reported_and_reaped(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    assert sbx.leftovers(state_dir=tmp_path) == [
        f"sandbox broken: state entry {tmp_path / 'broken'} without a readable record"
    ]
    assert sbx.reap_stale(state_dir=tmp_path) == [
        f"sandbox broken: state entry {tmp_path / 'broken'}"
    ]
    assert sbx.leftovers(state_dir=tmp_path) == []


def test_record_from_another_version_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "v0").mkdir()
    (tmp_path / "v0/owner.json").write_text(
        '{"name": "v0", "netns": "hvlib-v0", "root": "/nonexistent/v0", "bridge": "hvbr-0",'
        ' "owner_pid": 1, "netns_inode": 4026532248, "future_field": [1]}'
    )
    assert sbx.leftovers(state_dir=tmp_path) == [
        f"sandbox v0 (owner pid 1 alive, no stop() ran): state entry {tmp_path / 'v0'} only"
    ]


def test_missing_state_dir_means_no_leftovers(tmp_path: Path) -> None:
    assert sbx.leftovers(state_dir=tmp_path / "none") == []
    assert sbx.reap_stale(state_dir=tmp_path / "none") == []


def test_root_without_marker_is_never_removed(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("x")
    rec = sbreg._Record("m", "hvlib-m", str(tmp_path), "hvbr-0", 1)
    assert sbreg._remove_root(rec) == []
    assert (tmp_path / "precious").exists()


def test_teardown_finishes_every_step_before_reraising_ctrl_c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran = []

    def interrupted(rec: object) -> list[str]:
        raise KeyboardInterrupt

    def failing(rec: object) -> list[str]:
        raise OSError("already gone")

    def last(rec: object) -> list[str]:
        ran.append("last")
        return ["removed something"]

    monkeypatch.setattr(sbreg, "_TEARDOWN_STEPS", (interrupted, failing, last))
    with pytest.raises(KeyboardInterrupt):
        sbreg._teardown(sbreg._Record("t", "hvlib-t", "/nonexistent", "hvbr-0", 1))
    assert ran == ["last"]


def test_start_needs_root() -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root")
    with pytest.raises(sbx.SandboxError, match="root"):
        sbx.SandboxHost("unit3").start()


# ---- the watcher: a sandbox goes when its owner dies ---------------------------------------------

OWNER = """
import os, sys, time, subprocess
from pathlib import Path
from hvlib.testkit import sandbox as sbx
state, root, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
root.mkdir()
(root / ".hvlib-sandbox").write_text(name)
rec = sbx._Record(name, "hvlib-" + name, str(root), sbx.bridge_name(name), os.getpid())
fd = sbx._register(state / name, rec)
w = subprocess.Popen(sbx.watcher_argv(os.getpid(), state / name), start_new_session=True)
print("UP", w.pid, flush=True)
time.sleep(600)
"""
WATCH_BOUND = 5.0
"""Seconds from an owner's death to its sandbox's tree and entry being gone (no daemon in
this one). Measured here: 0.15-0.3 s (an interpreter start and a teardown of a tree); 5 s
leaves room for a loaded 2-core machine."""


def _owner(tmp_path: Path, name: str) -> tuple[subprocess.Popen[str], int, Path, Path]:
    state, root = tmp_path / "state", tmp_path / "root"
    argv = [sys.executable, "-c", OWNER, str(state), str(root), name]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("UP "), f"the owner did not start: {line!r}"
    return proc, int(line.split()[1]), state / name, root


def _ended_within(pid: int, bound: float) -> None:
    """Wait until pid has exited (gone, or a zombie its parent has not reaped); fails after
    bound."""
    started = time.monotonic()
    while sbx._alive(pid):
        assert time.monotonic() - started < bound, f"process {pid} still runs after {bound} s"
        time.sleep(0.01)


def _gone_within(paths: list[Path], bound: float) -> float:
    """Seconds until none of paths exists; fails naming what stayed after bound."""
    started = time.monotonic()
    while any(p.exists() for p in paths):
        left = [str(p) for p in paths if p.exists()]
        assert time.monotonic() - started < bound, f"still there {bound} s after: {left}"
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_watcher_reaps_the_sandbox_when_its_owner_dies(tmp_path: Path, sig: signal.Signals) -> None:
    proc, watcher, entry, root = _owner(tmp_path, f"w{sig.value}")
    assert root.exists() and entry.exists()
    time.sleep(0.3)  # let the watcher open its pidfd (it may also see the owner gone: fine)
    proc.send_signal(sig)
    proc.wait(WATCH_BOUND)
    took = _gone_within([root, entry], WATCH_BOUND)
    print(f"{sig.name}: sandbox tree and entry gone {took:.3f} s after the owner's death")
    _ended_within(watcher, WATCH_BOUND)


def test_watcher_ended_by_its_owner_leaves_the_sandbox_alone(tmp_path: Path) -> None:
    """What stop() does once it tore the sandbox down itself: SIGTERM ends the watcher and
    the watcher does nothing (here the tree is left on purpose, so doing nothing shows)."""
    proc, watcher, entry, root = _owner(tmp_path, "wstop")
    try:
        os.kill(watcher, signal.SIGTERM)
        _ended_within(watcher, WATCH_BOUND)
        assert root.exists() and entry.exists()
    finally:
        proc.kill()
        proc.wait(WATCH_BOUND)


def test_wait_for_exit_returns_at_once_for_a_process_that_is_gone_or_not_the_parent() -> None:
    from hvlib.testkit import _reaper

    started = time.monotonic()
    _reaper.wait_for_exit(_dead_pid())
    _reaper.wait_for_exit(1)  # alive, but not our parent: its death could never be seen
    assert time.monotonic() - started < 1.0


# ---- the LXC start race: libvirtd's monitor connection, from /proc (hvlib.virt.lxcmonitor) ----

NET_UNIX_HEAD = "Num       RefCount Protocol Flags    Type St Inode Path\n"
LISTENER = "0000000000000000: 00000002 00000000 00010000 0001 01 249493 /run/libvirt/lxc/ct.sock\n"
ACCEPTED = "0000000000000000: 00000003 00000000 00000000 0001 03 230089 /run/libvirt/lxc/ct.sock\n"
OTHER = "0000000000000000: 00000003 00000000 00000000 0001 03 230090 /run/libvirt/lxc/ct2.sock\n"


def test_monitor_sockets_tell_a_lost_monitor_from_a_connected_one() -> None:
    """Lines as a libvirt 9.0 controller's netns shows them (seen in NOTES-lxc-race.md): a
    start whose init libvirt learned has the listener and one connection, a lost one only
    the listener."""
    from hvlib.virt.lxcmonitor import monitor_sockets

    assert monitor_sockets(NET_UNIX_HEAD + LISTENER + ACCEPTED, "ct") == (1, 1)
    assert monitor_sockets(NET_UNIX_HEAD + LISTENER + OTHER, "ct") == (1, 0)
    assert monitor_sockets(NET_UNIX_HEAD + OTHER, "ct") == (0, 0)
    assert monitor_sockets(NET_UNIX_HEAD + "garbage\n", "ct") == (0, 0)


def test_only_the_named_containers_controller_counts() -> None:
    from hvlib.virt.lxcmonitor import is_controller

    argv = b"/usr/lib/libvirt/libvirt_lxc\0--name\0ct\0--console\0" + b"25\0"
    assert is_controller(argv, "ct")
    assert not is_controller(argv, "ct2")
    assert not is_controller(b"/usr/bin/sleep\0--name\0ct\0", "ct")
    assert not is_controller(b"", "ct")


def test_monitor_lost_cannot_tell_for_a_process_that_is_no_controller() -> None:
    from hvlib.virt.lxcmonitor import monitor_lost

    assert monitor_lost(os.getpid(), "ct") is None
    assert monitor_lost(_dead_pid(), "ct") is None
