"""Guest addresses: the sources libvirt can ask, and the wait that says what each answered.

``interfaceAddresses`` is asked per source (DHCP lease of a libvirt network, the guest agent,
the ARP table of the host running the guest). :func:`read` turns libvirt's answer into
``{mac: [ip_interface, ...]}``; the Domain layer does the calls. No libvirt import here.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Addresses = dict[str, list[IPInterface]]


class AddressSource(enum.Enum):
    """Where to look for a guest's addresses. AUTO tries LEASE, then AGENT, then ARP."""

    AUTO = "auto"
    LEASE = "lease"
    AGENT = "agent"
    ARP = "arp"


ORDER = (AddressSource.LEASE, AddressSource.AGENT, AddressSource.ARP)


NO_MAC = "00:00:00:00:00:00"
"""The hardware address the guest agent reports for the guest's loopback interface."""


def read(raw: dict[str, Any] | None) -> Addresses:
    """Convert libvirt's ``interfaceAddresses`` result to ``{mac: [interfaces]}``.

    Loopback addresses are left out, and so is an interface with no MAC and no other
    address: the guest agent reports the guest's ``lo`` (``00:00:00:00:00:00``,
    127.0.0.1, ::1), which is no address to reach the guest at and must not satisfy an
    address wait."""
    out: Addresses = {}
    for iface in (raw or {}).values():
        mac = (iface.get("hwaddr") or "").lower()
        found = [
            ipaddress.ip_interface(f"{a['addr']}/{a.get('prefix', 32)}")
            for a in iface.get("addrs") or []
        ]
        kept = [a for a in found if not a.ip.is_loopback]
        if kept or mac not in ("", NO_MAC):
            out.setdefault(mac, []).extend(kept)
    return out


def only_family(found: Addresses, family: int | None) -> Addresses:
    """Keep only IPv4 (4) or IPv6 (6) addresses; None keeps all."""
    if family is None:
        return found
    return {mac: [a for a in addrs if a.version == family] for mac, addrs in found.items()}


@dataclass
class Attempts:
    """What each source answered during a wait, for the timeout message."""

    answers: dict[str, str] = field(default_factory=dict)

    def note(self, source: AddressSource, answer: str) -> None:
        """Record the latest answer of ``source``."""
        self.answers[source.value] = answer

    def describe(self) -> str:
        """``lease: no lease yet; agent: ...``."""
        return "; ".join(f"{k}: {v}" for k, v in self.answers.items()) or "nothing was asked"


def satisfied(found: Addresses, macs: list[str], nics: str) -> bool:
    """True when ``nics`` is "any" and one NIC has an address, or "all" and every one does."""
    have = [bool(found.get(mac)) for mac in macs] if macs else [any(found.values())]
    return any(have) if nics == "any" else all(have)
