"""The ``hvlib`` command line, for people and CI runners (``python -m hvlib``, extra ``cli``).

Commands: ``up`` (ensure the domains of spec files, :mod:`hvlib.specfile`), ``down``, ``rm``,
``ls``, ``exec``, ``console``, ``render`` and ``demo``. Every command is a thin layer over
hvlib's public API: parse arguments, call the library, print what it did.

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
every document to a host and checks its networks and pools first), send anything to a
guest's console, read stdin unless asked (``exec --stdin``), or import libvirt itself.
"""

from __future__ import annotations

import json
import logging
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
    from hvlib.ensure import Change, EnsureResult
    from hvlib.host import Host

T = TypeVar("T")

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
    help="The run state every domain should be in.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Show what would change (and the XML diff); change nothing. Exit 3 if anything would.",
)
@click.option(
    "--allow-restart",
    is_flag=True,
    help="Restart running guests whose change "
    "needs it (else it waits for their next boot and up exits 3).",
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
    """Make the hosts hold the domains the spec FILES describe (create, change, start).

    With several --uri, each domain goes to the host whose driver fits its type
    (qemu:// for kvm and qemu, lxc:// for lxc, xen:// for xen-pv and xen-hvm).
    Nothing is changed unless every file is valid.
    """
    docs = _load_domains(files)
    routed = _route(docs, _uris(uris))
    with hosts(sorted({u for u, _ in routed}), netns) as hs:
        by_uri = {h.uri: h for h in hs}
        plan = [(by_uri[u], doc) for u, doc in routed]
        for host, doc in plan:
            _check_host_refs(host, doc)
        opts = UpOptions(_STATES[state], check, allow_restart, allow_recreate, timeout)
        outcome = Outcome()
        for host, doc in plan:
            _up_one(host, doc, opts, outcome)
    raise Exit(outcome.status)


def _load_domains(files: Sequence[str]) -> list[specfile.DomainDocument]:
    """Every domain document of ``files``.

    Raises:
        SpecFileError: a file is invalid. Exit(2): a network or volume document (no API yet).
    """
    loaded = specfile.load_all(files)
    resources = [r for sf in loaded for r in sf.resources]
    for r in resources:
        note(
            f"hvlib: {r.location}: kind: {r.kind}: not supported yet (hvlib has no "
            f"{r.kind} API); only kind: domain documents can be used"
        )
    if resources:
        raise Exit(EXIT_BAD_INPUT)
    return [doc for sf in loaded for doc in sf.domains]


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


def _check_host_refs(host: Host, doc: specfile.DomainDocument) -> None:
    """The networks and pools ``doc`` names exist on ``host`` (before anything changes).

    Raises:
        SpecFileError: one does not (with the line that names it).
    """
    try:
        host.domains.check_host_refs(doc.spec)
    except SpecError as e:
        raise doc.error(e) from None


def _up_one(host: Host, doc: specfile.DomainDocument, opts: UpOptions, outcome: Outcome) -> None:
    """Ensure one document on its host; print what changed; note the outcome."""
    spec = doc.spec
    verb = "checking" if opts.check else "ensuring"
    label = f"{verb} {spec.name} is {opts.state.value} on {host.uri}"
    try:
        result, took = run_with_progress(
            label,
            lambda: host.domains.ensure(
                spec,
                opts.state,
                check=opts.check,
                allow_restart=opts.allow_restart,
                allow_recreate=opts.allow_recreate,
                shutdown_timeout=opts.timeout,
            ),
        )
    except SpecError as e:
        note(f"hvlib: {doc.error(e)}")
        outcome.bad_input = True
        return
    except HvlibError as e:
        note(f"hvlib: error: {spec.name} ({doc.location}): {e}")
        outcome.failed = True
        return
    _report(spec.name, host.uri, result, took, opts.check, outcome)


def _report(
    name: str, uri: str, result: EnsureResult, took: float, check: bool, outcome: Outcome
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


def comparable(result: EnsureResult) -> EnsureResult:
    """``result`` with both XML documents serialised alike (libvirt writes ``'`` where lxml
    writes ``"``), so that its diff shows only what differs."""
    from hvlib.domxml import DomainXML

    def same_form(xml: str) -> str:
        return DomainXML.from_xml(xml).to_xml() if xml.strip() else ""

    return replace(
        result, before_xml=same_form(result.before_xml), after_xml=same_form(result.after_xml)
    )


def _summary(name: str, uri: str, result: EnsureResult, took: float, check: bool) -> str:
    n, p = len(result.changes), len(result.pending)
    parts = [f"{n} change(s) {'would be applied' if check else 'applied'}"] if n else []
    if p:
        needs = sorted({_NEEDS[c.how.value] for c in result.pending if c.how.value in _NEEDS})
        parts.append(f"{p} pending (need {' and '.join(needs) or 'a restart'})")
    tail = "--check: nothing changed" if check else f"{took:.2f} s"
    return f"{name}: {'; '.join(parts) or 'no changes'} ({tail}; {uri})"


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
    help="Also delete the storage volumes its disks use (not supported yet).",
)
@verbose_option
def rm(
    names: tuple[str, ...], uris: tuple[str, ...], netns: str | None, force: bool, volumes: bool
) -> None:
    """Remove the definitions of the domains NAMES (a running one needs --force).

    With several --uri, a name is removed from every host that has it.
    """
    if volumes:
        raise Exit(
            EXIT_BAD_INPUT,
            "hvlib: rm --volumes: not supported yet (hvlib has no volume API); nothing was removed",
        )
    failed = False
    with hosts(_uris(uris), netns) as hs:
        for name in names:
            doms = find_all(hs, name)
            if not doms:
                say(f"{name}: not found on {_hostnames(hs)} (nothing to do)")
            for dom in doms:
                failed |= not _rm_one(dom, force)
    raise Exit(EXIT_FAILED if failed else EXIT_OK)


def _rm_one(dom: Domain, force: bool) -> bool:
    if dom.state.is_active:
        if not force:
            note(
                f"hvlib: error: {dom.name} is {dom.state.value} on {dom.host.uri}: "
                "run hvlib down first, or pass --force"
            )
            return False
        dom.destroy()
    dom.undefine()
    say(f"{dom.name}: removed ({dom.host.uri})")
    return True


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
    """Print the libvirt XML of the domains the spec FILES describe (no host needed)."""
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
