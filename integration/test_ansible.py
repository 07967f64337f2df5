"""The Ansible collection hvlib.libvirt, as installed by make, run by the real ansible-core.

One playbook (:data:`PLAYBOOK`) ensures on the sandboxed libvirtd a NAT network with a DHCP
reservation, a directory pool, a base volume and a qcow2 overlay on it, a cloud-init seed, a
QEMU guest of the test kit (booting from the overlay, the seed attached, its NIC on the
reservation) and an LXC container of the kit. Each module runs in its own process (as Ansible
runs modules), so everything goes through the sandbox's socket. Then: a second run changes
nothing; ``--check --diff`` after raising the guest's memory and adding a reservation shows
exactly those two changes and changes nothing on the host; a real run applies them; a last
``--check`` reports nothing to change. The playbook's ``absent`` twin removes it all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import hvlib
from hvlib.testkit import guestkit
from hvlib.testkit.guestkit import GuestKit
from hvlib.testkit.sandbox import SandboxHost

pytestmark = [pytest.mark.integration, pytest.mark.qemu, pytest.mark.lxc]

VENV_BIN = Path(sys.executable).parent
NET = "ans-net"
NET_CIDR = "10.213.60.0/24"  # netns only: exists inside the sandbox's network namespace
NET_RANGE = ["10.213.60.100", "10.213.60.199"]  # netns only
VM_MAC = "52:54:00:a5:1b:01"
VM_IP = "10.213.60.21"  # netns only: the guest's reservation
OTHER = {"mac": "52:54:00:a5:1b:02", "ip": "10.213.60.22", "name": "spare"}  # netns only
POOL = "ans-pool"
VM = "ans-vm"
CT = "ans-ct"
PLAY_TIMEOUT = 240
"""Seconds one ansible-playbook run may take: the first boots the guest under TCG and waits
for its DHCP lease (measured ~10 s), the others take ~1 s per task."""

PLAYBOOK = """\
- name: An hvlib lab on one libvirt host
  hosts: localhost
  gather_facts: false
  vars_files: [vars.yml]
  tasks:
    - name: NAT network with reservations
      hvlib.libvirt.network:
        uri: "{{ qemu_uri }}"
        name: ans-net
        ipv4: 10.213.60.0/24
        dhcp_range: [10.213.60.100, 10.213.60.199]
        hosts: "{{ reservations }}"
        state: "{{ present }}"
      register: net

    - name: Directory pool
      hvlib.libvirt.pool:
        uri: "{{ qemu_uri }}"
        name: ans-pool
        dir: "{{ pool_dir }}"
      register: pool

    - name: Base volume
      hvlib.libvirt.volume:
        uri: "{{ qemu_uri }}"
        pool: ans-pool
        name: ans-base.img
        size_mib: 16
      register: base

    - name: Overlay volume on the base
      hvlib.libvirt.volume:
        uri: "{{ qemu_uri }}"
        pool: ans-pool
        name: ans-vm.qcow2
        backing: {pool: ans-pool, name: ans-base.img}
      register: overlay

    - name: cloud-init seed
      hvlib.libvirt.seed:
        uri: "{{ qemu_uri }}"
        pool: ans-pool
        name: ans-vm-seed.iso
        user_data: {hostname: ans-vm}
        meta_data: {instance-id: ans-vm}
      register: seed

    - name: QEMU guest of the test kit
      hvlib.libvirt.domain:
        uri: "{{ qemu_uri }}"
        netns: "{{ netns }}"
        name: ans-vm
        virt: qemu
        memory_mib: "{{ vm_memory }}"
        max_memory_mib: 512
        kernel: "{{ kernel }}"
        initrd: "{{ initrd }}"
        cmdline: "{{ cmdline }}"
        rng: true
        disks:
          - volume: {pool: ans-pool, name: ans-vm.qcow2}
          - volume: {pool: ans-pool, name: ans-vm-seed.iso}
            format: raw
            readonly: true
        nics:
          - {network: ans-net, mac: "52:54:00:a5:1b:01"}
        wait_for:
          ready: ssh
          timeout: 120
          ssh: {key_file: "{{ client_key }}", known_hosts: "{{ known_hosts }}"}
        state: "{{ vm_state }}"
        shutdown_timeout: 60
        force: true
      register: vm

    - name: LXC container of the test kit
      hvlib.libvirt.domain:
        uri: "{{ lxc_uri }}"
        name: ans-ct
        virt: lxc
        memory_mib: 64
        init: [/sbin/hvlib-init]
        filesystems:
          - {source: "{{ lxc_rootfs }}", target: /}
      register: ct

    - name: Record the results (for the test reading them)
      ansible.builtin.copy:
        content: "{{ {'net': net, 'pool': pool, 'base': base, 'overlay': overlay,
                     'seed': seed, 'vm': vm, 'ct': ct} | to_nice_json }}"
        dest: "{{ results_file }}"
        mode: "0600"
      check_mode: false
      changed_when: false
"""

TEARDOWN = """\
- name: Remove the lab
  hosts: localhost
  gather_facts: false
  vars_files: [vars.yml]
  tasks:
    - hvlib.libvirt.domain: {uri: "{{ lxc_uri }}", name: ans-ct, state: absent}
    - hvlib.libvirt.domain: {uri: "{{ qemu_uri }}", name: ans-vm, state: absent}
    - hvlib.libvirt.volume:
        {uri: "{{ qemu_uri }}", pool: ans-pool, name: "{{ item }}", state: absent}
      loop: [ans-vm-seed.iso, ans-vm.qcow2, ans-base.img]
    - hvlib.libvirt.pool: {uri: "{{ qemu_uri }}", name: ans-pool, state: absent}
    - hvlib.libvirt.network: {uri: "{{ qemu_uri }}", name: ans-net, state: absent}
"""


INVENTORY = """\
plugin: hvlib.libvirt.guests
uris: ["{qemu_uri}", "{lxc_uri}"]
netns: {netns}
keyed_groups:
  - key: hvlib_virt
    prefix: type
"""

GUESTS_PLAY = """\
- name: Inside the guests, through the hvlib.libvirt.guest connection
  hosts: ans-vm,ans-ct
  gather_facts: false
  tasks:
    - name: raw (the kit guests have no Python)
      ansible.builtin.raw: echo "hello from $(hostname) as $(id -u)"
      register: said
      changed_when: false

    - name: a script, copied in by the connection plugin and run there
      ansible.builtin.script: hello.sh
      register: ran
      changed_when: false

    - name: Record
      ansible.builtin.copy:
        content: "{{ {'said': said.stdout, 'ran': ran.stdout} | to_json }}"
        dest: "{{ results_dir }}/{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
"""


class Lab:
    """The playbook's directory: inventory, vars.yml, the playbooks, the recorded results."""

    def __init__(self, root: Path, sandbox: SandboxHost, kit: GuestKit) -> None:
        self.root = root
        self.sandbox = sandbox
        (root / "site.yml").write_text(PLAYBOOK)
        (root / "teardown.yml").write_text(TEARDOWN)
        (root / "inventory").write_text(
            f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        )
        self.vars: dict[str, object] = {
            "qemu_uri": sandbox.qemu_uri,
            "lxc_uri": sandbox.lxc_uri,
            "netns": sandbox.netns,
            "pool_dir": str(sandbox.root / "ans-pool"),
            "kernel": str(kit.kernel),
            "initrd": str(kit.initrd),
            "cmdline": guestkit.kernel_cmdline(),
            "lxc_rootfs": str(kit.lxc_rootfs),
            "vm_memory": 192,
            "vm_state": "running",
            "reservations": [{"mac": VM_MAC, "ip": VM_IP, "name": VM}],
            "present": "present",
            "results_file": str(root / "results.json"),
            "client_key": str(kit.client_key),
            "known_hosts": str(root / "known_hosts"),
        }
        (root / "known_hosts").write_text(kit.known_hosts_line(VM_IP) + "\n")
        self.write_vars()
        self.kit = kit

    def write_vars(self) -> None:
        (self.root / "vars.yml").write_text(yaml.safe_dump(self.vars))

    def env(self) -> dict[str, str]:
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", PYTHONWARNINGS="ignore")
        env["ANSIBLE_LOCAL_TEMP"] = str(self.root / ".ansible-tmp")
        env["ANSIBLE_REMOTE_TMP"] = str(self.root / ".ansible-remote-tmp")
        env["ANSIBLE_HOME"] = str(self.root / ".ansible")
        return env

    def play(
        self, *args: str, playbook: str = "site.yml", inventory: str = "inventory"
    ) -> tuple[str, dict[str, int]]:
        """Run ansible-playbook; return its output and the recap's counters for localhost."""
        env = self.env()
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", inventory, playbook, *args]
        started = time.monotonic()
        proc = subprocess.run(
            argv, cwd=self.root, env=env, capture_output=True, text=True, timeout=PLAY_TIMEOUT
        )
        took = time.monotonic() - started
        out = proc.stdout + proc.stderr
        said = f"ansible-playbook {' '.join(args)}: exit {proc.returncode} ({took:.1f} s)"
        assert proc.returncode == 0, f"{said}:\n{out}"
        recap = re.search(r"^(?:localhost|ans-vm)\s+:\s+(.*)$", proc.stdout, re.MULTILINE)
        assert recap, f"no PLAY RECAP for localhost in:\n{out}"
        counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}
        print(f"ansible-playbook {' '.join(args)}: {took:.1f} s, {counts}")
        return out, counts

    def results(self) -> dict[str, dict[str, object]]:
        loaded: dict[str, dict[str, object]] = json.loads((self.root / "results.json").read_text())
        return loaded


def _fields(result: dict[str, object]) -> list[tuple[str, str]]:
    changes = result["changes"]
    assert isinstance(changes, list)
    return [(c["field"], c["how"]) for c in changes]


def _host_state(sandbox: SandboxHost) -> dict[str, str]:
    """What the check must not change: the definitions and live XML of the lab's objects."""
    with hvlib.connect(sandbox.qemu_uri, poll_interval=None) as host:
        dom = host.domains.get(VM)
        net = host.networks.get(NET)
        return {
            "vm": dom.xml(inactive=True),
            "vm-live": dom.xml(),
            "net": net.xml(inactive=True),
            "net-live": net.xml(),
        }


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def collection_installed() -> None:
    """The collection as built and installed from this tree (what make deps does; a no-op
    when the installed one is up to date), so that the tests never run a stale copy."""
    script = REPO / "scripts" / "install-collection.sh"
    env = dict(os.environ, VENV=str(VENV_BIN.parent))
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def lab(tmp_path: Path, sandbox: SandboxHost, kit: GuestKit) -> Iterator[Lab]:
    made = Lab(tmp_path, sandbox, kit)
    yield made
    try:
        made.play(playbook="teardown.yml")
    finally:  # whatever the teardown playbook left, removed through hvlib
        with hvlib.connect(sandbox.lxc_uri, poll_interval=None) as lxc:
            _remove_domain(lxc, CT)
        with hvlib.connect(sandbox.qemu_uri, poll_interval=None) as host:
            _remove_domain(host, VM)
            pool = host.pools.find(POOL)
            if pool is not None:
                for vol in sorted(pool.volumes(), key=lambda v: v.backing is None):
                    vol.delete()
                pool.delete()
            net = host.networks.find(NET)
            if net is not None:
                net.delete()


def _remove_domain(host: hvlib.Host, name: str) -> None:
    dom = host.domains.find(name)
    if dom is not None:
        dom.destroy()
        dom.undefine()


def test_playbook_converges_then_checks_and_applies_exactly_the_edits(lab: Lab) -> None:
    out, counts = lab.play()
    assert counts["failed"] == 0 and counts["changed"] == 7, out
    first = lab.results()
    assert first["vm"]["state"] == "running"
    assert first["vm"]["addresses"] == {VM_MAC: [VM_IP + "/24"]}, first["vm"]
    assert first["ct"]["state"] == "running"
    assert first["overlay"]["path"] == str(Path(str(lab.vars["pool_dir"])) / "ans-vm.qcow2")

    out, counts = lab.play()
    assert counts["changed"] == 0, f"second run changed something:\n{out}"

    lab.vars["vm_memory"] = 256
    lab.vars["reservations"] = [*lab.vars["reservations"], OTHER]  # type: ignore[misc]
    lab.write_vars()
    before = _host_state(lab.sandbox)
    out, counts = lab.play("--check", "--diff")
    assert counts["changed"] == 2, out
    checked = lab.results()
    assert _fields(checked["vm"]) == [("memory_mib", "live")], checked["vm"]
    net_changes = checked["net"]["changes"]
    assert isinstance(net_changes, list)
    assert [c["field"] for c in net_changes] == [f"hosts[{OTHER['mac']}]"], net_changes
    assert "-memory_mib: 192\n+memory_mib: 256" in out, out
    assert _host_state(lab.sandbox) == before, "--check changed the host"

    out, counts = lab.play()
    assert counts["changed"] == 2, out
    applied = lab.results()
    assert _fields(applied["vm"]) == _fields(checked["vm"])
    assert applied["net"]["changes"] == checked["net"]["changes"]
    with hvlib.connect(lab.sandbox.qemu_uri, poll_interval=None) as host:
        assert host.domains.get(VM).xml_doc(inactive=True).current_memory_kib == 256 * 1024
        assert OTHER["mac"] in {h.mac for h in host.networks.get(NET).hosts}

    out, counts = lab.play("--check")
    assert counts["changed"] == 0, f"--check after the apply still sees changes:\n{out}"

    _guests_through_plugins(lab)

    lab.vars["vm_state"] = "shut-off"  # a graceful shutdown (the kit's acpid), not forced
    lab.write_vars()
    out, counts = lab.play()
    assert counts["changed"] == 1, out
    stopped = lab.results()["vm"]
    assert _fields(stopped) == [("state", "state")], stopped
    assert stopped["state"] == "shut-off" and stopped["forced"] is False, stopped


def _safe(obj: dict[str, object]) -> object:
    """ansible-inventory's JSON marks strings as unsafe (``{"__ansible_unsafe": S}``): S."""
    return obj["__ansible_unsafe"] if set(obj) == {"__ansible_unsafe"} else obj


def _guests_through_plugins(lab: Lab) -> None:
    """The inventory plugin lists both guests; raw and script run inside each through the
    connection plugin (the container through its namespaces, the VM over SSH in the netns)."""
    (lab.root / "lab.hvlib.yml").write_text(
        INVENTORY.format(
            qemu_uri=lab.sandbox.qemu_uri, lxc_uri=lab.sandbox.lxc_uri, netns=lab.sandbox.netns
        )
    )
    known = lab.root / "known_hosts"
    (lab.root / "group_vars").mkdir()
    (lab.root / "group_vars" / "virt_qemu.yml").write_text(
        yaml.safe_dump({"hvlib_key_file": str(lab.kit.client_key), "hvlib_known_hosts": str(known)})
    )
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", "lab.hvlib.yml", "--list"],
        cwd=lab.root,
        env=lab.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout, object_hook=_safe)
    hostvars = listed["_meta"]["hostvars"]
    vm, ct = hostvars[VM], hostvars[CT]
    assert vm["ansible_host"] == VM_IP and vm["hvlib_virt"] == "qemu", vm
    assert vm["hvlib_netns"] == lab.sandbox.netns and vm["hvlib_uri"] == lab.sandbox.qemu_uri
    assert ct["hvlib_virt"] == "lxc" and ct["ansible_connection"] == "hvlib.libvirt.guest", ct
    assert VM in listed["virt_qemu"]["hosts"] and CT in listed["type_lxc"]["hosts"], listed
    assert {VM, CT} <= set(listed["state_running"]["hosts"]), listed

    (lab.root / "guests.yml").write_text(GUESTS_PLAY)
    (lab.root / "hello.sh").write_text('#!/bin/sh\necho "script ran in $(hostname)"\n')
    out, counts = lab.play(
        "-e", f"results_dir={lab.root}", playbook="guests.yml", inventory="lab.hvlib.yml"
    )
    assert counts["failed"] == 0 and counts["unreachable"] == 0, out
    for name in (VM, CT):
        got = json.loads((lab.root / f"{name}.json").read_text())
        assert got["said"].startswith("hello from ") and got["said"].strip().endswith("as 0"), got
        assert got["ran"].startswith("script ran in"), got
