"""Side by side: community.libvirt and hvlib.libvirt ensuring the same 20 LXC containers.

Usage: .venv/bin/python scripts/ansible-compare.py COMMUNITY_COLLECTIONS_DIR

COMMUNITY_COLLECTIONS_DIR holds ``ansible_collections/community/libvirt`` (e.g. unpacked from
the ``ansible`` package on PyPI: ansible 12.3.0 bundles community.libvirt 2.0.0, which runs on
the ansible-core 2.19 pinned here). On a sandboxed libvirtd (hvlib.testkit.sandbox), each
playbook is run three times: the first run, a second run, and ``--check`` after them; the
table gives wall time, the CPU time of ansible-playbook and all its children, and the recap's
``changed``. The containers are the test kit's (the same XML for both: community.libvirt's
``virt`` defines the XML that hvlib renders from the spec, then starts the domain).
Needs root (the sandbox). Prints a Markdown table.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import hvlib
from hvlib import DomainSpec, Filesystem, VirtType
from hvlib.testkit.guestkit import LXC_INIT, ensure_guest_kit
from hvlib.testkit.sandbox import SandboxHost

N = 20
VENV_BIN = Path(sys.executable).parent

COMMUNITY = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - community.libvirt.virt:
        uri: "{{ uri }}"
        command: define
        xml: "{{ item.xml }}"
      loop: "{{ guests }}"
    - community.libvirt.virt:
        uri: "{{ uri }}"
        name: "{{ item.name }}"
        state: running
      loop: "{{ guests }}"
"""

HVLIB_LOOP = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - hvlib.libvirt.domain:
        uri: "{{ uri }}"
        name: "{{ item.name }}"
        virt: lxc
        memory_mib: 64
        init: ["{{ init }}"]
        filesystems: [{source: "{{ rootfs }}", target: /}]
      loop: "{{ guests }}"
"""

HVLIB_ONE_TASK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - hvlib.libvirt.domains:
        uri: "{{ uri }}"
        specs: "{{ specs }}"
"""


def run(root: Path, playbook: str, *args: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (ansible-playbook and all its children), recap's changed."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", PYTHONWARNINGS="ignore")
    env["ANSIBLE_HOME"] = str(root / ".ansible")
    env["ANSIBLE_LOCAL_TEMP"] = str(root / ".ansible-tmp")
    env["ANSIBLE_REMOTE_TMP"] = str(root / ".ansible-remote-tmp")
    env["ANSIBLE_COLLECTIONS_PATH"] = os.environ["COMPARE_COLLECTIONS"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "inventory", playbook, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{playbook} {args}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    changed = re.search(r"^localhost\s+:.*changed=(\d+)", proc.stdout, re.MULTILINE)
    assert changed, proc.stdout
    return wall, cpu, int(changed.group(1))


def clean(uri: str, names: list[str]) -> None:
    with hvlib.connect(uri, poll_interval=None) as host:
        for name in names:
            dom = host.domains.find(name)
            if dom is not None:
                dom.destroy()
                dom.undefine()


def main() -> None:
    community_dir = Path(sys.argv[1]).resolve()
    installed = Path(sys.executable).parent.parent
    site = next((installed / "lib").glob("python3*/site-packages"))
    os.environ["COMPARE_COLLECTIONS"] = f"{community_dir}:{site}"
    kit = ensure_guest_kit()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, SandboxHost(f"cmp{os.getpid()}") as sb:
        root = Path(tmp)
        local = "localhost ansible_connection=local"
        (root / "inventory").write_text(f"{local} ansible_python_interpreter={sys.executable}\n")
        for label, text, prefix in (
            ("community.libvirt 2.0.0, virt define + virt running in loops", COMMUNITY, "cl"),
            ("hvlib.libvirt.domain in a loop", HVLIB_LOOP, "hl"),
            ("hvlib.libvirt.domains, one task (hvlib.parallel)", HVLIB_ONE_TASK, "hd"),
        ):
            names = [f"{prefix}{i:02d}" for i in range(N)]
            specs = [
                DomainSpec(
                    name=n,
                    virt=VirtType.LXC,
                    memory_mib=64,
                    init=[LXC_INIT],
                    filesystems=[Filesystem.mount(str(kit.lxc_rootfs))],
                )
                for n in names
            ]
            variables = {
                "uri": sb.lxc_uri,
                "init": LXC_INIT,
                "rootfs": str(kit.lxc_rootfs),
                "guests": [{"name": s.name, "xml": hvlib.render(s)} for s in specs],
                "specs": [
                    {
                        "name": s.name,
                        "virt": "lxc",
                        "memory_mib": 64,
                        "init": [LXC_INIT],
                        "filesystems": [{"source": str(kit.lxc_rootfs), "target": "/"}],
                    }
                    for s in specs
                ],
            }
            (root / "vars.yml").write_text(yaml.safe_dump(variables))
            (root / f"{prefix}.yml").write_text(text)
            try:
                runs = [
                    run(root, f"{prefix}.yml", "-e", "@vars.yml"),
                    run(root, f"{prefix}.yml", "-e", "@vars.yml"),
                    run(root, f"{prefix}.yml", "-e", "@vars.yml", "--check"),
                ]
            finally:
                clean(sb.lxc_uri, names)
            rows.append((label, runs))
    print(f"| {N} LXC containers | first run | second run | --check after |")
    print("|---|---|---|---|")
    for label, runs in rows:
        cells = [f"{w:.1f} s wall, {c:.1f} s CPU, changed={n}" for w, c, n in runs]
        print(f"| {label} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
