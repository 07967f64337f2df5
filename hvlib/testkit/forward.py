"""Loopback TCP forwarding from the test process's network namespace into a sandbox's.

What it does: :class:`LoopbackForwarder` listens on ``127.0.0.1:<ephemeral>`` in the calling
process's network namespace and relays every connection to ``127.0.0.1:<port>`` inside another
network namespace (``/run/netns/NAME``). The outgoing socket is created by a thread that
switches only its own network namespace with libc ``setns(fd, CLONE_NEWNET)`` (Python 3.11 has
no ``os.setns``) and switches back before relaying. :func:`free_loopback_port` finds an unused
loopback port inside a namespace the same way.

Why: a sandboxed libvirtd runs QEMU inside the sandbox's network namespace, so QEMU's
loopback ``hostfwd`` ports live on that namespace's loopback, which the test process cannot
reach directly.

What it must not do: listen on or connect to anything but 127.0.0.1 on either side, change
the network namespace of any thread but its own short-lived ones, or outlive ``close()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from hvlib.guest.netns import enter, setns
from hvlib.virt.closing import Closing

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_CHUNK = 65536
_T = TypeVar("_T")


def netns_path(netns: str | Path) -> Path:
    """Return the namespace file for ``netns``: a path as is, a bare name under /run/netns."""
    text = str(netns)
    return Path(text) if "/" in text else Path("/run/netns") / text


def in_netns(netns: str | Path, call: Callable[[], _T]) -> _T:
    """Return ``call()`` run by the calling thread inside network namespace ``netns``.

    Only the calling thread moves, and it moves back before returning. Raises ``OSError`` when
    the namespace cannot be opened or entered (or left: the thread would then be unusable).
    """
    with _thread_in_netns(netns_path(netns)):
        return call()


def free_loopback_port(netns: str | Path) -> int:
    """Return a TCP port that is free on 127.0.0.1 inside ``netns`` (raises ``OSError``)."""

    def probe() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
            return port

    return in_netns(netns, probe)


class LoopbackForwarder(Closing):
    """Relay ``127.0.0.1:self.port`` (here) to ``127.0.0.1:target_port`` inside ``netns``.

    Use as a context manager, or call :meth:`close`. Connections that cannot be opened on the
    far side are closed at once (the client sees EOF). Raises ``OSError`` from the constructor
    when the local listening socket cannot be made.
    """

    def __init__(self, netns: str | Path, target_port: int) -> None:
        self.netns = netns_path(netns)
        self.target_port = target_port
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self._accepter = threading.Thread(
            target=self._accept_loop, name=f"forward-{self.port}", daemon=True
        )
        self._accepter.start()

    def close(self) -> None:
        """Stop listening and cut every relayed connection; idempotent, never raises."""
        with self._lock:
            self._closed = True
            sockets = [self._listener, *self._open]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepter.join(timeout=5)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return  # close() shut the listener down
            if not self._track(client):
                client.close()
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        """Open the far side inside the namespace, then relay both ways until both end."""
        try:
            far = in_netns(self.netns, self._connect_far)
        except OSError as e:
            log.debug("relay to port %d in %s failed: %s", self.target_port, self.netns, e)
            self._release(client)
            return
        if not self._track(far):
            self._release(client, far)
            return
        back = threading.Thread(target=_pump, args=(far, client), daemon=True)
        back.start()
        _pump(client, far)
        back.join()
        self._release(client, far)

    def _connect_far(self) -> socket.socket:
        sock = socket.create_connection((LOOPBACK, self.target_port), timeout=10)
        sock.settimeout(None)
        return sock

    def _track(self, sock: socket.socket) -> bool:
        """Remember ``sock`` so close() can cut it; False when already closed."""
        with self._lock:
            if self._closed:
                return False
            self._open.add(sock)
            return True

    def _release(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.difference_update(socks)
        for sock in socks:
            sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until EOF or an error, then half-close ``dst``."""
    copied, end = 0, "EOF"
    try:
        while data := src.recv(_CHUNK):
            dst.sendall(data)
            copied += len(data)
    except OSError as e:
        end = f"{type(e).__name__}: {e}"
    log.debug("relay %s -> %s ended after %d bytes: %s", _peer(src), _peer(dst), copied, end)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _peer(sock: socket.socket) -> str:
    with contextlib.suppress(OSError):
        return "{}:{}".format(*sock.getsockname()[:2])
    return "closed socket"


@contextlib.contextmanager
def _thread_in_netns(path: Path) -> Iterator[None]:
    """Move the calling thread into the namespace at ``path`` and back (raises ``OSError``)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(path)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)
