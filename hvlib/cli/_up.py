"""``hvlib up``: networks, pools, volumes, then domains, from spec files (``--check``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
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


def _up_network(
    host: Host,
    doc: specfile.NetworkDocument,
    opts: UpOptions,
    outcome: Outcome,
    missing: dict[str, bool],
) -> None:
    """Ensure one network; note in ``missing`` when it failed or (--check) is not there yet."""
    result = ensure_and_report(
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
    result = ensure_and_report(
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
    result = ensure_and_report(
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
    uses = {f"network {n}" for n in networks_of(spec)} | {f"pool {p}" for p in pools_of(spec)}
    uses |= {f"volume {d.pool}/{d.volume_name}" for d in spec.disks if d.pool and not d.format}
    blocked = sorted(uses & set(missing))
    if blocked:
        _not_ensured(host, doc, blocked, missing, outcome)
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
