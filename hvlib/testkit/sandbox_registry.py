"""The registry of live sandboxes: an owner record per sandbox under ``STATE_DIR`` (with a
lock the owner holds while it lives), the teardown of one record, and finding and reaping the
sandboxes whose owner is gone (:func:`leftovers`, :func:`reap_stale`).

Part of :mod:`hvlib.testkit.sandbox`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from hvlib.testkit.sandbox_base import (
    _MARKER,
    STATE_DIR,
    SandboxError,
    _run,
    _tool,
    _wait_until,
    log,
)
from hvlib.testkit.sandbox_netcheck import parse_ip_br_link
from hvlib.testkit.sandbox_procs import (
    _alive,
    _cgroup_pids,
    _comm,
    _remove_cgroups,
    _signal,
    _wait_gone,
    _with_descendants,
)


@dataclasses.dataclass
class _Record:
    """What a sandbox's owner registers, enough to find and remove everything it started."""

    name: str
    netns: str
    root: str
    bridge: str
    owner_pid: int
    libvirtd_pid: int | None = None
    libvirtd_start: int | None = None
    cgroups: list[str] = dataclasses.field(default_factory=list)
    watcher_pid: int | None = None
    """The process that tears the sandbox down when its owner dies (``_reaper --watch``)."""
    stop_attempted: bool = False
    """Set by ``stop()`` before it tears down: leftovers of such a sandbox are a failed
    cleanup (after Ctrl-C, say), not an owner killed before it could clean up (SIGKILL)."""

    def uri(self, driver: str) -> str:
        sock = Path(self.root) / "run/libvirt/libvirt-sock"
        return f"{driver}+unix:///system?socket={sock}"


def _write_record(entry: Path, rec: _Record) -> None:
    """Atomically replace entry/owner.json. Raises OSError."""
    tmp = entry / "owner.json.tmp"
    tmp.write_text(json.dumps(dataclasses.asdict(rec), indent=1))
    os.replace(tmp, entry / "owner.json")


def _read_record(entry: Path) -> _Record | None:
    """The record in entry (keys it does not know ignored), or None if missing or unreadable."""
    known = {f.name for f in dataclasses.fields(_Record)}
    try:
        data = json.loads((entry / "owner.json").read_text())
        return _Record(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _register(entry: Path, rec: _Record) -> int:
    """Create entry, take its lock (held by the returned fd), write rec. Raises SandboxError."""
    entry.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        entry.mkdir(mode=0o700)
    except FileExistsError as e:
        hint = "if its owner is gone, reap_stale() removes it"
        raise SandboxError(f"sandbox {rec.name} is registered already ({entry}); {hint}") from e
    fd = _try_lock(entry)
    if fd is None:
        raise SandboxError(f"sandbox {rec.name}: {entry} is being reaped by another process")
    _write_record(entry, rec)
    return fd


def _try_lock(entry: Path) -> int | None:
    """An fd holding entry's lock, or None if another process holds it (or entry is gone)."""
    try:
        fd = os.open(entry / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _netns_inode(rec: _Record) -> int | None:
    """Inode of the sandbox's netns: from /run/netns, else from its live libvirtd, else None."""
    with contextlib.suppress(OSError):
        return os.stat(f"/run/netns/{rec.netns}").st_ino
    if rec.libvirtd_pid and _alive(rec.libvirtd_pid, rec.libvirtd_start):
        with contextlib.suppress(OSError):
            return os.stat(f"/proc/{rec.libvirtd_pid}/ns/net").st_ino
    return None


def _sandbox_pids(rec: _Record) -> set[int]:
    """Every process of the sandbox: those in its netns or cgroups, and their descendants."""
    return _with_descendants(_cgroup_pids(rec.cgroups), _netns_inode(rec))


def _netns_links(netns: str) -> list[str]:
    """Interface names inside a named netns ([] if it or ip fails)."""
    try:
        out = _run([_tool("ip"), "-n", netns, "-br", "link"], timeout=10).stdout
    except SandboxError:
        return []
    return sorted(parse_ip_br_link(out))


def _describe(rec: _Record) -> list[str]:
    """What of the sandbox still exists: processes, netns and its links, host bridge, tree."""
    found = []
    if _alive(rec.libvirtd_pid, rec.libvirtd_start):
        found.append(f"libvirtd pid {rec.libvirtd_pid} running")
    others = sorted(_sandbox_pids(rec) - {rec.libvirtd_pid or 0})
    if others:
        found.append("processes " + ", ".join(f"{_comm(p)} ({p})" for p in others))
    if os.path.exists(f"/run/netns/{rec.netns}"):
        found.append(f"netns {rec.netns} (links: {', '.join(_netns_links(rec.netns))})")
    if os.path.exists(f"/sys/class/net/{rec.bridge}"):
        found.append(f"bridge {rec.bridge} in the host namespace")
    cgroups = [d for d in rec.cgroups if os.path.isdir(d)]
    if cgroups:
        found.append("cgroups " + ", ".join(cgroups))
    if os.path.lexists(rec.root):
        found.append(f"directory {rec.root}")
    return found


def _destroy_domains(rec: _Record) -> list[str]:
    """Destroy every running domain of both drivers through the live daemon."""
    if not _alive(rec.libvirtd_pid, rec.libvirtd_start):
        return []
    done = []
    for driver in ("qemu", "lxc"):
        virsh = [_tool("virsh"), "-q", "-c", rec.uri(driver)]
        try:
            names = _run([*virsh, "list", "--name"], timeout=15).stdout.split()
        except SandboxError as e:
            log.warning("sandbox %s: cannot list %s domains: %s", rec.name, driver, e)
            continue
        for name in names:
            result = _run([*virsh, "destroy", name], timeout=60, check=False)
            if result.returncode == 0:
                done.append(f"destroyed {driver} domain {name}")
            else:
                log.warning("sandbox %s: destroy %s: %s", rec.name, name, result.stderr.strip())
    return done


def _stop_libvirtd(rec: _Record) -> list[str]:
    """SIGTERM the daemon, SIGKILL it if it is still there after 10 s."""
    pid = rec.libvirtd_pid
    if pid is None or not _alive(pid, rec.libvirtd_start):
        return []
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        _signal(pid, sig)
        if _wait_until(lambda: not _alive(pid, rec.libvirtd_start), wait):
            return [f"stopped libvirtd pid {pid}"]
    log.warning("sandbox %s: libvirtd pid %s survived SIGKILL", rec.name, pid)
    return []


def _kill_leftovers(rec: _Record) -> list[str]:
    """SIGKILL every process left in the netns or cgroups (and their descendants)."""
    done: list[str] = []
    for _ in range(5):  # killed parents may have spawned children meanwhile
        pids = _sandbox_pids(rec)
        if not pids:
            break
        done.append("killed " + ", ".join(f"{_comm(p)} ({p})" for p in sorted(pids)))
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        _wait_gone(pids, 10.0)
    return done


def _remove_sandbox_cgroups(rec: _Record) -> list[str]:
    """Remove the sandbox's cgroup subtrees (libvirt's machine cgroups included)."""
    return _remove_cgroups(rec.cgroups)


def _delete_netns(rec: _Record) -> list[str]:
    """ip netns del (its bridges and veths go with it)."""
    if not os.path.exists(f"/run/netns/{rec.netns}"):
        return []
    _run([_tool("ip"), "netns", "del", rec.netns], timeout=30)
    return [f"deleted netns {rec.netns}"]


def _remove_root(rec: _Record) -> list[str]:
    """Remove the sandbox tree, but only if it carries our marker file."""
    root = Path(rec.root)
    if not root.exists():
        return []
    if not (root / _MARKER).exists() and any(root.iterdir()):
        log.warning("sandbox %s: %s has no %s marker; not removing it", rec.name, root, _MARKER)
        return []

    def onerror(_f: object, path: str, exc: object) -> None:
        log.warning("sandbox %s: cannot remove %s: %s", rec.name, path, exc)

    shutil.rmtree(root, onerror=onerror)
    return [f"removed {root}"]


_TEARDOWN_STEPS = (
    _destroy_domains,
    _stop_libvirtd,
    _kill_leftovers,
    _remove_sandbox_cgroups,
    _delete_netns,
    _remove_root,
)


def _teardown(rec: _Record) -> list[str]:
    """Run every teardown step, logging failures; returns what was removed.

    Never raises, except that a KeyboardInterrupt received during a step is re-raised once
    all the other steps have run.
    """
    done: list[str] = []
    interrupted: KeyboardInterrupt | None = None
    for step in _TEARDOWN_STEPS:
        try:
            done += step(rec)
        except KeyboardInterrupt as e:
            log.warning(
                "sandbox %s: interrupted in %s; cleaning up the rest", rec.name, step.__name__
            )
            interrupted = interrupted or e
        except Exception as e:
            log.warning("sandbox %s: %s failed: %s", rec.name, step.__name__, e)
    for line in done:
        log.info("sandbox %s: %s", rec.name, line)
    if interrupted is not None:
        raise interrupted
    return done


def _stale_entries(state_dir: Path) -> Iterator[Path]:
    """Yield each registered sandbox whose lock is free, holding the lock until the next one."""
    if not state_dir.is_dir():
        return
    for entry in sorted(p for p in state_dir.iterdir() if p.is_dir()):
        fd = _try_lock(entry)
        if fd is None:
            continue
        try:
            yield entry
        finally:
            os.close(fd)


def leftovers(*, state_dir: Path = STATE_DIR) -> list[str]:
    """Describe sandboxes whose owner is gone (or whose stop left something): pure read.

    One line per thing that still exists, each starting ``sandbox NAME``. Raises nothing.
    """
    lines = []
    for entry in _stale_entries(state_dir):
        rec = _read_record(entry)
        if rec is None:
            lines.append(f"sandbox {entry.name}: state entry {entry} without a readable record")
            continue
        owner = "alive" if _alive(rec.owner_pid) else "gone"
        owner += ", its stop() ran" if rec.stop_attempted else ", no stop() ran"
        found = _describe(rec) or [f"state entry {entry} only"]
        lines += [f"sandbox {rec.name} (owner pid {rec.owner_pid} {owner}): {f}" for f in found]
    return lines


def reap_stale(*, state_dir: Path = STATE_DIR) -> list[str]:
    """Remove what :func:`leftovers` reports; return what was removed. Raises nothing
    (failures are logged, and what stays is reported by the next ``leftovers()``).

    A sandbox whose owner dies is torn down by its watcher within seconds (see
    :func:`reap_entry`); this is for what outlives the watcher too (a reboot, a killed
    watcher, a teardown step that failed)."""
    lines = []
    for entry in _stale_entries(state_dir):
        lines += _reap_locked(entry)
    return lines


def _reap_locked(entry: Path) -> list[str]:
    """Tear down the sandbox registered at entry (whose lock the caller holds); remove the
    entry if nothing of it is left. Returns what was removed, each line ``sandbox NAME: ...``."""
    rec = _read_record(entry)
    removed = _teardown(rec) if rec else []
    if rec is None or not _describe(rec):
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(f"state entry {entry}")
    return [f"sandbox {rec.name if rec else entry.name}: {r}" for r in removed]


def reap_entry(entry: Path, *, lock_wait: float = 5.0) -> list[str]:
    """Tear down the one sandbox registered at entry once its lock is free (its owner gone):
    what the owner's watcher runs when it sees the owner die. Waits up to ``lock_wait`` s for
    the lock (the kernel drops a dead owner's lock as it closes its files); [] if the entry
    is gone or another process holds the lock throughout. Raises nothing."""
    deadline = time.monotonic() + lock_wait
    while (fd := _try_lock(entry)) is None:
        if not entry.is_dir():
            return []
        if time.monotonic() >= deadline:
            log.warning("sandbox %s: lock held after %.1f s; not reaping", entry.name, lock_wait)
            return []
        time.sleep(0.02)
    try:
        return _reap_locked(entry)
    finally:
        os.close(fd)


def watcher_argv(owner_pid: int, entry: Path) -> list[str]:
    """argv of the watcher that reaps entry when process owner_pid ends (any signal)."""
    return [sys.executable, "-m", "hvlib.testkit._reaper", "--watch", str(owner_pid), str(entry)]
