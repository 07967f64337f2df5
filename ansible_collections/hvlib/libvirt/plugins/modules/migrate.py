#!/usr/bin/python
# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
module: migrate
short_description: Make a domain live on another libvirt host
description:
  - Moves the domain from O(uri) to O(dest_uri) with C(hvlib)'s C(dom.migrate) - live when it
    runs (its disks copied too with O(copy_storage)), its definition only when it is stopped.
  - A domain that is on O(dest_uri) already (and not on O(uri)) is left as it is -
    C(changed=false).
version_added: 0.1.0
author: hvlib contributors (!UNKNOWN)
extends_documentation_fragment:
  - hvlib.libvirt.connection
options:
  domain:
    description: The domain's name.
    type: str
    required: true
  dest_uri:
    description: The destination host's libvirt URI (as the module reaches it).
    type: str
    required: true
  dest_netns:
    description: The network namespace of the destination's guests (as O(netns)).
    type: str
  dest_address:
    description: The destination's address as the source host reaches it (the migration stream goes there).
    type: str
  copy_storage:
    description: Copy the disks too (into the destination's pool of the same name, or the same path).
    type: bool
    default: false
  live:
    description: Keep the guest running during the move (else it is paused meanwhile).
    type: bool
    default: true
  timeout:
    description: Abort past this many seconds (the guest keeps running on the source).
    type: float
"""

EXAMPLES = r"""
- name: Move web1 to the second host
  hvlib.libvirt.migrate:
    uri: qemu+ssh://root@hv1/system
    domain: web1
    dest_uri: qemu+ssh://root@hv2/system
"""

RETURN = r"""
where:
  description: The URI of the host the domain is on after the task.
  returned: always
  type: str
changes:
  description: What changed (field C(host), before, after, how).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_common as common


def work(module, host):
    p = module.params
    with common.hvlib.connect(p["dest_uri"], netns=p["dest_netns"], poll_interval=None) as dest:
        dom = host.domains.find(p["domain"])
        result = common.Report()
        if dom is None:
            dest.domains.get(p["domain"])  # there already, or NotFound: nowhere
            return common.report(module, result, f"domain {p['domain']}", where=p["dest_uri"])
        result.changes.append(
            common.hvlib.Change("host", p["uri"], p["dest_uri"], common.hvlib.ChangeHow.STATE)
        )
        if not module.check_mode:
            dom.migrate(
                dest,
                live=p["live"],
                copy_storage=p["copy_storage"],
                timeout=p["timeout"],
                dest_address=p["dest_address"],
            )
        return common.report(module, result, f"domain {p['domain']}", where=p["dest_uri"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **common.CONNECTION_ARGS,
            domain=dict(type="str", required=True),
            dest_uri=dict(type="str", required=True),
            dest_netns=dict(type="str"),
            dest_address=dict(type="str"),
            copy_storage=dict(type="bool", default=False),
            live=dict(type="bool", default=True),
            timeout=dict(type="float"),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**common.run(module, lambda host: work(module, host)))


if __name__ == "__main__":
    main()
