"""Open sockets inside a network namespace without moving the calling process there.

A network namespace is a per-thread property on Linux: a short-lived thread switches itself
into ``/run/netns/NAME`` (libc ``setns``; Python 3.11 has no ``os.setns``), creates and
connects the socket, and ends. The socket keeps the namespace it was created in, so the rest
of the process (other hosts, other namespaces) is untouched. This module knows nothing of
libvirt.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from pathlib import Path

from hvlib.errors import HostError

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd`` (raises OSError)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def enter(path: Path) -> None:
    """Move the calling thread into the network namespace at ``path`` (raises OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
    finally:
        os.close(fd)


def create_connection(
    address: tuple[str, int], timeout: float, netns: str | None = None
) -> socket.socket:
    """``socket.create_connection(address, timeout)``, made inside ``netns`` when given.

    Raises:
        HostError: the namespace does not exist or cannot be entered.
        OSError: the connection failed (refused, unreachable, timed out).
    """
    if netns is None:
        return socket.create_connection(address, timeout=timeout)
    path = NETNS_DIR / netns
    if not path.exists():
        raise HostError(f"network namespace {netns} does not exist ({path})")
    result: list[socket.socket | BaseException] = []
    worker = threading.Thread(
        target=_connect_in,
        args=(path, address, timeout, result),
        name=f"hvlib-netns-{netns}",
        daemon=True,
    )
    worker.start()
    worker.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _connect_in(
    path: Path,
    address: tuple[str, int],
    timeout: float,
    result: list[socket.socket | BaseException],
) -> None:
    try:
        enter(path)
        result.append(socket.create_connection(address, timeout=timeout))
    except BaseException as e:  # handed to the caller's thread
        result.append(e)
