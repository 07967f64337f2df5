"""A throwaway libvirt host for tests and demos: a private libvirtd in its own namespaces.

``SandboxHost`` starts a libvirtd that serves both the QEMU and the LXC drivers on a unix
socket under the sandbox's own directory tree, so any number of sandboxes run side by side
with the machine's own libvirt untouched:

- network namespace ``hvlib-NAME`` (``ip netns add``): the daemon, its NAT network ``default``
  (bridge ``hvbr-XXXXXXXX``, dnsmasq, iptables rules) and every guest live there; nothing
  listens on or sends to a non-loopback address of the host's namespace;
- private mount namespace (``nsenter --net=... unshare -m --propagation private``) where
  ``/sys/fs/cgroup/unified`` is unmounted (libvirt's LXC driver fails on hybrid cgroups
  otherwise), ``/run/netns`` is detached (so this daemon does not pin other sandboxes'
  namespaces), and ``/run/libvirt``, ``/var/lib/libvirt``, ``/var/cache/libvirt``,
  ``/var/log/libvirt`` and ``/etc/libvirt`` are bind mounts of the sandbox's own directories.
  Paths outside those five are the host's: guests can use kernels and images anywhere;
- on cgroup v1 (hybrid) hosts, a cgroup namespace rooted at ``hvlib-NAME``, a child of the
  caller's own cgroup in every hierarchy, with the hierarchies remounted inside: libvirt's
  ``/machine/qemu-1-vm.libvirt-qemu`` lands under it, so two sandboxes running a domain of the
  same name (a migration test) do not share one cgroup, and guests stay accounted to the caller;
- libvirtd pinned to one CPU (QEMU and LXC guests still get all CPUs: libvirt sets their
  affinity itself). libvirt re-validates its QEMU capability cache on every lookup against the
  host CPUID of whichever CPU runs the check; leaf 0x1f carries that CPU's x2APIC id, so an
  unpinned daemon re-probes QEMU (~3.5 s) on a random half of domain starts;
- qemu.conf: ``stdio_handler = "file"`` (no virtlogd), QEMU runs as root with
  ``dynamic_ownership = 0`` and ``security_driver = "none"``, so guests open root-owned test
  files as they are and files shared by several sandboxes are never relabelled or chowned;
- a directory storage pool ``default`` at ``ROOT/images`` (same path inside and outside);
- the daemon sees the host's ``/sys`` (a fresh sysfs would hide the cgroup mounts), so its
  node-device driver lists the host's NICs and logs harmless ethtool errors about them.

Each sandbox registers ``/run/hvlib-sandboxes/NAME/`` (owner.json + a lock the owner holds
while it lives): :func:`leftovers` lists sandboxes whose lock is free (owner gone, or its stop
left something behind) and what of them still exists; :func:`reap_stale` removes those.
:func:`host_network_snapshot` and :func:`diff_snapshots` check that the host namespace gained
no interface and no non-loopback listener.

QEMU's probed capabilities are copied to ``hvlib.testkit.cache_dir()`` and seeded into the next
sandbox (libvirt re-validates them against the binaries), which saves ~8 s per start.

Must not: import libvirt (it talks to its daemon through ``virsh``), install signal handlers or
atexit hooks, touch the system libvirtd or its files, or leave processes behind after ``stop()``.
Needs root and the packages of scripts/install-deps.sh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType

from lxml import etree

from hvlib.testkit import cache_dir
from hvlib.testkit.forward import LoopbackForwarder, in_netns

__all__ = [
    "LINK_SUBNET",
    "NET_ADDRESS",
    "NET_DHCP_END",
    "NET_DHCP_START",
    "NET_NETMASK",
    "ROOT_BASE",
    "STATE_DIR",
    "AddressForwarder",
    "NetDiff",
    "NetSnapshot",
    "SandboxError",
    "SandboxHost",
    "SshLink",
    "SshServer",
    "diff_snapshots",
    "host_network_snapshot",
    "leftovers",
    "link",
    "reap_stale",
    "ssh_linked",
    "unlink",
]

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/hvlib-sandboxes")
ROOT_BASE = Path("/var/tmp/hvlib-sandboxes")
NETNS_PREFIX = "hvlib-"
# The five directories a sandboxed libvirtd sees as its own (relative to / and to ROOT).
LIBVIRT_DIRS = (
    "run/libvirt",
    "var/lib/libvirt",
    "var/cache/libvirt",
    "var/log/libvirt",
    "etc/libvirt",
)
# The `default` NAT network (a /24); the addresses exist only inside each sandbox's netns.
NET_ADDRESS = "192.168.122.1"  # the bridge's address, inside the sandbox netns only
NET_DHCP_START, NET_DHCP_END = "192.168.122.2", "192.168.122.254"  # DHCP range, netns only
NET_NETMASK = "255.255.255.0"

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_PATH_RE = re.compile(r"/[A-Za-z0-9_./-]+")  # the socket path goes into a URI unescaped
_SOCKET_MAX = 107  # sun_path holds 108 bytes with the NUL
_MARKER = ".hvlib-sandbox"
_WATCHER_EXIT = 5.0  # the watcher exits on SIGTERM at once (it only waits in poll)
_START_TIMEOUT = 90.0  # a cold QEMU capability probe takes ~8 s on 2 idle cores
_QEMU_CONF: dict[str, str | int] = {
    "stdio_handler": "file",
    "user": "root",
    "group": "root",
    "dynamic_ownership": 0,
    "remember_owner": 0,
    "security_driver": "none",
}
_LXC_CONF: dict[str, str | int] = {"security_driver": "none"}
_LIBVIRTD_CONF: dict[str, str | int] = {"log_outputs": "3:file:/var/log/libvirt/libvirtd.log"}


class SandboxError(RuntimeError):
    """A sandbox could not be started (the message says which step and why)."""


# ---- small helpers -------------------------------------------------------------------------


def _tool(name: str) -> str:
    """Absolute path of an executable (PATH, then /usr/sbin, /sbin). Raises SandboxError."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise SandboxError(f"{name} not found: install the packages of scripts/install-deps.sh")
    return found


def _run(
    argv: list[str], *, timeout: float = 30.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run argv (no shell, own session so a terminal's Ctrl-C does not hit it), capture output.

    Raises SandboxError if it cannot start, times out, or (with check) exits non-zero.
    """
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxError(f"{shlex.join(argv)}: {e}") from e
    if check and proc.returncode != 0:
        raise SandboxError(f"{shlex.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll predicate until it is true or timeout seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _conf_text(settings: dict[str, str | int]) -> str:
    """libvirt .conf lines for settings (strings quoted, ints bare)."""
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


def bridge_name(name: str) -> str:
    """The sandbox's bridge: ``hvbr-`` + 8 hex digits of the name's hash (fits IFNAMSIZ)."""
    return "hvbr-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def check_name(name: str) -> None:
    """Raise ValueError unless name is 1-32 chars of [a-z0-9_-], starting alphanumeric."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"sandbox name {name!r}: use 1-32 of [a-z0-9_-], starting with a-z0-9")


def check_root(root: Path) -> None:
    """Raise ValueError if root is relative, has URI-unsafe characters or a too long socket path."""
    if not _PATH_RE.fullmatch(str(root)):
        raise ValueError(f"sandbox root {root}: need an absolute path of [A-Za-z0-9_./-]")
    if len(str(root / "run/libvirt/libvirt-sock")) > _SOCKET_MAX:
        raise ValueError(f"sandbox root {root}: the libvirt socket path would exceed {_SOCKET_MAX}")


# ---- XML and scripts (pure) ----------------------------------------------------------------


def network_xml(bridge: str) -> bytes:
    """libvirt XML of the sandbox's ``default`` NAT network with a DHCP range on bridge."""
    net = etree.Element("network")
    etree.SubElement(net, "name").text = "default"
    etree.SubElement(net, "forward", mode="nat")
    # STP off: a sandbox bridge has no loops, and with STP on the kernel holds a new guest's
    # port in listening/learning for >= 2 s each, delaying its DHCP.
    etree.SubElement(net, "bridge", name=bridge, stp="off", delay="0")
    ip = etree.SubElement(net, "ip", address=NET_ADDRESS, netmask=NET_NETMASK)
    dhcp = etree.SubElement(ip, "dhcp")
    etree.SubElement(dhcp, "range", start=NET_DHCP_START, end=NET_DHCP_END)
    return etree.tostring(net, pretty_print=True)


def pool_xml(path: Path) -> bytes:
    """libvirt XML of a directory storage pool ``default`` at path."""
    pool = etree.Element("pool", type="dir")
    etree.SubElement(pool, "name").text = "default"
    etree.SubElement(etree.SubElement(pool, "target"), "path").text = str(path)
    return etree.tostring(pool, pretty_print=True)


def launch_script(root: Path, pidfile: Path, cgroups: list[CgroupMount], cpu: int) -> str:
    """The ``sh -c`` text run in the new mount (and cgroup) namespace: unmount, remount the
    cgroup hierarchies so they are rooted at the sandbox's cgroup, bind the five libvirt dirs,
    exec libvirtd pinned to cpu."""
    q = shlex.quote
    mountpoint, umount, mount = _tool("mountpoint"), _tool("umount"), _tool("mount")
    lines = ["set -e"]
    for path, flags in (("/sys/fs/cgroup/unified", ""), ("/run/netns", " -l")):
        lines.append(f"if {q(mountpoint)} -q {path}; then {q(umount)}{flags} {path}; fi")
    for cg in cgroups:
        mp = q(cg.mountpoint)
        lines.append(f"{q(umount)} -l {mp}; {q(mount)} -t cgroup -o {q(cg.options)} cgroup {mp}")
    lines += [f"{q(mount)} --bind {q(str(root / d))} {q('/' + d)}" for d in LIBVIRT_DIRS]
    # libvirtd runs in the foreground under a subreaper that reaps its guests at once (see
    # hvlib.testkit._reaper); the reaper detaches itself as libvirtd's own -d would.
    reaper = [sys.executable, "-m", "hvlib.testkit._reaper", str(root / "libvirtd.log"), "--"]
    daemon = [_tool("taskset"), "-c", str(cpu), _tool("libvirtd"), "-p", str(pidfile)]
    lines.append("exec " + shlex.join(reaper + daemon))
    return "\n".join(lines)


def launch_argv(netns: str, inner: str, cgroup_dirs: list[str]) -> list[str]:
    """argv that moves itself into cgroup_dirs, then runs inner (a script) in the netns and in
    new mount and (if cgroup_dirs) cgroup namespaces."""
    q = shlex.quote
    unshare = [_tool("unshare"), "-m", *(["-C"] if cgroup_dirs else []), "--propagation", "private"]
    inside = [_tool("nsenter"), f"--net=/run/netns/{netns}", *unshare, _tool("sh"), "-c", inner]
    moves = [f"echo $$ > {q(d + '/cgroup.procs')}" for d in cgroup_dirs]
    return [_tool("sh"), "-c", "; ".join(["set -e", *moves, "exec " + shlex.join(inside)])]


# ---- cgroups ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CgroupMount:
    """A cgroup v1 hierarchy: where it is mounted, its mount options (controllers or
    ``name=X``), and the calling process's cgroup in it."""

    mountpoint: str
    options: str
    ours: str


def cgroup_v1_mounts(mountinfo: str, proc_cgroup: str) -> list[CgroupMount]:
    """The cgroup v1 hierarchies in mountinfo (``/proc/self/mountinfo`` text) that
    proc_cgroup (``/proc/self/cgroup`` text) places us in. Pure."""
    ours: dict[frozenset[str], tuple[str, str]] = {}
    for line in proc_cgroup.splitlines():
        hid, options, path = line.split(":", 2)
        if hid != "0" and options:
            ours[frozenset(options.split(","))] = (options, path)
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) < 3 or fields[0] != "cgroup":
            continue
        for names, (options, path) in ours.items():
            if names <= set(fields[2].split(",")):
                found.append(CgroupMount(left.split()[4], options, path))
    return found


def _make_cgroups(mounts: list[CgroupMount], leaf: str) -> list[str]:
    """Create leaf under our cgroup in every hierarchy (cpuset values copied from the parent);
    return the paths. Raises OSError (after removing what it made)."""
    made: list[str] = []
    try:
        for cg in mounts:
            parent = Path(cg.mountpoint, cg.ours.lstrip("/"))
            (parent / leaf).mkdir(exist_ok=True)
            made.append(str(parent / leaf))
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (parent / knob).exists():
                    (parent / leaf / knob).write_text((parent / knob).read_text())
    except OSError:
        _remove_cgroups(made)
        raise
    return made


def _remove_cgroups(dirs: Iterable[str]) -> list[str]:
    """rmdir each cgroup dir with its children (deepest first); log what fails."""
    removed = []
    for top in dirs:
        if not os.path.isdir(top):
            continue
        for sub, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                os.rmdir(sub)
            except OSError as e:
                log.warning("sandbox cleanup: cannot remove cgroup %s: %s", sub, e)
        removed.append(top)
    return ["removed cgroups " + ", ".join(removed)] if removed else []


def _cgroup_pids(dirs: Iterable[str]) -> set[int]:
    """Every pid in the cgroup dirs and their children."""
    pids: set[int] = set()
    for top in dirs:
        for sub, _, _ in os.walk(top):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in Path(sub, "cgroup.procs").read_text().split())
    return pids


# ---- processes and namespaces --------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks) of pid, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _alive(pid: int | None, start: int | None = None) -> bool:
    """True if pid runs (not a zombie) and, when start is given, started at that tick."""
    stat = _proc_stat(pid) if pid else None
    return stat is not None and stat[0] not in "ZX" and start in (None, stat[2])


def _comm(pid: int) -> str:
    """The process's short name, or '?' if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _processes() -> dict[int, tuple[int, int | None]]:
    """Every live process: pid -> (ppid, inode of its network namespace or None)."""
    procs: dict[int, tuple[int, int | None]] = {}
    for entry in os.listdir("/proc"):
        stat = _proc_stat(int(entry)) if entry.isdigit() else None
        if stat is None or stat[0] in "ZX":
            continue
        try:
            ino: int | None = os.stat(f"/proc/{entry}/ns/net").st_ino
        except OSError:
            ino = None
        procs[int(entry)] = (stat[1], ino)
    return procs


def _with_descendants(seeds: set[int] | None, netns_ino: int | None) -> set[int]:
    """seeds plus the processes in netns netns_ino, plus all their descendants (containers
    run in their own netns), alive ones only, never the caller itself."""
    procs = _processes()
    found = {p for p in seeds or () if p in procs}
    found |= {pid for pid, (_, ino) in procs.items() if netns_ino and ino == netns_ino}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(found)
    while stack:
        new = [c for c in children.get(stack.pop(), []) if c not in found]
        found.update(new)
        stack += new
    found.discard(os.getpid())
    return found


def _wait_gone(pids: set[int], timeout: float) -> bool:
    """Wait (bounded) until none of pids runs; True if they all went."""
    return _wait_until(lambda: not any(_alive(p) for p in pids), timeout)


def _signal(pid: int, sig: signal.Signals) -> None:
    """Send sig to pid; a process that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# ---- the owner record ----------------------------------------------------------------------


@dataclasses.dataclass
class _Record:
    """What a sandbox's owner registers, enough to find and remove everything it started."""

    name: str
    netns: str
    root: str
    bridge: str
    owner_pid: int
    libvirtd_pid: int | None = None
    libvirtd_start: int | None = None
    cgroups: list[str] = dataclasses.field(default_factory=list)
    watcher_pid: int | None = None
    """The process that tears the sandbox down when its owner dies (``_reaper --watch``)."""
    stop_attempted: bool = False
    """Set by ``stop()`` before it tears down: leftovers of such a sandbox are a failed
    cleanup (after Ctrl-C, say), not an owner killed before it could clean up (SIGKILL)."""

    def uri(self, driver: str) -> str:
        sock = Path(self.root) / "run/libvirt/libvirt-sock"
        return f"{driver}+unix:///system?socket={sock}"


def _write_record(entry: Path, rec: _Record) -> None:
    """Atomically replace entry/owner.json. Raises OSError."""
    tmp = entry / "owner.json.tmp"
    tmp.write_text(json.dumps(dataclasses.asdict(rec), indent=1))
    os.replace(tmp, entry / "owner.json")


def _read_record(entry: Path) -> _Record | None:
    """The record in entry (keys it does not know ignored), or None if missing or unreadable."""
    known = {f.name for f in dataclasses.fields(_Record)}
    try:
        data = json.loads((entry / "owner.json").read_text())
        return _Record(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _register(entry: Path, rec: _Record) -> int:
    """Create entry, take its lock (held by the returned fd), write rec. Raises SandboxError."""
    entry.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        entry.mkdir(mode=0o700)
    except FileExistsError as e:
        hint = "if its owner is gone, reap_stale() removes it"
        raise SandboxError(f"sandbox {rec.name} is registered already ({entry}); {hint}") from e
    fd = _try_lock(entry)
    if fd is None:
        raise SandboxError(f"sandbox {rec.name}: {entry} is being reaped by another process")
    _write_record(entry, rec)
    return fd


def _try_lock(entry: Path) -> int | None:
    """An fd holding entry's lock, or None if another process holds it (or entry is gone)."""
    try:
        fd = os.open(entry / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


# ---- inspection and teardown of one record -------------------------------------------------


def _netns_inode(rec: _Record) -> int | None:
    """Inode of the sandbox's netns: from /run/netns, else from its live libvirtd, else None."""
    with contextlib.suppress(OSError):
        return os.stat(f"/run/netns/{rec.netns}").st_ino
    if rec.libvirtd_pid and _alive(rec.libvirtd_pid, rec.libvirtd_start):
        with contextlib.suppress(OSError):
            return os.stat(f"/proc/{rec.libvirtd_pid}/ns/net").st_ino
    return None


def _sandbox_pids(rec: _Record) -> set[int]:
    """Every process of the sandbox: those in its netns or cgroups, and their descendants."""
    return _with_descendants(_cgroup_pids(rec.cgroups), _netns_inode(rec))


def _netns_links(netns: str) -> list[str]:
    """Interface names inside a named netns ([] if it or ip fails)."""
    try:
        out = _run([_tool("ip"), "-n", netns, "-br", "link"], timeout=10).stdout
    except SandboxError:
        return []
    return sorted(parse_ip_br_link(out))


def _describe(rec: _Record) -> list[str]:
    """What of the sandbox still exists: processes, netns and its links, host bridge, tree."""
    found = []
    if _alive(rec.libvirtd_pid, rec.libvirtd_start):
        found.append(f"libvirtd pid {rec.libvirtd_pid} running")
    others = sorted(_sandbox_pids(rec) - {rec.libvirtd_pid or 0})
    if others:
        found.append("processes " + ", ".join(f"{_comm(p)} ({p})" for p in others))
    if os.path.exists(f"/run/netns/{rec.netns}"):
        found.append(f"netns {rec.netns} (links: {', '.join(_netns_links(rec.netns))})")
    if os.path.exists(f"/sys/class/net/{rec.bridge}"):
        found.append(f"bridge {rec.bridge} in the host namespace")
    cgroups = [d for d in rec.cgroups if os.path.isdir(d)]
    if cgroups:
        found.append("cgroups " + ", ".join(cgroups))
    if os.path.lexists(rec.root):
        found.append(f"directory {rec.root}")
    return found


def _destroy_domains(rec: _Record) -> list[str]:
    """Destroy every running domain of both drivers through the live daemon."""
    if not _alive(rec.libvirtd_pid, rec.libvirtd_start):
        return []
    done = []
    for driver in ("qemu", "lxc"):
        virsh = [_tool("virsh"), "-q", "-c", rec.uri(driver)]
        try:
            names = _run([*virsh, "list", "--name"], timeout=15).stdout.split()
        except SandboxError as e:
            log.warning("sandbox %s: cannot list %s domains: %s", rec.name, driver, e)
            continue
        for name in names:
            result = _run([*virsh, "destroy", name], timeout=60, check=False)
            if result.returncode == 0:
                done.append(f"destroyed {driver} domain {name}")
            else:
                log.warning("sandbox %s: destroy %s: %s", rec.name, name, result.stderr.strip())
    return done


def _stop_libvirtd(rec: _Record) -> list[str]:
    """SIGTERM the daemon, SIGKILL it if it is still there after 10 s."""
    pid = rec.libvirtd_pid
    if pid is None or not _alive(pid, rec.libvirtd_start):
        return []
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        _signal(pid, sig)
        if _wait_until(lambda: not _alive(pid, rec.libvirtd_start), wait):
            return [f"stopped libvirtd pid {pid}"]
    log.warning("sandbox %s: libvirtd pid %s survived SIGKILL", rec.name, pid)
    return []


def _kill_leftovers(rec: _Record) -> list[str]:
    """SIGKILL every process left in the netns or cgroups (and their descendants)."""
    done: list[str] = []
    for _ in range(5):  # killed parents may have spawned children meanwhile
        pids = _sandbox_pids(rec)
        if not pids:
            break
        done.append("killed " + ", ".join(f"{_comm(p)} ({p})" for p in sorted(pids)))
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        _wait_gone(pids, 10.0)
    return done


def _remove_sandbox_cgroups(rec: _Record) -> list[str]:
    """Remove the sandbox's cgroup subtrees (libvirt's machine cgroups included)."""
    return _remove_cgroups(rec.cgroups)


def _delete_netns(rec: _Record) -> list[str]:
    """ip netns del (its bridges and veths go with it)."""
    if not os.path.exists(f"/run/netns/{rec.netns}"):
        return []
    _run([_tool("ip"), "netns", "del", rec.netns], timeout=30)
    return [f"deleted netns {rec.netns}"]


def _remove_root(rec: _Record) -> list[str]:
    """Remove the sandbox tree, but only if it carries our marker file."""
    root = Path(rec.root)
    if not root.exists():
        return []
    if not (root / _MARKER).exists() and any(root.iterdir()):
        log.warning("sandbox %s: %s has no %s marker; not removing it", rec.name, root, _MARKER)
        return []

    def onerror(_f: object, path: str, exc: object) -> None:
        log.warning("sandbox %s: cannot remove %s: %s", rec.name, path, exc)

    shutil.rmtree(root, onerror=onerror)
    return [f"removed {root}"]


_TEARDOWN_STEPS = (
    _destroy_domains,
    _stop_libvirtd,
    _kill_leftovers,
    _remove_sandbox_cgroups,
    _delete_netns,
    _remove_root,
)


def _teardown(rec: _Record) -> list[str]:
    """Run every teardown step, logging failures; returns what was removed.

    Never raises, except that a KeyboardInterrupt received during a step is re-raised once
    all the other steps have run.
    """
    done: list[str] = []
    interrupted: KeyboardInterrupt | None = None
    for step in _TEARDOWN_STEPS:
        try:
            done += step(rec)
        except KeyboardInterrupt as e:
            log.warning(
                "sandbox %s: interrupted in %s; cleaning up the rest", rec.name, step.__name__
            )
            interrupted = interrupted or e
        except Exception as e:
            log.warning("sandbox %s: %s failed: %s", rec.name, step.__name__, e)
    for line in done:
        log.info("sandbox %s: %s", rec.name, line)
    if interrupted is not None:
        raise interrupted
    return done


# ---- stale sandboxes -----------------------------------------------------------------------


def _stale_entries(state_dir: Path) -> Iterator[Path]:
    """Yield each registered sandbox whose lock is free, holding the lock until the next one."""
    if not state_dir.is_dir():
        return
    for entry in sorted(p for p in state_dir.iterdir() if p.is_dir()):
        fd = _try_lock(entry)
        if fd is None:
            continue
        try:
            yield entry
        finally:
            os.close(fd)


def leftovers(*, state_dir: Path = STATE_DIR) -> list[str]:
    """Describe sandboxes whose owner is gone (or whose stop left something): pure read.

    One line per thing that still exists, each starting ``sandbox NAME``. Raises nothing.
    """
    lines = []
    for entry in _stale_entries(state_dir):
        rec = _read_record(entry)
        if rec is None:
            lines.append(f"sandbox {entry.name}: state entry {entry} without a readable record")
            continue
        owner = "alive" if _alive(rec.owner_pid) else "gone"
        owner += ", its stop() ran" if rec.stop_attempted else ", no stop() ran"
        found = _describe(rec) or [f"state entry {entry} only"]
        lines += [f"sandbox {rec.name} (owner pid {rec.owner_pid} {owner}): {f}" for f in found]
    return lines


def reap_stale(*, state_dir: Path = STATE_DIR) -> list[str]:
    """Remove what :func:`leftovers` reports; return what was removed. Raises nothing
    (failures are logged, and what stays is reported by the next ``leftovers()``).

    A sandbox whose owner dies is torn down by its watcher within seconds (see
    :func:`reap_entry`); this is for what outlives the watcher too (a reboot, a killed
    watcher, a teardown step that failed)."""
    lines = []
    for entry in _stale_entries(state_dir):
        lines += _reap_locked(entry)
    return lines


def _reap_locked(entry: Path) -> list[str]:
    """Tear down the sandbox registered at entry (whose lock the caller holds); remove the
    entry if nothing of it is left. Returns what was removed, each line ``sandbox NAME: ...``."""
    rec = _read_record(entry)
    removed = _teardown(rec) if rec else []
    if rec is None or not _describe(rec):
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(f"state entry {entry}")
    return [f"sandbox {rec.name if rec else entry.name}: {r}" for r in removed]


def reap_entry(entry: Path, *, lock_wait: float = 5.0) -> list[str]:
    """Tear down the one sandbox registered at entry once its lock is free (its owner gone):
    what the owner's watcher runs when it sees the owner die. Waits up to ``lock_wait`` s for
    the lock (the kernel drops a dead owner's lock as it closes its files); [] if the entry
    is gone or another process holds the lock throughout. Raises nothing."""
    deadline = time.monotonic() + lock_wait
    while (fd := _try_lock(entry)) is None:
        if not entry.is_dir():
            return []
        if time.monotonic() >= deadline:
            log.warning("sandbox %s: lock held after %.1f s; not reaping", entry.name, lock_wait)
            return []
        time.sleep(0.02)
    try:
        return _reap_locked(entry)
    finally:
        os.close(fd)


def watcher_argv(owner_pid: int, entry: Path) -> list[str]:
    """argv of the watcher that reaps entry when process owner_pid ends (any signal)."""
    return [sys.executable, "-m", "hvlib.testkit._reaper", "--watch", str(owner_pid), str(entry)]


# ---- host network snapshots ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NetSnapshot:
    """The host namespace's interface names and listening sockets (``"tcp 0.0.0.0:22"``)."""

    links: frozenset[str]
    listeners: frozenset[str]


@dataclasses.dataclass(frozen=True)
class NetDiff:
    """What changed between two snapshots, loopback listeners left out."""

    added_links: tuple[str, ...]
    removed_links: tuple[str, ...]
    added_listeners: tuple[str, ...]
    removed_listeners: tuple[str, ...]

    @property
    def leaks(self) -> list[str]:
        """What was added: any such line breaks the rule that the host namespace stays clean."""
        return [f"new interface {x}" for x in self.added_links] + [
            f"new listener {x}" for x in self.added_listeners
        ]


def parse_ip_br_link(text: str) -> frozenset[str]:
    """Interface names from ``ip -br link`` output (a veth's ``@peer`` suffix dropped)."""
    return frozenset(line.split()[0].split("@")[0] for line in text.splitlines() if line.strip())


def parse_ss_listeners(text: str) -> frozenset[str]:
    """``"PROTO LOCAL"`` for each line of ``ss -H -ltnu`` output (queues and peer dropped)."""
    rows = (line.split() for line in text.splitlines())
    return frozenset(f"{f[0]} {f[4]}" for f in rows if len(f) >= 5)


def is_loopback_listener(listener: str) -> bool:
    """True if a ``"PROTO ADDR:PORT"`` listener is bound to loopback (127/8, ::1 or ``%lo``)."""
    host = listener.split(" ", 1)[-1].rsplit(":", 1)[0].strip("[]")
    addr, _, iface = host.partition("%")
    if iface == "lo":
        return True
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:  # '*' is every address
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def host_network_snapshot() -> NetSnapshot:
    """Snapshot the calling process's (the host's) namespace. Raises SandboxError if ip/ss fail."""
    links = _run([_tool("ip"), "-br", "link"]).stdout
    listeners = _run([_tool("ss"), "-H", "-ltnu"]).stdout
    return NetSnapshot(parse_ip_br_link(links), parse_ss_listeners(listeners))


def diff_snapshots(before: NetSnapshot, after: NetSnapshot) -> NetDiff:
    """Differences between two snapshots, ignoring the noise that is not a leak.

    Ignored: listeners on loopback (allowed by the project's rules, and opened and closed all
    the time by test tooling, debuggers and other tests), and the per-call columns of ``ss``
    (queue sizes, process) which the snapshot never keeps. Every other added interface or
    listener — any non-loopback address, including wildcards — is reported.
    """

    def real(xs: frozenset[str]) -> frozenset[str]:
        return frozenset(x for x in xs if not is_loopback_listener(x))

    return NetDiff(
        tuple(sorted(after.links - before.links)),
        tuple(sorted(before.links - after.links)),
        tuple(sorted(real(after.listeners - before.listeners))),
        tuple(sorted(real(before.listeners - after.listeners))),
    )


# ---- the sandbox ---------------------------------------------------------------------------


def _caps_cache() -> Path:
    return cache_dir() / "sandbox-qemu-capabilities"


def _copy_xml_files(src: Path, dst: Path) -> None:
    """Copy src/*.xml into dst atomically per file, skipping identical ones. Raises OSError."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.xml"):
        target = dst / f.name
        data = f.read_bytes()
        if not target.exists() or target.read_bytes() != data:
            tmp = dst / f".{f.name}.{os.getpid()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, target)


class SandboxHost:
    """A private libvirtd (QEMU + LXC) in its own network, mount and cgroup namespaces.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Attributes: ``name``,
    ``netns``, ``root``, ``bridge``, ``qemu_uri``, ``lxc_uri``; ``libvirtd_pid`` once started.
    """

    def __init__(self, name: str | None = None, *, root: Path | None = None) -> None:
        """Describe a sandbox (nothing starts yet). Raises ValueError for a bad name or root."""
        self.name = name or f"sb{secrets.token_hex(4)}"
        check_name(self.name)
        self.root = Path(root) if root is not None else ROOT_BASE / self.name
        check_root(self.root)
        self.netns = NETNS_PREFIX + self.name
        self.bridge = bridge_name(self.name)
        self._rec = _Record(self.name, self.netns, str(self.root), self.bridge, os.getpid())
        self.qemu_uri = self._rec.uri("qemu")
        self.lxc_uri = self._rec.uri("lxc")
        self._entry = STATE_DIR / self.name
        self._lock_fd: int | None = None
        self._watcher: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"SandboxHost({self.name!r}, root={str(self.root)!r})"

    @property
    def libvirtd_pid(self) -> int:
        """The daemon's pid. Raises SandboxError if the sandbox has not started it."""
        if self._rec.libvirtd_pid is None:
            raise SandboxError(f"sandbox {self.name}: libvirtd is not running")
        return self._rec.libvirtd_pid

    def pids(self) -> set[int]:
        """Every process of the sandbox (in its netns or cgroups, plus their descendants)."""
        return _sandbox_pids(self._rec)

    def in_netns(self, argv: list[str]) -> list[str]:
        """argv prefixed to run inside the sandbox's network namespace (guest IPs live there)."""
        return [_tool("nsenter"), f"--net=/run/netns/{self.netns}", *argv]

    def __enter__(self) -> SandboxHost:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> SandboxHost:
        """Create namespaces and tree, start libvirtd, define network and pool; return self.

        On any failure (or KeyboardInterrupt) everything started so far is removed and the
        exception propagates. Raises SandboxError (not root, missing tools, name taken, a step
        failed, or the daemon did not answer within the deadline).
        """
        if self._lock_fd is not None:
            raise SandboxError(f"sandbox {self.name} is started already")
        if os.geteuid() != 0:
            raise SandboxError("a sandbox needs root (namespaces, mounts, libvirtd)")
        if self.root.exists() and any(self.root.iterdir()):
            raise SandboxError(f"sandbox root {self.root} exists and is not empty")
        self._lock_fd = _register(self._entry, self._rec)
        try:
            self._start_watcher()
            self._make_tree()
            self._add_netns()
            self._launch_libvirtd()
            self._wait_ready()
            self._define_network_and_pool()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Destroy all domains, stop libvirtd, kill what is left in the netns, delete the netns
        and the tree. Idempotent; never raises for things already gone (they are logged), except
        that a KeyboardInterrupt arriving meanwhile is re-raised after the cleanup finished.
        If something could not be removed, the registration stays for :func:`reap_stale`."""
        if self._lock_fd is None:
            return
        self._rec.stop_attempted = True
        with contextlib.suppress(OSError):
            _write_record(self._entry, self._rec)
        try:
            _teardown(self._rec)
        finally:
            self._stop_watcher()
            if not _describe(self._rec):
                shutil.rmtree(self._entry, ignore_errors=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def watcher_pid(self) -> int | None:
        """The pid of the process that tears this sandbox down if its owner dies (None when
        the sandbox is not started)."""
        return self._watcher.pid if self._watcher is not None else None

    def _start_watcher(self) -> None:
        """Start the watcher: a child in its own session that waits for this process to end
        (a pidfd: whatever the signal, SIGKILL included) and then reaps the sandbox at once
        (:func:`reap_entry`). :meth:`stop` ends it. Raises SandboxError if it cannot start."""
        with open(self._entry / "watch.log", "ab") as out:
            try:
                self._watcher = subprocess.Popen(
                    watcher_argv(os.getpid(), self._entry),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
            except OSError as e:
                raise SandboxError(f"sandbox {self.name}: cannot start its watcher: {e}") from e
        self._rec.watcher_pid = self._watcher.pid
        _write_record(self._entry, self._rec)

    def _stop_watcher(self) -> None:
        """End the watcher (its owner is doing the teardown itself); bounded, idempotent."""
        proc, self._watcher = self._watcher, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(_WATCHER_EXIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(_WATCHER_EXIT)

    def kill_libvirtd(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill the daemon as a crash would; guests keep running. For fault tests.

        Raises SandboxError if the daemon is not running or does not die within 10 s.
        """
        pid = self.libvirtd_pid
        _signal(pid, sig)
        if not _wait_until(lambda: not _alive(pid, self._rec.libvirtd_start), 10):
            raise SandboxError(f"sandbox {self.name}: libvirtd {pid} survived {sig.name}")

    def restart_libvirtd(self) -> None:
        """Start the daemon again (same state, same socket) after :meth:`kill_libvirtd`; it
        reconnects to the guests that kept running. Raises SandboxError."""
        (self.root / "libvirtd.pid").unlink(missing_ok=True)  # the dead daemon's
        self._launch_libvirtd()
        self._wait_ready()

    # -- start steps --

    def _make_tree(self) -> None:
        """Create ROOT with the five libvirt dirs and configs; seed QEMU capabilities."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / _MARKER).write_text(self.name + "\n")
        for d in LIBVIRT_DIRS:
            (self.root / d).mkdir(parents=True, exist_ok=True)
            Path("/", d).mkdir(parents=True, exist_ok=True)  # bind target (e.g. /run/libvirt)
        etc = self.root / "etc/libvirt"
        (etc / "libvirtd.conf").write_text(_conf_text(_LIBVIRTD_CONF))
        (etc / "qemu.conf").write_text(_conf_text(_QEMU_CONF))
        (etc / "lxc.conf").write_text(_conf_text(_LXC_CONF))
        if Path("/etc/libvirt/nwfilter").is_dir():  # stock filters (e.g. clean-traffic)
            _copy_xml_files(Path("/etc/libvirt/nwfilter"), etc / "nwfilter")
        with contextlib.suppress(OSError):
            caps = self.root / "var/cache/libvirt/qemu/capabilities"
            _copy_xml_files(_caps_cache(), caps)
        (self.root / "images").mkdir()

    def _add_netns(self) -> None:
        """ip netns add, then bring its loopback up. Raises SandboxError."""
        _run([_tool("ip"), "netns", "add", self.netns])
        _run([_tool("ip"), "-n", self.netns, "link", "set", "lo", "up"])

    def _make_sandbox_cgroups(self) -> list[CgroupMount]:
        """Create and record the sandbox's cgroups; [] (logged) where that is not possible."""
        mounts = cgroup_v1_mounts(
            Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text()
        )
        self._rec.cgroups = [
            str(Path(m.mountpoint, m.ours.lstrip("/"), self.netns)) for m in mounts
        ]
        _write_record(self._entry, self._rec)
        try:
            _make_cgroups(mounts, self.netns)
        except OSError as e:
            log.warning(
                "sandbox %s: no cgroup namespace (%s); domains share /machine", self.name, e
            )
            self._rec.cgroups = []
            _write_record(self._entry, self._rec)
            return []
        return mounts

    def _launch_libvirtd(self) -> None:
        """Start the daemon in the netns, private mount and cgroup namespaces; record its pid."""
        pidfile = self.root / "libvirtd.pid"
        mounts = self._make_sandbox_cgroups()
        cpu = min(os.sched_getaffinity(0))
        inner = launch_script(self.root, pidfile, mounts, cpu)
        argv = launch_argv(self.netns, inner, self._rec.cgroups)
        with open(self.root / "launch.log", "wb") as out:
            try:
                code = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    timeout=30,
                    start_new_session=True,
                ).returncode
            except subprocess.TimeoutExpired as e:
                raise SandboxError(f"sandbox {self.name}: libvirtd launch hung") from e
        if code != 0 or not _wait_until(lambda: bool(pidfile.exists() and pidfile.read_text()), 10):
            raise SandboxError(f"sandbox {self.name}: libvirtd did not start: {self._logs()}")
        pid = int(pidfile.read_text())
        stat = _proc_stat(pid)
        self._rec.libvirtd_pid, self._rec.libvirtd_start = pid, stat[2] if stat else None
        _write_record(self._entry, self._rec)

    def _wait_ready(self) -> None:
        """Wait until both URIs answer ``virsh version`` (bounded); save QEMU capabilities."""
        deadline = time.monotonic() + _START_TIMEOUT
        for uri in (self.qemu_uri, self.lxc_uri):
            while True:
                left = deadline - time.monotonic()
                if not _alive(self._rec.libvirtd_pid, self._rec.libvirtd_start) or left <= 0:
                    raise SandboxError(f"sandbox {self.name}: {uri} never answered: {self._logs()}")
                argv = [_tool("virsh"), "-c", uri, "version"]
                with contextlib.suppress(SandboxError):
                    _run(argv, timeout=left)
                    break
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            _copy_xml_files(self.root / "var/cache/libvirt/qemu/capabilities", _caps_cache())

    def _define_network_and_pool(self) -> None:
        """Define, autostart and start the ``default`` network and pool. Raises SandboxError."""
        (self.root / "network-default.xml").write_bytes(network_xml(self.bridge))
        (self.root / "pool-default.xml").write_bytes(pool_xml(self.root / "images"))
        virsh = [_tool("virsh"), "-q", "-c", self.qemu_uri]
        for kind, xml in (("net", "network-default.xml"), ("pool", "pool-default.xml")):
            _run([*virsh, f"{kind}-define", str(self.root / xml)])
            _run([*virsh, f"{kind}-autostart", "default"])
            _run([*virsh, f"{kind}-start", "default"])

    def _logs(self) -> str:
        """The tails of the launcher's and the daemon's logs, for error messages."""
        tails = []
        for path in (self.root / "launch.log", self.root / "var/log/libvirt/libvirtd.log"):
            with contextlib.suppress(OSError):
                tails.append(f"{path.name}: " + " | ".join(path.read_text().splitlines()[-5:]))
        return "; ".join(tails) or "no logs"

    # -- an SSH server for remote-libvirt tests (added for issue 9) --

    _sshd_proc: subprocess.Popen[bytes] | None = None

    def start_sshd(
        self, address: str, authorized_keys: Iterable[str], *, port: int = 22
    ) -> SshServer:
        """Start OpenSSH's sshd inside this sandbox, listening only on ``address:port``.

        sshd runs in the sandbox's network namespace and in its libvirtd's mount namespace, so
        a libvirt client logging in over SSH (``qemu+libssh://root@...``) reaches this
        sandbox's daemon through ``virt-ssh-helper`` at ``/run/libvirt/libvirt-sock``. Only
        public-key logins of ``authorized_keys`` (OpenSSH public key lines) are accepted. The
        host key (ed25519) is made here, under ``ROOT/sshd``; pin ``SshServer.host_key_pub``.
        :meth:`stop_sshd` stops it (so does :meth:`stop`, which kills every process of the
        namespace).

        Raises SandboxError: the sandbox is not started, sshd is running already, sshd is not
        installed (Debian ``openssh-server``), or it did not listen within 10 s (its log tail
        is in the message).
        """
        if self._sshd_proc is not None and self._sshd_proc.poll() is None:
            raise SandboxError(f"sandbox {self.name}: sshd runs already")
        sshd, pid = _tool("sshd"), self.libvirtd_pid
        conf = _sshd_files(self.root / "sshd", address, port, authorized_keys)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        argv = [
            _tool("nsenter"),
            f"--net=/run/netns/{self.netns}",
            f"--mount=/proc/{pid}/ns/mnt",
            *[sshd, "-D", "-e", "-f", str(conf)],
        ]
        with open(self.root / "sshd/sshd.log", "ab") as out:
            self._sshd_proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        proc = self._sshd_proc
        if not _wait_until(lambda: proc.poll() is None and self._listens(address, port), 10):
            self.stop_sshd()
            tail = (self.root / "sshd/sshd.log").read_text(errors="replace")[-600:]
            raise SandboxError(f"sandbox {self.name}: sshd did not listen on port {port}: {tail}")
        host_key = (self.root / "sshd/host_ed25519.pub").read_text().split()
        return SshServer(address, port, f"{host_key[0]} {host_key[1]}", proc.pid)

    def stop_sshd(self) -> None:
        """Stop the sshd of :meth:`start_sshd` (SIGTERM, then SIGKILL after 5 s); idempotent."""
        proc, self._sshd_proc = self._sshd_proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _listens(self, address: str, port: int) -> bool:
        """True if something accepts TCP connections on address:port inside the netns."""

        def probe() -> bool:
            try:
                socket.create_connection((address, port), timeout=1).close()
            except OSError:
                return False
            return True

        return in_netns(self.netns, probe)


# ---- two sandboxes joined by a veth pair, and SSH to one of them (added for issue 9) ---------

LINK_SUBNET = "10.231.0.0/30"  # the veth pair between two sandboxes: inside their netns only


@dataclasses.dataclass(frozen=True)
class SshServer:
    """An sshd started by :meth:`SandboxHost.start_sshd`: where it listens and its host key."""

    address: str
    port: int
    host_key_pub: str
    """``"ssh-ed25519 BASE64"``: the key to pin."""
    pid: int

    def known_hosts_line(self, host: str | None = None, port: int | None = None) -> str:
        """An OpenSSH known_hosts line pinning this server's key for ``host:port`` (default:
        its own address and port; give the forwarder's when reaching it through one)."""
        host, port = host or self.address, port or self.port
        name = host if port == 22 else f"[{host}]:{port}"
        return f"{name} {self.host_key_pub}"


class AddressForwarder(LoopbackForwarder):
    """Relay ``127.0.0.1:self.port`` (in the caller's namespace) to ``address:port`` inside
    ``netns``: how a test process reaches a server listening only on a sandbox's veth address
    (e.g. :meth:`SandboxHost.start_sshd`). Use as a context manager, or call ``close()``.

    Raises OSError: the local listening socket cannot be made.
    """

    def __init__(self, netns: str, address: str, port: int) -> None:
        self.address = address
        super().__init__(netns, port)

    def _connect_far(self) -> socket.socket:
        sock = socket.create_connection((self.address, self.target_port), timeout=10)
        sock.settimeout(None)
        return sock


def link_name(peer: SandboxHost) -> str:
    """The name of a sandbox's veth end toward ``peer`` (``hvl-`` + 8 hex digits)."""
    return "hvl-" + hashlib.sha256(peer.name.encode()).hexdigest()[:8]


def link(a: SandboxHost, b: SandboxHost, *, subnet: str = LINK_SUBNET) -> tuple[str, str]:
    """Join two started sandboxes with a veth pair and return (address in a, address in b).

    The pair is created directly inside the two network namespaces (it never exists in the
    host's) with the first two host addresses of ``subnet``; it disappears with either
    namespace, or with :func:`unlink`. Neither end has a route beyond ``subnet``.

    Raises ValueError: ``subnet`` has fewer than two host addresses, or a and b are the same
    sandbox. SandboxError: a step failed (e.g. the two are linked already).
    """
    if a.netns == b.netns:
        raise ValueError(f"cannot link sandbox {a.name} to itself")
    net = ipaddress.ip_network(subnet)
    hosts = [str(h) for _, h in zip(range(2), net.hosts(), strict=False)]
    if len(hosts) < 2:
        raise ValueError(f"subnet {subnet} has fewer than two host addresses")
    ip = _tool("ip")
    end_a, end_b = link_name(b), link_name(a)
    peer = ["peer", "name", end_b, "netns", b.netns]
    _run([ip, "link", "add", end_a, "netns", a.netns, "type", "veth", *peer])
    try:
        for sb, end, addr in ((a, end_a, hosts[0]), (b, end_b, hosts[1])):
            _run([ip, "-n", sb.netns, "addr", "add", f"{addr}/{net.prefixlen}", "dev", end])
            _run([ip, "-n", sb.netns, "link", "set", end, "up"])
    except SandboxError:
        unlink(a, b)
        raise
    return hosts[0], hosts[1]


def unlink(a: SandboxHost, b: SandboxHost) -> None:
    """Remove the veth pair :func:`link` made between a and b; nothing to do if it is gone."""
    _run([_tool("ip"), "-n", a.netns, "link", "del", link_name(b)], check=False)


def _sshd_files(directory: Path, address: str, port: int, authorized_keys: Iterable[str]) -> Path:
    """Write sshd's host key (made once), authorized_keys and config; return the config path.

    Raises SandboxError: ssh-keygen failed.
    """
    directory.mkdir(mode=0o700, exist_ok=True)
    key = directory / "host_ed25519"
    if not key.exists():
        _run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)])
    keys = directory / "authorized_keys"
    keys.write_text("".join(line.strip() + "\n" for line in authorized_keys))
    keys.chmod(0o600)
    conf = directory / "sshd_config"
    conf.write_text(sshd_config(address, port, key, keys, directory / "sshd.pid"))
    return conf


def sshd_config(address: str, port: int, host_key: Path, authorized: Path, pidfile: Path) -> str:
    """sshd_config text: listen on address:port only, public-key logins of ``authorized`` only,
    no PAM, no forwarding, no passwords. Pure."""
    listen = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    settings = {
        "ListenAddress": listen,
        "HostKey": str(host_key),
        "PidFile": str(pidfile),
        "AuthorizedKeysFile": str(authorized),
        "PermitRootLogin": "prohibit-password",
        "PubkeyAuthentication": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "UsePAM": "no",
        "StrictModes": "no",
        "AllowTcpForwarding": "no",
        "AllowAgentForwarding": "no",
        "X11Forwarding": "no",
        "PrintMotd": "no",
        "LogLevel": "VERBOSE",
    }
    return "".join(f"{k} {v}\n" for k, v in settings.items())


@dataclasses.dataclass(frozen=True)
class SshLink:
    """Two linked sandboxes, the second reachable over SSH from the test process: see
    :func:`ssh_linked`."""

    a: SandboxHost
    b: SandboxHost
    address_a: str
    """a's end of the veth pair (inside a's netns only)."""
    address_b: str
    """b's end: where sshd listens, and where a's QEMU reaches b's (migration)."""
    server: SshServer
    ssh_uri: str
    """``qemu+ssh://root@127.0.0.1:PORT/system``: b's libvirtd over SSH, through a loopback
    forwarder in the caller's namespace (pin ``known_hosts``, log in with ``keyfile``)."""
    known_hosts: Path
    keyfile: Path


@contextlib.contextmanager
def ssh_linked(a: SandboxHost, b: SandboxHost, workdir: Path) -> Iterator[SshLink]:
    """Link two started sandboxes (:func:`link`), start sshd in b on its veth address with a
    fresh host key, make a client key and a known_hosts file pinning that host key (in
    ``workdir``), and forward a loopback port of the caller's namespace to b's sshd. On exit
    the forwarder, sshd and the link are removed.

    Raises SandboxError: a step failed. OSError: the forwarder could not listen.
    """
    address_a, address_b = link(a, b)
    try:
        key = workdir / "client_ed25519"
        if not key.exists():
            _run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)])
        server = b.start_sshd(address_b, [key.with_suffix(".pub").read_text()])
        try:
            with AddressForwarder(b.netns, address_b, server.port) as fwd:
                known_hosts = workdir / "known_hosts"
                known_hosts.write_text(server.known_hosts_line("127.0.0.1", fwd.port) + "\n")
                uri = f"qemu+ssh://root@127.0.0.1:{fwd.port}/system"
                yield SshLink(a, b, address_a, address_b, server, uri, known_hosts, key)
        finally:
            b.stop_sshd()
    finally:
        unlink(a, b)
