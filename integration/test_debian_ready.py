"""The Debian 12 cloud VM on a real libvirtd (QEMU, TCG), through the pytest plugin's
``hvlib_debian_vm`` fixture: Ready.CLOUD_INIT (the fixture's own wait) and Ready.SYSTEMD over
SSH and through the guest agent, addresses from the agent, exec through the agent (and never
as a fallback after a refused host key), graceful shutdown (issue 18). What cloud-init did
with hvlib's seed is checked too (hvlib.testkit.debianboot's seed).

Measured bounds under TCG (2 vCPU, 1 GiB; FIELD-NOTES): start -> SSH ready 28-44 s, start ->
cloud-init done 35-51 s, ACPI shutdown ~4 s. The waits are several times those.
"""

from __future__ import annotations

import time

import pytest

from hvlib import AddressSource, SshConfig, State
from hvlib.errors import HostKeyError
from hvlib.guest.ready import Ready
from hvlib.testkit import debianboot
from hvlib.testkit.pytest_plugin import STARTED_TO_READY
from hvlib.virt.domain import Domain

pytestmark = [pytest.mark.integration, pytest.mark.qemu, pytest.mark.timeout(900)]
MAC = debianboot.MAC
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkcluS61B73kaz00bVe5QklYEjSTJW2m+mG8I1ea3rq"


def report(what: str, seconds: float) -> None:
    print(f"\nMEASURED {what}: {seconds:.2f} s")


def test_cloud_init_done_and_the_seed_consumed(hvlib_debian_vm: Domain) -> None:
    dom = hvlib_debian_vm
    report("start -> cloud-init done (Ready.CLOUD_INIT over SSH)", STARTED_TO_READY[dom.name])
    again = dom.wait_ready(timeout=60, probe=Ready.CLOUD_INIT)
    assert (again.probe, again.stage, again.status) == ("CLOUD_INIT", "cloud-init", "done")
    assert dom.exec(["hostname"], check=True).text.strip() == debianboot.HOSTNAME
    assert dom.exec(["id", "-un"], check=True).text.strip() == debianboot.USER
    path, text = debianboot.WRITTEN_FILE
    assert dom.exec(["cat", path], check=True).text == text
    path, text = debianboot.RUNCMD_FILE
    assert dom.exec(["cat", path], check=True).text == text
    assert dom.exec(["cat", "/sys/class/net/eth0/address"], check=True).text.strip() == MAC
    assert dom.ssh is not None and dom.ssh.host_key is not None
    pub = dom.exec(["sudo", "cat", "/etc/ssh/ssh_host_ed25519_key.pub"], check=True).text.split()[
        :2
    ]
    assert pub == dom.ssh.host_key.split()[:2]  # the pinned key is the guest's


def test_systemd_ready(hvlib_debian_vm: Domain) -> None:
    result = hvlib_debian_vm.wait_ready(timeout=120, probe=Ready.SYSTEMD, interval=1.0)
    print(f"\nReady.SYSTEMD on the Debian VM: {result!r}")
    assert result.status in ("running", "degraded")
    assert (result.status == "degraded") == bool(result.failed_units)


def test_agent_addresses_match_the_lease(hvlib_debian_vm: Domain) -> None:
    dom = hvlib_debian_vm
    leased = dom.addresses(AddressSource.LEASE)[MAC]
    started = time.monotonic()
    while not (agent := dom.addresses(AddressSource.AGENT)).get(MAC):
        assert time.monotonic() - started < 60, f"the agent reported no address for {MAC}: {agent}"
        time.sleep(1)
    report("agent addresses after cloud-init done", time.monotonic() - started)
    assert [a.ip for a in agent[MAC] if a.version == 4] == [a.ip for a in leased if a.version == 4]
    assert not any(a.ip.is_loopback for addrs in agent.values() for a in addrs)


def test_exec_through_the_agent_says_so(hvlib_debian_vm: Domain) -> None:
    dom = hvlib_debian_vm
    started = time.monotonic()
    result = dom.exec(["sh", "-c", "id -un; echo err >&2; exit 3"], transport="agent")
    report("agent exec round trip", time.monotonic() - started)
    assert (result.transport, result.exit_status) == ("agent", 3)
    assert (result.text, result.stderr_text) == ("root\n", "err\n")
    data = b"through the agent\x00\xff"
    assert dom.exec(["cat"], input=data, transport="agent").stdout == data
    assert dom.exec(["true"]).transport == "ssh"
    ready = dom.wait_ready(timeout=60, probe=Ready.CLOUD_INIT, transport="agent")
    assert ready.status == "done"
    systemd = dom.wait_ready(timeout=60, probe=Ready.SYSTEMD, transport="agent")
    assert systemd.status in ("running", "degraded")


def test_a_refused_host_key_is_not_retried_through_the_agent(hvlib_debian_vm: Domain) -> None:
    assert hvlib_debian_vm.ssh is not None
    wrong = SshConfig(user=debianboot.USER, key=hvlib_debian_vm.ssh.key, host_key=OTHER_KEY)
    with pytest.raises(HostKeyError):
        hvlib_debian_vm.exec(["true"], ssh=wrong)
    with pytest.raises(HostKeyError):
        hvlib_debian_vm.wait_ready(timeout=30, probe=Ready.CLOUD_INIT, ssh=wrong)


def test_graceful_shutdown(hvlib_debian_vm: Domain) -> None:
    """Last in the module: the fixture's VM is shared by the tests above."""
    result = hvlib_debian_vm.shutdown(timeout=120)
    report("ACPI shutdown of the Debian VM", result.elapsed)
    assert result.graceful and hvlib_debian_vm.state is State.SHUT_OFF
