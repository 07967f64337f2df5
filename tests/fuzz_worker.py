"""The judge of the spec-file fuzz (tests/test_fuzz_specfile.py), run in a child process.

:func:`run_isolated` writes nothing itself: it forks a child from a clean fork server (the
hvlib modules preloaded, no libvirt connection and no threads in it), which lowers its own
address-space limit to :data:`MEMORY_LIMIT` (``RLIMIT_AS``) and then feeds one spec file
through what ``hvlib render`` and ``hvlib up --check --uri test:///default`` run, in-process:
``specfile.load_all``, ``render_files`` (hvlib/cli/_render.py) and the two commands' click
entry points. The parent waits :data:`TIME_LIMIT` seconds, then kills it.

A verdict is ``(outcome, detail)``: outcome ``"ok"`` (every step ended as allowed), or
``"bad"`` with what went wrong (mode ``load``: ``"ok"`` or ``"refused"``, see
:func:`load_only`). Allowed: success, a SpecError whose message starts with
``FILE:LINE:`` (or ``FILE:LINE:COL:``), or "pending"; in the commands, exit 0 or 2 for
render and 0, 2 or 3 for ``up --check``, every ``hvlib:`` line on stderr naming FILE:LINE
when the exit is 2, and never a traceback. Anything else is bad: another exception (a
MemoryError under the limit too), exit 1, a line without FILE:LINE, a load error that the
commands do not report, or a child that dies or outlives its time.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import re
import resource
import traceback
from multiprocessing.connection import Connection
from typing import Any

MEMORY_LIMIT = 1 << 30
"""RLIMIT_AS of each child: 1 GiB of address space (libvirt and Python take ~250 MiB)."""
TIME_LIMIT = 10.0
"""Seconds one input may take, all steps together."""
URI = "test:///default"
PRELOAD = [
    "hvlib",
    "hvlib.cli",
    "hvlib.cli._render",
    "hvlib.cli._up",
    "hvlib.model.plan",
    "hvlib.virt.host",
    "hvlib.virt.network",
    "hvlib.render",
    "hvlib.specfile",
    "hvlib.virt.storage",
    "libvirt",
    "lxml.etree",
    "yaml",
    "tests.fuzz_worker",
]
Verdict = tuple[str, str]

_context: Any = None


def _ctx() -> Any:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def run_isolated(path: str, *, mode: str = "judge") -> Verdict:
    """The verdict on the spec file at ``path``, from a child under the limits."""
    ctx = _ctx()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(path, mode, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(TIME_LIMIT):
            return "bad", f"took more than {TIME_LIMIT} s"
        try:
            verdict: Verdict = parent.recv()
        except EOFError:
            proc.join(5)
            return "bad", f"the child died without a verdict (exit code {proc.exitcode})"
        return verdict
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()


def _child(path: str, mode: str, conn: Connection) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    try:
        verdict = {"allocate": allocate_past_the_limit, "load": load_only}.get(mode, judge)(path)
    except BaseException:  # the verdict: anything that escapes is what the fuzz looks for
        verdict = ("bad", traceback.format_exc())
    try:
        conn.send(verdict)
    finally:
        os._exit(0)  # no atexit handlers, no waiting on hvlib's event-loop thread


def allocate_past_the_limit(_path: str = "") -> Verdict:
    """Proof that the limit applies: 1.5 GiB cannot be had."""
    try:
        block = bytearray(3 * MEMORY_LIMIT // 2)
    except MemoryError:
        return "ok", "MemoryError"
    return "bad", f"allocated {len(block)} bytes under RLIMIT_AS"


def load_only(path: str) -> Verdict:
    """``specfile.load_all([path])`` alone: ``("ok", "")``, or ``("refused", JSON)`` of the
    SpecFileError's path, line, column, field, rule and message."""
    from hvlib import specfile
    from hvlib.errors import SpecFileError

    try:
        specfile.load_all([path])
    except SpecFileError as e:
        keys = ("path", "line", "column", "field", "rule")
        return "refused", json.dumps({**{k: getattr(e, k) for k in keys}, "message": str(e)})
    return "ok", ""


# -- the judge -----------------------------------------------------------------------------


def judge(path: str) -> Verdict:
    """Every step on ``path``; the first one that misbehaves is the verdict."""
    loaded = _library(path)
    if loaded.startswith("bad"):
        return "bad", loaded
    for argv, allowed in (
        (["render", path], {0, 2}),
        (["up", "--check", "--uri", URI, path], {0, 2, 3}),
    ):
        wrong = _command(argv, allowed, path, loaded)
        if wrong:
            return "bad", wrong
    return "ok", loaded or "valid"


def _library(path: str) -> str:
    """``""`` when the file is valid and renders; its error message when refused as it
    should be; ``"bad: ..."`` otherwise."""
    from hvlib import specfile
    from hvlib.cli._render import render_files
    from hvlib.errors import SpecError

    messages = []
    for step in (lambda: specfile.load_all([path]), lambda: render_files([path])):
        try:
            step()
            messages.append("")
        except SpecError as e:
            if not names_the_line(str(e), path):
                return f"bad: a SpecError without FILE:LINE: {e}"
            messages.append(str(e))
    if messages[0] and messages[1] != messages[0]:
        return f"bad: load said {messages[0]!r} but render_files said {messages[1]!r}"
    return messages[1]


def names_the_line(message: str, path: str) -> bool:
    """``message`` starts with ``PATH:LINE:`` or ``PATH:LINE:COL:``."""
    return re.match(rf"{re.escape(path)}:\d+(:\d+)?: \S", message) is not None


def _command(argv: list[str], allowed: set[int], path: str, loaded: str) -> str:
    """What is wrong with ``hvlib ARGV`` run in-process ("" when nothing)."""
    from hvlib.cli import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv, prog_name="hvlib", standalone_mode=False) or 0
        except BaseException:
            return f"hvlib {argv[0]} raised:\n{traceback.format_exc()}\nstderr: {err.getvalue()}"
    stderr = err.getvalue()
    said = f"hvlib {argv[0]} exited {status}; stderr:\n{stderr}"
    if status not in allowed or "Traceback" in stderr:
        return said
    if loaded and (status != 2 or f"hvlib: {loaded}" not in stderr):
        return f"{said}\n(load refused the file: {loaded})"
    lines = [line for line in stderr.splitlines() if line.startswith("hvlib:")]
    if status == 2 and not lines:
        return said
    if status == 2 and not all(
        names_the_line(line.removeprefix("hvlib: "), path) for line in lines
    ):
        return said
    return ""
