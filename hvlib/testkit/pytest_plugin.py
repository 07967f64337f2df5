"""hvlib's pytest plugin: real guests on a sandboxed libvirtd as fixtures, for users' CI.

Installed with ``pip install hvlib[test]`` (the ``pytest11`` entry point ``hvlib`` loads this
module; nothing to add to a conftest). Needs root (it starts its own libvirtd in private
network and mount namespaces, see :class:`hvlib.testkit.sandbox.SandboxHost`) and Debian's
libvirt and QEMU packages (``make deps``).

Fixtures:

- ``hvlib_sandbox`` (session): the :class:`~hvlib.testkit.sandbox.SandboxHost`, stopped with
  all it started at the end of the session. ``hvlib_qemu_host``, ``hvlib_lxc_host``
  (session): :class:`hvlib.Host` connections to it (QEMU and LXC).
- ``hvlib_kit_vm``: a running busybox kit VM (QEMU, TCG), ready over SSH (its ``ssh`` set);
  ``hvlib_kit_container``: a running kit LXC container, ready. Both per test.
- ``hvlib_debian_vm`` (module): the Debian 12 cloud VM, cloud-init done (hvlib's seed:
  user ``hvtest`` with a key, the pinned host key, ``dom.ssh`` set), QEMU guest agent
  channel. Shared by a module's tests: shutting it down ends it for the later ones.
- ``hvlib_debian_container``: a Debian 12 systemd container on a private copy of the root,
  ``Ready.SYSTEMD`` reached. Per test.

Each returns a :class:`hvlib.Domain`; every domain is destroyed and undefined after its
scope, pass or fail. A project can override ``hvlib_sandbox`` in its conftest to share a
sandbox it already has. What it must not do: touch the host's own libvirtd, network
namespace or /etc.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported inside the fixtures: loading the plugin stays cheap (every
    # pytest run in an environment with hvlib[test] loads it)
    from hvlib.model.spec import DomainSpec
    from hvlib.testkit.guestkit import GuestKit
    from hvlib.testkit.sandbox import SandboxHost
    from hvlib.virt.domain import Domain
    from hvlib.virt.host import Host

KIT_READY_WITHIN = 120.0
"""Seconds for a kit VM to take SSH commands (measured ~5 s under TCG, FIELD-NOTES)."""
CONTAINER_READY_WITHIN = 60.0
"""Seconds for a container (kit: ~60 ms to start; Debian: running 0.3-2.8 s)."""
DEBIAN_READY_WITHIN = 300.0
"""Seconds from start to cloud-init done (measured 35-51 s under TCG: FIELD-NOTES)."""
_counter = iter(range(1, 1 << 30))
STARTED_TO_READY: dict[str, float] = {}
"""Per domain name: seconds from ``start()`` to the end of its fixture's ready wait (what a
test can report as a measured boot time)."""


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("hvlib's fixtures need root: they start a private libvirtd")


def _name(kind: str) -> str:
    return f"pt-{kind}-{os.getpid()}-{next(_counter)}"


@pytest.fixture(scope="session")
def hvlib_sandbox() -> Iterator[SandboxHost]:
    """A private libvirtd (QEMU and LXC) for the session, with a NAT network ``default`` and
    a directory pool ``default``."""
    from hvlib.testkit.sandbox import SandboxHost

    _require_root()
    with SandboxHost(f"pt{os.getpid()}") as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def hvlib_qemu_host(hvlib_sandbox: SandboxHost) -> Iterator[Host]:
    """The sandbox's QEMU driver."""
    import hvlib

    with hvlib.connect(hvlib_sandbox.qemu_uri, netns=hvlib_sandbox.netns) as host:
        yield host


@pytest.fixture(scope="session")
def hvlib_lxc_host(hvlib_sandbox: SandboxHost) -> Iterator[Host]:
    """The sandbox's LXC driver."""
    import hvlib

    with hvlib.connect(hvlib_sandbox.lxc_uri, netns=hvlib_sandbox.netns) as host:
        yield host


@pytest.fixture(scope="session")
def hvlib_kit() -> GuestKit:
    """The busybox guest kit (built once, cached by its inputs)."""
    from hvlib.testkit.guestkit import ensure_guest_kit

    _require_root()
    return ensure_guest_kit()


@pytest.fixture
def hvlib_kit_vm(hvlib_qemu_host: Host, hvlib_kit: GuestKit) -> Iterator[Domain]:
    """A running kit VM, ready over SSH (``dom.ssh`` holds its pinned credentials)."""
    from hvlib import DomainSpec, Nic, SshConfig, VirtType
    from hvlib.testkit.kitlayout import kernel_cmdline

    spec = DomainSpec(
        name=_name("vm"),
        virt=VirtType.QEMU,
        memory_mib=256,
        kernel=str(hvlib_kit.kernel),
        initrd=str(hvlib_kit.initrd),
        cmdline=kernel_cmdline("ttyS0"),
        nics=[Nic.network("default")],
        rng=True,
    )
    with (running := _running(hvlib_qemu_host, spec)) as dom:
        dom.ssh = SshConfig(user="root", key=hvlib_kit.client_key, host_key=hvlib_kit.host_key_pub)
        dom.wait_ready(timeout=KIT_READY_WITHIN)
        running.ready()
        yield dom


@pytest.fixture
def hvlib_kit_container(hvlib_lxc_host: Host, hvlib_kit: GuestKit) -> Iterator[Domain]:
    """A running kit LXC container (busybox), ready for exec."""
    from hvlib import DomainSpec, Filesystem, VirtType
    from hvlib.testkit.guestkit import LXC_INIT

    spec = DomainSpec(
        name=_name("ct"),
        virt=VirtType.LXC,
        memory_mib=64,
        init=[LXC_INIT],
        filesystems=[Filesystem.mount(str(hvlib_kit.lxc_rootfs), "/")],
    )
    with (running := _running(hvlib_lxc_host, spec)) as dom:
        dom.wait_ready(timeout=CONTAINER_READY_WITHIN)
        running.ready()
        yield dom


@pytest.fixture(scope="module")
def hvlib_debian_vm(hvlib_qemu_host: Host) -> Iterator[Domain]:
    """The Debian 12 cloud VM, ``Ready.CLOUD_INIT`` reached (see the module docstring)."""
    from hvlib.guest.ready import Ready
    from hvlib.testkit import debian, debianboot

    _require_root()
    image = debian.ensure_debian_vm_image()
    name = _name("debvm")
    with _private_dir("hvlib-pt-debvm-") as work:
        keys = debianboot.make_keys(work)
        disk = debianboot.overlay(image, work / "disk.qcow2")
        seed_name = f"{name}-seed.iso"
        data = debianboot.vm_seed(keys, f"{name}-{time.time_ns()}")
        hvlib_qemu_host.volumes.ensure("default", seed_name, data=data)
        try:
            spec = debianboot.vm_spec(name, image, disk, "default", seed_name)
            with (running := _running(hvlib_qemu_host, spec)) as dom:
                dom.ssh = keys.ssh_config()
                dom.wait_ready(timeout=DEBIAN_READY_WITHIN, probe=Ready.CLOUD_INIT, interval=1.0)
                running.ready()
                yield dom
        finally:
            volume = hvlib_qemu_host.volumes.find("default", seed_name)
            if volume is not None:
                volume.delete()


@pytest.fixture
def hvlib_debian_container(hvlib_lxc_host: Host) -> Iterator[Domain]:
    """A Debian 12 systemd container, ``Ready.SYSTEMD`` reached (running or degraded)."""
    from hvlib.guest.ready import Ready
    from hvlib.testkit import debian, debianboot

    _require_root()
    rootfs = debian.ensure_debian_rootfs()
    with _private_dir("hvlib-pt-debct-") as work:
        root = debian.copy_rootfs(rootfs, work / "rootfs")
        spec = debianboot.ct_spec(_name("debct"), root)
        with (running := _running(hvlib_lxc_host, spec)) as dom:
            dom.wait_ready(timeout=CONTAINER_READY_WITHIN, probe=Ready.SYSTEMD)
            running.ready()
            yield dom


class _running:
    """Define and start ``spec``; on exit destroy and undefine it (pass or fail)."""

    def __init__(self, host: Host, spec: DomainSpec) -> None:
        self.host, self.spec = host, spec
        self.dom: Domain | None = None
        self.started = 0.0

    def __enter__(self) -> Domain:
        self.dom = self.host.domains.define(self.spec)
        self.started = time.monotonic()
        self.dom.start()
        return self.dom

    def ready(self) -> None:
        """Note the time from start to now in :data:`STARTED_TO_READY`."""
        STARTED_TO_READY[self.spec.name] = time.monotonic() - self.started

    def __exit__(self, *exc: object) -> None:
        if self.dom is not None:
            try:
                self.dom.close_access()
                self.dom.destroy()
            finally:
                self.dom.undefine()


class _private_dir:
    """A fresh directory under /var/tmp (readable by the sandbox's QEMU), removed on exit."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.path: Path | None = None

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix=self.prefix, dir="/var/tmp"))
        self.path.chmod(0o755)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
