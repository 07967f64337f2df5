"""A container whose init exits during the start is an error with its console tail (issue 18
item 7), on a real libvirtd (LXC) with the kit's root filesystem.

The init here is the kit's busybox shell told to print a line and exit, as systemd did in the
trial ("Failed to create /init.scope control group: Permission denied ... Exiting PID 1").
"""

from __future__ import annotations

import time

import pytest

from hvlib import DomainSpec, Filesystem, State, VirtType
from hvlib.errors import InvalidState
from hvlib.testkit.guestkit import GuestKit
from hvlib.virt.host import Host
from integration.conftest import MakeDomain

pytestmark = [pytest.mark.lxc, pytest.mark.timeout(120)]


def dying_spec(name: str, kit: GuestKit, delay: float) -> DomainSpec:
    script = f"echo 'Exiting PID 1 on purpose'; sleep {delay}; exit 3"
    return DomainSpec(
        name=name,
        virt=VirtType.LXC,
        memory_mib=64,
        init=["/bin/sh", "-c", script],
        filesystems=[Filesystem.mount(str(kit.lxc_rootfs), "/")],
    )


def test_init_that_exits_at_once_fails_the_start_with_its_console(
    lxc_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    dom = make_domain(lxc_host, dying_spec("it-ct-dying", kit, 0))
    started = time.monotonic()
    with pytest.raises(InvalidState, match="its init exited") as info:
        dom.start()
    took = time.monotonic() - started
    print(f"start of a container whose init exits: error after {took:.3f} s")
    assert "Exiting PID 1 on purpose" in str(info.value)
    assert dom.state is State.SHUT_OFF
