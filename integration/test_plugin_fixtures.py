"""The pytest plugin's kit fixtures not used by the README example: the kit VM (ready over
SSH, ``dom.ssh`` set) and the hosts. The Debian VM fixture: test_debian_ready.py."""

from __future__ import annotations

import pytest

from hvlib import State, VirtType
from hvlib.errors import Unsupported
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


def test_agent_exec_on_a_vm_without_the_channel_is_refused(hvlib_kit_vm: Domain) -> None:
    """The kit VM has no guest agent channel: naming the agent is an error, and SSH is not
    tried instead."""
    with pytest.raises(Unsupported, match="agent"):
        hvlib_kit_vm.exec(["true"], transport="agent")
