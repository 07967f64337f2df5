#!/usr/bin/python
# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
module: pool
short_description: Make a libvirt host have one directory storage pool, started
description:
  - Ensures a directory pool through C(hvlib)'s C(host.pools.plan_dir) and C(ensure_dir) - it
    exists at O(dir), runs and starts with the daemon; C(absent) stops and undefines it (its
    directory and files stay).
  - C(changed) is true exactly when hvlib's plan is not empty.
version_added: 0.1.0
author: hvlib contributors (!UNKNOWN)
extends_documentation_fragment:
  - hvlib.libvirt.connection
options:
  name:
    description: The pool's name.
    type: str
    required: true
  dir:
    description: The pool's directory (libvirt creates it when missing).
    type: path
  state:
    description: C(present) or C(absent).
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: A directory pool
  hvlib.libvirt.pool:
    name: images
    dir: /srv/images
"""

RETURN = r"""
changes:
  description: hvlib's plan (field, before, after, how).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_common as common


def present(module, host):
    name, path = module.params["name"], module.params["dir"]
    result = common.Report(changes=host.pools.plan_dir(name, path))
    if result.changes and not module.check_mode:
        host.pools.ensure_dir(name, path)
    return common.report(module, result, f"pool {name}")


def absent(module, host):
    name = module.params["name"]
    pool = host.pools.find(name)
    result = common.Report()
    if pool is not None:
        result.changes.append(common.removal("pool", pool.path))
        if not module.check_mode:
            pool.delete()
    return common.report(module, result, f"pool {name}")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **common.CONNECTION_ARGS,
            name=dict(type="str", required=True),
            dir=dict(type="path"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        supports_check_mode=True,
        required_if=[("state", "present", ("dir",))],
    )
    work = present if module.params["state"] == "present" else absent
    module.exit_json(**common.run(module, lambda host: work(module, host)))


if __name__ == "__main__":
    main()
