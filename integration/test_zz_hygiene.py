"""Run last: nothing earlier leaked into the host's network namespace, and no earlier run
left a sandbox behind (checked at session start, before anything was cleaned)."""

from __future__ import annotations

import pytest

from hvlib import DomainSpec, Nic, VirtType
from hvlib.testkit import guestkit
from hvlib.testkit import sandbox as sandbox_mod
from hvlib.testkit.guestkit import GuestKit
from hvlib.virt.host import Host
from integration import conftest
from integration.conftest import MakeDomain


@pytest.mark.integration
def test_no_sandbox_was_left_behind_by_an_earlier_run() -> None:
    # Found at session start, before any cleanup. A sandbox whose stop() ran (after Ctrl-C
    # too: pytest runs fixture teardown) must have left nothing. One whose owner was killed
    # before it could clean up (SIGKILL, a machine stopping a session) is reaped and reported
    # here, but cannot be held against stop(): its own test is test_sandbox's SIGKILL case.
    failed_cleanups = [line for line in conftest.LEFTOVERS_AT_START if "its stop() ran" in line]
    for line in conftest.LEFTOVERS_AT_START:
        print("reaped at session start:", line)
    assert failed_cleanups == []


@pytest.mark.integration
@pytest.mark.qemu
def test_host_namespace_gains_no_interface_or_listener(
    qemu_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    # with a guest running on the sandbox's NAT network and holding a DHCP lease
    dom = make_domain(
        qemu_host,
        DomainSpec(
            name="it-hygiene",
            virt=VirtType.QEMU,
            kernel=str(kit.kernel),
            initrd=str(kit.initrd),
            cmdline=guestkit.kernel_cmdline(),
            nics=[Nic.network("default")],
            rng=True,
        ),
    )
    dom.start()
    dom.wait_for_address(timeout=60)
    diff = sandbox_mod.diff_snapshots(conftest.NET_AT_START[0], sandbox_mod.host_network_snapshot())
    assert diff.leaks == [], diff
