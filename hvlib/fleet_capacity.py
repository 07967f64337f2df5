"""A fleet's capacity and where a domain should go: what one host has and what its defined
domains claim (:class:`HostCapacity`, read by :func:`capacity_of`), a reading of every host
(:class:`Inventory`), and the choice of a host for a spec (:func:`choose`,
:class:`Placement`). :class:`hvlib.fleet.Fleet` reads the hosts in parallel and uses these.

Headroom is ``min(total - committed, free - not_running)``: ``committed`` is the memory of
every defined domain (running or not, at its maximum), ``not_running`` that of the defined
domains that are not running (they will need it when they start), ``free`` what the host
reports free now (running guests already use part of it). So a host full of defined but
stopped domains is as full as one where they run.

All but :func:`capacity_of` is pure; it reads a host only through ``Host.call`` (safe reads).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hvlib.enums import VirtType
from hvlib.errors import PlacementError
from hvlib.model.spec import DomainSpec
from hvlib.model.xmlmodel import parse

if TYPE_CHECKING:
    from hvlib.virt.host import Host

_ALL_TYPES = frozenset(VirtType)
_VIRT_BY_CAPS = {
    ("hvm", "qemu"): VirtType.QEMU,
    ("hvm", "kvm"): VirtType.KVM,
    ("hvm", "xen"): VirtType.XEN_HVM,
    ("xen", "xen"): VirtType.XEN_PV,
    ("xenpvh", "xen"): VirtType.XEN_PVH,
    ("exe", "lxc"): VirtType.LXC,
}


def virt_types_of(capabilities_xml: str) -> frozenset[VirtType]:
    """The virtualization types a host's capabilities XML offers (``<guest>`` os_type and
    domain types). libvirt's test driver (domain type ``test``) runs every type. Pure.

    Raises:
        lxml.etree.XMLSyntaxError: the text is not XML.
    """
    found: set[VirtType] = set()
    for guest in parse(capabilities_xml).iterfind("guest"):
        os_type = (guest.findtext("os_type") or "").strip()
        for domain in guest.iterfind("arch/domain"):
            kind = domain.get("type", "")
            if kind == "test":
                return _ALL_TYPES
            virt = _VIRT_BY_CAPS.get((os_type, kind))
            if virt is not None:
                found.add(virt)
    return frozenset(found)


def host_uuid_of(capabilities_xml: str) -> str | None:
    """The host's uuid from its capabilities (``<host><uuid>``), or None. Pure."""
    text = parse(capabilities_xml).findtext("host/uuid")
    return text.strip() if text else None


@dataclass(frozen=True)
class HostCapacity:
    """What one host has and what its defined domains already claim (MiB, counts)."""

    uri: str
    hostname: str
    cpus: int
    """Logical CPUs."""
    memory_mib: int
    free_memory_mib: int
    virt_types: frozenset[VirtType]
    domains: int = 0
    """Defined domains (running or not)."""
    running: int = 0
    committed_memory_mib: int = 0
    """Memory of every defined domain, at its maximum."""
    idle_memory_mib: int = 0
    """Memory of the defined domains that are not running."""
    committed_vcpus: int = 0
    host_uuid: str | None = None

    @property
    def headroom_mib(self) -> int:
        """Memory a new domain can have: ``min(total - committed, free - idle)``."""
        return min(
            self.memory_mib - self.committed_memory_mib,
            self.free_memory_mib - self.idle_memory_mib,
        )

    def refusal(self, spec: DomainSpec) -> str | None:
        """Why this host cannot run ``spec`` (type, memory, vcpus), or None if it can. Pure."""
        if spec.virt not in self.virt_types:
            offered = ", ".join(sorted(v.value for v in self.virt_types)) or "none"
            return f"does not run {spec.virt.value} (it runs: {offered})"
        need = spec_memory_mib(spec)
        if need > self.headroom_mib:
            return f"needs {need} MiB, headroom is {self.headroom_mib} MiB"
        if spec.vcpus > self.cpus:
            return f"needs {spec.vcpus} vcpus, the host has {self.cpus} CPUs"
        return None


def spec_memory_mib(spec: DomainSpec) -> int:
    """The memory a spec claims on its host: its maximum (``max_memory_mib``) if set. Pure."""
    return max(spec.memory_mib, spec.max_memory_mib or 0)


@dataclass(frozen=True)
class Inventory:
    """One reading of the fleet: the capacity of each host that answered, and why the others
    did not (both in the order the URIs were given)."""

    hosts: dict[str, HostCapacity] = field(default_factory=dict)
    down: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One human-readable line per host. Pure."""
        out = []
        for uri, cap in self.hosts.items():
            types = ",".join(sorted(v.value for v in cap.virt_types))
            out.append(
                f"{uri}: up, {cap.cpus} CPUs, {cap.memory_mib} MiB "
                f"({cap.free_memory_mib} free), {cap.domains} domains "
                f"({cap.running} running, {cap.committed_memory_mib} MiB committed), "
                f"headroom {cap.headroom_mib} MiB, types {types}"
            )
        out += [f"{uri}: down: {why}" for uri, why in self.down.items()]
        return out


@dataclass(frozen=True)
class Placement:
    """Where :meth:`hvlib.fleet.Fleet.plan` would put a spec, and why not elsewhere."""

    uri: str
    capacity: HostCapacity
    rejected: dict[str, str]
    """URI -> reason, for every other host (down, cannot run it, or less headroom)."""


def choose(spec: DomainSpec, capacities: dict[str, HostCapacity]) -> tuple[str, dict[str, str]]:
    """The URI of the host that can run ``spec`` with the most headroom (ties: fewer running
    domains, then the earlier URI) and why each other host was not chosen. Pure.

    Raises:
        PlacementError: no host can run it (``reasons`` says why, per host).
    """
    reasons: dict[str, str] = {}
    fits: list[tuple[int, int, int, str]] = []
    for order, (uri, cap) in enumerate(capacities.items()):
        why = cap.refusal(spec)
        if why is None:
            fits.append((-cap.headroom_mib, cap.running, order, uri))
        else:
            reasons[uri] = why
    if not fits:
        detail = "; ".join(f"{u}: {r}" for u, r in reasons.items()) or "no host is up"
        raise PlacementError(f"no host can run {spec.name}: {detail}", reasons, name=spec.name)
    fits.sort()
    best = fits[0][3]
    top = capacities[best].headroom_mib
    for _, _, _, uri in fits[1:]:
        mine = capacities[uri].headroom_mib
        reasons[uri] = (
            f"less headroom ({mine} MiB < {top} MiB)"
            if mine < top
            else f"same headroom ({mine} MiB): ties go to fewer running domains, then list order"
        )
    return best, reasons


def capacity_of(
    host: Host, uri: str | None = None, *, capabilities: str | None = None
) -> HostCapacity:
    """One host's capacity: CPUs, memory, free memory, types (from ``capabilities``, the
    host's capabilities XML, read if not given), and its domains' claims.

    Raises:
        HostError: the host cannot be reached. HvlibError: a libvirt call failed.
    """
    caps = capabilities if capabilities is not None else host.capabilities()
    model_info = host.call(lambda c: c.getInfo(), safe=True)
    free = host.call(lambda c: int(c.getFreeMemory()), safe=True)
    if host.is_test_driver:  # it reports no real free memory (0, or its cells' few KiB)
        free = int(model_info[1]) * 1024 * 1024
    hostname = host.call(lambda c: str(c.getHostname()), safe=True)
    domains = list(_domain_claims(host))
    idle = [mem for mem, _, active in domains if not active]
    return HostCapacity(
        uri=uri or host.uri,
        hostname=hostname,
        cpus=int(model_info[2]),
        memory_mib=int(model_info[1]),
        free_memory_mib=free // (1024 * 1024),
        virt_types=virt_types_of(caps),
        domains=len(domains),
        running=sum(1 for _, _, active in domains if active),
        committed_memory_mib=sum(mem for mem, _, _ in domains),
        idle_memory_mib=sum(idle),
        committed_vcpus=sum(vcpus for _, vcpus, _ in domains),
        host_uuid=host_uuid_of(caps),
    )


def _domain_claims(host: Host) -> Iterator[tuple[int, int, bool]]:
    """(memory MiB at its maximum, vcpus, active) of every defined domain: ``info()`` of
    each, read in one safe call."""

    def read(conn: Any) -> list[tuple[int, int, int]]:
        out = []
        for handle in conn.listAllDomains(0):
            state, max_kib, _cur_kib, vcpus, _cpu = handle.info()
            out.append((int(state), int(max_kib), int(vcpus)))
        return out

    from hvlib.virt import _virt

    for state, max_kib, vcpus in host.call(read, safe=True):
        yield max_kib // 1024, vcpus, _virt.state_of(state).is_active
