"""What every ``hvlib`` command shares: exit statuses, output, options, hosts, the group."""

from __future__ import annotations

import enum
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from hvlib.enums import State, VirtType
from hvlib.errors import HvlibError, SpecError

if TYPE_CHECKING:
    from hvlib.model.plan import Change, ChangeReport
    from hvlib.virt.domain import Domain
    from hvlib.virt.host import Host


T = TypeVar("T")
R = TypeVar("R", bound="ChangeReport")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PENDING = 0, 1, 2, 3
EXIT_EXEC_TIMEOUT, EXIT_EXEC_CANNOT_RUN = 124, 125
PROGRESS_EVERY = 5.0
"""Seconds between progress lines when stderr is not a terminal (CI logs)."""
DRIVERS = {
    VirtType.KVM: ("qemu",),
    VirtType.QEMU: ("qemu",),
    VirtType.XEN_PV: ("xen", "libxl"),
    VirtType.XEN_PVH: ("xen", "libxl"),
    VirtType.XEN_HVM: ("xen", "libxl"),
    VirtType.LXC: ("lxc",),
}
NEEDS = {"restart": "--allow-restart", "recreate": "--allow-recreate"}
STATES = {"running": State.RUNNING, "shut-off": State.SHUT_OFF, "paused": State.PAUSED}


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


def still_running(name: str, timeout: float) -> str:
    """The one line for a guest that did not shut down by the deadline of a command run
    without --force (it is left running)."""
    return (
        f"{name} did not shut down within {timeout:g} s and is still running "
        "(pass --force to power it off at the deadline)"
    )


def forced_line(name: str, timeout: float) -> str:
    """What a forced stop is always printed as."""
    return f"{name}: FORCED: powered off at the deadline (not shut down within {timeout:g} s)"


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
        mark, how = "!", f"pending: needs {NEEDS.get(how, how)}"
    return f"{mark} {change.field}: {what}  [{how}]"


# -- numeric options: one validated type ----------------------------------------------------

SECONDS_MAX = 365 * 24 * 3600
"""The longest time any option may name (a year): longer is a typo, and Python's waits
refuse timeouts past ``threading.TIMEOUT_MAX`` (an OverflowError, not an answer)."""


if TYPE_CHECKING:
    _NumberBase = click.ParamType[float]  # generic in click >= 8.2 only
else:
    _NumberBase = click.ParamType


class Number(_NumberBase):
    """A finite int or float from ``low`` to ``high``: every numeric option of every command
    (timeouts, intervals, counts, sizes, workers) is one of these, so inf, nan, a negative or
    a huge value is bad input (exit 2, one line) before the command runs. With
    ``above_low`` the bound ``low`` itself is out of range (a limit that must be positive)."""

    def __init__(
        self,
        kind: type[int] | type[float],
        low: float,
        high: float,
        unit: str,
        *,
        above_low: bool = False,
    ) -> None:
        self.kind, self.low, self.high, self.unit = kind, low, high, unit
        self.above_low = above_low
        self.name = unit

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self.unit.upper()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = self._parse(value, param, ctx)
        low_ok = number > self.low if self.above_low else number >= self.low
        if not math.isfinite(number) or not low_ok or number > self.high:
            self.fail(f"{value!r} is not {self.describe()}", param, ctx)
        return number

    def _parse(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            return value
        try:
            return self.kind(str(value))
        except (ValueError, OverflowError):
            self.fail(f"{value!r} is not {self.describe()}", param, ctx)

    def describe(self) -> str:
        what = "a whole number" if self.kind is int else "a finite number"
        high = _plain(self.high)
        if self.above_low:
            return f"{what} of {self.unit} above {_plain(self.low)} and at most {high}"
        return f"{what} of {self.unit} from {_plain(self.low)} to {high}"


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


SECONDS = Number(float, 0, SECONDS_MAX, "seconds")
"""Timeouts and waits: a finite number of seconds, 0 to :data:`SECONDS_MAX`."""
POSITIVE_SECONDS = Number(float, 0, SECONDS_MAX, "seconds", above_low=True)
"""A limit that must leave some time: more than 0 seconds, up to :data:`SECONDS_MAX`."""


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


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
"""What an option (``click.option(...)``) is: it decorates a command's function."""


_uri_option = click.option(
    "--uri",
    "uris",
    multiple=True,
    envvar="HVLIB_URI",
    metavar="URI",
    help="libvirt URI of a host ($HVLIB_URI). Repeat for several hosts.",
)
_netns_option = click.option(
    "--netns",
    envvar="HVLIB_NETNS",
    metavar="NAME",
    help="Network namespace (ip netns) where the host's guests live: SSH and address "
    "probes are made from inside it ($HVLIB_NETNS).",
)

READY_WORDS = ("ssh", "address", "cloud-init", "systemd")
"""The words of ``--ready`` (:meth:`hvlib.Ready.by_word`)."""


def ready_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--ready WORD``: which readiness probe a wait uses."""
    return click.option("--ready", "ready", type=click.Choice(READY_WORDS), default=None, help=help)


def hosts_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--uri`` (repeatable: ``uris``, default ``$HVLIB_URI``) and ``--netns`` (``netns``,
    default ``$HVLIB_NETNS``): the hosts a command works on, and where their guests live."""
    return _uri_option(_netns_option(fn))


def timeout_option(help: str, default: float | None = None) -> Decorator:
    """``--timeout`` in seconds. Without ``default``: a limit that must leave some time, none
    when not given; with one: 0 seconds or more, the default shown in --help."""
    if default is None:
        return click.option("--timeout", type=POSITIVE_SECONDS, default=None, help=help)
    return click.option("--timeout", type=SECONDS, default=default, show_default=True, help=help)


json_option = click.option(
    "--json", "as_json", is_flag=True, help="A JSON list on stdout, for machines."
)
"""``--json``: the command's outcome as a JSON list on stdout (``as_json``)."""


def uri_list(uris: Sequence[str] | str | None) -> list[str]:
    """The hosts' URIs, in order, once each, every one checked by
    :func:`hvlib.model.uri.check_uri` before any is opened.

    Raises:
        Exit: no URI (2).
        SpecError: a URI was refused (a risky option, a malformed URI): exit 2.
    """
    from hvlib.model.uri import check_uri

    if isinstance(uris, str):
        uris = uris.split()
    found = list(dict.fromkeys(u for u in uris or () if u))  # in order, once each
    if not found:
        raise Exit(EXIT_BAD_INPUT, "hvlib: no host: pass --uri URI or set HVLIB_URI")
    for uri in found:
        check_uri(uri)
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
        raise Exit(EXIT_FAILED, f"hvlib: {name}: no such domain on {hostnames(hs)}")
    if len(found) > 1:
        where = ", ".join(d.host.uri for d in found)
        raise Exit(
            EXIT_BAD_INPUT,
            f"hvlib: {name} exists on several hosts ({where}): pass the one --uri you mean",
        )
    return found[0]


def hostnames(hs: Sequence[Host]) -> str:
    return ", ".join(h.uri for h in hs)


# -- the group -----------------------------------------------------------------------------


class Group(click.Group):
    """Turns hvlib's exceptions, and click's usage errors (a bad option value, a missing
    argument, an unknown command), into one stderr line and the exit status of the table."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            _usage_line(ctx, e)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            _usage_line(ctx, e)
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


_HELP_SHOWN = getattr(click.exceptions, "NoArgsIsHelpError", ())
"""click >= 8.2: ``hvlib`` alone shows the help (exit 2); that is no error line."""


def _usage_line(ctx: click.Context, err: click.UsageError) -> NoReturn:
    """Print ``err`` as one line naming where help is, and exit 2 (``hvlib`` alone: the
    help, as click shows it)."""
    if isinstance(err, _HELP_SHOWN):
        raise err
    where = err.ctx.command_path if err.ctx is not None else ctx.command_path
    message = " ".join(err.format_message().split())
    note(f"hvlib: {message} (see '{where} --help')")
    ctx.exit(EXIT_BAD_INPUT)


def json_value(value: Any) -> Any:
    """``value`` as JSON can hold it: enums by value, sequences as lists, others as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return json_value(value.value)
    if isinstance(value, tuple | list):
        return [json_value(v) for v in value]
    return str(value)


def change_json(change: Change) -> dict[str, Any]:
    """One change as ``up --json`` lists it."""
    return {
        "field": change.field,
        "before": json_value(change.before),
        "after": json_value(change.after),
        "how": change.how.value,
    }


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@verbose_option
def cli() -> None:
    """hvlib: one Domain API over KVM, QEMU, Xen PV/PVH/HVM and LXC, through libvirt.

    Exit status: 0 done / as declared, 1 failure, 2 bad input, 3 changes pending
    (up --check drift, or changes that need --allow-restart/--allow-recreate).
    """
