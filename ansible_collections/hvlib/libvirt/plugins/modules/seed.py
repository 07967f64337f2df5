#!/usr/bin/python
# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
module: seed
short_description: Make a storage pool hold a cloud-init NoCloud seed volume
description:
  - Builds the seed ISO with C(hvlib)'s NoCloud seed builder (the same inputs give the same
    bytes) and ensures it as a volume with C(host.volumes.ensure), which compares the
    volume's content with it - so the volume is rewritten only when its inputs change.
  - C(changed) is true exactly when hvlib's change report is not empty.
version_added: 0.1.0
author: hvlib contributors (!UNKNOWN)
extends_documentation_fragment:
  - hvlib.libvirt.connection
options:
  pool:
    description: The pool's name.
    type: str
    required: true
  name:
    description: The seed volume's name.
    type: str
    required: true
  user_data:
    description: The C(user-data) - a mapping (written with the C(#cloud-config) header) or text.
    type: raw
    required: true
  meta_data:
    description: The C(meta-data) - a mapping or text.
    type: raw
    required: true
  network_config:
    description: The C(network-config) - a mapping or text (none when unset).
    type: raw
  state:
    description: C(present) or C(absent).
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: A seed for web1
  hvlib.libvirt.seed:
    pool: images
    name: web1-seed.iso
    user_data: {hostname: web1, ssh_authorized_keys: ["ssh-ed25519 AAAA... me"]}
    meta_data: {instance-id: web1}
"""

RETURN = r"""
changes:
  description: hvlib's change report (field, before, after, how).
  returned: always
  type: list
  elements: dict
path:
  description: The seed volume's path (none in check mode before it exists).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_common as common
from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_volume as volume


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **common.CONNECTION_ARGS,
            pool=dict(type="str", required=True),
            name=dict(type="str", required=True),
            user_data=dict(type="raw", required=True),
            meta_data=dict(type="raw", required=True),
            network_config=dict(type="raw"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        supports_check_mode=True,
    )
    common.require_hvlib(module)
    p = module.params
    p.update(size_mib=None, format="raw", backing=None)
    if p["state"] == "absent":
        module.exit_json(**common.run(module, lambda host: volume.absent(module, host)))
    try:
        data = common.seed(p["user_data"], p["meta_data"], p["network_config"])
    except common.hvlib.HvlibError as err:
        common.fail(module, err)
    module.exit_json(**common.run(module, lambda host: volume.ensure(module, host, data)))


if __name__ == "__main__":
    main()
