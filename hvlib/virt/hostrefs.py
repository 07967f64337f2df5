"""The host references of a domain spec: the networks, pools and volumes it names.

:class:`HostRefs` looks each one up on a host at most once (per connection) and remembers
what it found: one ``Domains.define`` or ``Domains.ensure`` makes one, and both the fitting
(:func:`hvlib.virt.hostfit.volume_formats` reads the volume of a disk without a format) and
:func:`check_host_refs` use it, so each network and pool is looked up once per call.
Libvirt is called only through :meth:`hvlib.Host.call`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from hvlib.errors import NotFound, SpecError
from hvlib.model.devices import DiskKind
from hvlib.model.spec import DomainSpec

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

ABSENT = "does not exist on this host"


def volume_rule(pool: str) -> str:
    """What a missing volume of a volume disk without a format is told."""
    return (
        f"does not exist in pool {pool} (a volume disk without a format is read in the "
        "volume's own: create the volume first, or give the disk a format)"
    )


class HostRefs:
    """Networks, pools and volumes of one host, each looked up once (again only after a
    reconnect, whose handles are new)."""

    def __init__(self, host: HostLike) -> None:
        self.host = host
        self._generation = host.generation
        self._found: dict[tuple[str, ...], Any] = {}

    def network(self, field: str, name: str) -> Any:
        """The libvirt network ``name``.

        Raises:
            SpecError: naming ``field``: there is none.
            HostError: the connection failed.
        """
        return self._lookup(("network", name), field, name, lambda c: c.networkLookupByName(name))

    def pool(self, field: str, name: str) -> Any:
        """The libvirt storage pool ``name``.

        Raises:
            SpecError: naming ``field``: there is none.
            HostError: the connection failed.
        """
        return self._lookup(("pool", name), field, name, lambda c: c.storagePoolLookupByName(name))

    def volume(self, field: str, pool: str, name: str, *, rule: str = ABSENT) -> Any:
        """The libvirt volume ``name`` of the pool ``pool`` (looked up as :meth:`pool`, its
        absence blamed on ``disks[i].pool`` for a ``field`` of ``disks[i].volume``).

        Raises:
            SpecError: naming the pool's field (no such pool) or ``field`` with ``rule`` (no
                such volume).
            HostError: the connection failed.
        """
        handle = self.pool(field.rpartition(".")[0] + ".pool", pool)
        key = ("volume", pool, name)
        return self._lookup(key, field, name, lambda _c: handle.storageVolLookupByName(name), rule)

    def _lookup(
        self,
        key: tuple[str, ...],
        field: str,
        name: str,
        fn: Callable[[Any], Any],
        rule: str = ABSENT,
    ) -> Any:
        if self.host.generation != self._generation:  # a reconnect: every handle is stale
            self._found.clear()
            self._generation = self.host.generation
        if key not in self._found:
            try:
                self._found[key] = self.host.call(fn, safe=True)
            except NotFound:
                raise SpecError(field, rule, name) from None
        return self._found[key]


def check_host_refs(
    refs: HostRefs,
    spec: DomainSpec,
    *,
    networks: Collection[str] = (),
    pools: Collection[str] = (),
    volumes: Collection[tuple[str, str]] = (),
) -> None:
    """Check that the networks and pools ``spec`` names exist on ``refs``'s host, and the
    volumes of its volume disks without a format (they are read in the volume's own, which
    the host must tell). Names in ``networks``, ``pools`` and ``volumes`` (pool, name) count
    as existing: they are made before the domain (``hvlib up``'s spec files declare them).

    Raises:
        SpecError: naming the missing network (``nics[i].network``), pool
            (``disks[i].pool``) or volume (``disks[i].volume``).
        HostError: the connection failed.
    """
    for i, nic in enumerate(spec.nics):
        if nic.kind == "network" and nic.source not in networks:
            refs.network(f"nics[{i}].network", nic.source)
    for i, disk in enumerate(spec.disks):
        pool, volume = disk.pool or "", disk.volume_name or ""
        if disk.kind is not DiskKind.VOLUME or pool in pools:
            continue
        if disk.format is None and (pool, volume) not in volumes:
            refs.volume(f"disks[{i}].volume", pool, volume, rule=volume_rule(pool))
        else:
            refs.pool(f"disks[{i}].pool", pool)
