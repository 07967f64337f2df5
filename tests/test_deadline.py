"""Deadlines on libvirt calls: argument checks, the default, and the watchdog cutting a real
socket that a thread is blocked on (integration/test_deadline.py does it to libvirt's)."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hvlib
from hvlib.virt import deadline
from hvlib.virt.deadline import DEFAULT_CALL_TIMEOUT, SocketWatch

URI = "test:///default"
BAD = ["5", True, False, -1, 0, -0.5, math.nan, math.inf, [], {}]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_call_timeout_of_a_wrong_type_or_range_is_a_spec_error_naming_it(value: object) -> None:
    with pytest.raises(hvlib.SpecError) as info:
        hvlib.connect(URI, call_timeout=value)  # type: ignore[arg-type]
    assert info.value.field == "call_timeout"


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_a_calls_own_timeout_is_checked_too(value: object) -> None:
    with hvlib.connect(URI) as host:
        with pytest.raises(hvlib.SpecError) as info:
            host.call(lambda c: c.getHostname(), timeout=value)  # type: ignore[arg-type]
        assert info.value.field == "timeout"
        with (
            pytest.raises(hvlib.SpecError) as info,
            host.connection.bounded(timeout=value),  # type: ignore[arg-type]
        ):
            pass
        assert info.value.field == "timeout"


def test_calls_are_bounded_by_default() -> None:
    with hvlib.connect(URI) as host:
        assert host.connection.call_timeout == DEFAULT_CALL_TIMEOUT
    with hvlib.connect(URI, call_timeout=None) as host:
        assert host.connection.call_timeout == DEFAULT_CALL_TIMEOUT
    with hvlib.connect(URI, call_timeout=7) as host:
        assert host.connection.call_timeout == 7


@pytest.mark.parametrize(
    ("uri", "inet"),
    [
        ("qemu:///system", False),
        ("lxc+unix:///system?socket=/x", False),
        ("qemu+ssh://root@h/system", False),
        ("qemu+ext:///system?command=x", False),
        ("qemu+tcp://127.0.0.1:16509/system", True),
        ("qemu+libssh://h/system", True),
        ("qemu://h/system", True),
    ],
)
def test_the_socket_family_follows_the_transport(uri: str, inet: bool) -> None:
    assert (socket.AF_INET in deadline.families_of(uri)) is inet
    assert (socket.AF_UNIX in deadline.families_of(uri)) is not inet


@pytest.fixture
def server(tmp_path: Path) -> Iterator[socket.socket]:
    """A unix socket that accepts connections and never answers."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp_path / "sock"))
    srv.listen(4)
    yield srv
    srv.close()


def test_an_overrunning_call_is_unblocked_by_cutting_its_socket(server: socket.socket) -> None:
    with deadline.OPEN_LOCK:
        watch = SocketWatch(frozenset({socket.AF_UNIX}))
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(server.getsockname())
        assert watch.attach(), "the one new socket is found"
    peer, _ = server.accept()
    got: list[tuple[bytes, float]] = []
    tickets: list[deadline.Ticket | None] = []

    def blocked() -> None:
        started = time.monotonic()  # before arming: the deadline counts from the arm
        tickets.append(deadline.arm(watch, 0.3))
        try:
            got.append((client.recv(10), time.monotonic() - started))  # nothing ever comes
        finally:
            deadline.disarm(tickets[0])

    thread = threading.Thread(target=blocked)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the watchdog did not cut the socket"
    data, took = got[0]
    assert data == b"" and 0.3 <= took < 2, (data, took)
    assert tickets[0] is not None and tickets[0].fired
    watch.close()
    assert not watch.sever(), "nothing is cut once the watch is closed"
    for sock in (client, peer):
        sock.close()


def test_a_call_that_returns_in_time_is_not_cut(server: socket.socket) -> None:
    with deadline.OPEN_LOCK:
        watch = SocketWatch(frozenset({socket.AF_UNIX}))
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(server.getsockname())
        assert watch.attach()
    peer, _ = server.accept()
    ticket = deadline.arm(watch, 0.2)
    peer.sendall(b"x")
    assert client.recv(1) == b"x"
    deadline.disarm(ticket)
    time.sleep(0.4)
    assert ticket is not None and not ticket.fired
    peer.sendall(b"y")
    assert client.recv(1) == b"y", "the socket still works"
    watch.close()
    for sock in (client, peer):
        sock.close()


def test_two_new_sockets_are_ambiguous() -> None:
    with deadline.OPEN_LOCK:
        watch = SocketWatch(frozenset({socket.AF_UNIX}))
        a, b = socket.socketpair()
        assert not watch.attach()
    assert watch.ambiguous
    a.close()
    b.close()


def test_no_new_socket_means_nothing_to_cut() -> None:
    watch = SocketWatch(frozenset({socket.AF_UNIX}))
    assert not watch.attach() and not watch.ambiguous
    assert deadline.arm(None, 1.0) is None
