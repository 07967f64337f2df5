"""A forced stop is reported as forced (item 16, library side of the CLI's rule): an
``ensure`` whose guest is still running at ``shutdown_timeout`` powers it off and says
``forced=True``, or with ``force_shutdown=False`` leaves it running and raises WaitTimeout.
On libvirt's test driver a shutdown request stops the guest at once, so only a timeout of 0
reaches the deadline (the request is never sent): that is the real path, not a fake."""

from __future__ import annotations

import pytest

from hvlib import DomainSpec, State, VirtType, WaitTimeout
from hvlib.virt.host import Host


def vm(name: str, memory: int = 64) -> DomainSpec:
    return DomainSpec(name=name, virt=VirtType.QEMU, memory_mib=memory, kernel="/k")


def test_a_stop_at_the_deadline_is_forced_and_says_so(host: Host, unique: str) -> None:
    host.domains.ensure(vm(unique))
    result = host.domains.ensure(vm(unique), State.SHUT_OFF, shutdown_timeout=0)
    assert result.forced and result.changed
    assert host.domains.get(unique).state is State.SHUT_OFF
    host.domains.ensure(vm(unique))
    graceful = host.domains.ensure(vm(unique), State.SHUT_OFF)
    assert graceful.changed and not graceful.forced
    host.domains.ensure(vm(unique), State.ABSENT)


def test_without_force_the_guest_keeps_running(host: Host, unique: str) -> None:
    host.domains.ensure(vm(unique))
    with pytest.raises(WaitTimeout, match="did not shut down within 0 s"):
        host.domains.ensure(vm(unique), State.SHUT_OFF, shutdown_timeout=0, force_shutdown=False)
    assert host.domains.get(unique).state is State.RUNNING
    restart = host.domains.ensure(vm(unique, memory=128), allow_restart=True, shutdown_timeout=0)
    assert restart.forced and host.domains.get(unique).state is State.RUNNING
    host.domains.ensure(vm(unique), State.ABSENT)
