"""The processes and cgroups of a sandbox: cgroup v1 hierarchies made and removed per sandbox,
and finding, waiting for and signalling the processes that live in its network namespace.

Part of :mod:`hvlib.testkit.sandbox`. Reads /proc and the cgroup trees; signals only the
processes of the sandbox it is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Iterable
from pathlib import Path

from hvlib.testkit.sandbox_base import _wait_until, log


@dataclasses.dataclass(frozen=True)
class CgroupMount:
    """A cgroup v1 hierarchy: where it is mounted, its mount options (controllers or
    ``name=X``), and the calling process's cgroup in it."""

    mountpoint: str
    options: str
    ours: str


def cgroup_v1_mounts(mountinfo: str, proc_cgroup: str) -> list[CgroupMount]:
    """The cgroup v1 hierarchies in mountinfo (``/proc/self/mountinfo`` text) that
    proc_cgroup (``/proc/self/cgroup`` text) places us in. Pure."""
    ours: dict[frozenset[str], tuple[str, str]] = {}
    for line in proc_cgroup.splitlines():
        hid, options, path = line.split(":", 2)
        if hid != "0" and options:
            ours[frozenset(options.split(","))] = (options, path)
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) < 3 or fields[0] != "cgroup":
            continue
        for names, (options, path) in ours.items():
            if names <= set(fields[2].split(",")):
                found.append(CgroupMount(left.split()[4], options, path))
    return found


def _make_cgroups(mounts: list[CgroupMount], leaf: str) -> list[str]:
    """Create leaf under our cgroup in every hierarchy (cpuset values copied from the parent);
    return the paths. Raises OSError (after removing what it made)."""
    made: list[str] = []
    try:
        for cg in mounts:
            parent = Path(cg.mountpoint, cg.ours.lstrip("/"))
            (parent / leaf).mkdir(exist_ok=True)
            made.append(str(parent / leaf))
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (parent / knob).exists():
                    (parent / leaf / knob).write_text((parent / knob).read_text())
    except OSError:
        _remove_cgroups(made)
        raise
    return made


def _remove_cgroups(dirs: Iterable[str]) -> list[str]:
    """rmdir each cgroup dir with its children (deepest first); log what fails."""
    removed = []
    for top in dirs:
        if not os.path.isdir(top):
            continue
        for sub, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                os.rmdir(sub)
            except OSError as e:
                log.warning("sandbox cleanup: cannot remove cgroup %s: %s", sub, e)
        removed.append(top)
    return ["removed cgroups " + ", ".join(removed)] if removed else []


def _cgroup_pids(dirs: Iterable[str]) -> set[int]:
    """Every pid in the cgroup dirs and their children."""
    pids: set[int] = set()
    for top in dirs:
        for sub, _, _ in os.walk(top):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in Path(sub, "cgroup.procs").read_text().split())
    return pids


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks) of pid, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _alive(pid: int | None, start: int | None = None) -> bool:
    """True if pid runs (not a zombie) and, when start is given, started at that tick."""
    stat = _proc_stat(pid) if pid else None
    return stat is not None and stat[0] not in "ZX" and start in (None, stat[2])


def _comm(pid: int) -> str:
    """The process's short name, or '?' if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _processes() -> dict[int, tuple[int, int | None]]:
    """Every live process: pid -> (ppid, inode of its network namespace or None)."""
    procs: dict[int, tuple[int, int | None]] = {}
    for entry in os.listdir("/proc"):
        stat = _proc_stat(int(entry)) if entry.isdigit() else None
        if stat is None or stat[0] in "ZX":
            continue
        try:
            ino: int | None = os.stat(f"/proc/{entry}/ns/net").st_ino
        except OSError:
            ino = None
        procs[int(entry)] = (stat[1], ino)
    return procs


def _with_descendants(seeds: set[int] | None, netns_ino: int | None) -> set[int]:
    """seeds plus the processes in netns netns_ino, plus all their descendants (containers
    run in their own netns), alive ones only, never the caller itself."""
    procs = _processes()
    found = {p for p in seeds or () if p in procs}
    found |= {pid for pid, (_, ino) in procs.items() if netns_ino and ino == netns_ino}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(found)
    while stack:
        new = [c for c in children.get(stack.pop(), []) if c not in found]
        found.update(new)
        stack += new
    found.discard(os.getpid())
    return found


def _wait_gone(pids: set[int], timeout: float) -> bool:
    """Wait (bounded) until none of pids runs; True if they all went."""
    return _wait_until(lambda: not any(_alive(p) for p in pids), timeout)


def _signal(pid: int, sig: signal.Signals) -> None:
    """Send sig to pid; a process that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
