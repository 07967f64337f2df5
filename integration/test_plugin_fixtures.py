"""The pytest plugin's kit fixtures not used by the README example: the kit VM (ready over
SSH, ``dom.ssh`` set) and the hosts. The Debian VM fixture: test_debian_ready.py."""

from __future__ import annotations

import pytest

from hvlib import State, VirtType
from hvlib.testkit.pytest_plugin import KIT_READY_WITHIN, STARTED_TO_READY
from hvlib.virt.domain import Domain
from hvlib.virt.host import Host

pytestmark = [pytest.mark.integration, pytest.mark.qemu, pytest.mark.timeout(300)]


def test_kit_vm_is_running_and_takes_commands(hvlib_kit_vm: Domain, hvlib_qemu_host: Host) -> None:
    dom = hvlib_kit_vm
    assert (dom.virt, dom.state) == (VirtType.QEMU, State.RUNNING)
    result = dom.exec(["uname", "-s"], check=True)
    assert (result.text, result.transport) == ("Linux\n", "ssh")
    print(f"\nMEASURED kit VM start -> SSH ready: {STARTED_TO_READY[dom.name]:.2f} s")
    assert STARTED_TO_READY[dom.name] < KIT_READY_WITHIN
    assert hvlib_qemu_host.domains.find(dom.name) is not None
