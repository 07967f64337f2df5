"""Virtual networks as idempotent objects: ``host.networks.ensure(...)``, DHCP reservations.

What a network should be is a :class:`hvlib.model.netplan.NetworkSpec` (validated on
construction, before libvirt is called; its plan is pure, in :mod:`hvlib.model.netplan`).
:class:`Networks` converges
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

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from hvlib.errors import HvlibError, NotFound
from hvlib.model.netplan import (
    DhcpHost,
    NetworkMode,
    NetworkSpec,
    Update,
    combine,
    merge,
    owned,
    plan,
    updates,
)
from hvlib.model.netxml import NetworkXML
from hvlib.model.plan import Change, ChangeHow, ChangeReport
from hvlib.virt import _virt
from hvlib.virt.handle import ByName, HostObject

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

T = TypeVar("T")


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


class Networks(ByName[Network]):
    """The virtual networks of one host: ``host.networks`` (or ``Networks(host)``)."""

    _kind, _item = "network", Network
    _lookup_call, _list_call = "networkLookupByName", "listAllNetworks"

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
