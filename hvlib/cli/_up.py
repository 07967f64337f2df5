"""``hvlib up``: networks, pools, volumes, then domains, from spec files (``--check``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import click

from hvlib import specfile
from hvlib.cli._base import (
    DRIVERS,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PENDING,
    NEEDS,
    STATES,
    Exit,
    R,
    cli,
    fmt_change,
    hosts,
    netns_option,
    note,
    run_with_progress,
    say,
    uri_list,
    uri_option,
    verbose_option,
)
from hvlib.enums import State
from hvlib.errors import HvlibError, SpecError, SpecFileError

if TYPE_CHECKING:
    from hvlib.model.plan import Change, ChangeReport
    from hvlib.model.spec import DomainSpec
    from hvlib.virt.host import Host


# -- up ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpOptions:
    """How ``up`` converges each domain."""

    state: State
    check: bool
    allow_restart: bool
    allow_recreate: bool
    timeout: float


@dataclass
class Outcome:
    """What ``up`` did for all its documents: the worst status wins (2 > 1 > 3 > 0)."""

    bad_input: bool = False
    failed: bool = False
    pending: bool = False
    names: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        if self.bad_input:
            return EXIT_BAD_INPUT
        if self.failed:
            return EXIT_FAILED
        return EXIT_PENDING if self.pending else EXIT_OK


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@uri_option(multiple=True)
@netns_option
@click.option(
    "--state",
    type=click.Choice(list(STATES)),
    default="running",
    show_default=True,
    help="The run state every domain should be in (networks and pools are always started).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Show what would change (and the XML diff); change nothing. Exit 3 if anything would.",
)
@click.option(
    "--allow-restart",
    is_flag=True,
    help="Restart running guests (and networks) whose change needs it "
    "(else it waits for their next boot and up exits 3).",
)
@click.option(
    "--allow-recreate",
    is_flag=True,
    help="Undefine and define again where a "
    "change needs it (a new virt type), keeping uuid and MACs.",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds a guest gets to shut down or reach its state.",
)
@verbose_option
def up(
    files: tuple[str, ...],
    uris: tuple[str, ...],
    netns: str | None,
    state: str,
    check: bool,
    allow_restart: bool,
    allow_recreate: bool,
    timeout: float,
) -> None:
    """Make the hosts hold what the spec FILES describe: networks, volumes (and their
    directory pools), then domains (create, change, start).

    With several --uri, each domain goes to the host whose driver fits its type
    (qemu:// for kvm and qemu, lxc:// for lxc, xen:// for xen-pv, xen-pvh and xen-hvm); a network or
    volume goes to the host of the first domain (in file order) that uses it, and one that
    no domain uses to the first qemu:// (or test://) --uri, else to the first --uri.
    Nothing is changed unless every file is valid and every network, pool and backing
    volume it names exists or is declared in the files.
    """
    plan = _plan(specfile.load_all(files), uri_list(uris))
    with hosts(plan.uris, netns) as hs:
        by_uri = {h.uri: h for h in hs}
        _check_host_refs(plan, by_uri)
        opts = UpOptions(STATES[state], check, allow_restart, allow_recreate, timeout)
        outcome = Outcome()
        missing: dict[str, bool] = {}
        for uri, net in plan.networks:
            _up_network(by_uri[uri], net, opts, outcome, missing)
        for uri, vol in plan.pools:
            _up_pool(by_uri[uri], vol, opts, outcome, missing)
        for uri, vol in plan.volumes:
            _up_volume(by_uri[uri], vol, opts, outcome, missing)
        for uri, doc in plan.domains:
            _up_one(by_uri[uri], doc, opts, outcome, missing)
    raise Exit(outcome.status)


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


def _plan(files: Sequence[specfile.SpecFile], uris: Sequence[str]) -> UpPlan:
    """Every document of ``files`` routed to a URI (see ``up --help``).

    Raises:
        SpecFileError: no URI or several URIs fit a domain's type.
    """
    plan = UpPlan(domains=_route([doc for sf in files for doc in sf.domains], uris))
    default = next((u for u in uris if _scheme(u) in ("qemu", "test")), uris[0])
    for net in (doc for sf in files for doc in sf.networks):
        plan.networks.append((_user_uri(plan, net.spec.name, _networks_of, default), net))
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


def _networks_of(spec: DomainSpec) -> set[str]:
    return {nic.source for nic in spec.nics if nic.kind == "network"}


def _volumes_of(spec: DomainSpec) -> set[tuple[str | None, str | None]]:
    return {(d.pool, d.volume_name) for d in spec.disks if d.pool is not None}


def _pools_of(spec: DomainSpec) -> set[str]:
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


def _check_host_refs(plan: UpPlan, by_uri: dict[str, Host]) -> None:
    """Every network and pool a document names, and every backing volume, exists on its
    host or is declared by the files (checked before anything changes).

    Raises:
        SpecFileError: one does not (with the line that names it).
    """
    nets = {doc.spec.name for _, doc in plan.networks}
    pools = {doc.pool for _, doc in plan.pools}
    vols = {(doc.pool, doc.name) for _, doc in plan.volumes}
    for uri, dom in plan.domains:
        err = _missing_domain_ref(by_uri[uri], dom.spec, nets, pools)
        if err is not None:
            raise dom.error(err)
    for uri, vol in plan.volumes:
        err = _missing_volume_ref(by_uri[uri], vol, pools, vols)
        if err is not None:
            raise vol.error(err)


def _missing_domain_ref(
    host: Host, spec: DomainSpec, nets: set[str], pools: set[str]
) -> SpecError | None:
    """What ``host.domains.check_host_refs`` raises for ``spec``, but for the networks and
    pools the files declare (they are made before the domains)."""
    absent = "does not exist on this host"
    for i, nic in enumerate(spec.nics):
        wanted = nic.kind == "network" and nic.source not in nets
        if wanted and host.networks.find(nic.source) is None:
            return SpecError(f"nics[{i}].network", absent, nic.source)
    for i, disk in enumerate(spec.disks):
        wanted = disk.pool is not None and disk.pool not in pools
        if wanted and host.pools.find(disk.pool or "") is None:
            return SpecError(f"disks[{i}].pool", absent, disk.pool)
    return None


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


def _up_network(
    host: Host,
    doc: specfile.NetworkDocument,
    opts: UpOptions,
    outcome: Outcome,
    missing: dict[str, bool],
) -> None:
    """Ensure one network; note in ``missing`` when it failed or (--check) is not there yet."""
    result = _ensure_and_report(
        f"network {doc.spec.name}",
        host,
        doc,
        lambda: host.networks.apply(doc.spec, check=opts.check, allow_restart=opts.allow_restart),
        opts,
        outcome,
    )
    _note_missing(f"network {doc.spec.name}", result, "network", opts.check, missing)


def _up_pool(
    host: Host,
    doc: specfile.VolumeDocument,
    opts: UpOptions,
    outcome: Outcome,
    missing: dict[str, bool],
) -> None:
    """Ensure the directory pool ``doc`` declares; note in ``missing`` as for networks."""
    path = doc.pool_dir or ""
    result = _ensure_and_report(
        f"pool {doc.pool}",
        host,
        doc,
        lambda: _ensure_pool(host, doc.pool, path, opts.check),
        opts,
        outcome,
    )
    _note_missing(f"pool {doc.pool}", result, "pool", opts.check, missing)


def _note_missing(
    label: str, result: ChangeReport | None, creates: str, check: bool, missing: dict[str, bool]
) -> None:
    """Record ``label`` as failed (True) or, from a --check that would create it, as not
    there yet (False): a domain that uses it cannot be ensured (or checked)."""
    if result is None:
        missing[label] = True
    elif check and any(c.field == creates and c.before is None for c in result.changes):
        missing.setdefault(label, False)


def _up_volume(
    host: Host,
    doc: specfile.VolumeDocument,
    opts: UpOptions,
    outcome: Outcome,
    missing: dict[str, bool],
) -> None:
    """Ensure one volume (unless its pool failed)."""
    if missing.get(f"pool {doc.pool}"):
        note(f"hvlib: error: volume {doc.key} ({doc.location}): pool {doc.pool} failed above")
        outcome.failed = True
        return
    _ensure_and_report(
        f"volume {doc.key}",
        host,
        doc,
        lambda: _ensure_volume(host, doc, opts.check),
        opts,
        outcome,
    )


def _up_one(
    host: Host,
    doc: specfile.DomainDocument,
    opts: UpOptions,
    outcome: Outcome,
    missing: dict[str, bool],
) -> None:
    """Ensure one domain on its host (unless a network or pool it uses is missing)."""
    spec = doc.spec
    uses = {f"network {n}" for n in _networks_of(spec)} | {f"pool {p}" for p in _pools_of(spec)}
    blocked = sorted(uses & set(missing))
    if blocked:
        _not_ensured(host, doc, blocked, missing, outcome)
        return
    verb = "checking" if opts.check else "ensuring"
    _ensure_and_report(
        spec.name,
        host,
        doc,
        lambda: host.domains.ensure(
            spec,
            opts.state,
            check=opts.check,
            allow_restart=opts.allow_restart,
            allow_recreate=opts.allow_recreate,
            shutdown_timeout=opts.timeout,
        ),
        opts,
        outcome,
        progress=f"{verb} {spec.name} is {opts.state.value} on {host.uri}",
    )


def _not_ensured(
    host: Host,
    doc: specfile.DomainDocument,
    blocked: Sequence[str],
    missing: dict[str, bool],
    outcome: Outcome,
) -> None:
    """Say why a domain is left alone: what it uses failed, or (--check) is not there yet."""
    failed = [b for b in blocked if missing[b]]
    if failed:
        note(f"hvlib: error: {doc.spec.name} ({doc.location}): {', '.join(failed)} failed above")
        outcome.failed = True
        return
    what = ", ".join(blocked)
    tail = f"(--check: nothing changed; {host.uri})"
    say(f"{doc.spec.name}: not checked: up creates {what} first {tail}")
    outcome.pending = True


def _ensure_and_report(
    label: str,
    host: Host,
    doc: specfile.Document,
    work: Callable[[], R],
    opts: UpOptions,
    outcome: Outcome,
    progress: str = "",
) -> R | None:
    """Run ``work`` (an ensure of ``doc`` on ``host``) showing progress, print each change
    it reports under ``label``; return the report, or None when it failed (the error is on
    stderr and in ``outcome``)."""
    verb = "checking" if opts.check else "ensuring"
    try:
        result, took = run_with_progress(progress or f"{verb} {label} on {host.uri}", work)
    except SpecError as e:
        note(f"hvlib: {doc.error(e)}")
        outcome.bad_input = True
        return None
    except HvlibError as e:
        note(f"hvlib: error: {label} ({doc.location}): {e}")
        outcome.failed = True
        return None
    _report(label, host.uri, result, took, opts.check, outcome)
    return result


def _report(
    name: str, uri: str, result: ChangeReport, took: float, check: bool, outcome: Outcome
) -> None:
    for change in result.changes:
        say(f"{name}: {fmt_change(change)}")
    for change in result.pending:
        say(f"{name}: {fmt_change(change, pending=True)}")
    if check and (result.changes or result.pending):
        diff = comparable(result).diff()
        if diff:
            say(diff.rstrip("\n"))
    outcome.pending |= bool(result.pending) or (check and bool(result.changes))
    say(_summary(name, uri, result, took, check))


def comparable(result: R) -> R:
    """``result`` with both XML documents serialised alike (libvirt writes ``'`` where lxml
    writes ``"``), so that its diff shows only what differs."""
    from hvlib.model.xmlmodel import parse, tostring

    def same_form(xml: str) -> str:
        return tostring(parse(xml)) if xml.strip() else ""

    return replace(
        result, before_xml=same_form(result.before_xml), after_xml=same_form(result.after_xml)
    )


def _summary(name: str, uri: str, result: ChangeReport, took: float, check: bool) -> str:
    n, p = len(result.changes), len(result.pending)
    parts = [f"{n} change(s) {'would be applied' if check else 'applied'}"] if n else []
    if p:
        needs = sorted({NEEDS[c.how.value] for c in result.pending if c.how.value in NEEDS})
        parts.append(f"{p} pending (need {' and '.join(needs) or 'a restart'})")
    tail = "--check: nothing changed" if check else f"{took:.2f} s"
    return f"{name}: {'; '.join(parts) or 'no changes'} ({tail}; {uri})"


def load_domains(files: Sequence[str]) -> list[specfile.DomainDocument]:
    """Every domain document of ``files`` (their network and volume documents are checked
    too, but not returned).

    Raises:
        SpecFileError: a file is invalid.
    """
    return [doc for sf in specfile.load_all(files) for doc in sf.domains]


# -- pools and volumes of up: a report of what ensure changes (reads, then one ensure call) --


def _ensure_pool(host: Host, name: str, path: str, check: bool) -> ChangeReport:
    """``host.pools.ensure_dir(name, path)`` (unless ``check``), reported as its changes.

    Raises:
        InvalidState: a pool ``name`` exists but is not a directory pool at ``path``.
        LibvirtError: libvirt could not build or start the pool.
    """
    from hvlib.model.plan import ChangeReport

    changes = host.pools.plan_dir(name, path)
    if changes and not check:
        host.pools.ensure_dir(name, path)
    return ChangeReport(bool(changes), changes)


def _ensure_volume(host: Host, doc: specfile.VolumeDocument, check: bool) -> ChangeReport:
    """``host.volumes.ensure`` of ``doc`` (unless ``check``), reported as its changes: the
    volume created, or grown to ``size_mib`` (volumes never shrink).

    Raises:
        InvalidState: the volume exists with another format or backing image.
        NotFound: the backing volume is gone. LibvirtError: libvirt could not create it.
    """
    from hvlib.model.plan import ChangeReport

    changes = _volume_changes(host, doc)
    if changes and not check:
        host.volumes.ensure(doc.pool, doc.name, **doc.ensure_args())
    return ChangeReport(bool(changes), changes)


def _volume_changes(host: Host, doc: specfile.VolumeDocument) -> list[Change]:
    """``host.volumes.plan`` of ``doc``; a volume whose pool or backing volume ``up`` has
    not made yet (``--check``) is simply new."""
    from hvlib.model.plan import Change, ChangeHow
    from hvlib.virt.storage import describe_volume

    pool = host.pools.find(doc.pool)
    if pool is None or host.volumes.find(pool, doc.name) is None:
        what = describe_volume(doc.image_format, doc.backing, doc.size_mib)
        return [Change("volume", None, what, ChangeHow.STATE)]
    return host.volumes.plan(pool, doc.name, **doc.ensure_args())
