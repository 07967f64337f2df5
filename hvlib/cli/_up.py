"""``hvlib up``: networks, pools, volumes, then domains, from spec files (``--check``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import click

from hvlib import specfile
from hvlib.cli._base import (
    SECONDS,
    STATES,
    Exit,
    cli,
    hosts,
    hosts_options,
    json_option,
    ready_option,
    run_with_progress,
    say,
    timeout_option,
    uri_list,
    verbose_option,
)
from hvlib.cli._upplan import check_refs, networks_of, plan_up, pools_of
from hvlib.cli._upreport import Done, Outcome, UpOptions, ensure_and_report
from hvlib.enums import State
from hvlib.errors import HvlibError

if TYPE_CHECKING:
    from hvlib.model.plan import ChangeReport
    from hvlib.virt.domain import Domain
    from hvlib.virt.host import Host


# -- up ------------------------------------------------------------------------------------


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@hosts_options
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
@timeout_option("Seconds a guest gets to shut down or reach its state.", default=60.0)
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
@json_option
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
    plan = plan_up(specfile.load_all(files), uri_list(uris))
    with hosts(plan.uris, netns) as hs:
        by_uri = {h.uri: h for h in hs}
        check_refs(plan, by_uri)
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
        run = _Run(opts, Outcome(as_json=as_json))
        for uri, net in plan.networks:
            _up_network(run, by_uri[uri], net)
        for uri, vol in plan.pools:
            _up_pool(run, by_uri[uri], vol)
        for uri, vol in plan.volumes:
            _up_volume(run, by_uri[uri], vol)
        for uri, doc in plan.domains:
            _up_one(run, by_uri[uri], doc)
    if as_json:
        say(json.dumps([asdict(r) for r in run.outcome.records], indent=2))
    raise Exit(run.outcome.status)


@dataclass
class _Run:
    """One ``up``: its options, its outcome, and what domains and volumes use that failed
    (True) or, from a --check that would create it, is not there yet (False), by label
    (``network NAME``, ``pool NAME``, ``volume POOL/NAME``)."""

    opts: UpOptions
    outcome: Outcome
    missing: dict[str, bool] = field(default_factory=dict)

    def note(self, label: str, result: ChangeReport | None, creates: str) -> None:
        """Record ``label`` in ``missing`` when its ensure failed (``result`` None) or was a
        --check that would create it (a change of ``creates`` from None): what uses it
        cannot be ensured (or checked)."""
        if result is None:
            self.missing[label] = True
        elif self.opts.check and any(
            c.field == creates and c.before is None for c in result.changes
        ):
            self.missing.setdefault(label, False)


def _up_used(
    run: _Run,
    host: Host,
    doc: specfile.Document,
    kind: str,
    key: str,
    work: Callable[[], ChangeReport],
) -> None:
    """Ensure (``work``) the network or pool ``doc`` declares, that domains and volumes may
    use; note it in ``run.missing`` when it failed or (--check) is not there yet."""
    label = f"{kind} {key}"
    record = Done(kind, key, host.uri, str(doc.location), "ok")
    result = ensure_and_report(record, label, host, doc, work, run.opts, run.outcome)
    run.note(label, result, kind)


def _up_network(run: _Run, host: Host, doc: specfile.NetworkDocument) -> None:
    """Ensure one network (see :func:`_up_used`)."""
    opts = run.opts
    _up_used(
        run,
        host,
        doc,
        "network",
        doc.spec.name,
        lambda: host.networks.apply(doc.spec, check=opts.check, allow_restart=opts.allow_restart),
    )


def _up_pool(run: _Run, host: Host, doc: specfile.VolumeDocument) -> None:
    """Ensure the directory pool ``doc`` declares (see :func:`_up_used`)."""
    path = doc.pool_dir or ""
    _up_used(
        run, host, doc, "pool", doc.pool, lambda: _ensure_pool(host, doc.pool, path, run.opts.check)
    )


def _up_volume(run: _Run, host: Host, doc: specfile.VolumeDocument) -> None:
    """Ensure one volume (unless its pool failed)."""
    record = Done("volume", doc.key, host.uri, str(doc.location), "failed")
    if run.missing.get(f"pool {doc.pool}"):
        line = f"hvlib: error: volume {doc.key} ({doc.location}): pool {doc.pool} failed above"
        run.outcome.error(line, record)
        run.missing[f"volume {doc.key}"] = True
        return
    record.outcome = "ok"
    result = ensure_and_report(
        record,
        f"volume {doc.key}",
        host,
        doc,
        lambda: _ensure_volume(host, doc, run.opts.check),
        run.opts,
        run.outcome,
    )
    # a domain's volume disk without a format is read in the volume's: it must exist first
    run.note(f"volume {doc.key}", result, "volume")


def _up_one(run: _Run, host: Host, doc: specfile.DomainDocument) -> None:
    """Ensure one domain on its host (unless a network or pool it uses is missing)."""
    spec, opts = doc.spec, run.opts
    uses = {f"network {n}" for n in networks_of(spec)} | {f"pool {p}" for p in pools_of(spec)}
    uses |= {f"volume {d.pool}/{d.volume_name}" for d in spec.disks if d.pool and not d.format}
    blocked = sorted(uses & set(run.missing))
    if blocked:
        _not_ensured(run, host, doc, blocked)
        return
    verb = "checking" if opts.check else "ensuring"
    record = Done("domain", spec.name, host.uri, str(doc.location), "ok")
    result = ensure_and_report(
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
        run.outcome,
        progress=f"{verb} {spec.name} is {opts.state.value} on {host.uri}",
    )
    waits = opts.ready and not opts.check and opts.state is State.RUNNING
    if waits and result is not None and result.domain is not None:
        _wait_ready(run, result.domain, doc, record)


def _wait_ready(run: _Run, dom: Domain, doc: specfile.DomainDocument, record: Done) -> None:
    """``--ready``: wait for the running domain's probe; a failure is the record's error."""
    from hvlib.guest.ready import Ready

    opts, outcome = run.opts, run.outcome
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
    run: _Run, host: Host, doc: specfile.DomainDocument, blocked: Sequence[str]
) -> None:
    """Say why a domain is left alone: what it uses failed, or (--check) is not there yet."""
    record = Done("domain", doc.spec.name, host.uri, str(doc.location), "failed")
    failed = [b for b in blocked if run.missing[b]]
    if failed:
        line = f"hvlib: error: {doc.spec.name} ({doc.location}): {', '.join(failed)} failed above"
        run.outcome.error(line, record)
        return
    what = ", ".join(blocked)
    tail = f"(--check: nothing changed; {host.uri})"
    run.outcome.say(f"{doc.spec.name}: not checked: up creates {what} first {tail}")
    record.outcome = "not-checked"
    run.outcome.records.append(record)
    run.outcome.pending = True


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
