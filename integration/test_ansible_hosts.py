"""Two libvirt hosts driven from one play (forks: 2) with the collection hvlib.libvirt.

Two sandboxed hosts joined by a veth pair (as in the migration tests): A on its unix socket,
B over SSH with pinned keys. One role ensures a QEMU guest of the test kit on each, both hosts
at once; a ``migrate`` task moves A's guest to B live, and the same task again reports
``changed=false`` (the guest is there already).
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
from hvlib import State
from hvlib.testkit.guestkit import GuestKit, kernel_cmdline
from hvlib.testkit.sandbox import SandboxHost, SshLink
from integration.conftest import linked_pair, pinned_uri

pytestmark = [pytest.mark.integration, pytest.mark.remote, pytest.mark.qemu]

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent

ROLE = """\
- name: The kit's guest of this hypervisor
  hvlib.libvirt.domain:
    uri: "{{ hvlib_uri }}"
    name: "ans-{{ inventory_hostname }}"
    virt: qemu
    memory_mib: 128
    kernel: "{{ kernel }}"
    initrd: "{{ initrd }}"
    cmdline: "{{ cmdline }}"
    rng: true
  register: guest
"""

SITE = """\
- name: Guests on every hypervisor
  hosts: hypervisors
  gather_facts: false
  roles: [guest]
"""

MOVE = """\
- name: Move hv_a's guest to hv_b
  hosts: hv_a
  gather_facts: false
  tasks:
    - name: migrate
      hvlib.libvirt.migrate:
        uri: "{{ hvlib_uri }}"
        domain: ans-hv_a
        dest_uri: "{{ hostvars['hv_b'].hvlib_uri }}"
        dest_address: "{{ dest_address }}"
        timeout: 120
      register: moved

    - name: migrate again (it is there already)
      hvlib.libvirt.migrate:
        uri: "{{ hvlib_uri }}"
        domain: ans-hv_a
        dest_uri: "{{ hostvars['hv_b'].hvlib_uri }}"
      register: again

    - ansible.builtin.copy:
        content: "{{ {'moved': moved, 'again': again} | to_json }}"
        dest: "{{ playbook_dir }}/moved.json"
        mode: "0600"
      changed_when: false
"""


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLink[SandboxHost]]:
    with linked_pair("an", tmp_path_factory.mktemp("ssh")) as link:
        yield link


@pytest.fixture(scope="module", autouse=True)
def collection_installed() -> None:
    """The collection as built and installed from this tree (a no-op when up to date)."""
    env = dict(os.environ, VENV=str(VENV_BIN.parent))
    script = REPO / "scripts" / "install-collection.sh"
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _play(root: Path, playbook: str, *args: str) -> tuple[str, dict[str, dict[str, int]]]:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", PYTHONWARNINGS="ignore")
    env["ANSIBLE_HOME"] = str(root / ".ansible")
    env["ANSIBLE_LOCAL_TEMP"] = str(root / ".ansible-tmp")
    env["ANSIBLE_REMOTE_TMP"] = str(root / ".ansible-remote-tmp")
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", "inventory.yml", playbook, *args]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    print(f"ansible-playbook {playbook} {' '.join(args)}: {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, out
    recap = re.findall(r"^(hv_[ab])\s+:\s+(.*)$", proc.stdout, re.MULTILINE)
    counts = {h: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)} for h, line in recap}
    return out, counts


def _remove(uri: str, name: str) -> None:
    with hvlib.connect(uri, poll_interval=None) as host:
        dom = host.domains.find(name)
        if dom is not None:
            dom.destroy()
            dom.undefine()


def test_one_play_two_hosts_then_a_migration(
    linked: SshLink[SandboxHost], kit: GuestKit, tmp_path: Path
) -> None:
    uri_a, uri_b = linked.a.qemu_uri, pinned_uri(linked)
    py = sys.executable
    inventory = {
        "hypervisors": {
            "hosts": {"hv_a": {"hvlib_uri": uri_a}, "hv_b": {"hvlib_uri": uri_b}},
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": py,
                "kernel": str(kit.kernel),
                "initrd": str(kit.initrd),
                "cmdline": kernel_cmdline(),
                "dest_address": linked.address_b,
            },
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "roles" / "guest" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "guest" / "tasks" / "main.yml").write_text(ROLE)
    (tmp_path / "site.yml").write_text(SITE)
    (tmp_path / "move.yml").write_text(MOVE)
    try:
        out, counts = _play(tmp_path, "site.yml", "--forks", "2")
        assert counts["hv_a"]["changed"] == 1 and counts["hv_b"]["changed"] == 1, out
        out, counts = _play(tmp_path, "site.yml", "--forks", "2")
        assert counts["hv_a"]["changed"] == 0 and counts["hv_b"]["changed"] == 0, out
        with hvlib.connect(uri_b, poll_interval=None) as b:
            assert b.domains.get("ans-hv_b").state is State.RUNNING

        out, counts = _play(tmp_path, "move.yml")
        moved = json.loads((tmp_path / "moved.json").read_text())
        assert moved["moved"]["changed"] is True and moved["moved"]["where"] == uri_b, moved
        assert moved["again"]["changed"] is False, moved
        with hvlib.connect(uri_a, poll_interval=None) as a:
            assert a.domains.find("ans-hv_a") is None
        with hvlib.connect(uri_b, poll_interval=None) as b:
            assert b.domains.get("ans-hv_a").state is State.RUNNING
    finally:
        for uri in (uri_a, uri_b):
            for name in ("ans-hv_a", "ans-hv_b"):
                _remove(uri, name)
