#!/usr/bin/python
# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
module: domain
short_description: Make a libvirt host hold one domain, as a spec says, in a run state
description:
  - Ensures one domain through C(hvlib)'s C(host.domains.ensure) - what it compares, changes
    live, defers to the next boot, restarts or recreates is hvlib's decision, and the task
    reports exactly hvlib's change report.
  - The domain is given by the keys of one domain of hvlib's spec files (the options below, as
    in a C(kind=domain) document) or by O(spec_file) and O(name).
  - C(changed) is true exactly when hvlib's change report is not empty; with C(--check) hvlib
    plans without writing, and its plan is what a real run applies.
version_added: 0.1.0
author: hvlib contributors (!UNKNOWN)
extends_documentation_fragment:
  - hvlib.libvirt.connection
options:
  name:
    description: The domain's name (with O(spec_file), the domain of the file to ensure).
    type: str
  spec_file:
    description:
      - An hvlib spec file (YAML) to read the domain from, instead of the spec options; errors
        name its line. O(name) picks the domain when the file has several.
    type: path
  state:
    description: The run state wanted, spelt as in spec files.
    type: str
    choices: [running, shut-off, paused, absent]
    default: running
  shutdown_timeout:
    description: Seconds a guest gets to shut down gracefully when it must stop.
    type: float
    default: 60
  force:
    description:
      - Power off a guest still running at O(shutdown_timeout) (reported as RV(forced)). Without
        it such a guest is left running and the task fails. A removal (C(absent)) always
        powers off.
    type: bool
    default: false
  allow_restart:
    description: Restart a running guest whose change needs it (else the change is pending).
    type: bool
    default: false
  allow_recreate:
    description:
      - Undefine and define the domain again where a change needs it (a new virt type), keeping
        its uuid and MAC addresses.
    type: bool
    default: false
  fail_on_pending:
    description: Fail the task when changes are left pending (they need a restart or recreate).
    type: bool
    default: false
  wait_for:
    description:
      - After the domain is ensured running, wait until it is ready.
    type: dict
    suboptions:
      ready:
        description:
          - C(address) - the guest has an IP address; C(ssh) - a command runs in it (over SSH
            for VMs, inside the container for LXC); C(console) - a console line matches
            O(wait_for.pattern) (only for a guest this task started).
        type: str
        choices: [address, ssh, console]
        required: true
      pattern:
        description: The regular expression for C(console).
        type: str
      timeout:
        description: Seconds to wait.
        type: float
        default: 120
      ssh:
        description: How C(ssh) logs in.
        type: dict
        suboptions:
          user:
            description: The login.
            type: str
            default: root
          key_file:
            description: The private key.
            type: path
            required: true
          known_hosts:
            description: A known_hosts file pinning the guest's host key.
            type: path
            required: true
  virt:
    description: The virtualization type (C(kvm), C(qemu), C(xen-pv), C(xen-pvh), C(xen-hvm), C(lxc)).
    type: str
  vcpus:
    description: Virtual CPUs.
    type: int
  memory_mib:
    description: Memory, MiB.
    type: int
  max_memory_mib:
    description: The most memory a running guest may be given live, MiB.
    type: int
  max_vcpus:
    description: The most vCPUs a running guest may be given live.
    type: int
  kernel:
    description: A kernel to boot directly.
    type: str
  initrd:
    description: Its initramfs.
    type: str
  cmdline:
    description: Its command line.
    type: str
  disks:
    description:
      - "Disks, as in spec files - C({file: PATH}), C({volume: {pool: P, name: N}}) or
        C({cdrom: PATH}), each with optional C(target), C(format), C(readonly)."
    type: list
    elements: dict
  nics:
    description: "NICs - C({network: NAME}) or C({bridge: NAME}), with optional C(mac), C(model)."
    type: list
    elements: dict
  filesystems:
    description: "Filesystems - C({source: DIR, target: /, readonly: false}) or C(host_root)."
    type: list
    elements: raw
  init:
    description: An LXC container's init command (argv).
    type: list
    elements: str
  uuid:
    description: The domain's uuid (libvirt picks one when unset).
    type: str
  description:
    description: Free text kept in the definition.
    type: str
  autostart:
    description: Start the domain with the host.
    type: bool
  on_poweroff:
    description: What libvirt does when the guest powers off.
    type: str
  on_reboot:
    description: What libvirt does when the guest reboots.
    type: str
  on_crash:
    description: What libvirt does when the guest crashes.
    type: str
  cpu:
    description: The CPU model and topology, as hvlib's C(Cpu.from_dict) takes it.
    type: dict
  nested:
    description: Expose hardware virtualization to the guest.
    type: bool
  machine:
    description: The machine type (C(q35), C(pc)).
    type: str
  firmware:
    description: C(bios) or C(uefi).
    type: str
  secure_boot:
    description: UEFI secure boot.
    type: bool
  xml_edits:
    description: "Edits of the rendered XML - C({set: XPATH, value: V}) or C({remove: XPATH})."
    type: list
    elements: dict
  idmap:
    description: An LXC container's user namespace id map, as hvlib's C(IdMap.from_dict) takes it.
    type: dict
  rng:
    description: A virtio RNG device fed from the host.
    type: bool
"""

EXAMPLES = r"""
- name: A QEMU guest booted from a kernel, on a NAT network, running
  hvlib.libvirt.domain:
    uri: qemu:///system
    name: web1
    virt: qemu
    memory_mib: 256
    kernel: /srv/images/vmlinuz
    initrd: /srv/images/initrd.img
    nics:
      - network: lab
    state: running

- name: The domain 'db1' of a spec file, shut off
  hvlib.libvirt.domain:
    spec_file: /srv/specs/fleet.hvlib.yaml
    name: db1
    state: shut-off
    shutdown_timeout: 30
    force: true
"""

RETURN = r"""
changes:
  description: hvlib's change report - what changed (or, in check mode, would change).
  returned: always
  type: list
  elements: dict
  contains:
    field:
      description: The spec field (or C(state)).
      type: str
    before:
      description: Its value before.
      type: raw
    after:
      description: Its value after.
      type: raw
    how:
      description: C(live), C(next-boot), C(restart), C(recreate) or C(state).
      type: str
pending:
  description: Changes not applied (they need a restart or a recreate that was not allowed).
  returned: always
  type: list
  elements: dict
forced:
  description: A guest did not shut down in time and was powered off.
  returned: always
  type: bool
state:
  description: The domain's run state after the task (C(absent) when it does not exist).
  returned: always
  type: str
addresses:
  description: The guest's IP addresses by MAC (empty when it is not running or has none yet).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_common as common
from ansible_collections.hvlib.libvirt.plugins.module_utils.hvlib_domain import (
    SPEC_ARGS,
    SPEC_KEYS,
    STATE_ARGS,
    ensure,
    spec_of,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **common.CONNECTION_ARGS, spec_file=dict(type="path"), **SPEC_ARGS, **STATE_ARGS
        ),
        supports_check_mode=True,
        required_one_of=[("name", "spec_file")],
    )
    params = module.params
    if params.get("spec_file"):
        given = [k for k in SPEC_KEYS if k != "name" and params.get(k) is not None]
        if given:
            module.fail_json(msg=f"spec_file cannot be combined with {', '.join(given)}")

    def work(host):
        return ensure(module, host, spec_of(module, params), params)

    out = common.run(module, work)
    if out.pop("failed", False):
        module.fail_json(**out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
