"""libvirt's virtual network XML, modelled field by field on :mod:`hvlib.model.xmlmodel`.

:class:`NetworkXML` reads what libvirt returns and what hvlib sends: forward mode, bridge,
the IPv4 ``<ip>`` with its DHCP range and reservations (``<host>``). Everything it does not
model (``<mac>``, ``<dns>``, ``<domain>``, IPv6 ``<ip>`` elements) stays in the tree untouched,
so a definition read, edited and written back keeps it.

This module holds no policy (what a valid network is lives in :mod:`hvlib.virt.network`), never
formats XML as text and never calls libvirt.
"""

from __future__ import annotations

import ipaddress

from lxml import etree

from hvlib.model.xmlmodel import Attr, IntAttr, Text, XmlNode, ensure_path


class DhcpHostXML(XmlNode):
    """``<host mac= ip= name=>``: one DHCP reservation."""

    tag = "host"
    mac = Attr(".", "mac")
    ip = Attr(".", "ip")
    name = Attr(".", "name")


class IpXML(XmlNode):
    """``<ip>``: an address of the network's bridge, with optional DHCP."""

    tag = "ip"
    family = Attr(".", "family")
    address = Attr(".", "address")
    netmask = Attr(".", "netmask")
    prefix = IntAttr(".", "prefix")
    range_start = Attr("dhcp/range", "start")
    range_end = Attr("dhcp/range", "end")

    @property
    def interface(self) -> ipaddress.IPv4Interface | None:
        """The bridge address with its prefix (from ``prefix`` or ``netmask``), or None."""
        if self.address is None:
            return None
        mask = self.prefix if self.prefix is not None else (self.netmask or 32)
        return ipaddress.IPv4Interface(f"{self.address}/{mask}")

    @interface.setter
    def interface(self, value: ipaddress.IPv4Interface) -> None:
        self.address, self.prefix, self.netmask = str(value.ip), value.network.prefixlen, None

    @property
    def hosts(self) -> list[DhcpHostXML]:
        """Every ``<dhcp><host>``, in document order."""
        return list(self.children(DhcpHostXML, "dhcp/host"))

    def set_range(self, start: str | None, end: str | None) -> None:
        """Replace the DHCP range (None removes it, keeping the reservations)."""
        dhcp = self.el.find("dhcp")
        for el in [] if dhcp is None else dhcp.findall("range"):
            dhcp.remove(el)  # type: ignore[union-attr]
        if start is not None and end is not None:
            ensure_path(self.el, "dhcp").insert(0, etree.Element("range", start=start, end=end))
        self._drop_empty_dhcp()

    def set_hosts(self, hosts: list[tuple[str, str, str | None]]) -> None:
        """Replace the reservations with ``(mac, ip, name)`` triples, in order."""
        dhcp = self.el.find("dhcp")
        for el in [] if dhcp is None else dhcp.findall("host"):
            dhcp.remove(el)  # type: ignore[union-attr]
        if hosts:
            dhcp = ensure_path(self.el, "dhcp")
        for mac, ip, name in hosts:
            node = DhcpHostXML.new(dhcp)
            node.mac, node.name, node.ip = mac, name, ip
        self._drop_empty_dhcp()

    def _drop_empty_dhcp(self) -> None:
        dhcp = self.el.find("dhcp")
        if dhcp is not None and len(dhcp) == 0:
            self.el.remove(dhcp)


class NetworkXML(XmlNode):
    """``<network>``: a libvirt virtual network."""

    tag = "network"
    name = Text("name")
    uuid = Text("uuid")
    forward_mode = Attr("forward", "mode")
    bridge_name = Attr("bridge", "name")
    bridge_stp = Attr("bridge", "stp")
    bridge_delay = Attr("bridge", "delay")

    @property
    def ipv4(self) -> IpXML | None:
        """The first IPv4 ``<ip>`` element, or None."""
        for el in self.el.findall("ip"):
            if el.get("family") in (None, "ipv4"):
                return IpXML(el)
        return None

    def ensure_ipv4(self) -> IpXML:
        """The first IPv4 ``<ip>`` element, created (after ``<bridge>``) when missing."""
        found = self.ipv4
        return found if found is not None else IpXML.new(self.el)

    def set_forward(self, mode: str | None) -> None:
        """Set the forward mode; None removes ``<forward>`` (an isolated network)."""
        el = self.el.find("forward")
        if mode is None:
            if el is not None:
                self.el.remove(el)
            return
        if el is None:
            el = etree.Element("forward")
            anchor = self.el.find("uuid")
            (anchor if anchor is not None else self.el.find("name")).addnext(el)  # type: ignore[union-attr]
        for key in list(el.attrib):
            del el.attrib[key]
        for child in list(el):
            el.remove(child)
        el.set("mode", mode)
