#!/usr/bin/python
# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
module: volume
short_description: Make a storage pool hold one volume, as described
description:
  - Ensures one volume through C(hvlib)'s C(host.volumes.ensure) - created, grown to
    O(size_mib) (volumes never shrink), a qcow2 overlay on O(backing), or exactly the image
    O(source) (made anew when its content differs).
  - C(changed) is true exactly when hvlib's change report is not empty; check mode is hvlib's
    own plan.
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
    description: The volume's name.
    type: str
    required: true
  size_mib:
    description: Its size, MiB (needed unless O(backing) or O(source) says it).
    type: int
  format:
    description: C(raw) or C(qcow2) (default - qcow2 with O(backing), else raw).
    type: str
    choices: [raw, qcow2]
  backing:
    description: The volume this one is a qcow2 overlay on.
    type: dict
    suboptions:
      pool:
        description: Its pool.
        type: str
        required: true
      name:
        description: Its name.
        type: str
        required: true
  source:
    description:
      - An image the volume is exactly - a file on the host the module runs on, or an
        C(http://), C(https://) or C(file://) URL (fetched by the module, then uploaded through
        libvirt).
    type: str
  checksum:
    description: C(sha256:HEX) the O(source) must have (checked before anything is written).
    type: str
  state:
    description: C(present) or C(absent).
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: A 1 GiB qcow2 overlay on a base image
  hvlib.libvirt.volume:
    pool: images
    name: web1.qcow2
    backing: {pool: images, name: debian-base.qcow2}
    size_mib: 1024
"""

RETURN = r"""
changes:
  description: hvlib's change report (field, before, after, how).
  returned: always
  type: list
  elements: dict
path:
  description: The volume's path on the host (none in check mode before it exists).
  returned: always
  type: str
"""

import hashlib

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url
from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_common as common
from ansible_collections.hvlib.libvirt.plugins.module_utils.hvlib_volume import absent, ensure


def source_bytes(module):
    """The bytes of ``source`` (None without one), checked against ``checksum``."""
    source, checksum = module.params["source"], module.params["checksum"]
    if source is None:
        return None
    if source.startswith(("http://", "https://", "file://")):
        resp, info = fetch_url(module, source)
        if info["status"] not in (200, -1) or resp is None:
            module.fail_json(msg=f"{source}: {info.get('msg')}", field="source")
        data = resp.read()
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as e:
            module.fail_json(msg=f"{source}: {e.strerror}", field="source")
    if checksum is not None:
        algo, dummy, want = checksum.partition(":")
        if algo != "sha256" or not want:
            module.fail_json(msg="checksum: must be sha256:HEX", field="checksum")
        got = hashlib.sha256(data).hexdigest()
        if got != want.lower():
            module.fail_json(msg=f"{source}: sha256 is {got}, not {want}", field="checksum")
    return data


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **common.CONNECTION_ARGS,
            pool=dict(type="str", required=True),
            name=dict(type="str", required=True),
            size_mib=dict(type="int"),
            format=dict(type="str", choices=["raw", "qcow2"]),
            backing=dict(
                type="dict",
                options=dict(pool=dict(type="str", required=True), name=dict(type="str", required=True)),
            ),
            source=dict(type="str"),
            checksum=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        supports_check_mode=True,
        mutually_exclusive=[("source", "backing")],
        required_by={"checksum": "source"},
    )
    if module.params["state"] == "absent":
        module.exit_json(**common.run(module, lambda host: absent(module, host)))
    data = source_bytes(module)
    module.exit_json(**common.run(module, lambda host: ensure(module, host, data)))


if __name__ == "__main__":
    main()
