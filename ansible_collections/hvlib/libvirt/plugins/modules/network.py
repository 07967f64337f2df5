#!/usr/bin/python
# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
module: network
short_description: Make a libvirt host run one virtual network, as a spec says
description:
  - Ensures one network through C(hvlib)'s C(host.networks.apply); the options are the keys of
    a C(kind=network) document of hvlib's spec files.
  - O(hosts) is the whole list of DHCP reservations - missing ones are added, changed ones
    modified and others removed, live and in the persistent definition, without restarting
    the network.
  - C(changed) is true exactly when hvlib's change report is not empty.
version_added: 0.1.0
author: hvlib contributors (!UNKNOWN)
extends_documentation_fragment:
  - hvlib.libvirt.connection
options:
  name:
    description: The network's name.
    type: str
    required: true
  state:
    description: C(present) runs the network as described; C(absent) stops and undefines it.
    type: str
    choices: [present, absent]
    default: present
  ipv4:
    description: The host's address on the network with its prefix (C(192.0.2.1/24)).
    type: str
  mode:
    description: The forward mode (C(nat), C(route), C(isolated)).
    type: str
  dhcp_range:
    description: The first and last address DHCP hands out.
    type: list
    elements: str
  hosts:
    description: "DHCP reservations, each C({mac: M, ip: A, name: N}) (C(name) optional)."
    type: list
    elements: dict
  bridge:
    description: The host bridge's name (libvirt picks one when unset).
    type: str
  autostart:
    description: Start the network with the daemon.
    type: bool
  allow_restart:
    description:
      - Restart the running network when a change needs it (forward mode, address, bridge);
        else the change goes to the persistent definition and is pending.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: A NAT network with one reservation
  hvlib.libvirt.network:
    name: lab
    ipv4: 192.0.2.1/24
    dhcp_range: [192.0.2.100, 192.0.2.200]
    hosts:
      - {mac: "52:54:00:00:00:10", ip: 192.0.2.10, name: web1}
"""

RETURN = r"""
changes:
  description: hvlib's change report (field, before, after, how).
  returned: always
  type: list
  elements: dict
pending:
  description: Changes the running network needs a restart for.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_common as common

KEYS = ("name", "ipv4", "mode", "dhcp_range", "hosts", "bridge", "autostart")


def present(module, host):
    spec = common.document("network", module.params, KEYS).networks[0].spec
    result = host.networks.apply(
        spec, check=module.check_mode, allow_restart=module.params["allow_restart"]
    )
    return common.report(module, result, f"network {spec.name}")


def absent(module, host):
    name = module.params["name"]
    net = host.networks.find(name)
    result = common.Report()
    if net is not None:
        result.changes.append(common.removal("network", "defined"))
        if not module.check_mode:
            net.delete()
    return common.report(module, result, f"network {name}")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **common.CONNECTION_ARGS,
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            ipv4=dict(type="str"),
            mode=dict(type="str"),
            dhcp_range=dict(type="list", elements="str"),
            hosts=dict(type="list", elements="dict"),
            bridge=dict(type="str"),
            autostart=dict(type="bool"),
            allow_restart=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
        required_if=[("state", "present", ("ipv4",))],
    )
    work = present if module.params["state"] == "present" else absent
    module.exit_json(**common.run(module, lambda host: work(module, host)))


if __name__ == "__main__":
    main()
