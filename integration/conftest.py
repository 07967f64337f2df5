"""Fixtures for integration tests: a real, sandboxed libvirtd started by the test run itself.

Session start: what earlier runs left behind is recorded (before anything is cleaned, so a
test can assert there was nothing), then reaped; the host namespace's interfaces and listeners
are snapshotted. One SandboxHost serves the session (its own network and mount namespaces);
each test's domains are destroyed and undefined by the ``make_domain`` fixture even when the
test fails, and the sandbox is stopped at the end of the session, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hvlib
from hvlib import DomainSpec, VirtType
from hvlib.testkit import sandbox as sandbox_mod
from hvlib.testkit.guestkit import (
    FLAG_COUNTER,
    FLAG_NOSSH,
    GuestKit,
    ensure_guest_kit,
    kernel_cmdline,
)
from hvlib.testkit.sandbox import NetSnapshot, SandboxHost, SshLink, ssh_linked
from hvlib.virt import accel
from hvlib.virt.domain import Domain
from hvlib.virt.host import Host
from hvlib.virt.remote import remote_uri

LEFTOVERS_AT_START: list[str] = []
NET_AT_START: list[NetSnapshot] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() != 0:
        return
    LEFTOVERS_AT_START.extend(sandbox_mod.leftovers())
    sandbox_mod.reap_stale()
    NET_AT_START.append(sandbox_mod.host_network_snapshot())


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (they start their own libvirtd)")


@pytest.fixture(scope="session")
def kit() -> GuestKit:
    """The test guest kit (built once, cached by its inputs across runs); also the guest that
    hvlib's KVM probe boots when a test defines a kvm spec."""
    _require_root()
    built = ensure_guest_kit()
    accel.set_probe_guest(
        accel.ProbeGuest(str(built.kernel), str(built.initrd), kernel_cmdline("ttyS0", FLAG_NOSSH))
    )
    return built


def pinned_uri(link: SshLink) -> str:
    """Host B's libvirt URI as seen from A, over SSH with B's host key and A's key pinned."""
    return remote_uri(link.ssh_uri, known_hosts=link.known_hosts, keyfile=link.keyfile)


def counter_guest_spec(kit: GuestKit, name: str, **kw: object) -> DomainSpec:
    """A QEMU guest of the kit that prints a console counter (remote and migration tests)."""
    fields: dict[str, object] = {
        "virt": VirtType.QEMU,
        "memory_mib": 256,
        "kernel": str(kit.kernel),
        "initrd": str(kit.initrd),
        "cmdline": kernel_cmdline("ttyS0", FLAG_COUNTER),
        "rng": True,
    }
    return DomainSpec(name=name, **(fields | kw))  # type: ignore[arg-type]


@contextlib.contextmanager
def linked_pair(prefix: str, workdir: Path) -> Iterator[SshLink]:
    """Two sandboxed hosts (``PREFIXa``, ``PREFIXb``) joined by a veth pair, B's libvirtd
    reachable from A over SSH with a pinned key (:func:`hvlib.testkit.sandbox.ssh_linked`)."""
    _require_root()
    if shutil.which("sshd", path="/usr/sbin:/usr/bin") is None:
        pytest.fail("sshd not found: the SSH leg needs Debian's openssh-server (make deps)")
    pid = os.getpid()
    with (
        SandboxHost(f"{prefix}a{pid}") as a,
        SandboxHost(f"{prefix}b{pid}") as b,
        ssh_linked(a, b, workdir) as link,
    ):
        yield link


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxHost]:
    """One private libvirtd for the session, stopped (with all it started) at the end."""
    _require_root()
    with SandboxHost(f"it{os.getpid()}") as sb:
        yield sb


@pytest.fixture(scope="session")
def qemu_host(sandbox: SandboxHost) -> Iterator[Host]:
    with hvlib.connect(sandbox.qemu_uri, netns=sandbox.netns, poll_interval=None) as host:
        yield host


@pytest.fixture(scope="session")
def lxc_host(sandbox: SandboxHost) -> Iterator[Host]:
    with hvlib.connect(sandbox.lxc_uri, netns=sandbox.netns, poll_interval=None) as host:
        yield host


MakeDomain = Callable[[Host, DomainSpec], Domain]


@pytest.fixture
def make_domain() -> Iterator[MakeDomain]:
    """Define domains through hvlib; destroy and undefine them after the test, pass or fail."""
    made: list[Domain] = []

    def make(host: Host, spec: DomainSpec) -> Domain:
        dom = host.domains.define(spec)
        made.append(dom)
        return dom

    yield make
    for dom in made:
        dom.destroy()
        dom.undefine()


# -- the pytest plugin's fixtures (hvlib.testkit.pytest_plugin) share this session's sandbox
# and kit (a project using the plugin may override them the same way)


@pytest.fixture(scope="session")
def hvlib_sandbox(sandbox: SandboxHost) -> SandboxHost:
    return sandbox


@pytest.fixture(scope="session")
def hvlib_kit(kit: GuestKit) -> GuestKit:
    return kit
