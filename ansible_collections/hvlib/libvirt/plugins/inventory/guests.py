# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
name: guests
short_description: The guests of many libvirt hosts, as Ansible hosts
description:
  - Reads the domains of every host of O(uris) at once (an C(hvlib.Fleet)); each domain is an
    Ansible host named after it, with C(ansible_host) its first IPv4 address (from the DHCP
    lease, the guest agent or the ARP table, as hvlib finds it) when it has one.
  - Each host gets C(hvlib_uri), C(hvlib_virt), C(hvlib_state), C(hvlib_netns) (when O(netns)
    is set) and C(ansible_connection) (O(connection)); groups C(virt_TYPE), C(state_STATE) and
    C(libvirt_host_N) (the N-th URI) are made, and C(compose), C(groups) and C(keyed_groups)
    are applied.
  - Reads files named C(*.hvlib.yml) or C(*.hvlib.yaml) whose C(plugin) is C(hvlib.libvirt.guests).
version_added: 0.1.0
author: hvlib contributors (!UNKNOWN)
requirements:
  - hvlib in the Python that runs Ansible (the controller).
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The plugin's name.
    type: str
    required: true
    choices: [hvlib.libvirt.guests]
  uris:
    description: The libvirt URIs (local, remote, C(?socket=)).
    type: list
    elements: str
    required: true
  netns:
    description: The network namespace the guests' addresses live in, when not the controller's.
    type: str
  connection:
    description: The C(ansible_connection) each guest gets.
    type: str
    default: hvlib.libvirt.guest
"""

EXAMPLES = r"""
# lab.hvlib.yml
plugin: hvlib.libvirt.guests
uris:
  - qemu:///system
  - lxc:///system
keyed_groups:
  - key: hvlib_virt
    prefix: type
"""

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

try:
    import hvlib

    HVLIB_IMPORT_ERROR = None
except ImportError as e:
    hvlib = None
    HVLIB_IMPORT_ERROR = e


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "hvlib.libvirt.guests"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".hvlib.yml", ".hvlib.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        if HVLIB_IMPORT_ERROR is not None:
            raise AnsibleParserError(f"hvlib.libvirt.guests needs hvlib: {HVLIB_IMPORT_ERROR}")
        uris, netns = self.get_option("uris"), self.get_option("netns")
        try:
            with hvlib.Fleet(uris, netns=netns, poll_interval=None) as fleet:
                for uri, why in fleet.down.items():
                    self.display.warning(f"hvlib.libvirt.guests: {uri} is down: {why}")
                for uri, host in fleet.hosts.items():
                    self._add_host_guests(uris.index(uri), uri, host, netns)
        except hvlib.HvlibError as err:
            raise AnsibleParserError(f"{path}: {err}") from None

    def _add_host_guests(self, index, uri, host, netns):
        host_group = self.inventory.add_group(f"libvirt_host_{index}")
        for dom in host.domains.list():
            name = dom.name
            state, virt = dom.state.value, dom.virt.value
            self.inventory.add_host(name, group=host_group)
            facts = dict(
                hvlib_uri=uri,
                hvlib_virt=virt,
                hvlib_state=state,
                ansible_connection=self.get_option("connection"),
            )
            if netns:
                facts["hvlib_netns"] = netns
            address = _first_ipv4(dom) if dom.state.is_active else None
            if address:
                facts["ansible_host"] = address
            for key, value in facts.items():
                self.inventory.set_variable(name, key, value)
            for group in (f"virt_{virt}", f"state_{state}"):
                self.inventory.add_child(self.inventory.add_group(self._sanitize_group_name(group)), name)
            strict = self.get_option("strict")
            self._set_composite_vars(self.get_option("compose"), facts, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), facts, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), facts, name, strict=strict)


def _first_ipv4(dom):
    """The guest's first IPv4 address as hvlib reads it, or None."""
    try:
        found = dom.addresses()
    except (hvlib.Unsupported, hvlib.InvalidState, hvlib.NotFound):
        return None
    for addrs in found.values():
        for a in addrs:
            if getattr(a, "version", None) == 4:
                return str(a.ip)
    return None
