"""The Debian 12 cloud VM on a real libvirtd (QEMU, TCG): hvlib's NoCloud seed consumed by
real cloud-init, Ready.CLOUD_INIT and Ready.SYSTEMD over SSH and through the guest agent,
addresses from the agent, exec through the agent (and never as a fallback after a refused
host key), graceful shutdown (issue 18).

One VM boots for the module (on a qcow2 overlay of hvlib.testkit.debian's image). Measured
bounds under TCG (2 vCPU, 1 GiB; FIELD-NOTES): start -> SSH ready 28-44 s, start ->
cloud-init done 35-51 s, ACPI shutdown ~4 s. The waits are several times those, for a
machine shared with other test runs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import hvlib
from hvlib import AddressSource, Disk, DomainSpec, Nic, SshConfig, State, VirtType
from hvlib.errors import HostKeyError
from hvlib.guest.ready import Ready
from hvlib.model.cloudinit import seed
from hvlib.testkit import debian
from hvlib.testkit.sandbox import SandboxHost
from hvlib.virt.domain import Domain

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
NAME = "it-debvm"
MAC = "52:54:00:de:b1:01"
USER = "hvtest"
HOSTNAME = "hvlib-debian-test"
CLOUD_INIT_WITHIN = 300.0
"""Five times the slowest start -> cloud-init done seen (51 s)."""
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkcluS61B73kaz00bVe5QklYEjSTJW2m+mG8I1ea3rq"


def report(what: str, seconds: float) -> None:
    print(f"\nMEASURED {what}: {seconds:.1f} s")


@dataclass
class Keys:
    client_path: Path
    client_pub: str
    host_private: str
    host_pub: str


def make_keys(directory: Path) -> Keys:
    def pair() -> tuple[str, str]:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return private, public.decode()

    client_private, client_pub = pair()
    host_private, host_pub = pair()
    client_path = directory / "client"
    client_path.write_text(client_private)
    client_path.chmod(0o600)
    assert paramiko.Ed25519Key.from_private_key_file(str(client_path))
    return Keys(client_path, client_pub, host_private, host_pub)


def user_data(keys: Keys) -> dict[str, object]:
    return {
        "hostname": HOSTNAME,
        "users": [
            {
                "name": USER,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "ssh_authorized_keys": [keys.client_pub],
            }
        ],
        "ssh_keys": {"ed25519_private": keys.host_private, "ed25519_public": keys.host_pub},
        "ssh_genkeytypes": [],
        "write_files": [{"path": "/etc/hvlib-test", "content": "written by cloud-init\n"}],
        "runcmd": [["sh", "-c", "echo ran > /run/hvlib-runcmd"]],
    }


NETWORK_CONFIG = {
    "version": 2,
    "ethernets": {"nic0": {"match": {"macaddress": MAC}, "set-name": "eth0", "dhcp4": True}},
}


@dataclass
class DebianVm:
    dom: Domain
    started: float
    keys: Keys
    ssh: SshConfig


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hvlib-debvm-", dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def debvm(sandbox: SandboxHost, work: Path) -> Iterator[DebianVm]:
    image = debian.ensure_debian_vm_image()
    keys = make_keys(work)
    overlay = work / "disk.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(image.disk),
            str(overlay),
        ],
        check=True,
    )
    config = SshConfig(user=USER, key=keys.client_path, host_key=keys.host_pub)
    with hvlib.connect(sandbox.qemu_uri, netns=sandbox.netns, ssh=config) as host:
        seed_name = f"{NAME}-seed.iso"
        meta = {"instance-id": f"{NAME}-{int(time.time())}", "local-hostname": HOSTNAME}
        data = seed(user_data(keys), meta, NETWORK_CONFIG)
        host.volumes.ensure("default", seed_name, data=data)
        spec = DomainSpec(
            name=NAME,
            virt=VirtType.QEMU,
            vcpus=2,
            memory_mib=1024,
            kernel=str(image.kernel),
            initrd=str(image.initrd),
            cmdline=image.cmdline,
            disks=[
                Disk.file(overlay, format="qcow2"),
                Disk.volume("default", seed_name, format="raw"),
            ],
            nics=[Nic.network("default", mac=MAC)],
            rng=True,
            guest_agent=True,
        )
        dom = host.domains.define(spec)
        try:
            started = time.monotonic()
            dom.start()
            yield DebianVm(dom, started, keys, config)
        finally:
            dom.close_access()
            dom.destroy()
            dom.undefine()
            vol = host.volumes.find("default", seed_name)
            if vol is not None:
                vol.delete()


@pytest.fixture(scope="module")
def ready_vm(debvm: DebianVm) -> DebianVm:
    result = debvm.dom.wait_ready(timeout=CLOUD_INIT_WITHIN, probe=Ready.CLOUD_INIT, interval=1.0)
    report("start -> cloud-init done (Ready.CLOUD_INIT over SSH)", time.monotonic() - debvm.started)
    assert result.status == "done"
    return debvm


def test_cloud_init_consumed_the_seed(ready_vm: DebianVm) -> None:
    dom = ready_vm.dom
    assert dom.exec(["hostname"], check=True).text.strip() == HOSTNAME
    assert dom.exec(["id", "-un"], check=True).text.strip() == USER
    assert dom.exec(["cat", "/etc/hvlib-test"], check=True).text == "written by cloud-init\n"
    assert dom.exec(["cat", "/run/hvlib-runcmd"], check=True).text == "ran\n"
    link = dom.exec(["cat", "/sys/class/net/eth0/address"], check=True).text.strip()
    assert link == MAC  # network-config matched the NIC by MAC and renamed it
    pub = dom.exec(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"], check=True).text.split()[:2]
    assert pub == ready_vm.keys.host_pub.split()[:2]  # the pinned key is the guest's


def test_systemd_ready(ready_vm: DebianVm) -> None:
    result = ready_vm.dom.wait_ready(timeout=120, probe=Ready.SYSTEMD, interval=1.0)
    print(f"\nReady.SYSTEMD: {result!r}")
    assert result.status in ("running", "degraded")
    assert (result.status == "degraded") == bool(result.failed_units)


def test_agent_addresses_match_the_lease(ready_vm: DebianVm) -> None:
    dom = ready_vm.dom
    leased = dom.addresses(AddressSource.LEASE)[MAC]
    deadline = time.monotonic() + 60
    while True:
        agent = dom.addresses(AddressSource.AGENT)
        if agent.get(MAC):
            break
        assert time.monotonic() < deadline, f"the agent reported no address for {MAC}: {agent}"
        time.sleep(1)
    v4 = [a for a in agent[MAC] if a.version == 4]
    assert [a.ip for a in v4] == [a.ip for a in leased if a.version == 4]
    assert not any(a.ip.is_loopback for addrs in agent.values() for a in addrs)
    assert "00:00:00:00:00:00" not in agent


def test_exec_through_the_agent_says_so(ready_vm: DebianVm) -> None:
    dom = ready_vm.dom
    started = time.monotonic()
    result = dom.exec(["sh", "-c", "id -un; echo err >&2; exit 3"], transport="agent")
    report("agent exec round trip", time.monotonic() - started)
    assert (result.transport, result.exit_status) == ("agent", 3)
    assert (result.text, result.stderr_text) == ("root\n", "err\n")
    assert dom.exec(["cat"], input=b"through the agent", transport="agent").stdout == (
        b"through the agent"
    )
    assert dom.exec(["true"]).transport == "ssh"
    ready = dom.wait_ready(timeout=60, probe=Ready.CLOUD_INIT, transport="agent")
    assert ready.status == "done"


def test_a_refused_host_key_is_not_retried_through_the_agent(ready_vm: DebianVm) -> None:
    wrong = SshConfig(user=USER, key=ready_vm.keys.client_path, host_key=OTHER_KEY)
    with pytest.raises(HostKeyError):
        ready_vm.dom.exec(["true"], ssh=wrong)
    with pytest.raises(HostKeyError):
        ready_vm.dom.wait_ready(timeout=30, probe=Ready.CLOUD_INIT, ssh=wrong)


def test_graceful_shutdown(ready_vm: DebianVm) -> None:
    result = ready_vm.dom.shutdown(timeout=120)
    report("ACPI shutdown of the Debian VM", result.elapsed)
    assert result.graceful and ready_vm.dom.state is State.SHUT_OFF
