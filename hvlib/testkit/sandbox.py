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
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from lxml import etree

from hvlib.testkit import cache_dir
from hvlib.testkit.forward import in_netns
from hvlib.testkit.sandbox_base import (
    _LIBVIRTD_CONF,
    _LXC_CONF,
    _MARKER,
    _QEMU_CONF,
    _START_TIMEOUT,
    LIBVIRT_DIRS,
    NET_ADDRESS,
    NET_DHCP_END,
    NET_DHCP_START,
    NET_NETMASK,
    NETNS_PREFIX,
    ROOT_BASE,
    STATE_DIR,
    SandboxError,
    _conf_text,
    _run,
    _tool,
    _wait_until,
    bridge_name,
    check_name,
    check_root,
    log,
)
from hvlib.testkit.sandbox_link import (
    LINK_SUBNET,
    AddressForwarder,
    SshLink,
    SshServer,
    _sshd_files,
    link,
    ssh_linked,
    unlink,
)
from hvlib.testkit.sandbox_netcheck import (
    NetDiff,
    NetSnapshot,
    diff_snapshots,
    host_network_snapshot,
)
from hvlib.testkit.sandbox_procs import (
    CgroupMount,
    _alive,
    _make_cgroups,
    _proc_stat,
    _signal,
    cgroup_v1_mounts,
)
from hvlib.testkit.sandbox_registry import (
    _describe,
    _Record,
    _register,
    _sandbox_pids,
    _teardown,
    _write_record,
    leftovers,
    reap_stale,
    watcher_argv,
)

_WATCHER_EXIT = 5.0  # the watcher exits on SIGTERM at once (it only waits in poll)

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
