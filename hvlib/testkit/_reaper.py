"""Run a daemon under a child subreaper that reaps its orphans at once.

``python -m hvlib.testkit._reaper LOG -- ARGV...`` detaches (fork, setsid: the caller sees it
exit 0 at once, as with a daemon's own ``-d``), marks itself a child subreaper, runs ARGV in the
foreground with stdout/stderr appended to LOG, and reaps every process that ends below it
until none is left.

Why: libvirtd daemonizes QEMU and libvirt_lxc, so they are re-parented to the nearest
subreaper, or else to PID 1. On these machines PID 1 reaps late, and libvirt's destroy waits
for its guest to vanish from /proc: a zombie QEMU made every destroy take 1.2-2 s although
QEMU exited within 10 ms of SIGTERM.

``python -m hvlib.testkit._reaper --watch OWNER_PID ENTRY`` is a sandbox's watcher: started by the
sandbox's owner (its parent), it opens a pidfd of the owner and waits until it is readable, i.e.
until the owner has exited, whatever ended it (SIGTERM, SIGKILL, a crash); then it tears the sandbox
registered at ENTRY down (:func:`hvlib.testkit.sandbox_registry.reap_entry`) and exits. The owner's
``stop()`` ends it with SIGTERM. Waiting on a pidfd, not on the pid, means a reused pid cannot fool
it; checking that the owner is still its parent right after opening the pidfd means an owner that
died first is seen as dead.

Must not: do anything but start, reap (or watch and tear down) and exit.
"""

from __future__ import annotations

import ctypes
import os
import select
import sys
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _detach() -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()


def _redirect(log: str) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)


def _reap_until_empty() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def wait_for_exit(pid: int) -> None:
    """Return once process pid (our parent) has exited; at once if it is gone already."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if os.getppid() != pid:  # it died before the pidfd was opened (and was reparented)
            return
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll():  # poll() retries EINTR itself (PEP 475)
            pass
    finally:
        os.close(fd)


def watch(owner: int, entry: str) -> int:
    """Wait for owner to end, then reap the sandbox registered at entry."""
    wait_for_exit(owner)
    from hvlib.testkit import sandbox_registry  # lazily: the subreaper path must stay lean

    for line in sandbox_registry.reap_entry(Path(entry)):
        print(line, flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Entry point; ``argv`` is ``[LOG, "--", PROGRAM, ARGS...]`` or
    ``["--watch", OWNER_PID, ENTRY]``."""
    if len(argv) == 3 and argv[0] == "--watch" and argv[1].isdigit():
        return watch(int(argv[1]), argv[2])
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m hvlib.testkit._reaper LOG -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    _detach()
    _redirect(argv[0])
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        return 1
    if os.fork() == 0:
        try:
            os.execvp(argv[2], argv[2:])
        finally:
            os._exit(127)
    _reap_until_empty()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
