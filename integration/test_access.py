"""Guest access on a real, sandboxed libvirtd: SSH into the kit's QEMU (TCG) guest on the NAT
network ``default`` (inside the sandbox's network namespace) with its pinned host key, and exec
inside an LXC container from the kit's root filesystem through libvirt's LXC API.

Each module-scoped guest is destroyed and undefined by its fixture, also when a test fails.
Measurements are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hvlib
from hvlib import DomainSpec, Filesystem, Nic, VirtType
from hvlib.errors import (
    CommandTimeout,
    ConnectionLost,
    HostKeyError,
    RemoteCommandError,
    key_fingerprint,
)
from hvlib.guest.access import GuestAccess
from hvlib.guest.config import SshConfig
from hvlib.guest.ready import Ready
from hvlib.guest.ssh import SshSession
from hvlib.guest.sshtransport import pick_address
from hvlib.testkit import guestkit
from hvlib.testkit.guestkit import GuestKit
from hvlib.testkit.sandbox import SandboxHost
from hvlib.virt.domain import Domain
from hvlib.virt.host import Host

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
if not issubclass(Domain, GuestAccess):
    pytest.skip(
        "hvlib.Domain does not inherit hvlib.guest.access.GuestAccess yet (issue 6 not wired in)",
        allow_module_level=True,
    )
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkcluS61B73kaz00bVe5QklYEjSTJW2m+mG8I1ea3rq"
TEN_MIB = 10 * 1024 * 1024


def report(what: str, seconds: float) -> None:
    print(f"\nMEASURED {what}: {seconds * 1000:.1f} ms")


def guest_pids(dom: Domain, cmdline: str) -> list[str]:
    """Pids (in the guest) whose command line is exactly ``cmdline``."""
    script = (
        'for d in /proc/[0-9]*; do [ "$(tr "\\0" " " < "$d/cmdline" 2>/dev/null)" = "$1 " ] '
        '&& echo "${d#/proc/}"; done; true'
    )
    return dom.exec(["sh", "-c", script, "x", cmdline], check=True).text.split()


# -- the VM -------------------------------------------------------------------------------


@dataclasses.dataclass
class BootedVm:
    dom: Domain
    started: float
    lines: dict[str, float]
    """When each watched console line arrived (monotonic time)."""


@pytest.fixture(scope="module")
def ssh_config(kit: GuestKit) -> SshConfig:
    return SshConfig(user="root", key=kit.client_key, host_key=kit.host_key_pub)


@pytest.fixture(scope="module")
def ssh_host(sandbox: SandboxHost, ssh_config: SshConfig) -> Iterator[Host]:
    with hvlib.connect(sandbox.qemu_uri, netns=sandbox.netns, ssh=ssh_config) as host:
        yield host


@pytest.fixture(scope="module")
def vm(ssh_host: Host, kit: GuestKit) -> Iterator[BootedVm]:
    spec = DomainSpec(
        name="it-access-vm",
        virt=VirtType.QEMU,
        memory_mib=256,
        kernel=str(kit.kernel),
        initrd=str(kit.initrd),
        cmdline="console=ttyS0",
        nics=[Nic.network("default")],
        rng=True,
    )
    dom = ssh_host.domains.define(spec)
    try:
        lines: dict[str, float] = {}
        started = time.monotonic()
        dom.start()
        assert dom.console is not None
        dom.console.listeners.append(_line_clock(lines))
        yield BootedVm(dom, started, lines)
    finally:
        try:
            dom.destroy()
            dom.undefine()
        finally:
            dom.close_access()


def _line_clock(lines: dict[str, float]) -> Callable[[bytes], None]:
    """A console listener noting when each watched line first shows up (lines may be split
    across chunks)."""
    seen = bytearray()

    def listen(chunk: bytes) -> None:
        seen.extend(chunk)
        for line in (guestkit.SSH_LINE, guestkit.LEASE_PREFIX, guestkit.READY_LINE):
            if line not in lines and line.encode() in seen:
                lines[line] = time.monotonic()

    return listen


@pytest.fixture(scope="module")
def ready_vm(vm: BootedVm) -> Domain:
    vm.dom.wait_ready(timeout=120)
    return vm.dom


@pytest.mark.qemu
def test_vm_becomes_ready_over_ssh_with_the_pinned_key(vm: BootedVm) -> None:
    waited = vm.dom.wait_ready(timeout=120)
    done = time.monotonic()
    vm.dom.wait_for_console(guestkit.SSH_LINE, timeout=5)
    report("start -> wait_ready returned", done - vm.started)
    for line, at in sorted(vm.lines.items(), key=lambda kv: kv[1]):
        report(f"console {line!r} -> wait_ready returned", done - at)
    assert waited > 0
    assert guestkit.SSH_LINE in vm.lines
    started = time.monotonic()
    session = SshSession.open(
        pick_address(vm.dom.addresses()) or "", vm.dom.host.ssh, netns=vm.dom.host.netns, timeout=30
    )
    report("a new SSH connection + login (TCG guest)", time.monotonic() - started)
    session.close()


@pytest.mark.qemu
def test_vm_exec_status_output_and_binary(ready_vm: Domain, kit: GuestKit) -> None:
    assert ready_vm.exec(["uname", "-r"], check=True).text.strip() == kit.kernel_version
    result = ready_vm.exec("echo out; echo err >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    with pytest.raises(RemoteCommandError) as info:
        ready_vm.exec(["cat", "/no/such/file"], check=True)
    assert info.value.exit_status == 1 and b"/no/such/file" in info.value.stderr
    data = bytes(range(256)) * 256
    assert ready_vm.exec(["cat"], input=data).stdout == data
    args = ["a b", "$HOME", "'", "*", ";"]
    assert ready_vm.exec(["printf", "%s|", *args]).text == "|".join(args) + "|"
    started = time.monotonic()
    for _ in range(20):
        ready_vm.exec(["true"], check=True)
    report(
        "VM exec(['true']) latency, kept SSH session, TCG guest", (time.monotonic() - started) / 20
    )


@pytest.mark.qemu
def test_vm_changed_or_unknown_host_key_is_refused(
    ready_vm: Domain, ssh_config: SshConfig, kit: GuestKit, tmp_path: Path
) -> None:
    with pytest.raises(HostKeyError) as info:
        ready_vm.exec(["true"], ssh=dataclasses.replace(ssh_config, host_key=OTHER_KEY))
    assert key_fingerprint(kit.host_key_pub) in str(info.value)
    assert key_fingerprint(OTHER_KEY) in str(info.value)
    with pytest.raises(HostKeyError, match="unknown"):
        ready_vm.exec(["true"], ssh=dataclasses.replace(ssh_config, host_key=None))
    address = pick_address(ready_vm.addresses())
    assert address is not None
    known = tmp_path / "known_hosts"
    known.write_text(kit.known_hosts_line(address) + "\n")
    by_file = dataclasses.replace(ssh_config, host_key=None, known_hosts=known)
    assert ready_vm.exec(["true"], ssh=by_file).ok


@pytest.mark.qemu
def test_vm_put_get_10_mib_byte_for_byte(ready_vm: Domain, tmp_path: Path) -> None:
    data = os.urandom(TEN_MIB)
    (tmp_path / "src").write_bytes(data)
    started = time.monotonic()
    assert ready_vm.put(tmp_path / "src", "/tmp/hvlib-10m") == TEN_MIB
    report("VM put 10 MiB", time.monotonic() - started)
    remote_sum = ready_vm.exec(["sha256sum", "/tmp/hvlib-10m"], check=True).text.split()[0]
    assert remote_sum == hashlib.sha256(data).hexdigest()
    started = time.monotonic()
    assert ready_vm.get("/tmp/hvlib-10m", tmp_path / "back") == TEN_MIB
    report("VM get 10 MiB", time.monotonic() - started)
    assert (tmp_path / "back").read_bytes() == data
    ready_vm.exec(["rm", "-f", "/tmp/hvlib-10m"], check=True)


@pytest.mark.qemu
def test_vm_command_outliving_its_timeout_is_killed(ready_vm: Domain) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        ready_vm.exec("echo started; sleep 777 & sleep 778; wait", timeout=2)
    assert time.monotonic() - started < 6
    assert info.value.killed
    assert info.value.stdout == b"started\n"
    assert guest_pids(ready_vm, "sleep 777") == []
    assert guest_pids(ready_vm, "sleep 778") == []


@pytest.mark.qemu
def test_vm_dropped_connection_raises_connection_lost(
    ready_vm: Domain, ssh_config: SshConfig
) -> None:
    second = dataclasses.replace(ssh_config, connect_timeout=9.5)  # its own SSH connection
    ready_vm.exec(["true"], ssh=second, check=True)

    def kill_its_dropbear() -> None:
        time.sleep(1.0)
        (pid,) = guest_pids(ready_vm, "sleep 779")
        walk_up = (
            'p=$1; while [ "$(cat /proc/$p/comm)" != dropbear ]; do '
            "p=$(cut -d' ' -f4 /proc/$p/stat); done; kill -9 $p"
        )
        ready_vm.exec(["sh", "-c", walk_up, "x", pid], check=True)

    killer = threading.Thread(target=kill_its_dropbear)
    killer.start()
    try:
        with pytest.raises(ConnectionLost) as info:
            ready_vm.exec("echo partial; sleep 779", ssh=second, timeout=30)
    finally:
        killer.join()
    assert info.value.stdout == b"partial\n"
    for pid in guest_pids(ready_vm, "sleep 779"):
        ready_vm.exec(["kill", "-9", pid])
    assert ready_vm.exec(["true"], ssh=second).ok  # a fresh connection is opened


# -- the container ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def container(
    sandbox: SandboxHost, kit: GuestKit, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Domain, Path]]:
    """A running container on a private copy of the kit's root (tests write into it)."""
    rootfs = tmp_path_factory.mktemp("ct") / "rootfs"
    shutil.copytree(kit.lxc_rootfs, rootfs, symlinks=True)
    spec = DomainSpec(
        name="it-access-ct",
        virt=VirtType.LXC,
        memory_mib=128,
        init=[guestkit.LXC_INIT],
        filesystems=[Filesystem.mount(str(rootfs), "/")],
    )
    with hvlib.connect(sandbox.lxc_uri) as host:
        dom = host.domains.define(spec)
        try:
            dom.start()
            dom.wait_ready(timeout=30)
            yield dom, rootfs
        finally:
            dom.destroy()
            dom.undefine()


@pytest.mark.lxc
def test_lxc_exec_runs_inside_the_container(container: tuple[Domain, Path]) -> None:
    dom, rootfs = container
    result = dom.exec("echo out; echo err >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert dom.exec(["hostname"], check=True).text.strip() == dom.name
    for ns in ("pid", "mnt", "net", "uts", "ipc"):
        mine = dom.exec(["readlink", f"/proc/self/ns/{ns}"], check=True).text
        init = dom.exec(["readlink", f"/proc/1/ns/{ns}"], check=True).text
        assert mine == init, ns
    (rootfs / "root" / "marker").write_text("inside\n")
    assert dom.exec(["cat", "/root/marker"], check=True).text == "inside\n"  # / is its root
    data = bytes(range(256)) * 256
    assert dom.exec(["cat"], input=data).stdout == data
    with pytest.raises(RemoteCommandError):
        dom.exec(["false"], check=True)
    started = time.monotonic()
    for _ in range(20):
        dom.exec(["true"], check=True)
    report("LXC exec(['true']) latency", (time.monotonic() - started) / 20)


@pytest.mark.lxc
def test_lxc_ready_probe(container: tuple[Domain, Path]) -> None:
    dom, _ = container
    assert dom.wait_ready(timeout=10, probe=Ready.SSH) < 10


@pytest.mark.lxc
def test_lxc_command_outliving_its_timeout_is_killed(container: tuple[Domain, Path]) -> None:
    dom, _ = container
    with pytest.raises(CommandTimeout) as info:
        dom.exec("echo started; sleep 777 & sleep 778; wait", timeout=1.5)
    assert info.value.killed and info.value.stdout == b"started\n"
    assert guest_pids(dom, "sleep 777") == []
    assert guest_pids(dom, "sleep 778") == []


@pytest.mark.lxc
def test_lxc_put_get_10_mib_byte_for_byte(container: tuple[Domain, Path], tmp_path: Path) -> None:
    dom, rootfs = container
    data = os.urandom(TEN_MIB)
    (tmp_path / "src").write_bytes(data)
    started = time.monotonic()
    assert dom.put(tmp_path / "src", "/tmp/hvlib-10m") == TEN_MIB
    report("LXC put 10 MiB", time.monotonic() - started)
    assert (rootfs / "tmp" / "hvlib-10m").read_bytes() == data
    started = time.monotonic()
    assert dom.get("/tmp/hvlib-10m", tmp_path / "back") == TEN_MIB
    report("LXC get 10 MiB", time.monotonic() - started)
    assert (tmp_path / "back").read_bytes() == data
