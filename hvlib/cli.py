"""The ``hvlib`` command line, for people and CI runners (``python -m hvlib``, extra ``cli``).

Commands: ``up`` (ensure the networks, volumes and domains of spec files,
:mod:`hvlib.specfile`), ``down``, ``rm`` (``--volumes``: also the storage volumes of the
domain's disks), ``ls``, ``exec``, ``console``, ``render`` and ``demo``. Every command is a
thin layer over hvlib's public API: parse arguments, call the library, print what it did.
``up`` reports a pool's or a volume's changes from the library's plans (``plan_dir``,
``Volumes.plan``: reads only), so that ``--check`` says the same as a real run.

Exit status (the same for every command; ``exec`` passes its command's status through)::

    0  all is as declared / done
    1  something failed (libvirt, a guest, a timeout)
    2  bad input: a spec file (FILE:LINE: FIELD: RULE), an option, or something not supported
    3  changes are pending: ``up --check`` found drift, or ``up`` left changes that need
       --allow-restart / --allow-recreate
    124, 125  ``exec`` only: the command timed out / hvlib could not run it (as env(1) does)

Results go to stdout, progress lines and errors to stderr. Hosts are named with ``--uri``
(repeatable where a fleet makes sense) or ``HVLIB_URI`` (space-separated).

Must not: define anything before every input is checked (``up`` parses all files, routes
every document to a host and checks the networks, pools and volumes they name first), delete
a file that is not a libvirt volume or a volume another domain uses, send anything to a
guest's console, read stdin unless asked (``exec --stdin``), or import libvirt itself.
"""

from __future__ import annotations

import json
import logging
import posixpath
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from hvlib import specfile
from hvlib.enums import State, VirtType
from hvlib.errors import HvlibError, SpecError, WaitTimeout

if TYPE_CHECKING:
    from hvlib.domain import Domain
    from hvlib.domxml import DiskXML
    from hvlib.ensure import Change, ChangeReport
    from hvlib.host import Host
    from hvlib.spec import DomainSpec
    from hvlib.storage import Volume

T = TypeVar("T")
R = TypeVar("R", bound="ChangeReport")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PENDING = 0, 1, 2, 3
EXIT_EXEC_TIMEOUT, EXIT_EXEC_CANNOT_RUN = 124, 125
PROGRESS_EVERY = 5.0
"""Seconds between progress lines when stderr is not a terminal (CI logs)."""
_DRIVER = {
    VirtType.KVM: ("qemu",),
    VirtType.QEMU: ("qemu",),
    VirtType.XEN_PV: ("xen", "libxl"),
    VirtType.XEN_HVM: ("xen", "libxl"),
    VirtType.LXC: ("lxc",),
}
_NEEDS = {"restart": "--allow-restart", "recreate": "--allow-recreate"}
_STATES = {"running": State.RUNNING, "shut-off": State.SHUT_OFF, "paused": State.PAUSED}


class Exit(Exception):
    """Stop the command with ``status`` after printing ``message`` (if any) on stderr."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- output --------------------------------------------------------------------------------


def say(text: str = "") -> None:
    """One line of results on stdout."""
    click.echo(text)


def note(text: str) -> None:
    """One line of progress or diagnostics on stderr."""
    click.echo(text, err=True)


def run_with_progress(label: str, fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` on a worker thread; meanwhile show ``label`` with the elapsed time on
    stderr (a live line on a terminal, a line every PROGRESS_EVERY s otherwise).

    Returns ``fn``'s result and its duration. Raises whatever ``fn`` raised.
    """
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    started = time.monotonic()
    worker = threading.Thread(target=work, name="hvlib-cli-work", daemon=True)
    worker.start()
    if sys.stderr.isatty():
        _live_progress(worker, label, started)
    else:
        _logged_progress(worker, label, started)
    elapsed = time.monotonic() - started
    if "error" in box:
        raise box["error"]
    return box["value"], elapsed


def _live_progress(worker: threading.Thread, label: str, started: float) -> None:
    from rich.console import Console

    with Console(stderr=True).status(label) as status:
        while worker.is_alive():
            worker.join(0.1)
            status.update(f"{label} ({time.monotonic() - started:.1f} s)")


def _logged_progress(worker: threading.Thread, label: str, started: float) -> None:
    while worker.is_alive():
        worker.join(PROGRESS_EVERY)
        if worker.is_alive():
            note(f"  ... {label} ({time.monotonic() - started:.0f} s)")


def fmt_value(value: Any) -> str:
    """A change's before/after value, short and readable."""
    if value is None:
        return "(none)"
    if isinstance(value, State | VirtType):
        return str(value.value)
    if isinstance(value, tuple | list):
        parts = [fmt_value(v) if not isinstance(v, bool) else "readonly" for v in value if v]
        return " ".join(parts) or "(empty)"
    return str(value)


def fmt_change(change: Change, *, pending: bool = False) -> str:
    """``~ memory_mib: 256 -> 512  [live]``; ``+`` added, ``-`` removed, ``!`` not applied."""
    mark = "+" if change.before is None else "-" if change.after is None else "~"
    what = f"{fmt_value(change.before)} -> {fmt_value(change.after)}"
    if change.before is None:
        what = fmt_value(change.after)
    elif change.after is None:
        what = fmt_value(change.before)
    how = change.how.value
    if pending:
        mark, how = "!", f"pending: needs {_NEEDS.get(how, how)}"
    return f"{mark} {change.field}: {what}  [{how}]"


# -- options shared by commands ------------------------------------------------------------


def _set_verbose(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        logging.getLogger().setLevel(logging.DEBUG)


verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    expose_value=False,
    callback=_set_verbose,
    help="Debug logs on stderr.",
)


def uri_option(multiple: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--uri`` (repeatable when ``multiple``), defaulting to ``$HVLIB_URI``."""
    return click.option(
        "--uri",
        "uris",
        multiple=multiple,
        envvar="HVLIB_URI",
        metavar="URI",
        help="libvirt URI of a host ($HVLIB_URI)"
        + (". Repeat for several hosts." if multiple else "."),
    )


netns_option = click.option(
    "--netns",
    envvar="HVLIB_NETNS",
    metavar="NAME",
    help="Network namespace (ip netns) where the host's guests live: SSH and address "
    "probes are made from inside it ($HVLIB_NETNS).",
)


def _uris(uris: Sequence[str] | str | None) -> list[str]:
    if isinstance(uris, str):
        uris = uris.split()
    found = list(dict.fromkeys(u for u in uris or () if u))  # in order, once each
    if not found:
        raise Exit(EXIT_BAD_INPUT, "hvlib: no host: pass --uri URI or set HVLIB_URI")
    return found


@contextmanager
def hosts(uris: Sequence[str], netns: str | None) -> Iterator[list[Host]]:
    """Connections to every URI, closed on exit.

    Raises:
        HostError: a host cannot be reached.
    """
    import hvlib

    with ExitStack() as stack:
        yield [stack.enter_context(hvlib.connect(u, netns=netns)) for u in uris]


def find_all(hs: Sequence[Host], name: str) -> list[Domain]:
    """The domain ``name`` on each host that has one."""
    return [d for d in (h.domains.find(name) for h in hs) if d is not None]


def find_one(hs: Sequence[Host], name: str) -> Domain:
    """The domain ``name`` on exactly one of the hosts.

    Raises:
        Exit: none has it (1), or several do (2).
    """
    found = find_all(hs, name)
    if not found:
        raise Exit(EXIT_FAILED, f"hvlib: {name}: no such domain on {_hostnames(hs)}")
    if len(found) > 1:
        where = ", ".join(d.host.uri for d in found)
        raise Exit(
            EXIT_BAD_INPUT,
            f"hvlib: {name} exists on several hosts ({where}): pass the one --uri you mean",
        )
    return found[0]


def _hostnames(hs: Sequence[Host]) -> str:
    return ", ".join(h.uri for h in hs)


# -- the group -----------------------------------------------------------------------------


class Group(click.Group):
    """Turns hvlib's exceptions into one stderr line and the exit status of the table."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exit as e:
            if e.message:
                note(e.message)
            ctx.exit(e.status)
        except SpecError as e:
            note(f"hvlib: {e}")
            ctx.exit(EXIT_BAD_INPUT)
        except HvlibError as e:
            note(f"hvlib: error: {e}")
            ctx.exit(EXIT_FAILED)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@verbose_option
def cli() -> None:
    """hvlib: one Domain API over KVM, QEMU, Xen PV/HVM and LXC, through libvirt.

    Exit status: 0 done / as declared, 1 failure, 2 bad input, 3 changes pending
    (up --check drift, or changes that need --allow-restart/--allow-recreate).
    """


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
    type=click.Choice(list(_STATES)),
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
    (qemu:// for kvm and qemu, lxc:// for lxc, xen:// for xen-pv and xen-hvm); a network or
    volume goes to the host of the first domain (in file order) that uses it, and one that
    no domain uses to the first qemu:// (or test://) --uri, else to the first --uri.
    Nothing is changed unless every file is valid and every network, pool and backing
    volume it names exists or is declared in the files.
    """
    plan = _plan(specfile.load_all(files), _uris(uris))
    with hosts(plan.uris, netns) as hs:
        by_uri = {h.uri: h for h in hs}
        _check_host_refs(plan, by_uri)
        opts = UpOptions(_STATES[state], check, allow_restart, allow_recreate, timeout)
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
        drivers = (*_DRIVER[doc.spec.virt], "test")
        fits = [u for u in uris if _scheme(u) in drivers]
        if len(fits) != 1:
            why = "no --uri" if not fits else f"several --uri ({', '.join(fits)})"
            raise specfile.SpecFileError(
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
    from hvlib.xmlmodel import parse, tostring

    def same_form(xml: str) -> str:
        return tostring(parse(xml)) if xml.strip() else ""

    return replace(
        result, before_xml=same_form(result.before_xml), after_xml=same_form(result.after_xml)
    )


def _summary(name: str, uri: str, result: ChangeReport, took: float, check: bool) -> str:
    n, p = len(result.changes), len(result.pending)
    parts = [f"{n} change(s) {'would be applied' if check else 'applied'}"] if n else []
    if p:
        needs = sorted({_NEEDS[c.how.value] for c in result.pending if c.how.value in _NEEDS})
        parts.append(f"{p} pending (need {' and '.join(needs) or 'a restart'})")
    tail = "--check: nothing changed" if check else f"{took:.2f} s"
    return f"{name}: {'; '.join(parts) or 'no changes'} ({tail}; {uri})"


def _load_domains(files: Sequence[str]) -> list[specfile.DomainDocument]:
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
    from hvlib.ensure import ChangeReport

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
    from hvlib.ensure import ChangeReport

    changes = _volume_changes(host, doc)
    if changes and not check:
        host.volumes.ensure(doc.pool, doc.name, **doc.ensure_args())
    return ChangeReport(bool(changes), changes)


def _volume_changes(host: Host, doc: specfile.VolumeDocument) -> list[Change]:
    """``host.volumes.plan`` of ``doc``; a volume whose pool or backing volume ``up`` has
    not made yet (``--check``) is simply new."""
    from hvlib.ensure import Change, ChangeHow
    from hvlib.storage import describe_volume

    pool = host.pools.find(doc.pool)
    if pool is None or host.volumes.find(pool, doc.name) is None:
        what = describe_volume(doc.image_format, doc.backing, doc.size_mib)
        return [Change("volume", None, what, ChangeHow.STATE)]
    return host.volumes.plan(pool, doc.name, **doc.ensure_args())


# -- down, rm ------------------------------------------------------------------------------


@cli.command()
@click.argument("names", nargs=-1, required=True)
@uri_option(multiple=True)
@netns_option
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds the guest gets to shut down after the request.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Power off whatever is still running at the deadline (--timeout 0 --force: at once).",
)
@verbose_option
def down(
    names: tuple[str, ...], uris: tuple[str, ...], netns: str | None, timeout: float, force: bool
) -> None:
    """Shut the domains NAMES down gracefully (ACPI, or SIGTERM to a container's init).

    With several --uri, a name is shut down on every host that has it. A domain that is
    absent or already off is left as it is.
    """
    failed = False
    with hosts(_uris(uris), netns) as hs:
        for name in names:
            doms = find_all(hs, name)
            if not doms:
                say(f"{name}: not found on {_hostnames(hs)} (nothing to do)")
            for dom in doms:
                failed |= not _down_one(dom, timeout, force)
    raise Exit(EXIT_FAILED if failed else EXIT_OK)


def _down_one(dom: Domain, timeout: float, force: bool) -> bool:
    if not dom.state.is_active:
        say(f"{dom.name}: already {dom.state.value} ({dom.host.uri})")
        return True
    try:
        res, _ = run_with_progress(
            f"shutting {dom.name} down", lambda: dom.shutdown(timeout, force=force)
        )
    except WaitTimeout:
        note(
            f"hvlib: error: {dom.name} did not shut down within {timeout:g} s and is still "
            "running (pass --force to power it off at the deadline)"
        )
        return False
    how = "shut down gracefully" if res.graceful else "powered off (forced at the deadline)"
    say(f"{dom.name}: {how} in {res.elapsed:.2f} s ({dom.host.uri})")
    return True


@cli.command()
@click.argument("names", nargs=-1, required=True)
@uri_option(multiple=True)
@netns_option
@click.option("--force", is_flag=True, help="Power off a running domain first.")
@click.option(
    "--volumes",
    is_flag=True,
    help="Also delete the storage volumes its disks use: volume disks, and file disks whose "
    "path is a volume of one of the host's pools (cdroms and plain files are kept). A domain "
    "with a volume that another domain of the host also uses is not removed at all (exit 1).",
)
@verbose_option
def rm(
    names: tuple[str, ...], uris: tuple[str, ...], netns: str | None, force: bool, volumes: bool
) -> None:
    """Remove the definitions of the domains NAMES (a running one needs --force).

    With several --uri, a name is removed from every host that has it.
    """
    failed = False
    with hosts(_uris(uris), netns) as hs:
        for name in names:
            doms = find_all(hs, name)
            if not doms:
                say(f"{name}: not found on {_hostnames(hs)} (nothing to do)")
            for dom in doms:
                failed |= not _rm_one(dom, force, volumes)
    raise Exit(EXIT_FAILED if failed else EXIT_OK)


def _rm_one(dom: Domain, force: bool, volumes: bool) -> bool:
    """Undefine ``dom`` (destroyed first with ``force``), then delete its volumes when asked.

    Returns False when something was refused or failed (reported on stderr).
    """
    if dom.state.is_active and not force:
        note(
            f"hvlib: error: {dom.name} is {dom.state.value} on {dom.host.uri}: "
            "run hvlib down first, or pass --force"
        )
        return False
    doomed, kept = _disk_volumes(dom) if volumes else ([], [])
    shared = _shared(dom, doomed)
    if shared:
        note(
            f"hvlib: error: {dom.name} not removed ({dom.host.uri}): {shared}; nothing of "
            f"{dom.name} was deleted (remove the other domain first, or rm without --volumes)"
        )
        return False
    if dom.state.is_active:
        dom.destroy()
    dom.undefine()
    say(f"{dom.name}: removed ({dom.host.uri})")
    for what in kept:
        say(f"{dom.name}: kept {what}")
    return _delete_volumes(dom, doomed)


def _disk_volumes(dom: Domain) -> tuple[list[Volume], list[str]]:
    """The volumes ``dom``'s disks use (cdroms aside), each once; and what of its disks is
    kept, with why."""
    doomed: dict[tuple[str, str], Volume] = {}
    kept: list[str] = []
    for disk in _disks(dom):
        if disk.device == "cdrom":
            continue
        vol = _volume_of_disk(dom.host, disk)
        if vol is not None:
            doomed.setdefault((vol.pool.name, vol.name), vol)
        elif disk.kind == "file" and disk.source_file:
            kept.append(f"{disk.source_file}: not a libvirt volume")
        elif disk.kind == "volume":
            kept.append(f"volume {disk.source_pool}/{disk.source_volume}: not found")
    return list(doomed.values()), sorted(set(kept))


def _disks(dom: Domain) -> list[DiskXML]:
    """The disks of ``dom``'s persistent definition and, while it runs, of its live one
    (none when the domain is gone)."""
    from hvlib.errors import DomainNotFound

    try:
        disks = list(dom.xml_doc(inactive=True).disks)
        if dom.state.is_active:
            disks += dom.xml_doc().disks
    except DomainNotFound:
        return []
    return disks


def _volume_of_disk(host: Host, disk: DiskXML) -> Volume | None:
    if disk.kind == "volume" and disk.source_pool and disk.source_volume:
        pool = host.pools.find(disk.source_pool)
        return None if pool is None else host.volumes.find(pool, disk.source_volume)
    if disk.kind == "file" and disk.source_file:
        return host.volumes.find_by_path(disk.source_file)
    return None


def _shared(dom: Domain, vols: Sequence[Volume]) -> str:
    """Which of ``vols`` other domains of ``dom``'s host use, and who ("" when none)."""
    if not vols:
        return ""
    others = [(o.name, _disks(o)) for o in dom.host.domains.list() if o.uuid != dom.uuid]
    found = []
    for vol in vols:
        key, path = (vol.pool.name, vol.name), posixpath.normpath(vol.path)
        users = [name for name, disks in others if any(_uses(d, key, path) for d in disks)]
        if users:
            found.append(f"volume {vol.pool.name}/{vol.name} is also used by {', '.join(users)}")
    return "; ".join(found)


def _uses(disk: DiskXML, key: tuple[str, str], path: str) -> bool:
    """Whether ``disk`` is the volume ``key`` (pool, name), or the file at its ``path``."""
    if disk.kind == "volume":
        return (disk.source_pool, disk.source_volume) == key
    source = disk.source_file
    return disk.kind == "file" and source is not None and posixpath.normpath(source) == path


def _delete_volumes(dom: Domain, vols: Sequence[Volume]) -> bool:
    """Delete ``vols`` (those with a backing image first: an overlay before its base); print
    each one deleted."""
    ok = True
    for vol in sorted(vols, key=lambda v: v.backing is None):
        try:
            vol.delete()
        except HvlibError as e:
            note(f"hvlib: error: {dom.name}: volume {vol.pool.name}/{vol.name}: {e}")
            ok = False
            continue
        say(f"{dom.name}: deleted volume {vol.pool.name}/{vol.name} ({dom.host.uri})")
    return ok


# -- ls ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One domain as ``ls`` shows it."""

    name: str
    uuid: str
    type: str
    state: str
    vcpus: int | None
    memory_mib: int | None
    addresses: dict[str, list[str]]
    host: str

    @property
    def ips(self) -> str:
        return ", ".join(a.split("/")[0] for addrs in self.addresses.values() for a in addrs)


@cli.command(name="ls")
@uri_option(multiple=True)
@netns_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for machines.")
@verbose_option
def ls(uris: tuple[str, ...], netns: str | None, as_json: bool) -> None:
    """List the domains of every host: name, type, state, vcpus, memory, addresses, host.

    A host that cannot be reached is reported on stderr; the others are still listed
    (exit 1).
    """
    import hvlib

    rows: list[Row] = []
    failed = False
    for uri in _uris(uris):
        try:
            with hvlib.connect(uri, netns=netns) as host:
                rows.extend(r for r in map(_row, host.domains.list()) if r is not None)
        except HvlibError as e:
            note(f"hvlib: error: {e}")
            failed = True
    rows.sort(key=lambda r: (r.host, r.name))
    if as_json:
        say(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        _table(rows)
    raise Exit(EXIT_FAILED if failed else EXIT_OK)


def _row(dom: Domain) -> Row | None:
    """``dom`` as a row (None if it vanished meanwhile)."""
    from hvlib.domain import virt_of
    from hvlib.errors import DomainNotFound

    try:
        state = dom.state
        doc = dom.xml_doc()
        found = dom.addresses() if state.is_active else {}
    except DomainNotFound:
        return None
    addrs = {mac: [str(a) for a in found[mac]] for mac in sorted(found)}
    memory_kib = doc.current_memory_kib or doc.memory_kib
    return Row(
        name=dom.name,
        uuid=dom.uuid,
        type=virt_of(doc).value,
        state=state.value,
        vcpus=doc.vcpu_current or doc.vcpu,
        memory_mib=None if memory_kib is None else memory_kib // 1024,
        addresses=addrs,
        host=dom.host.uri,
    )


def _table(rows: Sequence[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for head in ("NAME", "TYPE", "STATE", "VCPUS", "MEMORY", "ADDRESSES", "HOST"):
        table.add_column(head, justify="right" if head in ("VCPUS", "MEMORY") else "left")
    for r in rows:
        memory = "-" if r.memory_mib is None else f"{r.memory_mib} MiB"
        table.add_row(r.name, r.type, r.state, str(r.vcpus or "-"), memory, r.ips or "-", r.host)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        say(line.rstrip())


# -- exec, console -------------------------------------------------------------------------


@cli.command(name="exec")
@click.argument("name")
@click.argument("command", nargs=-1, required=True)
@uri_option(multiple=True)
@netns_option
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Kill the command after this many seconds (exit 124). Default: no limit.",
)
@click.option(
    "--wait",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="First wait up to this long for the guest to take commands (SSH answers, the "
    "container can be entered). Default: do not wait.",
)
@click.option(
    "--stdin",
    "feed_stdin",
    is_flag=True,
    help="Feed hvlib's stdin to the command (else its stdin is empty).",
)
@click.option(
    "--ssh-user",
    envvar="HVLIB_SSH_USER",
    default="root",
    show_default=True,
    help="VMs: the user to log in as ($HVLIB_SSH_USER).",
)
@click.option(
    "--ssh-key",
    envvar="HVLIB_SSH_KEY",
    type=click.Path(dir_okay=False),
    help="VMs: private key file ($HVLIB_SSH_KEY).",
)
@click.option(
    "--known-hosts",
    envvar="HVLIB_KNOWN_HOSTS",
    type=click.Path(dir_okay=False),
    help="VMs: known_hosts file holding the guest's host key ($HVLIB_KNOWN_HOSTS).",
)
@click.option(
    "--host-key",
    envvar="HVLIB_HOST_KEY",
    help="VMs: the guest's host public key line, pinned ($HVLIB_HOST_KEY).",
)
@verbose_option
def exec_(
    name: str,
    command: tuple[str, ...],
    uris: tuple[str, ...],
    netns: str | None,
    timeout: float | None,
    wait: float,
    feed_stdin: bool,
    **ssh: Any,
) -> None:
    """Run COMMAND in the domain NAME; its exit status becomes hvlib's.

    hvlib exec NAME -- CMD ARGS...   (no shell; use `-- sh -c '...'` for one)

    Containers (LXC) are entered directly; VMs are reached over SSH with a pinned host key
    (--ssh-key with --host-key or --known-hosts). Exit 124: timed out; 125: hvlib could not
    run it (no such domain, not running, unreachable, not ready within --wait).
    """
    from hvlib.access import CommandTimeout

    try:
        config = _ssh_config(**ssh)
        with hosts(_uris(uris), netns) as hs:
            dom = find_one(hs, name)
            _require_credentials(dom, config)
            if wait > 0:
                run_with_progress(
                    f"waiting for {name} to take commands",
                    lambda: dom.wait_ready(timeout=wait, ssh=config),
                )
            result = dom.exec(
                list(command),
                timeout=timeout,
                input=sys.stdin.buffer if feed_stdin else None,
                on_stdout=_writer(sys.stdout),
                on_stderr=_writer(sys.stderr),
                ssh=config,
            )
    except CommandTimeout as e:
        raise Exit(EXIT_EXEC_TIMEOUT, f"hvlib: {e}") from None
    except Exit as e:
        status = EXIT_EXEC_CANNOT_RUN if e.status == EXIT_FAILED else e.status
        raise Exit(status, e.message) from None
    except SpecError as e:
        raise Exit(EXIT_BAD_INPUT, f"hvlib: {e}") from None
    except HvlibError as e:
        raise Exit(EXIT_EXEC_CANNOT_RUN, f"hvlib: error: {e}") from None
    raise Exit(_exit_status(result.exit_status))


def _require_credentials(dom: Domain, config: Any) -> None:
    """VMs are reached over SSH: refuse early, with the options to use, when none is set.

    Raises:
        Exit(125): ``dom`` is a VM and no SSH credentials are known for it.
    """
    if dom.virt.is_container or config is not None or dom.ssh or dom.host.ssh:
        return
    raise Exit(
        EXIT_EXEC_CANNOT_RUN,
        f"hvlib: {dom.name} is a {dom.virt.value} VM, reached over SSH: pass --ssh-key and "
        "--host-key (or --known-hosts)",
    )


def _writer(stream: Any) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.buffer.write(data)
        stream.buffer.flush()

    return write


def _exit_status(status: int) -> int:
    """A command's status as a process exit status (a signal N as 128+N, like a shell)."""
    if status < 0:
        return 128 - status
    return min(status, 255)


def _ssh_config(
    ssh_user: str, ssh_key: str | None, known_hosts: str | None, host_key: str | None
) -> Any:
    """An SshConfig when any SSH option was given, else None (the host's default)."""
    if ssh_key is None and known_hosts is None and host_key is None:
        return None
    from hvlib.access import SshConfig

    return SshConfig(user=ssh_user, key=ssh_key, known_hosts=known_hosts, host_key=host_key)


@cli.command()
@click.argument("name")
@uri_option(multiple=True)
@netns_option
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Stop after this many seconds (default: until Ctrl-C or the console closes).",
)
@verbose_option
def console(name: str, uris: tuple[str, ...], netns: str | None, timeout: float | None) -> None:
    """Show the console of the domain NAME, read-only.

    Prints what hvlib captured if this process started the domain; otherwise follows the
    live console through libvirt until Ctrl-C, --timeout, or the guest stops. Nothing is
    ever typed into the console.
    """
    with hosts(_uris(uris), netns) as hs:
        dom = find_one(hs, name)
        if dom.console is not None:
            sys.stdout.buffer.write(dom.console_log())
            return
        _follow_console(dom, timeout)


def _follow_console(dom: Domain, timeout: float | None) -> None:
    """Copy the live console to stdout until it closes, ``timeout`` passes or Ctrl-C.

    Raises:
        InvalidState: the domain is not running.
        Exit(1): libvirt has no console stream for it (the test driver) or refused one.
    """
    from hvlib.console import ConsoleCapture
    from hvlib.errors import InvalidState

    if not dom.state.is_active:
        raise InvalidState(
            f"{dom.name} is {dom.state.value}: it has no live console",
            name=dom.name,
            state=dom.state,
        )
    capture = ConsoleCapture(dom.name, max_bytes=64 * 1024)
    capture.listeners.append(_writer(sys.stdout))
    try:
        capture.attach(dom.host.conn, dom.handle, force=False)
    except HvlibError as e:
        raise Exit(EXIT_FAILED, f"hvlib: error: {dom.name}: cannot open its console: {e}") from e
    note(f"(following the console of {dom.name}, read-only; Ctrl-C to stop)")
    try:
        with capture.cond:
            capture.cond.wait_for(lambda: capture.closed, timeout)
    except KeyboardInterrupt:
        pass
    finally:
        closed = capture.closed
        capture.close()
    if closed:
        note(f"(console of {dom.name} closed)")


# -- render, demo --------------------------------------------------------------------------


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--name", "only", metavar="NAME", help="Only the domain NAME.")
@verbose_option
def render(files: tuple[str, ...], only: str | None) -> None:
    """Print the libvirt XML of the domains the spec FILES describe (no host needed).

    Network and volume documents are checked too, but not printed.
    """
    import hvlib

    docs = [d for d in _load_domains(files) if only is None or d.spec.name == only]
    if not docs:
        raise Exit(EXIT_BAD_INPUT, f"hvlib: no domain named {only} in {', '.join(files)}")
    for doc in docs:
        if len(docs) > 1:
            say(f"<!-- {doc.location}: {doc.spec.name} -->")
        try:
            say(hvlib.render(doc.spec).rstrip("\n"))
        except SpecError as e:
            raise doc.error(e) from None


@cli.command()
@click.option(
    "--uri",
    envvar="HVLIB_URI",
    default=None,
    help="Use this libvirt instead of a sandboxed one (test:/// runs the lifecycle part only).",
)
@verbose_option
def demo(uri: str | None) -> None:
    """Boot a QEMU VM and an LXC container, use them, shut them down, remove them."""
    from hvlib import demo as demo_mod

    sys.exit(demo_mod.run(uri))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``hvlib`` console script and of ``python -m hvlib``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if hasattr(signal, "SIGPIPE"):  # `hvlib ls | head` ends quietly, like other tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    cli.main(args=list(argv) if argv is not None else None, prog_name="hvlib")
    sys.exit(EXIT_OK)
