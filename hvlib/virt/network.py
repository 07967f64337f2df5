"""Virtual networks as idempotent objects: ``host.networks.ensure(...)``, DHCP reservations.

:class:`NetworkSpec` (and :class:`DhcpHost`) say what a network should be: a NAT or isolated
IPv4 network, its DHCP range and reservations, its bridge and autostart. They are validated on
construction (:class:`hvlib.SpecError`), before libvirt is called. :class:`Networks` converges
a host on a spec: a network that is already right gets no write call; reservations and the
DHCP range change live (libvirt's ``networkUpdate``, on the running network and its persistent
definition at once) without restarting the network; forward mode, address and bridge changes
need a restart, done only with ``allow_restart`` (else written to the persistent definition and
reported as pending). Every report is a :class:`NetworkResult` of :class:`hvlib.model.plan.Change`.

This module builds XML only through :mod:`hvlib.model.netxml` (lxml) and calls libvirt only through
:meth:`hvlib.Host.call` (reads retried on transient errors, writes made once, handles looked up
again after a reconnect); it never imports libvirt, never touches the host's own network
configuration outside libvirt, and never restarts a network it was not allowed to.
"""

from __future__ import annotations

import builtins
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from lxml import etree

from hvlib.errors import HvlibError, NotFound, SpecError
from hvlib.model.netxml import DhcpHostXML, IpXML, NetworkXML
from hvlib.model.plan import Change, ChangeHow, ChangeReport
from hvlib.model.spec import check_name, check_text
from hvlib.model.xmlmodel import ensure_path, tostring
from hvlib.virt import _virt
from hvlib.virt.handle import HostObject

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

T = TypeVar("T")
NetworkMode = Literal["nat", "isolated"]
MODES: tuple[str, ...] = ("nat", "isolated")
_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
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
        if not _MAC_RE.match(mac):
            raise SpecError("host.mac", "must be six hex pairs like 52:54:00:12:34:56", self.mac)
        object.__setattr__(self, "mac", mac)
        object.__setattr__(self, "ip", str(_ipv4("host.ip", self.ip)))
        if self.name is not None:
            check_text("host.name", self.name, max_len=63)
            if not _HOSTNAME_RE.match(self.name):
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
            if not _BRIDGE_RE.match(self.bridge):
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


@dataclass
class NetworkResult(ChangeReport):
    """What a network ``ensure``/``apply`` changed (or, with ``check=True``, would change);
    ``pending`` lists what the running network needs a restart for."""

    network: Network | None = None


# -- the libvirt side -----------------------------------------------------------------------

_COMMANDS = {
    "add": "VIR_NETWORK_UPDATE_COMMAND_ADD_LAST",
    "delete": "VIR_NETWORK_UPDATE_COMMAND_DELETE",
    "modify": "VIR_NETWORK_UPDATE_COMMAND_MODIFY",
}
_SECTIONS = {
    "host": "VIR_NETWORK_SECTION_IP_DHCP_HOST",
    "range": "VIR_NETWORK_SECTION_IP_DHCP_RANGE",
}


class Network(HostObject):
    """A libvirt virtual network on a :class:`hvlib.Host`. Get one from ``host.networks``.

    ``result`` is the report of the :meth:`Networks.ensure` call that returned this handle
    (None for a handle from ``get``/``find``/``list``).
    """

    def __init__(self, host: HostLike, handle: Any) -> None:
        super().__init__(host, handle)
        with _virt.translated():
            self.name: str = handle.name()
            self.uuid: str = handle.UUIDString()
        self.result: NetworkResult | None = None

    def __repr__(self) -> str:
        return f"<Network {self.name} on {self.host.uri}>"

    def _lookup(self, conn: Any) -> Any:
        return conn.networkLookupByUUIDString(self.uuid)

    @property
    def active(self) -> bool:
        """True while the network runs (its bridge and DHCP server are up).

        Raises:
            NotFound: the network is gone.
        """
        return bool(self._read(lambda h: h.isActive()))

    @property
    def autostart(self) -> bool:
        """Whether libvirt starts the network with the daemon. Setting it raises NotFound
        (gone) or LibvirtError (refused)."""
        return bool(self._read(lambda h: h.autostart()))

    @autostart.setter
    def autostart(self, value: bool) -> None:
        self._write(lambda h: h.setAutostart(1 if value else 0))

    @property
    def bridge(self) -> str | None:
        """The host bridge's name (from the live definition, else the persistent one).
        Raises NotFound when the network is gone."""
        return self.doc().bridge_name

    def xml(self, *, inactive: bool = False) -> str:
        """The live XML (``inactive``: the persistent definition, where the driver has one).

        Raises:
            NotFound: the network is gone.
        """
        if inactive:
            try:
                return str(self._read(lambda h: h.XMLDesc(_virt.C.VIR_NETWORK_XML_INACTIVE)))
            except HvlibError as e:  # the test driver has no separate persistent view
                if e.code != _virt.C.VIR_ERR_INVALID_ARG:
                    raise
        return str(self._read(lambda h: h.XMLDesc(0)))

    def doc(self, *, inactive: bool = False) -> NetworkXML:
        """:meth:`xml`, parsed."""
        return NetworkXML.from_xml(self.xml(inactive=inactive))

    @property
    def hosts(self) -> list[DhcpHost]:
        """The DHCP reservations the network serves now (live, else persistent).
        Raises NotFound when the network is gone."""
        ip = self.doc().ipv4
        return [DhcpHost(h.mac or "", h.ip or "", h.name) for h in (ip.hosts if ip else [])]

    def leases(self) -> list[dict[str, Any]]:
        """The DHCP leases the network's server handed out (libvirt's dicts: ``mac``,
        ``ipaddr``, ``hostname``, ``expirytime``, ...).

        Raises:
            Unsupported: the driver keeps no leases. NotFound: the network is gone.
        """
        return list(self._read(lambda h: h.DHCPLeases()))

    def update(self, u: Update) -> None:
        """Make one ``networkUpdate`` call (on the running network and/or its definition).

        Raises:
            InvalidState: libvirt refused it (e.g. an entry that matches already exists).
            SpecError: the element's XML was rejected. NotFound: the network is gone.
        """
        flags = 0
        if u.live:
            flags |= _virt.C.VIR_NETWORK_UPDATE_AFFECT_LIVE
        if u.config:
            flags |= _virt.C.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        command = getattr(_virt.C, _COMMANDS[u.command])
        section = getattr(_virt.C, _SECTIONS[u.section])
        self._write(lambda h: h.update(command, section, u.index, u.xml, flags))

    def start(self) -> None:
        """Start the network (nothing to do when it runs).

        Raises:
            NotFound: the network is gone. LibvirtError: libvirt could not start it.
        """
        if not self.active:
            self._write(lambda h: h.create())

    def stop(self) -> None:
        """Stop the network (nothing to do when it is stopped); guests lose their link.

        Raises:
            NotFound: the network is gone. LibvirtError: libvirt could not stop it.
        """
        if self.active:
            self._write(lambda h: h.destroy())

    def delete(self) -> None:
        """Stop and undefine the network. A network that is already gone is success.

        Raises:
            LibvirtError: libvirt refused (e.g. the daemon failed).
        """
        try:
            self.stop()
            if self._read(lambda h: h.isPersistent()):
                self._write(lambda h: h.undefine())
        except NotFound:
            pass


class Networks:
    """The virtual networks of one host: ``host.networks`` (or ``Networks(host)``)."""

    def __init__(self, host: HostLike) -> None:
        self.host = host

    def ensure(
        self,
        name: str,
        *,
        ipv4: str,
        mode: NetworkMode = "nat",
        dhcp_range: tuple[str, str] | None = None,
        hosts: Sequence[DhcpHost] = (),
        bridge: str | None = None,
        autostart: bool = True,
        allow_restart: bool = False,
    ) -> Network:
        """Make the host run the network described (see :class:`NetworkSpec`); return it,
        with what was changed in ``network.result`` (a :class:`NetworkResult`).

        ``hosts`` is the whole list of reservations: missing ones are added, changed ones
        modified and others removed, live and in the persistent definition, without
        restarting the network. A second call with the same arguments makes no write call.

        Raises:
            SpecError: a malformed argument (nothing changed), or libvirt rejected the XML.
            InvalidState: libvirt refused a live update. LibvirtError: any other failure.
        """
        spec = NetworkSpec(name, ipv4, mode, dhcp_range, hosts, bridge, autostart)
        result = self.apply(spec, allow_restart=allow_restart)
        assert result.network is not None, "apply without check always returns the network"
        result.network.result = result
        return result.network

    def apply(
        self, spec: NetworkSpec, *, check: bool = False, allow_restart: bool = False
    ) -> NetworkResult:
        """Converge on ``spec`` and report; ``check=True`` changes nothing.

        Forward mode, address and bridge changes of a running network are applied (stop,
        start) only with ``allow_restart``; otherwise they, and every other change, go to the
        persistent definition and into ``result.pending``, and the running network is left
        as it is. A restart detaches running guests' interfaces from the network's bridge
        (libvirt does not re-attach them): restart their guests, or plug their NICs again.

        Raises:
            SpecError: libvirt rejected the XML. InvalidState: a live update was refused.
            LibvirtError: any other libvirt failure (a network created here is removed again).
        """
        net = self.find(spec.name)
        if net is None:
            return self._create(spec, check)
        return _Converger(net, spec, check, allow_restart).run()

    def _create(self, spec: NetworkSpec, check: bool) -> NetworkResult:
        xml = spec.doc().to_xml()
        changes = [
            Change("network", None, "defined", ChangeHow.STATE),
            Change("state", "inactive", "active", ChangeHow.STATE),
        ]
        if spec.autostart:
            changes.append(Change("autostart", False, True, ChangeHow.NEXT_BOOT))
        if check:
            return NetworkResult(True, changes, after_xml=xml)
        net = Network(self.host, self.host.call(lambda c: c.networkDefineXML(xml), name=spec.name))
        try:
            if spec.autostart:
                net.autostart = True
            net.start()
        except BaseException:
            net.delete()  # no half-made network: it was defined by this call
            raise
        return NetworkResult(True, changes, network=net, after_xml=net.xml(inactive=True))

    def get(self, name: str) -> Network:
        """The network called ``name``.

        Raises:
            NotFound: there is none.
        """
        found = self.find(name)
        if found is None:
            raise NotFound(f"no network named {name}", name=name)
        return found

    def find(self, name: str) -> Network | None:
        """The network called ``name``, or None."""
        try:
            handle = self.host.call(lambda c: c.networkLookupByName(name), name=name, safe=True)
        except NotFound:
            return None
        return Network(self.host, handle)

    def list(self) -> builtins.list[Network]:
        """Every network of the host (active or not), in one libvirt call."""
        handles = self.host.call(lambda c: c.listAllNetworks(0), safe=True)
        return [Network(self.host, h) for h in handles]


@dataclass
class _Converger:
    """Carries one :meth:`Networks.apply` out on an existing network."""

    net: Network
    spec: NetworkSpec
    check: bool
    allow_restart: bool

    def run(self) -> NetworkResult:
        before_xml = self.net.xml(inactive=True)
        persistent = NetworkXML.from_xml(before_xml)
        active = self.net.active
        live = self.net.doc() if active else persistent
        wanted = owned(self.spec.doc(), self.spec)
        changes = plan(owned(persistent, self.spec), wanted, active)
        stale = self._stale(live, wanted, changes) if active else []
        merged = merge(NetworkXML.from_xml(before_xml), self.spec)
        result = NetworkResult(
            False, network=self.net, before_xml=before_xml, after_xml=merged.to_xml()
        )
        self._sort(result, changes, stale)
        autostart = self.net.autostart != self.spec.autostart
        if autostart:
            result.changes.append(
                Change(
                    "autostart", not self.spec.autostart, self.spec.autostart, ChangeHow.NEXT_BOOT
                )
            )
        if not active:
            result.changes.append(Change("state", "inactive", "active", ChangeHow.STATE))
        if not self.check:
            self._apply(changes, stale, merged, live, active=active, autostart=autostart)
            result.after_xml = self.net.xml(inactive=True)
        result.changed = bool(result.changes)
        return result

    def _stale(self, live: NetworkXML, wanted: dict[str, Any], known: list[Change]) -> list[Change]:
        """Differences only the running network has (its definition is right already)."""
        fields = {c.field for c in known}
        return [c for c in plan(owned(live, self.spec), wanted, True) if c.field not in fields]

    def _sort(self, result: NetworkResult, changes: list[Change], stale: list[Change]) -> None:
        """When the running network needs a restart that is not allowed, nothing reaches it:
        its definition changes (NEXT_BOOT) and every change is pending. (A live update could
        not be trusted then: the new range or reservations may lie outside the old network.)"""
        if not _needs_restart(changes + stale):
            result.changes.extend(changes + stale)
            return
        if self.allow_restart:  # everything reaches the running network through the restart
            result.changes.extend(replace(c, how=ChangeHow.RESTART) for c in changes + stale)
            return
        for c in changes + stale:
            if c in changes:
                result.changes.append(replace(c, how=ChangeHow.NEXT_BOOT))
            result.pending.append(replace(c, how=ChangeHow.RESTART))

    def _apply(
        self,
        changes: list[Change],
        stale: list[Change],
        merged: NetworkXML,
        live: NetworkXML,
        *,
        active: bool,
        autostart: bool,
    ) -> None:
        """Redefine (when the definition must change and no live update can do it), then
        restart, or update live, or start; then autostart."""
        restart = _needs_restart(changes + stale)
        redefine = bool(changes) and (not active or restart)
        if redefine:
            xml = merged.to_xml()
            self.net.host.call(lambda c: c.networkDefineXML(xml), name=self.spec.name)
        if active and restart and self.allow_restart:
            self.net.stop()
            self.net.start()
        elif active and not restart:
            config = [] if redefine else updates(self.net.doc(inactive=True), self.spec)
            for u in combine(updates(live, self.spec), config):
                self.net.update(u)
        if autostart:
            self.net.autostart = self.spec.autostart
        if not active:
            self.net.start()


def _needs_restart(changes: list[Change]) -> bool:
    return any(c.how is ChangeHow.RESTART for c in changes)
