"""Deadlines for libvirt calls: each call runs in its caller's thread; one watchdog thread (for
the whole process) cuts the connection of a call that overruns its deadline.

Why this design. libvirt 9.0's client (``src/rpc/virnetclient.c``) has no per-call timeout: a
call queues itself on the connection and either sleeps on a condition variable or, as the one
thread that "has the buck", polls the socket until its own reply arrives. Keepalive only gives
up on a peer that answers nothing: libvirtd answers pings from its main loop, so a reply that
never comes (a stuck worker, a lost message) leaves the caller in ``poll`` for ever while the
connection looks healthy. Closing the connection does not help: ``virConnectClose`` of the last
reference is itself an RPC queued behind the hung call, and does nothing at all while domain or
stream handles still hold references. What does work is ``shutdown(2)`` of the connection's
socket (through a duplicate of its descriptor, so that it is always the same socket even if
libvirt closed its own descriptor meanwhile): the polling thread then reads end-of-file, libvirt
marks the client closed, fails every call waiting on it ("End of file while reading data") and
fires the close callback. :class:`hvlib.virt.connection.Connection` turns that failure into
:class:`hvlib.CallTimeout` for the call whose deadline passed (naming the libvirt call and the
hvlib method it was made in, read from that thread's stack at the moment of expiry) and into a
HostError for the others, and reconnects on next use.

Nothing is left behind per timeout: the call returns in its own thread, no worker is abandoned,
and the duplicate descriptor is closed with the connection. Nothing is serialised: calls are
not funnelled through a pool, libvirt multiplexes them on the connection as it always does.
Arming a deadline is a dictionary insert; the watchdog sleeps until the earliest deadline and
is woken only when a call is armed with an earlier one.

The descriptor: libvirt does not expose it. Connections are opened under :data:`OPEN_LOCK`;
the sockets of this process (``/proc/self/fd``, by descriptor and inode) are listed before and
after the open, and the one new stream socket of the transport's address family is the
connection's. If another thread opened such a socket meanwhile the answer is ambiguous and
the caller opens again (:class:`SocketWatch.attach`). While an open is still under way (a daemon
that accepts but never answers), expiry cuts the one new socket, if there is exactly one. Opens
are therefore serialised (each ~1 ms locally; an open that hangs holds the others back up to its
own deadline); calls never are.

This module knows nothing of libvirt's API; it never imports libvirt.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from types import FrameType

log = logging.getLogger("hvlib")

DEFAULT_CALL_TIMEOUT = 120.0
"""Seconds any libvirt call may take before hvlib gives up on it (a Host's ``call_timeout``
when none is given). Generous: the slowest ordinary calls (starting a guest on a loaded
machine, destroying one whose QEMU dies slowly) take seconds, not minutes."""
LONG_CALL_TIMEOUT = 3600.0
"""Seconds for calls that move a guest's memory or a disk's bytes (snapshots with memory,
volume clones, a migration without its own ``timeout``): their bound of their own."""

OPEN_LOCK = threading.Lock()
"""Held while hvlib opens a connection, so that the new socket can be told apart."""

_PLUMBING = frozenset(
    {"hvlib.virt.connection", "hvlib.virt.handle", "hvlib.virt.deadline", "hvlib.virt._virt"}
)
_LIBVIRT_MODULES = frozenset({"libvirt", "libvirt_lxc", "libvirt_qemu"})


# -- the connection's socket ------------------------------------------------------------


def _sockets() -> dict[int, int]:
    """descriptor -> inode of every socket this process holds."""
    out = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue  # closed meanwhile (or the listing's own descriptor)
        if target.startswith("socket:["):
            out[int(entry)] = int(target[8:-1])
    return out


def _dup_socket(fd: int, inode: int) -> socket.socket | None:
    """A socket object on a duplicate of ``fd``, if it is still the socket ``inode``."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        if os.fstat(dup).st_ino != inode:
            os.close(dup)
            return None
        return socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None


def families_of(uri: str) -> frozenset[int]:
    """The address families libvirt's socket for ``uri`` can have (unix for local daemons and
    the ``ssh``/``ext`` transports, which talk through a socket pair; inet otherwise)."""
    scheme, _, rest = uri.partition(":")
    transport = scheme.partition("+")[2].lower()
    inet = frozenset({socket.AF_INET, socket.AF_INET6})
    if transport in ("unix", "ssh", "ext"):
        return frozenset({socket.AF_UNIX})
    if transport:
        return inet
    host = rest[2:].partition("/")[0] if rest.startswith("//") else ""
    return inet if host else frozenset({socket.AF_UNIX})


class SocketWatch:
    """The socket of one libvirt connection, found as it is opened, and the means to cut it.

    Make it under :data:`OPEN_LOCK` just before the open, :meth:`attach` just after.
    """

    def __init__(self, families: frozenset[int]) -> None:
        self._families = families
        self._before: dict[int, int] | None = _sockets()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.ambiguous = False
        """True when :meth:`attach` found more than one candidate (open again)."""

    def _candidates(self, before: dict[int, int]) -> list[socket.socket]:
        found = []
        for fd, inode in _sockets().items():
            if before.get(fd) == inode:
                continue
            sock = _dup_socket(fd, inode)
            if sock is None:
                continue
            if sock.family in self._families and sock.type == socket.SOCK_STREAM:
                found.append(sock)
            else:
                sock.close()
        return found

    def attach(self) -> bool:
        """Find the connection's socket (True) after the open; False with no new socket
        (an in-process driver) or more than one (:attr:`ambiguous`)."""
        with self._lock:
            before, self._before = self._before, None
            if before is None:
                return self._sock is not None
            found = self._candidates(before)
            if len(found) == 1:
                self._sock = found[0]
                return True
            self.ambiguous = len(found) > 1
            for sock in found:
                sock.close()
            return False

    def sever(self) -> bool:
        """Shut the connection's socket down both ways (every call on it fails at once); True
        if a socket was cut. During the open: the one new socket, if there is exactly one."""
        with self._lock:
            if self._sock is not None:
                return _shutdown(self._sock)
            if self._before is None:
                return False
            found = self._candidates(self._before)
        try:
            if len(found) != 1:
                log.warning("a libvirt open overran its deadline; %d new sockets", len(found))
                return False
            return _shutdown(found[0])
        finally:
            for sock in found:
                sock.close()

    def close(self) -> None:
        """Close the duplicate descriptor (idempotent); :meth:`sever` does nothing after."""
        with self._lock:
            sock, self._sock, self._before = self._sock, None, None
        if sock is not None:
            sock.close()


def _shutdown(sock: socket.socket) -> bool:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError as e:  # already disconnected
        log.debug("cutting a libvirt connection: %s", e)
        return False
    return True


# -- deadlines and the watchdog -----------------------------------------------------------


class Ticket:
    """One armed deadline: a call in ``thread`` that must end by ``deadline`` (monotonic)."""

    __slots__ = ("call", "deadline", "fired", "seconds", "thread", "watch")

    def __init__(self, watch: SocketWatch, seconds: float) -> None:
        self.watch, self.seconds = watch, seconds
        self.deadline = time.monotonic() + seconds
        self.thread = threading.get_ident()
        self.fired = False
        """Set by the watchdog when the deadline passed and it cut the connection."""
        self.call = ""
        """The call the thread was in when the deadline passed (see :func:`call_in`)."""


class _Watchdog:
    """The thread that fires expired tickets (started on first use, one per process)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._armed: dict[int, Ticket] = {}
        self._wake_at = float("inf")
        self._thread: threading.Thread | None = None

    def arm(self, ticket: Ticket) -> None:
        with self._cond:
            self._armed[id(ticket)] = ticket
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="hvlib-deadlines", daemon=True
                )
                self._thread.start()
            if ticket.deadline < self._wake_at:
                self._wake_at = ticket.deadline
                self._cond.notify()

    def disarm(self, ticket: Ticket) -> None:
        with self._cond:
            self._armed.pop(id(ticket), None)

    def _run(self) -> None:
        while True:
            for ticket in self._expired():
                self._fire(ticket)

    def _expired(self) -> list[Ticket]:
        """Wait until some ticket expires; take the expired ones off (marked fired)."""
        with self._cond:
            while True:
                now = time.monotonic()
                due = [t for t in self._armed.values() if t.deadline <= now]
                if due:
                    for t in due:
                        del self._armed[id(t)]
                        t.call = call_in(t.thread)
                        t.fired = True
                    return due
                self._wake_at = min((t.deadline for t in self._armed.values()), default=now + 3600)
                self._cond.wait(self._wake_at - now)

    @staticmethod
    def _fire(ticket: Ticket) -> None:
        cut = ticket.watch.sever()
        log.warning(
            "%s did not return within %g s: %s",
            ticket.call or "a libvirt call",
            ticket.seconds,
            "the connection was cut" if cut else "the connection could not be cut",
        )


WATCHDOG = _Watchdog()


def arm(watch: SocketWatch | None, seconds: float) -> Ticket | None:
    """Arm a deadline of ``seconds`` for a call on ``watch``'s connection made by this thread
    (None when there is no socket to cut: an in-process driver). :func:`disarm` it after."""
    if watch is None:
        return None
    ticket = Ticket(watch, seconds)
    WATCHDOG.arm(ticket)
    return ticket


def disarm(ticket: Ticket | None) -> None:
    """The call is over: its deadline no longer applies."""
    if ticket is not None:
        WATCHDOG.disarm(ticket)


def call_in(thread: int) -> str:
    """What ``thread`` is calling: the innermost libvirt-python function on its stack and the
    nearest public hvlib method around it (``virDomain.undefineFlags in Domain.undefine``);
    "" if it is in neither."""
    frame: FrameType | None = sys._current_frames().get(thread)
    libvirt_call = hvlib_call = ""
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        name = _public_name(frame)
        if not libvirt_call and module in _LIBVIRT_MODULES:
            libvirt_call = frame.f_code.co_qualname
            if "." not in libvirt_call:  # a module's function: libvirt.open
                libvirt_call = f"{module}.{libvirt_call}"
        elif libvirt_call and name and _is_entry_point(module, name):
            hvlib_call = name
            break
        frame = frame.f_back
    if libvirt_call and hvlib_call:
        return f"{libvirt_call} in {hvlib_call}"
    return libvirt_call or hvlib_call


def _is_entry_point(module: str, name: str) -> bool:
    """A public hvlib method a caller may have called (not the plumbing calls go through)."""
    return module.startswith("hvlib.") and module not in _PLUMBING and name != "Host.call"


def _public_name(frame: FrameType) -> str:
    """The frame's qualified name if every part of it is public ("" for a lambda, a
    private method or a nested function); a method is named by its instance's class, which
    callers know (``Domain.undefine``, not the mix-in ``Stopping.undefine`` defining it)."""
    qualname = frame.f_code.co_qualname
    if any(part.startswith(("_", "<")) for part in qualname.split(".")):
        return ""
    owner = frame.f_locals.get("self") if "." in qualname else None
    cls = type(owner).__name__ if owner is not None else ""
    if cls and not cls.startswith("_"):
        return f"{cls}.{qualname.rsplit('.', 1)[1]}"
    return qualname
