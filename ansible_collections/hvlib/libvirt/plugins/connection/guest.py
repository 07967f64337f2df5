# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
name: guest
short_description: Run tasks inside libvirt guests through hvlib
description:
  - Runs commands in a guest and copies files to and from it with C(hvlib)'s C(dom.exec),
    C(dom.put) and C(dom.get) - LXC containers through their namespaces (any URI, no SSH, no
    agent); VMs over SSH, inside O(netns) when their address lives there, with the host key
    pinned by O(known_hosts).
  - The guest needs a POSIX shell at C(/bin/sh); for guests without Python use C(raw).
version_added: 0.1.0
author: hvlib contributors (!UNKNOWN)
requirements:
  - hvlib in the Python that runs ansible-playbook (the controller).
options:
  domain:
    description: The guest's domain name.
    type: str
    default: inventory_hostname
    vars:
      - name: hvlib_domain
      - name: inventory_hostname
  uri:
    description: The libvirt URI of the guest's host.
    type: str
    default: qemu:///system
    vars:
      - name: hvlib_uri
  netns:
    description: The network namespace the guest's address lives in (VMs over SSH).
    type: str
    vars:
      - name: hvlib_netns
  user:
    description: The SSH login for VMs.
    type: str
    default: root
    vars:
      - name: ansible_user
      - name: hvlib_user
  key_file:
    description: The private key for VMs.
    type: path
    vars:
      - name: hvlib_key_file
      - name: ansible_ssh_private_key_file
  known_hosts:
    description: A known_hosts file pinning VM host keys (a VM's key is never accepted unseen).
    type: path
    vars:
      - name: hvlib_known_hosts
  timeout:
    description: Seconds one command may run.
    type: float
    default: 600
    vars:
      - name: hvlib_command_timeout
"""

import os

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.connection import ConnectionBase

try:
    import hvlib

    HVLIB_IMPORT_ERROR = None
except ImportError as e:  # reported when a task first connects
    hvlib = None
    HVLIB_IMPORT_ERROR = e


class Connection(ConnectionBase):
    """A guest reached through hvlib: the host is opened once per worker, the domain looked
    up by name, and every command and file goes through the domain's own transport."""

    transport = "hvlib.libvirt.guest"
    has_pipelining = True
    default_user = "root"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._host = None
        self._dom = None

    def _connect(self):
        if self._connected:
            return self
        if HVLIB_IMPORT_ERROR is not None:
            raise AnsibleError(f"hvlib.libvirt.guest needs hvlib on the controller: {HVLIB_IMPORT_ERROR}")
        uri, name = self.get_option("uri"), self.get_option("domain")
        try:
            self._host = hvlib.connect(uri, netns=self.get_option("netns"), poll_interval=None)
            self._dom = self._host.domains.get(name)
        except hvlib.HvlibError as err:
            self.close()
            raise AnsibleConnectionFailure(f"{name} on {uri}: {err}") from None
        self._connected = True
        return self

    def _ssh(self):
        """The SSH settings for a VM (None for a container, which needs none)."""
        key, known = self.get_option("key_file"), self.get_option("known_hosts")
        if self._dom.virt.is_container or (key is None and known is None):
            return None
        return hvlib.SshConfig(user=self.get_option("user"), key=key, known_hosts=known)

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        argv = ["/bin/sh", "-c", cmd]
        try:
            res = self._dom.exec(
                argv, input=in_data, timeout=self.get_option("timeout"), ssh=self._ssh()
            )
        except (hvlib.GuestAccessError, hvlib.HostKeyError, hvlib.InvalidState) as err:
            raise AnsibleConnectionFailure(f"{self._dom.name}: {err}") from None
        except hvlib.HvlibError as err:
            raise AnsibleError(f"{self._dom.name}: {err}") from None
        return res.exit_status, res.stdout, res.stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        self._connect()
        if not os.path.exists(in_path):
            raise AnsibleError(f"file or module does not exist: {in_path}")
        self._transfer(lambda: self._dom.put(in_path, out_path, ssh=self._ssh()))

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        self._connect()
        self._transfer(lambda: self._dom.get(in_path, out_path, ssh=self._ssh()))

    def _transfer(self, work):
        try:
            work()
        except hvlib.HvlibError as err:
            raise AnsibleError(f"{self._dom.name}: {err}") from None

    def close(self):
        if self._dom is not None:
            self._dom.close_access()
        if self._host is not None:
            self._host.close()
        self._host = self._dom = None
        self._connected = False
