"""``hvlib up``'s report: the options each document is ensured with, one ensure run and
printed (its changes, pending changes, the ``--check`` diff and a summary line), and the
outcome of the whole run (its exit status and the ``--json`` records)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hvlib import specfile
from hvlib.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PENDING,
    NEEDS,
    R,
    change_json,
    fmt_change,
    forced_line,
    note,
    run_with_progress,
    say,
    still_running,
)
from hvlib.enums import State
from hvlib.errors import HvlibError, SpecError, WaitTimeout

if TYPE_CHECKING:
    from hvlib.model.plan import ChangeReport
    from hvlib.virt.host import Host


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


def ensure_and_report(
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
