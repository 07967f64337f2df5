# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - The libvirt URI of the host to act on, local or remote, exactly as C(hvlib.connect)
        takes it (C(qemu:///system), C(lxc:///system), C(qemu+ssh://root@host/system),
        C(qemu+unix:///system?socket=PATH)).
    type: str
    default: qemu:///system
  netns:
    description:
      - The network namespace (C(ip netns) name) the host's guests' addresses live in, when
        not the one the module runs in; hvlib reads addresses and reaches guests over SSH
        inside it.
    type: str
requirements:
  - hvlib (with its C(cli) extra for spec files) in the Python interpreter Ansible uses for
    the module (C(ansible_python_interpreter)), and libvirt-python.
notes:
  - Every decision is hvlib's; the module adds no libvirt logic. An error from hvlib fails
    the task with hvlib's message, and C(field) names the option (a path into it, such as
    C(nics[0].network)) when hvlib names one.
"""
