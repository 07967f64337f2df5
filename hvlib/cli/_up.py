"""``hvlib up``: networks, pools, volumes, then domains, from spec files (``--check``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
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
    SECONDS,
    STATES,
    Exit,
    R,
    change_json,
    cli,
    fmt_change,
    forced_line,
    hosts,
    netns_option,
    note,
    ready_option,
    run_with_progress,
    say,
    still_running,
    uri_list,
    uri_option,
    verbose_option,
)
from hvlib.enums import State
from hvlib.errors import HvlibError, SpecError, SpecFileError, WaitTimeout

if TYPE_CHECKING:
    from hvlib.model.plan import ChangeReport
    from hvlib.model.spec import DomainSpec
    from hvlib.virt.domain import Domain
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
    force: bool = False
    ready: str | None = None
    """``--ready WORD``: after a domain is running, wait for that probe."""
    ready_timeout: float = 300.0


@dataclass
class Done:
    """One document as ``up --json`` lists it."""

    kind: str
    """domain, network, pool or volume."""
    name: str
    host: str
    file: str
    outcome: str
    """ok, failed, bad-input, or not-checked (--check: what it uses is not made yet)."""
    changed: bool = False
    changes: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    forced: bool = False
    """A guest did not shut down by the deadline and was powered off (--force)."""
    seconds: float | None = None
    error: str | None = None
    diff: str | None = None
    """--check: the XML diff, before -> after."""
    ready: str | None = None
    """--ready: what the guest reported once ready (``done``, ``running``, ``degraded``)."""


@dataclass
class Outcome:
    """What ``up`` did for all its documents: the worst status wins (2 > 1 > 3 > 0). With
    --json the result lines are collected in ``records`` instead of printed."""

    bad_input: bool = False
    failed: bool = False
    pending: bool = False
    names: list[str] = field(default_factory=list)
    as_json: bool = False
    records: list[Done] = field(default_factory=list)

    def say(self, line: str) -> None:
        """A result line on stdout (not with --json: the records say it)."""
        if not self.as_json:
            say(line)

    def error(self, line: str, record: Done, *, bad_input: bool = False) -> None:
        """An error line on stderr, and the document's record."""
        note(line)
        record.error = line
        self.records.append(record)
        self.bad_input |= bad_input
        self.failed |= not bad_input

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
    type=SECONDS,
    default=60.0,
    show_default=True,
    help="Seconds a guest gets to shut down or reach its state.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Power off a guest still running at the deadline of a shutdown (--state shut-off, "
    "a restart), printed as forced. Without it such a guest is left running (exit 1).",
)
@ready_option(
    "Once a domain is running, wait until it is ready: ssh (a command runs), address, "
    "cloud-init (cloud-init status says done), systemd (running or degraded)."
)
@click.option(
    "--ready-timeout",
    type=SECONDS,
    default=300.0,
    show_default=True,
    help="Seconds --ready waits for each domain.",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list on stdout, for machines.")
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
    force: bool,
    ready: str | None,
    ready_timeout: float,
    as_json: bool,
) -> None:
    """Make the hosts hold what the spec FILES describe: networks, volumes (and their
    directory pools), then domains (create, change, start).

    With several --uri, each domain goes to the host whose driver fits its type
    (qemu:// for kvm and qemu, lxc:// for lxc, xen:// for xen-pv, xen-pvh and xen-hvm); a network or
    volume goes to the host of the first domain (in file order) that uses it, and one that
    no domain uses to the first qemu:// (or test://) --uri, else to the first --uri.
    Nothing is changed unless every file is valid and every network, pool and backing
    volume it names exists or is declared in the files.

    A guest that must stop (--state shut-off, or a restart) gets --timeout s to shut down;
    one still running then is powered off only with --force (reported as forced, "forced":
    true in --json), else left running (exit 1).
    """
    plan = _plan(specfile.load_all(files), uri_list(uris))
    with hosts(plan.uris, netns) as hs:
        by_uri = {h.uri: h for h in hs}
        _check_host_refs(plan, by_uri)
        opts = UpOptions(
            STATES[state],
            check,
            allow_restart,
            allow_recreate,
            timeout,
            force,
            ready,
            ready_timeout,
        )
        outcome = Outcome(as_json=as_json)
        missing: dict[str, bool] = {}
        for uri, net in plan.networks:
            _up_network(by_uri[uri], net, opts, outcome, missing)
        for uri, vol in plan.pools:
            _up_pool(by_uri[uri], vol, opts, outcome, missing)
        for uri, vol in plan.volumes:
            _up_volume(by_uri[uri], vol, opts, outcome, missing)
        for uri, doc in plan.domains:
            _up_one(by_uri[uri], doc, opts, outcome, missing)
    if as_json:
        say(json.dumps([asdict(r) for r in outcome.records], indent=2))
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
        Done("network", doc.spec.name, host.uri, str(doc.location), "ok"),
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
        Done("pool", doc.pool, host.uri, str(doc.location), "ok"),
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
    record = Done("volume", doc.key, host.uri, str(doc.location), "failed")
    if missing.get(f"pool {doc.pool}"):
        line = f"hvlib: error: volume {doc.key} ({doc.location}): pool {doc.pool} failed above"
        outcome.error(line, record)
        missing[f"volume {doc.key}"] = True
        return
    record.outcome = "ok"
    result = _ensure_and_report(
        record,
        f"volume {doc.key}",
        host,
        doc,
        lambda: _ensure_volume(host, doc, opts.check),
        opts,
        outcome,
    )
    # a domain's volume disk without a format is read in the volume's: it must exist first
    _note_missing(f"volume {doc.key}", result, "volume", opts.check, missing)


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
    uses |= {f"volume {d.pool}/{d.volume_name}" for d in spec.disks if d.pool and not d.format}
    blocked = sorted(uses & set(missing))
    if blocked:
        _not_ensured(host, doc, blocked, missing, outcome)
        return
    verb = "checking" if opts.check else "ensuring"
    record = Done("domain", spec.name, host.uri, str(doc.location), "ok")
    result = _ensure_and_report(
        record,
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
            force_shutdown=opts.force,
        ),
        opts,
        outcome,
        progress=f"{verb} {spec.name} is {opts.state.value} on {host.uri}",
    )
    waits = opts.ready and not opts.check and opts.state is State.RUNNING
    if waits and result is not None and result.domain is not None:
        _wait_ready(result.domain, doc, record, opts, outcome)


def _wait_ready(
    dom: Domain, doc: specfile.DomainDocument, record: Done, opts: UpOptions, outcome: Outcome
) -> None:
    """``--ready``: wait for the running domain's probe; a failure is the record's error."""
    from hvlib.guest.ready import Ready

    word = opts.ready or "ssh"
    try:
        found, took = run_with_progress(
            f"waiting for {dom.name} to be ready ({word})",
            lambda: dom.wait_ready(timeout=opts.ready_timeout, probe=Ready.by_word(word)),
        )
    except HvlibError as e:
        outcome.records.remove(record)
        record.outcome = "failed"
        outcome.error(f"hvlib: error: {dom.name} ({doc.location}): not ready: {e}", record)
        return
    units = f" (failed units: {', '.join(found.failed_units)})" if found.failed_units else ""
    record.ready = found.status or "ready"
    outcome.say(f"{dom.name}: ready ({word}: {record.ready}) after {took:.1f} s{units}")


def _not_ensured(
    host: Host,
    doc: specfile.DomainDocument,
    blocked: Sequence[str],
    missing: dict[str, bool],
    outcome: Outcome,
) -> None:
    """Say why a domain is left alone: what it uses failed, or (--check) is not there yet."""
    record = Done("domain", doc.spec.name, host.uri, str(doc.location), "failed")
    failed = [b for b in blocked if missing[b]]
    if failed:
        line = f"hvlib: error: {doc.spec.name} ({doc.location}): {', '.join(failed)} failed above"
        outcome.error(line, record)
        return
    what = ", ".join(blocked)
    tail = f"(--check: nothing changed; {host.uri})"
    outcome.say(f"{doc.spec.name}: not checked: up creates {what} first {tail}")
    record.outcome = "not-checked"
    outcome.records.append(record)
    outcome.pending = True


def _ensure_and_report(
    record: Done,
    label: str,
    host: Host,
    doc: specfile.Document,
    work: Callable[[], R],
    opts: UpOptions,
    outcome: Outcome,
    progress: str = "",
) -> R | None:
    """Run ``work`` (an ensure of ``doc`` on ``host``) showing progress, print each change
    it reports under ``label`` and fill ``record``; return the report, or None when it
    failed (the error is on stderr and in ``outcome``)."""
    verb = "checking" if opts.check else "ensuring"
    try:
        result, took = run_with_progress(progress or f"{verb} {label} on {host.uri}", work)
    except SpecError as e:
        record.outcome = "bad-input"
        outcome.error(f"hvlib: {doc.error(e)}", record, bad_input=True)
        return None
    except WaitTimeout as e:
        record.outcome = "failed"
        outcome.error(f"hvlib: error: {label} ({doc.location}): {_timeout(e, opts)}", record)
        return None
    except HvlibError as e:
        record.outcome = "failed"
        outcome.error(f"hvlib: error: {label} ({doc.location}): {e}", record)
        return None
    _report(label, record, result, took, opts, outcome)
    return result


def _timeout(err: WaitTimeout, opts: UpOptions) -> str:
    """What a timed-out ensure says: a guest left running at its shutdown deadline (no
    --force) is named as such. Only a shutdown times out with the guest running while the
    wanted state is shut-off, or while a restart (a shutdown, then a start and a wait for
    running) may be under way."""
    last = err.last if isinstance(err.last, State) else None
    stopping = opts.state is State.SHUT_OFF and last is not None and last.is_active
    restarting = (opts.allow_restart or opts.allow_recreate) and last is State.RUNNING
    if not opts.force and err.name and (stopping or restarting):
        return still_running(err.name, opts.timeout)
    return str(err)


def _report(
    name: str, record: Done, result: ChangeReport, took: float, opts: UpOptions, outcome: Outcome
) -> None:
    check = opts.check
    forced = bool(getattr(result, "forced", False))
    for change in result.changes:
        outcome.say(f"{name}: {fmt_change(change)}")
    for change in result.pending:
        outcome.say(f"{name}: {fmt_change(change, pending=True)}")
    if forced:
        outcome.say(forced_line(name, opts.timeout))
    diff = comparable(result).diff() if check and (result.changes or result.pending) else ""
    if diff:
        outcome.say(diff.rstrip("\n"))
    outcome.pending |= bool(result.pending) or (check and bool(result.changes))
    outcome.say(_summary(name, record.host, result, took, check))
    record.changed, record.forced, record.seconds = result.changed, forced, round(took, 3)
    record.changes = [change_json(c) for c in result.changes]
    record.pending = [change_json(c) for c in result.pending]
    record.diff = diff or None
    outcome.records.append(record)


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
    if getattr(result, "forced", False):
        parts.append("FORCED off at the deadline")
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
    """``host.volumes.ensure`` of ``doc`` (``check``: changing nothing), reported as its
    changes: the volume created, or grown to ``size_mib`` (volumes never shrink). With
    ``--check``, a volume whose pool (or which itself) ``up`` has not made yet is simply
    new (its backing volume may not exist yet either).

    Raises:
        InvalidState: the volume exists with another format or backing image.
        NotFound: the backing volume is gone. LibvirtError: libvirt could not create it.
    """
    from hvlib.model.plan import Change, ChangeHow, ChangeReport
    from hvlib.model.volplan import describe_volume

    pool = host.pools.find(doc.pool)
    if check and (pool is None or host.volumes.find(pool, doc.name) is None):
        what = describe_volume(doc.image_format, doc.backing, doc.size_mib)
        return ChangeReport(True, [Change("volume", None, what, ChangeHow.STATE)])
    return host.volumes.ensure(pool or doc.pool, doc.name, check=check, **doc.ensure_args())
