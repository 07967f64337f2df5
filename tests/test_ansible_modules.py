"""The Ansible collection hvlib.libvirt as installed into the venv, run by the real ansible-core
against libvirt's test:/// driver (fast: no daemon).

libvirt's test:///default is per process and Ansible runs each module in a process of its own,
so every task here starts from the driver's fresh state: these tests check what one task says
(check mode plans, failures carrying hvlib's message and field, no traceback), not what a
second task sees (integration/test_ansible.py does that on a real libvirtd). ansible-doc
renders every module's documentation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
MODULES = ("domain", "domains", "network", "pool", "volume", "seed", "snapshot", "migrate")
PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: a domain made in check mode
      hvlib.libvirt.domain:
        uri: test:///default
        name: ans-fast
        virt: kvm
        memory_mib: 128
        kernel: /boot/vmlinuz
      check_mode: true
      register: planned

    - name: a domain on a network that is not there yet, check mode
      hvlib.libvirt.domain:
        uri: test:///default
        name: ans-later
        kernel: /k
        nics: [{network: made-later}]
      check_mode: true
      register: later

    - name: the domain of a spec file, picked by name, check mode
      hvlib.libvirt.domain:
        uri: test:///default
        spec_file: "{{ playbook_dir }}/two.hvlib.yaml"
        name: ans-two-b
      check_mode: true
      register: fromfile

    - name: a seed, check mode
      hvlib.libvirt.seed:
        uri: test:///default
        pool: default-pool
        name: seed.iso
        user_data: {hostname: ans}
        meta_data: {instance-id: ans}
      check_mode: true
      register: seed

    - name: a bad memory size
      hvlib.libvirt.domain: {uri: test:///default, name: ans-bad, kernel: /k, memory_mib: 1}
      ignore_errors: true
      register: bad

    - name: a spec file with an unknown key
      hvlib.libvirt.domain: {uri: test:///default, spec_file: "{{ playbook_dir }}/bad.hvlib.yaml"}
      ignore_errors: true
      register: badfile

    - name: the test driver's own domain, removed (check mode)
      hvlib.libvirt.domain: {uri: test:///default, name: test, state: absent}
      check_mode: true
      register: removal

    - name: a pool in check mode
      hvlib.libvirt.pool: {uri: test:///default, name: ans-pool, dir: /ans-pool}
      check_mode: true
      register: pool

    - name: a volume in a pool that does not exist yet, check mode
      hvlib.libvirt.volume: {uri: test:///default, pool: ans-pool, name: v.img, size_mib: 8}
      check_mode: true
      register: volume

    - name: a network that is not there, absent
      hvlib.libvirt.network: {uri: test:///default, name: ans-none, state: absent}
      register: nonet

    - name: three domains in one process, one of them bad
      hvlib.libvirt.domains:
        uri: test:///default
        specs:
          - {name: ans-many-0, kernel: /k}
          - {name: ans-many-1, kernel: /k, memory_mib: 1}
          - {name: ans-many-2, kernel: /k, vcpus: 2}
      ignore_errors: true
      register: badmany

    - name: three domains in one process
      hvlib.libvirt.domains:
        uri: test:///default
        specs:
          - {name: ans-many-0, kernel: /k}
          - {name: ans-many-1, kernel: /k}
          - {name: ans-many-2, kernel: /k}
        state: shut-off
      register: many

    - name: a snapshot of the test driver's domain, taken
      hvlib.libvirt.snapshot: {uri: test:///default, domain: test, name: s1}
      register: snapped

    - name: a volume from an image whose checksum is not the one given
      hvlib.libvirt.volume:
        uri: test:///default
        pool: default-pool
        name: img.raw
        source: "{{ playbook_dir }}/image.raw"
        checksum: "sha256:{{ '0' * 64 }}"
      ignore_errors: true
      register: badsum

    - name: a snapshot of the test driver's domain, check mode
      hvlib.libvirt.snapshot: {uri: test:///default, domain: test, name: s1}
      check_mode: true
      register: snap

    - ansible.builtin.copy:
        content: "{{ {'planned': planned, 'bad': bad, 'badfile': badfile, 'removal': removal,
                     'pool': pool, 'volume': volume, 'nonet': nonet, 'many': many,
                     'badmany': badmany, 'snap': snap, 'later': later,
                     'snapped': snapped, 'badsum': badsum, 'fromfile': fromfile,
                     'seed': seed} | to_json }}"
        dest: "{{ playbook_dir }}/results.json"
        mode: "0600"
      changed_when: false
"""


def _env(root: Path) -> dict[str, str]:
    return dict(
        os.environ,
        ANSIBLE_NOCOLOR="1",
        PYTHONWARNINGS="ignore",
        ANSIBLE_HOME=str(root / ".ansible"),
        ANSIBLE_LOCAL_TEMP=str(root / ".ansible-tmp"),
        ANSIBLE_REMOTE_TMP=str(root / ".ansible-remote-tmp"),
    )


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def collection_installed() -> None:
    """The collection as built and installed from this tree (what make deps does; a no-op
    when the installed one is up to date), so that the tests never run a stale copy."""
    script = REPO / "scripts" / "install-collection.sh"
    env = dict(os.environ, VENV=str(VENV_BIN.parent))
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, dict[str, object]]]:
    root = tmp_path_factory.mktemp("ansible")
    (root / "site.yml").write_text(PLAYBOOK)
    (root / "image.raw").write_bytes(b"\0" * 4096)
    two = "name: ans-two-a\nkernel: /k\n---\nname: ans-two-b\nkernel: /k\nvcpus: 2\n"
    (root / "two.hvlib.yaml").write_text(two)
    (root / "bad.hvlib.yaml").write_text("name: ans-file\nkernel: /k\nmemroy_mib: 64\n")
    inventory = f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    (root / "inventory").write_text(inventory)
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", "inventory", "site.yml", "--diff"]
    proc = subprocess.run(
        argv, cwd=root, env=_env(root), capture_output=True, text=True, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out, json.loads((root / "results.json").read_text())


def test_check_mode_reports_hvlibs_plan(played: tuple[str, dict[str, dict[str, object]]]) -> None:
    _out, res = played
    planned = res["planned"]
    assert planned["changed"] is True
    assert planned["changes"] == [
        {"field": "domain", "before": None, "after": "defined", "how": "state"},
        {"field": "state", "before": "shut-off", "after": "running", "how": "state"},
    ]
    assert planned["diff"]["after"] == 'domain: "defined"\nstate: "running"\n'  # type: ignore[index]
    removal = res["removal"]
    assert [(c["field"], c["after"]) for c in removal["changes"]] == [("state", "absent")]  # type: ignore[attr-defined]
    assert res["pool"]["changed"] is True
    assert [c["field"] for c in res["pool"]["changes"]] == ["pool", "state", "autostart"]  # type: ignore[attr-defined]
    assert [c["field"] for c in res["volume"]["changes"]] == ["volume"]  # type: ignore[attr-defined]
    assert res["nonet"]["changed"] is False and res["nonet"]["changes"] == []
    assert res["fromfile"]["changed"] is True, res["fromfile"]
    assert "ans-two-b" in str(res["fromfile"]["diff"]), res["fromfile"]
    seed = res["seed"]
    assert [c["field"] for c in seed["changes"]] == ["volume"], seed  # type: ignore[attr-defined]
    assert "sha256" in str(seed["changes"][0]["after"]), seed  # type: ignore[index]
    later = res["later"]
    assert later["changed"] is True and later["changes"][0]["field"] == "nics[0].network"  # type: ignore[index]
    assert "not checked" in str(later["warnings"]), later


def test_hvlib_errors_fail_the_task_with_message_and_field(
    played: tuple[str, dict[str, dict[str, object]]],
) -> None:
    out, res = played
    bad = res["bad"]
    assert bad["failed"] is True and bad["field"] == "memory_mib"
    assert str(bad["msg"]).startswith("memory_mib: must be between"), bad
    badfile = res["badfile"]
    assert badfile["failed"] is True and badfile["field"] == "memroy_mib", badfile
    assert "bad.hvlib.yaml:3" in str(badfile["msg"]), badfile
    assert "Traceback" not in out


def test_domains_ensures_many_in_one_task(played: tuple[str, dict[str, dict[str, object]]]) -> None:
    _out, res = played
    many = res["many"]
    assert many["changed"] is True
    assert [r["name"] for r in many["results"]] == ["ans-many-0", "ans-many-1", "ans-many-2"]  # type: ignore[attr-defined]
    assert all(r["changes"][0]["field"] == "domain" for r in many["results"])  # type: ignore[attr-defined]
    badmany = res["badmany"]
    assert badmany["failed"] is True
    assert badmany["field"] == "specs[1].memory_mib", badmany
    assert res["snapped"]["changed"] is True, res["snapped"]
    badsum = res["badsum"]
    assert badsum["failed"] is True and badsum["field"] == "checksum", badsum
    assert "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7" in str(badsum["msg"])
    assert res["snap"]["changes"] == [  # type: ignore[comparison-overlap]
        {"field": "snapshot", "before": None, "after": "s1", "how": "state"}
    ]


def test_every_module_documentation_renders(tmp_path: Path) -> None:
    names = [f"hvlib.libvirt.{m}" for m in MODULES]
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "--json", *names],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    assert sorted(docs) == sorted(names)
    for name, doc in docs.items():
        assert doc["doc"]["short_description"], name
        assert doc["examples"].strip() and doc["return"], name
    text = subprocess.run(
        [
            str(
                VENV_BIN / "ansible-doc",
            ),
            "hvlib.libvirt.domain",
        ],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert text.returncode == 0 and "allow_recreate" in text.stdout, text.stderr
