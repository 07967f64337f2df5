#!/usr/bin/python
# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot
short_description: Make a domain have (or not have) a snapshot, or revert it to one
description:
  - Through C(hvlib)'s C(dom.snapshots) - C(present) takes the snapshot when the domain has
    none of that name; C(absent) deletes it (its children are kept); C(reverted) brings the
    domain back to it (its disks, and for a snapshot of a running guest its memory and run
    state). A revert is made on every run - reverting is an action, so it always reports a
    change.
version_added: 0.1.0
author: hvlib contributors (!UNKNOWN)
extends_documentation_fragment:
  - hvlib.libvirt.connection
options:
  domain:
    description: The domain's name.
    type: str
    required: true
  name:
    description: The snapshot's name.
    type: str
    required: true
  state:
    description: C(present), C(absent) or C(reverted).
    type: str
    choices: [present, absent, reverted]
    default: present
  disk_only:
    description: An external, disk-only snapshot (else internal, with memory for a running guest).
    type: bool
    default: false
  description:
    description: Free text kept with a new snapshot.
    type: str
"""

EXAMPLES = r"""
- name: A snapshot before an upgrade
  hvlib.libvirt.snapshot:
    domain: web1
    name: before-upgrade
"""

RETURN = r"""
changes:
  description: What changed (field C(snapshot), before, after, how).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_common as common


def work(module, host):
    p = module.params
    snaps = host.domains.get(p["domain"]).snapshots
    have = snaps.find(p["name"])
    result = common.Report()
    state = p["state"]
    change = None
    if state == "present" and have is None:
        change = common.hvlib.Change("snapshot", None, p["name"], common.hvlib.ChangeHow.STATE)
    elif state == "absent" and have is not None:
        change = common.removal("snapshot", p["name"])
    elif state == "reverted":
        if have is None:
            raise common.hvlib.NotFound(f"{p['domain']} has no snapshot {p['name']}", name=p["name"])
        change = common.hvlib.Change("reverted to", None, p["name"], common.hvlib.ChangeHow.STATE)
    if change is not None:
        result.changes.append(change)
        if not module.check_mode:
            apply(snaps, state, p)
    return common.report(module, result, f"snapshot {p['domain']}/{p['name']}")


def apply(snaps, state, p):
    if state == "present":
        snaps.create(p["name"], disk_only=p["disk_only"], description=p["description"])
    elif state == "absent":
        snaps.delete(p["name"])
    else:
        snaps.revert(p["name"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **common.CONNECTION_ARGS,
            domain=dict(type="str", required=True),
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent", "reverted"]),
            disk_only=dict(type="bool", default=False),
            description=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**common.run(module, lambda host: work(module, host)))


if __name__ == "__main__":
    main()
