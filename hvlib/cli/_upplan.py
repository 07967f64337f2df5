"""``hvlib up``'s plan: every document of the spec files routed to a host, and the
networks, pools and volumes they name checked before anything changes (a domain's with the
library's own check, :meth:`hvlib.virt.domains.Domains.check_host_refs`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hvlib import specfile
from hvlib.cli._base import DRIVERS
from hvlib.errors import SpecError, SpecFileError

if TYPE_CHECKING:
    from hvlib.model.spec import DomainSpec
    from hvlib.virt.host import Host


@dataclass
class UpPlan:
    """Every document of ``up`` with the URI of its host, in the order they are applied:
    networks, directory pools, volumes, then the domains that may use them."""

    networks: list[tuple[str, specfile.NetworkDocument]] = field(default_factory=list)
    pools: list[tuple[str, specfile.VolumeDocument]] = field(default_factory=list)
    """Per host, the first volume document that declares each directory pool."""
    volumes: list[tuple[str, specfile.VolumeDocument]] = field(default_factory=list)
    domains: list[tuple[str, specfile.DomainDocument]] = field(default_factory=list)

    @property
    def uris(self) -> list[str]:
        """The URIs of the hosts the plan needs, each once."""
        routed = [*self.networks, *self.pools, *self.volumes, *self.domains]
        return sorted({uri for uri, _ in routed})


def plan_up(files: Sequence[specfile.SpecFile], uris: Sequence[str]) -> UpPlan:
    """Every document of ``files`` routed to a URI (see ``up --help``).

    Raises:
        SpecFileError: no URI or several URIs fit a domain's type.
    """
    plan = UpPlan(domains=_route([doc for sf in files for doc in sf.domains], uris))
    default = next((u for u in uris if _scheme(u) in ("qemu", "test")), uris[0])
    for net in (doc for sf in files for doc in sf.networks):
        plan.networks.append((_user_uri(plan, net.spec.name, networks_of, default), net))
    for vol in (doc for sf in files for doc in sf.volumes):
        plan.volumes.append((_user_uri(plan, (vol.pool, vol.name), _volumes_of, default), vol))
    seen: set[tuple[str, str]] = set()
    for uri, vol in plan.volumes:
        if vol.pool_dir is not None and (uri, vol.pool) not in seen:
            seen.add((uri, vol.pool))
            plan.pools.append((uri, vol))
    return plan


def _user_uri(
    plan: UpPlan, wanted: object, used: Callable[[DomainSpec], set[Any]], default: str
) -> str:
    """The URI of the first domain of ``plan`` for which ``used`` holds ``wanted``, else
    ``default``."""
    return next((uri for uri, doc in plan.domains if wanted in used(doc.spec)), default)


def networks_of(spec: DomainSpec) -> set[str]:
    return {nic.source for nic in spec.nics if nic.kind == "network"}


def _volumes_of(spec: DomainSpec) -> set[tuple[str | None, str | None]]:
    return {(d.pool, d.volume_name) for d in spec.disks if d.pool is not None}


def pools_of(spec: DomainSpec) -> set[str]:
    return {d.pool for d in spec.disks if d.pool is not None}


def _route(
    docs: Sequence[specfile.DomainDocument], uris: Sequence[str]
) -> list[tuple[str, specfile.DomainDocument]]:
    """Each document with the URI it goes to (the only one, or the one whose driver fits).

    Raises:
        SpecFileError: no URI or several URIs fit a document's type.
    """
    if len(uris) == 1:
        return [(uris[0], doc) for doc in docs]
    out = []
    for doc in docs:
        drivers = (*DRIVERS[doc.spec.virt], "test")
        fits = [u for u in uris if _scheme(u) in drivers]
        if len(fits) != 1:
            why = "no --uri" if not fits else f"several --uri ({', '.join(fits)})"
            raise SpecFileError(
                doc.locate("virt"),
                "virt",
                f"{why} can take a {doc.spec.virt.value} domain",
                doc.spec.virt.value,
            )
        out.append((fits[0], doc))
    return out


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0]


def check_refs(plan: UpPlan, by_uri: dict[str, Host]) -> None:
    """Every network and pool a document names, and every backing volume, exists on its
    host or is declared by the files (checked before anything changes): a domain's with the
    library's own check (:meth:`hvlib.virt.domains.Domains.check_host_refs`), told what the
    files make before the domains.

    Raises:
        SpecFileError: one does not (with the line that names it).
    """
    nets = {doc.spec.name for _, doc in plan.networks}
    pools = {doc.pool for _, doc in plan.pools}
    vols = {(doc.pool, doc.name) for _, doc in plan.volumes}
    for uri, dom in plan.domains:
        try:
            by_uri[uri].domains.check_host_refs(dom.spec, networks=nets, pools=pools, volumes=vols)
        except SpecError as e:
            raise dom.error(e) from None
    for uri, vol in plan.volumes:
        err = _missing_volume_ref(by_uri[uri], vol, pools, vols)
        if err is not None:
            raise vol.error(err)


def _missing_volume_ref(
    host: Host, doc: specfile.VolumeDocument, pools: set[str], vols: set[tuple[str, str]]
) -> SpecError | None:
    if doc.pool not in pools and host.pools.find(doc.pool) is None:
        rule = "does not exist on this host; pool: {name: NAME, dir: PATH} makes a directory pool"
        return SpecError("pool", rule, doc.pool)
    if (
        doc.backing is not None
        and doc.backing not in vols
        and not _volume_exists(host, *doc.backing)
    ):
        return SpecError("backing", "does not exist on this host", "/".join(doc.backing))
    return None


def _volume_exists(host: Host, pool: str, name: str) -> bool:
    found = host.pools.find(pool)
    return found is not None and host.volumes.find(found, name) is not None
