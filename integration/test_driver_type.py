"""libvirt's test driver reached through a real daemon (the session's sandboxed libvirtd,
``test+unix:///default?socket=...``): hvlib knows it is the test driver because the driver
says so (``getType()``), not because the URI starts with ``test:`` (it does not here). Before,
an ensure to PAUSED failed there with "unsupported flags" (hvlib took it for a real QEMU
host and asked for what only QEMU does), and kvm specs were probed for acceleration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import hvlib
from hvlib import DomainSpec, Filesystem, State, VirtType
from hvlib.testkit.sandbox import SandboxHost
from hvlib.virt.host import Host

pytestmark = [pytest.mark.integration]


@pytest.fixture
def test_over_unix(sandbox: SandboxHost) -> Iterator[Host]:
    uri = sandbox.qemu_uri.replace("qemu+unix:///system", "test+unix:///default")
    assert uri.startswith("test+unix:///default?socket=")
    with hvlib.connect(uri, poll_interval=None) as host:
        yield host


def test_the_daemon_s_test_driver_is_known_as_the_test_driver(test_over_unix: Host) -> None:
    assert test_over_unix.driver == "TEST"
    assert test_over_unix.is_test_driver


@pytest.mark.parametrize("virt", [VirtType.KVM, VirtType.QEMU, VirtType.LXC])
def test_ensure_to_paused_through_the_daemon(test_over_unix: Host, virt: VirtType) -> None:
    name = f"drvtype-{virt.value}"
    if virt is VirtType.LXC:
        spec = DomainSpec(
            name=name,
            virt=virt,
            init=["/sbin/init"],
            memory_mib=64,
            filesystems=[Filesystem.mount("/srv/ct")],
        )
    else:
        spec = DomainSpec(name=name, virt=virt, kernel="/boot/vmlinuz", memory_mib=64)
    try:
        result = test_over_unix.domains.ensure(spec, State.PAUSED)
        assert result.domain is not None and result.domain.state is State.PAUSED
        again = test_over_unix.domains.ensure(spec, State.PAUSED)
        assert not again.changed
    finally:
        test_over_unix.domains.ensure(spec, State.ABSENT)
