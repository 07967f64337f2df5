"""The end-to-end demo behind `make demo` and `hvlib demo`.

On its own sandboxed libvirt host (hvlib.testkit), through hvlib's public API only: boot one
QEMU (software emulation) VM and one LXC container from the test guest kit, wait until each is
ready, show state, address and a command's output, shut both down gracefully and remove them.
Each step prints one line with the elapsed time; a summary table ends the run. Given a URI of
an existing libvirt it uses that instead; on ``test:///`` it runs the lifecycle part only.

With ``debian=True`` (``hvlib demo --debian``, ``make demo-debian``) a second act follows on
real distributions built from Debian packages (:mod:`hvlib.testkit.debian`): a Debian 12
cloud image imported with ``host.images.ensure`` and booted with a NoCloud seed that
cloud-init applies (a user with a key, the pinned host key, the hostname), and a Debian 12
system container whose init is systemd. It needs a local host (the container's root is a
copy on this machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import hvlib
from hvlib import Disk, DomainSpec, Filesystem, Nic, State, VirtType
from hvlib.virt.domain import Domain

T = TypeVar("T")
READY_PATTERN = r"hvlib-guest: ready"


@dataclass
class Row:
    """One line of the summary table."""

    name: str
    virt: str
    states: list[str] = field(default_factory=list)
    address: str = "-"
    command: str = "-"
    ready_s: str = "-"
    shutdown: str = "-"


class Demo:
    """Prints ``[  12.3s] step`` lines and collects the summary."""

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.t0 = time.monotonic()
        self.out = out
        self.rows: dict[str, Row] = {}

    def step(self, text: str) -> None:
        """Print one progress line with the time since the demo began."""
        self.out(f"[{time.monotonic() - self.t0:7.1f}s] {text}")

    def timed(self, text: str, fn: Callable[[], T]) -> tuple[T, float]:
        """Run ``fn``, print ``text`` with how long it took, return its result and duration."""
        started = time.monotonic()
        result = fn()
        took = time.monotonic() - started
        self.step(f"{text} ({took:.2f} s)")
        return result, took

    def table(self) -> None:
        """Print the summary table."""
        head = ("domain", "type", "states seen", "address", "command output", "ready", "shutdown")
        rows = [head] + [
            (r.name, r.virt, " > ".join(r.states), r.address, r.command, r.ready_s, r.shutdown)
            for r in self.rows.values()
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        self.out("")
        for i, row in enumerate(rows):
            self.out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
            if i == 0:
                self.out("  ".join("-" * w for w in widths))


def run(uri: str | None = None, out: Callable[[str], None] = print, debian: bool = False) -> int:
    """Run the demo (with ``debian``, the second act too); return the exit status (0: success).

    Raises:
        HvlibError: a step failed (the message says which and why).
    """
    demo = Demo(out)
    if uri is not None:
        with hvlib.connect(uri) as host:
            if host.is_test_driver:  # the driver says so, whatever the URI's spelling
                _lifecycle_only(demo, host)
            else:
                _vm_and_container(demo, host, host, debian)
    else:
        _vm_and_container(demo, None, None, debian)
    demo.table()
    return 0


def _vm_and_container(demo: Demo, qemu: Any, lxc: Any, debian: bool = False) -> None:
    with _hosts(demo, qemu, lxc) as (qemu, lxc, kit):
        _vm(demo, qemu, kit)
        _container(demo, lxc, kit)
        if debian:
            _debian_vm(demo, qemu)
            _debian_container(demo, lxc)


@contextlib.contextmanager
def _hosts(demo: Demo, qemu: Any, lxc: Any) -> Iterator[tuple[Any, Any, Any]]:
    """The given hosts, or those of a sandbox started (and stopped) here, with the kit."""
    from hvlib.testkit.guestkit import ensure_guest_kit
    from hvlib.testkit.sandbox import SandboxHost

    kit, _ = demo.timed(
        "test guest kit ready (Debian cloud kernel + busybox initramfs)", ensure_guest_kit
    )
    if qemu is not None:
        yield qemu, lxc, kit
        return
    sandbox, _ = demo.timed(
        "sandboxed libvirtd started (own network and mount namespaces)", SandboxHost("demo").start
    )
    try:
        demo.step(f"  network namespace {sandbox.netns}; uri {sandbox.qemu_uri}")
        with (
            hvlib.connect(sandbox.qemu_uri, netns=sandbox.netns, ssh=_ssh(kit)) as qemu,
            hvlib.connect(sandbox.lxc_uri, netns=sandbox.netns) as lxc,
        ):
            yield qemu, lxc, kit
    finally:
        demo.timed("sandbox stopped: libvirtd, guests, namespace and bridge removed", sandbox.stop)


def _ssh(kit: Any) -> Any:
    return hvlib.SshConfig(user="root", key=str(kit.client_key), host_key=kit.host_key_pub)


def _vm(demo: Demo, host: Any, kit: Any) -> None:
    spec = DomainSpec(
        name="demo-vm",
        virt=VirtType.QEMU,
        vcpus=1,
        memory_mib=256,
        kernel=str(kit.kernel),
        initrd=str(kit.initrd),
        cmdline="console=ttyS0",
        nics=[Nic.network("default")],
        rng=True,  # a virtio RNG: the emulated guest's SSH server does not wait for entropy
    )
    row = demo.rows.setdefault(spec.name, Row(spec.name, "qemu (TCG)"))
    dom = _define_and_start(demo, host, spec, row)
    _, took = demo.timed(
        "demo-vm ready: its console printed 'hvlib-guest: ready'",
        lambda: dom.wait_for_console(READY_PATTERN, timeout=120),
    )
    found, _ = demo.timed("demo-vm got a DHCP lease", lambda: dom.wait_for_address(timeout=60))
    row.address = ", ".join(str(a.ip) for addrs in found.values() for a in addrs)
    demo.timed("demo-vm reachable over SSH (host key pinned)", lambda: dom.wait_ready(timeout=60))
    _exec(demo, dom, row, ["uname", "-sr"])
    row.ready_s = f"{took:.1f} s"
    _stop_and_remove(demo, dom, row)


def _container(demo: Demo, host: Any, kit: Any) -> None:
    spec = DomainSpec(
        name="demo-ct",
        virt=VirtType.LXC,
        memory_mib=64,
        init=["/sbin/hvlib-init"],
        filesystems=[Filesystem.mount(str(kit.lxc_rootfs), "/")],
    )
    row = demo.rows.setdefault(spec.name, Row(spec.name, "lxc"))
    dom = _define_and_start(demo, host, spec, row)
    _, took = demo.timed(
        "demo-ct ready: its init printed 'hvlib-guest: ready'",
        lambda: dom.wait_for_console(READY_PATTERN, timeout=30),
    )
    row.ready_s = f"{took:.1f} s"
    row.address = "(private netns)"
    _exec(demo, dom, row, ["cat", "/proc/1/cmdline"])
    _stop_and_remove(demo, dom, row)


def _define_and_start(demo: Demo, host: Any, spec: DomainSpec, row: Row) -> Domain:
    stale = host.domains.find(spec.name)
    if stale is not None:  # a run interrupted earlier against the same host
        stale.destroy()
        stale.undefine()
        demo.step(f"removed {spec.name} left over from an earlier run")
    dom: Domain
    dom, _ = demo.timed(
        f"defined {spec.name} ({spec.virt.value}, {spec.vcpus} vcpu, {spec.memory_mib} MiB)",
        lambda: host.domains.define(spec),
    )
    row.states.append(dom.state.value)
    demo.timed(f"started {spec.name}", dom.start)
    row.states.append(dom.state.value)
    return dom


def _exec(demo: Demo, dom: Any, row: Row, argv: list[str]) -> None:
    res, _ = demo.timed(
        f"{dom.name}: exec {' '.join(argv)}", lambda: dom.exec(argv, timeout=30, check=True)
    )
    row.command = res.text.replace("\x00", " ").strip()
    demo.step(f"  -> exit {res.exit_status}: {row.command}")


def _stop_and_remove(demo: Demo, dom: Domain, row: Row) -> None:
    result, _ = demo.timed(f"shut down {dom.name}", lambda: dom.shutdown(timeout=30))
    row.states.append(dom.state.value)
    row.shutdown = f"{'graceful' if result.graceful else 'forced'} {result.elapsed:.1f} s"
    demo.timed(f"undefined {dom.name}", dom.undefine)
    row.states.append(dom.state.value)


def _lifecycle_only(demo: Demo, host: Any) -> None:
    demo.step(f"{host.uri} is libvirt's test driver: lifecycle only, nothing boots")
    for spec in _test_specs():
        row = demo.rows.setdefault(spec.name, Row(spec.name, spec.virt.value))
        dom = _define_and_start(demo, host, spec, row)
        dom.wait_for(State.RUNNING, timeout=10)
        _stop_and_remove(demo, dom, row)


def _test_specs() -> list[DomainSpec]:
    return [
        DomainSpec(name="demo-vm", virt=VirtType.QEMU, kernel="/boot/vmlinuz"),
        DomainSpec(
            name="demo-ct",
            virt=VirtType.LXC,
            init=["/sbin/init"],
            filesystems=[Filesystem.mount("/srv/demo-ct")],
        ),
    ]


# -- the second act: real distributions --------------------------------------------------------

_DEMO_POOL = ("hvlib-demo", "/var/lib/libvirt/images/hvlib-demo")


def _debian_vm(demo: Demo, host: Any) -> None:
    """Import the Debian cloud image, boot it with a seed, log in as the user cloud-init made."""
    from hvlib.testkit import debian

    image, _ = demo.timed(
        "Debian 12 cloud image ready (debootstrap from Debian packages, cached)",
        debian.ensure_debian_vm_image,
    )
    pool = host.pools.ensure_dir(*_DEMO_POOL)
    base, _ = demo.timed(
        f"image imported into pool {pool.name} (host.images.ensure, streamed, sha256 recorded)",
        lambda: host.images.ensure("debian-12.qcow2", str(image.disk), pool=pool),
    )
    with tempfile.TemporaryDirectory(prefix="hvlib-demo-") as tmp:
        host_public, key_file, image_seed = _seed_and_keys(tmp)
        overlay = host.volumes.ensure(pool, "demo-debian.qcow2", backing=base.volume).volume
        seed_vol = host.volumes.ensure(pool, "demo-debian-seed.iso", data=image_seed)
        spec = DomainSpec(
            name="demo-debian",
            virt=VirtType.QEMU,
            vcpus=2,
            memory_mib=1024,
            kernel=str(image.kernel),
            initrd=str(image.initrd),
            cmdline=image.cmdline,
            disks=[overlay.disk(), Disk.volume(pool.name, seed_vol.volume.name, readonly=True)],
            nics=[Nic.network("default")],
            rng=True,
        )
        row = demo.rows.setdefault(spec.name, Row(spec.name, "qemu (TCG), Debian 12"))
        dom = _define_and_start(demo, host, spec, row)
        dom.ssh = hvlib.SshConfig(user="demo", key=key_file, host_key=host_public)
        _, took = demo.timed(
            "demo-debian reachable over SSH as the user cloud-init made (host key pinned)",
            lambda: dom.wait_ready(timeout=300),
        )
        demo.timed(
            "demo-debian: cloud-init finished",
            lambda: dom.exec("cloud-init status --wait", timeout=300, check=True),
        )
        row.address = ", ".join(str(a.ip) for ips in dom.addresses().values() for a in ips)
        _exec(demo, dom, row, ["sh", "-c", '. /etc/os-release; echo "$PRETTY_NAME on $(hostname)"'])
        row.ready_s = f"{took:.1f} s"
        _stop_and_remove(demo, dom, row)
        overlay.delete()
        seed_vol.volume.delete()


def _seed_and_keys(tmp: str) -> tuple[str, str, bytes]:
    """(the guest's host key, the user's private key file in ``tmp``, the NoCloud seed that
    gives the guest that host key, a user ``demo`` with the key and passwordless sudo, and
    its hostname)."""
    from hvlib.model.cloudinit import seed

    (host_private, host_public), (user_private, user_public) = _keypair(), _keypair()
    key_file = os.path.join(tmp, "demo_key")
    with open(key_file, "w") as f:
        f.write(user_private)
    os.chmod(key_file, 0o600)
    user: dict[str, object] = {"name": "demo", "sudo": "ALL=(ALL) NOPASSWD:ALL"}
    user |= {"shell": "/bin/bash", "ssh_authorized_keys": [user_public]}
    keys = {"ed25519_private": host_private, "ed25519_public": host_public}
    user_data = {"hostname": "demo-debian", "users": [user], "ssh_keys": keys}
    meta = {"instance-id": f"demo-{time.time_ns()}", "local-hostname": "demo-debian"}
    return host_public, key_file, seed(user_data, meta)


def _debian_container(demo: Demo, host: Any) -> None:
    """A Debian system container: systemd as init, reached through exec."""
    from hvlib.testkit import debian

    rootfs, _ = demo.timed(
        "Debian 12 container root ready (systemd as init, cached)", debian.ensure_debian_rootfs
    )
    top = tempfile.mkdtemp(prefix="hvlib-demo-ct-")
    try:
        root = debian.copy_rootfs(rootfs, Path(top) / "rootfs")
        spec = DomainSpec(
            name="demo-debian-ct",
            virt=VirtType.LXC,
            memory_mib=256,
            init=[rootfs.init],
            filesystems=[Filesystem.mount(str(root), "/")],
            nics=[Nic.network("default")],
        )
        row = demo.rows.setdefault(spec.name, Row(spec.name, "lxc, Debian 12 + systemd"))
        dom = _define_and_start(demo, host, spec, row)
        _, took = demo.timed("demo-debian-ct: systemd is running", lambda: _systemd_up(dom))
        row.ready_s = f"{took:.1f} s"
        found = dom.wait_for_address(timeout=60)
        row.address = ", ".join(str(a.ip) for ips in found.values() for a in ips)
        _exec(demo, dom, row, ["systemctl", "is-system-running"])
        _stop_and_remove(demo, dom, row)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _systemd_up(dom: Any, timeout: float = 60.0) -> str:
    """Wait until systemd in the container says running or degraded (exec right after the
    start may find no bus yet); return that state.

    Raises:
        WaitTimeout: not within ``timeout`` s (the last answer is in the message).
    """
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        with contextlib.suppress(hvlib.GuestAccessError):
            last = dom.exec(["systemctl", "is-system-running"], timeout=10).text.strip()
        if last in ("running", "degraded"):
            return last
        time.sleep(0.2)
    raise hvlib.WaitTimeout(f"systemd in {dom.name} not running within {timeout} s: {last!r}")


def _keypair() -> tuple[str, str]:
    """A fresh ed25519 key pair: (OpenSSH private key, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private.decode(), public.decode()
