"""Virtual networks as data: :class:`NetworkSpec` and :class:`DhcpHost`, and the plan of a
network ``ensure``.

:class:`NetworkSpec` (and :class:`DhcpHost`) say what a network should be: a NAT or isolated
IPv4 network, its DHCP range and reservations, its bridge and autostart. They are validated on
construction (:class:`hvlib.SpecError`). :func:`owned` projects a network definition onto what a
spec owns, :func:`plan` classifies each difference (reservations and the DHCP range change
live; forward mode, address and bridge need a restart), :func:`merge` lays a spec over a
definition and :func:`updates` lists the ``networkUpdate`` calls that make a running network
match. Pure: XML only through :mod:`hvlib.model.netxml` (lxml); no libvirt. The converger in
:mod:`hvlib.virt.network` carries the plan out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from lxml import etree

from hvlib.errors import SpecError
from hvlib.model.checks import check_name, check_text
from hvlib.model.netxml import DhcpHostXML, IpXML, NetworkXML
from hvlib.model.plan import Change, ChangeHow
from hvlib.model.xmlmodel import ensure_path, tostring

NetworkMode = Literal["nat", "isolated"]
MODES: tuple[str, ...] = ("nat", "isolated")
_MAC_RE = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_BRIDGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_LIVE_FIELDS = ("hosts[", "dhcp_range")
"""Fields a running network takes through ``networkUpdate``; the others need a restart."""


# -- what the caller asks for ---------------------------------------------------------------


@dataclass(frozen=True)
class DhcpHost:
    """A DHCP reservation: the NIC with ``mac`` always gets ``ip`` (and hostname ``name``).

    The MAC is normalised to lowercase. Raises :class:`hvlib.SpecError` on construction for a
    malformed MAC, a non-IPv4 address or a name that is not a DNS label.
    """

    mac: str
    ip: str
    name: str | None = None

    def __post_init__(self) -> None:
        mac = check_text("host.mac", self.mac).lower()
        if not _MAC_RE.fullmatch(mac):
            raise SpecError("host.mac", "must be six hex pairs like 52:54:00:12:34:56", self.mac)
        object.__setattr__(self, "mac", mac)
        object.__setattr__(self, "ip", str(_ipv4("host.ip", self.ip)))
        if self.name is not None:
            check_text("host.name", self.name, max_len=63)
            if not _HOSTNAME_RE.fullmatch(self.name):
                raise SpecError("host.name", "must be a DNS label (A-Z a-z 0-9 -)", self.name)


def _ipv4(fieldname: str, value: object) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        raise SpecError(fieldname, "must be an IPv4 address", value) from None


@dataclass(frozen=True)
class NetworkSpec:
    """A whole virtual network: what :meth:`Networks.apply` converges a host on.

    ``ipv4`` is a CIDR: a network (``192.0.2.0/24``: the bridge takes the first host
    address) or the bridge's own address with its prefix (``192.0.2.1/24``). ``dhcp_range``
    is (first, last) address handed out; None serves reservations only. ``bridge`` None lets
    libvirt name the bridge (and then any name is accepted as current).

    Raises:
        SpecError: on construction, for any malformed or inconsistent field.
    """

    name: str
    ipv4: str
    mode: NetworkMode = "nat"
    dhcp_range: tuple[str, str] | None = None
    hosts: Sequence[DhcpHost] = ()
    bridge: str | None = None
    autostart: bool = True

    def __post_init__(self) -> None:
        check_name("name", self.name)
        if self.mode not in MODES:
            raise SpecError("mode", "must be 'nat' or 'isolated'", self.mode)
        object.__setattr__(self, "ipv4", str(_bridge_interface(self.ipv4)))
        object.__setattr__(self, "hosts", tuple(self.hosts))
        if self.dhcp_range is not None:
            object.__setattr__(self, "dhcp_range", self._checked_range(self.dhcp_range))
        self._check_hosts()
        if self.bridge is not None:
            check_text("bridge", self.bridge, max_len=15)
            if not _BRIDGE_RE.fullmatch(self.bridge):
                raise SpecError("bridge", "must be 1-15 of A-Z a-z 0-9 _ . -", self.bridge)
        if not isinstance(self.autostart, bool):
            raise SpecError("autostart", "must be True or False", self.autostart)

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        """The bridge's address with the network's prefix."""
        return ipaddress.IPv4Interface(self.ipv4)

    def _usable(self, fieldname: str, value: object) -> ipaddress.IPv4Address:
        """``value`` as an address a guest may get: inside the network, not the bridge's."""
        addr, iface = _ipv4(fieldname, value), self.interface
        net = iface.network
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise SpecError(fieldname, f"must be a host address inside {net}", str(addr))
        if addr == iface.ip:
            raise SpecError(fieldname, "must not be the bridge's own address", str(addr))
        return addr

    def _checked_range(self, value: object) -> tuple[str, str]:
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise SpecError("dhcp_range", "must be a (start, end) pair", value)
        start = self._usable("dhcp_range", value[0])
        end = self._usable("dhcp_range", value[1])
        if start > end:
            raise SpecError("dhcp_range", "start must not be after end", value)
        if start <= self.interface.ip <= end:
            raise SpecError("dhcp_range", "must not include the bridge's address", value)
        return str(start), str(end)

    def _check_hosts(self) -> None:
        for i, h in enumerate(self.hosts):
            if not isinstance(h, DhcpHost):
                raise SpecError(f"hosts[{i}]", "must be a DhcpHost", h)
            self._usable(f"hosts[{i}].ip", h.ip)
        for what in ("mac", "ip", "name"):
            values = [getattr(h, what) for h in self.hosts if getattr(h, what) is not None]
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise SpecError("hosts", f"each {what} must be reserved once", dupes)

    def doc(self) -> NetworkXML:
        """This network's libvirt XML document (bridge with STP off: no forwarding delay)."""
        doc = NetworkXML.new()
        doc.name = self.name
        doc.set_forward("nat" if self.mode == "nat" else None)
        ensure_path(doc.el, "bridge")
        doc.bridge_name, doc.bridge_stp, doc.bridge_delay = self.bridge, "off", "0"
        ip = IpXML.new(doc.el)
        ip.interface = self.interface
        ip.set_range(*(self.dhcp_range or (None, None)))
        ip.set_hosts([(h.mac, h.ip, h.name) for h in self.hosts])
        return doc


def _bridge_interface(value: object) -> ipaddress.IPv4Interface:
    """The bridge address of a CIDR: itself, or the network's first host address."""
    try:
        iface = ipaddress.IPv4Interface(str(value))
    except ValueError:
        raise SpecError("ipv4", "must be an IPv4 CIDR like 192.0.2.0/24", value) from None
    net = iface.network
    if net.prefixlen > 30 or "/" not in str(value):
        raise SpecError("ipv4", "must be a CIDR with a prefix of at most /30", value)
    if iface.ip == net.broadcast_address:
        raise SpecError("ipv4", "the bridge address must not be the broadcast address", value)
    if iface.ip == net.network_address:
        iface = ipaddress.IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}")
    return iface


# -- comparing what is with what the spec wants (pure) ---------------------------------------


def owned(doc: NetworkXML, spec: NetworkSpec) -> dict[str, Any]:
    """The fields ``spec`` owns, as ``doc`` has them (reservations keyed by MAC)."""
    ip = doc.ipv4
    view: dict[str, Any] = {
        "mode": doc.forward_mode or "isolated",
        "ipv4": None if ip is None or ip.interface is None else str(ip.interface),
        "dhcp_range": None,
    }
    if spec.bridge is not None:
        view["bridge"] = doc.bridge_name
    if ip is None:
        return view
    if ip.range_start is not None and ip.range_end is not None:
        view["dhcp_range"] = (ip.range_start, ip.range_end)
    for h in ip.hosts:
        view[f"hosts[{(h.mac or h.name or '').lower()}]"] = (h.ip, h.name)
    return view


def plan(before: dict[str, Any], after: dict[str, Any], active: bool) -> list[Change]:
    """Each difference between two :func:`owned` views, classified by how it applies."""
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old != new:
            changes.append(Change(name, old, new, _how(name, active)))
    return changes


def _how(name: str, active: bool) -> ChangeHow:
    if not active:
        return ChangeHow.NEXT_BOOT
    return ChangeHow.LIVE if name.startswith(_LIVE_FIELDS) else ChangeHow.RESTART


def merge(current: NetworkXML, spec: NetworkSpec) -> NetworkXML:
    """``current`` (modified in place) with what ``spec`` owns laid over it; uuid, MAC, DNS
    and every other element the spec does not own are kept."""
    have = owned(current, spec)
    if have["mode"] != spec.mode:
        current.set_forward("nat" if spec.mode == "nat" else None)
    if spec.bridge is not None:
        current.bridge_name = spec.bridge
    ip = current.ensure_ipv4()
    if have["ipv4"] != spec.ipv4:
        ip.interface = spec.interface
    ip.set_range(*(spec.dhcp_range or (None, None)))
    ip.set_hosts([(h.mac, h.ip, h.name) for h in spec.hosts])
    return current


@dataclass(frozen=True)
class Update:
    """One ``networkUpdate`` call: command, section, the element's XML, and which of the
    running network (live) and its persistent definition (config) it applies to."""

    command: str  # "add" | "delete" | "modify"
    section: str  # "host" | "range"
    xml: str
    index: int = -1
    """Which ``<ip>`` element (counting all of them, in order) holds the DHCP section."""
    live: bool = False
    config: bool = False


def updates(current: NetworkXML, spec: NetworkSpec) -> list[Update]:
    """The ``networkUpdate`` calls that bring ``current``'s DHCP range and reservations to
    ``spec``'s, in a safe order: deletions, range, modifications, additions. A reservation
    whose new address or name another entry holds now is deleted and re-added instead of
    modified (so swapping two addresses works)."""
    ip = current.ipv4
    have = {(h.mac or h.name or "").lower(): h for h in (ip.hosts if ip else [])}
    want = {h.mac: h for h in spec.hosts}
    held = {v: key for key, h in have.items() for v in (h.ip, h.name) if v}
    changed = [h for m, h in want.items() if m in have and _differs(have[m], h)]
    clash = [h for h in changed if any(held.get(v, h.mac) != h.mac for v in (h.ip, h.name) if v)]
    gone = [h.to_xml() for key, h in have.items() if key not in want]
    gone += [have[h.mac].to_xml() for h in clash]
    calls = [("delete", "host", x) for x in gone] + _range_updates(ip, spec)
    calls += [("modify", "host", _host_xml(h)) for h in changed if h not in clash]
    calls += [("add", "host", _host_xml(h)) for m, h in want.items() if m not in have]
    calls += [("add", "host", _host_xml(h)) for h in clash]
    index = -1 if ip is None else current.el.findall("ip").index(ip.el)
    return [Update(cmd, section, xml, index) for cmd, section, xml in calls]


def _differs(have: DhcpHostXML, want: DhcpHost) -> bool:
    return (have.ip, have.name) != (want.ip, want.name)


def _range_updates(ip: IpXML | None, spec: NetworkSpec) -> list[tuple[str, str, str]]:
    old = None
    if ip is not None and ip.range_start is not None and ip.range_end is not None:
        old = (ip.range_start, ip.range_end)
    if old == spec.dhcp_range:
        return []
    out = [] if old is None else [("delete", "range", _range_xml(old))]
    if spec.dhcp_range is not None:
        out.append(("add", "range", _range_xml(spec.dhcp_range)))
    return out


def _host_xml(h: DhcpHost) -> str:
    node = DhcpHostXML.new()
    node.mac, node.name, node.ip = h.mac, h.name, h.ip
    return node.to_xml()


def _range_xml(bounds: tuple[str, str]) -> str:
    return tostring(etree.Element("range", start=bounds[0], end=bounds[1]))


_PHASES = [("delete", "host"), ("delete", "range"), ("add", "range"), ("modify", "host")]
_PHASES.append(("add", "host"))


def combine(live: Iterable[Update], config: Iterable[Update]) -> list[Update]:
    """One list of calls from the live and the config plans: identical calls are made once,
    on both; the order is that of :func:`updates` (deletions first, additions last)."""
    out: dict[tuple[str, str, str, int], Update] = {}
    for u in live:
        out.setdefault((u.command, u.section, u.xml, u.index), replace(u, live=True))
    for u in config:
        key = (u.command, u.section, u.xml, u.index)
        out[key] = replace(out.get(key, u), config=True)
    return sorted(out.values(), key=lambda u: _PHASES.index((u.command, u.section)))


# -- reports --------------------------------------------------------------------------------
