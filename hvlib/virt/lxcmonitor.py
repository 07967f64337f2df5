"""Whether libvirtd still holds its monitor connection to an LXC container's controller.

libvirt 9.0 can drop that connection right after a start (the LXC start race, see README):
it then never learns the container's init pid or its exit. :func:`monitor_lost` tells,
from the controller's ``/proc/PID/net/unix``, so that :meth:`hvlib.Domain.start` can start
the container again at once. Reads /proc only; no libvirt call.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path


def monitor_sockets(net_unix: str, name: str) -> tuple[int, int]:
    """(listening, connected) unix sockets bound to the LXC controller's monitor path
    ``.../lxc/NAME.sock`` in ``/proc/PID/net/unix`` text. Pure.

    The controller listens on that path and its accepted connection to libvirtd carries the
    same path; so ``(1, 0)`` means libvirtd holds no monitor connection to that container.
    """
    listening = connected = 0
    suffix = f"/lxc/{name}.sock"
    for line in net_unix.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or not fields[7].endswith(suffix):
            continue
        if fields[5] == "01":  # SS_UNCONNECTED: a listening socket
            listening += 1
        elif fields[5] == "03":  # SS_CONNECTED
            connected += 1
    return listening, connected


def is_controller(cmdline: bytes, name: str) -> bool:
    """True if ``/proc/PID/cmdline`` bytes are those of ``libvirt_lxc --name NAME ...``. Pure."""
    argv = cmdline.split(b"\0")
    if not argv or not argv[0].endswith(b"libvirt_lxc"):
        return False
    return any(a == b"--name" and b == name.encode() for a, b in itertools.pairwise(argv))


def monitor_lost(controller_pid: int, name: str) -> bool | None:
    """Whether libvirtd has lost its monitor connection to container ``name``'s controller.

    libvirt 9.0 (and 11.3) registers the monitor socket with its event loop before it adds
    the monitor's event program; when the controller's ``init`` event is read in between,
    libvirt finds no program for it, closes the connection, and never learns the init pid
    or the container's exit (see README, "The LXC start race"). This reads the controller's
    network namespace's ``/proc/PID/net/unix``: True if the controller listens but nothing is
    connected, False if connected, None if it cannot tell (not the same pid namespace as
    libvirtd, not our controller, or no /proc). Raises nothing.
    """
    try:
        if not is_controller(Path(f"/proc/{controller_pid}/cmdline").read_bytes(), name):
            return None
        text = Path(f"/proc/{controller_pid}/net/unix").read_text()
    except OSError:
        return None
    listening, connected = monitor_sockets(text, name)
    if listening == 0:
        return None
    return connected == 0


def init_pids(controller_pid: int, name: str) -> list[int] | None:
    """The pids of container ``name``'s init: the children of its controller
    (``/proc/PID/task/*/children``). None if that cannot be read here (another pid
    namespace, not our controller, no /proc). Raises nothing."""
    try:
        if not is_controller(Path(f"/proc/{controller_pid}/cmdline").read_bytes(), name):
            return None
        tasks = list(Path(f"/proc/{controller_pid}/task").iterdir())
        text = " ".join((task / "children").read_text() for task in tasks)
    except OSError:
        return None
    return [int(pid) for pid in text.split()]


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has). Raises nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def find_init(name: str, pid_ns: str) -> int | None:
    """The host pid of container ``name``'s init: a child of a ``libvirt_lxc --name NAME``
    controller whose pid namespace is ``pid_ns`` (``"pid:[INODE]"``, the link of the
    container's pid-namespace descriptor: several sandboxed daemons may each run a container
    of that name). None if no such process is visible here. Raises nothing.

    (libvirt 9.0's LXC driver reports the domain id as -1 for a running container, so the
    controller is found by its command line, not by ``virDomainGetID``.)
    """
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            if not is_controller(Path(f"/proc/{pid}/cmdline").read_bytes(), name):
                continue
        except OSError:
            continue
        for child in init_pids(pid, name) or ():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{child}/ns/pid") == pid_ns:
                    return child
    return None


def program_of(pid: int) -> str | None:
    """The program process ``pid`` runs (``/proc/PID/exe``, a path inside its mount
    namespace: ``/usr/lib/systemd/systemd``, ``/bin/busybox``); None if unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None
