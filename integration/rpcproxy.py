"""A relay on a libvirtd's unix socket that passes libvirt's RPC messages whole, and on demand
holds back or drops the replies to one procedure: the one narrow fault the deadline tests
inject (a lost reply on a connection that stays healthy, keepalives included), which nothing
real gives on demand.

Messages are framed as libvirt frames them (``src/rpc/virnetprotocol.x``): a 4-byte big-endian
length that counts itself, then a header of six 32-bit fields (program, version, procedure,
type, serial, status). Everything else passes byte for byte, in order, in both directions.
Descriptors passed with a message (``REPLY_WITH_FDS``) are not relayed.

The relay runs in a process of its own (``python -m integration.rpcproxy DAEMON PATH``, driven
by one command a line on its stdin; :class:`ProxyProcess` is the test's side): in the test's
own process its sockets would appear next to the ones hvlib opens.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HEADER = struct.Struct(">IIiiIi")
REMOTE_PROGRAM = 0x20008086
CALL, REPLY = 0, 1


@dataclass
class Rules:
    """What the relay does to replies of the remote program, by procedure number."""

    drop: dict[int, int] = field(default_factory=dict)
    """procedure -> how many replies still to drop."""
    delay: dict[int, float] = field(default_factory=dict)
    """procedure -> seconds to hold each reply back (later messages are not held up)."""
    calls: list[int] = field(default_factory=list)
    """Procedures of the calls seen, in order (cleared by the test when it likes)."""
    dropped: list[int] = field(default_factory=list)
    """Serials of the replies dropped."""


def _read_message(sock: socket.socket) -> bytes | None:
    """One whole message, or None at end of file."""
    head = _read_exact(sock, 4)
    if head is None:
        return None
    (length,) = struct.unpack(">I", head)
    body = _read_exact(sock, length - 4)
    return None if body is None else head + body


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    data = bytearray()
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return bytes(data)


class RpcProxy:
    """Listens on ``path``; each client gets its own connection to ``daemon_path``."""

    def __init__(self, daemon_path: str, path: str) -> None:
        self.daemon_path, self.path = daemon_path, path
        self.rules = Rules()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._start(self._accept, "rpcproxy-accept")

    def _start(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.daemon_path)
            with self._lock:
                self._socks += [client, upstream]
            send_lock = threading.Lock()
            self._start(self._pump_calls, "rpcproxy-c2s", client, upstream)
            self._start(self._pump_replies, "rpcproxy-s2c", upstream, client, send_lock)

    def _pump_calls(self, client: socket.socket, upstream: socket.socket) -> None:
        while (msg := _read_message(client)) is not None:
            prog, _vers, proc, kind, _serial, _status = HEADER.unpack_from(msg, 4)
            if prog == REMOTE_PROGRAM and kind == CALL:
                with self._lock:
                    self.rules.calls.append(proc)
            with contextlib.suppress(OSError):
                upstream.sendall(msg)
        _shut(upstream)

    def _pump_replies(
        self, upstream: socket.socket, client: socket.socket, send_lock: threading.Lock
    ) -> None:
        while (msg := _read_message(upstream)) is not None:
            prog, _vers, proc, kind, serial, _status = HEADER.unpack_from(msg, 4)
            held = 0.0
            if prog == REMOTE_PROGRAM and kind == REPLY:
                with self._lock:
                    if self.rules.drop.get(proc, 0) > 0:
                        self.rules.drop[proc] -= 1
                        self.rules.dropped.append(serial)
                        continue
                    held = self.rules.delay.get(proc, 0.0)
            if held:
                timer = threading.Timer(held, _send, (client, msg, send_lock))
                timer.daemon = True
                timer.start()
            else:
                _send(client, msg, send_lock)
        _shut(client)

    def command(self, line: str) -> str:
        """Apply one control command; the answer's text."""
        word, *args = line.split()
        with self._lock:
            if word == "calls":
                calls, self.rules.calls = self.rules.calls, []
                return " ".join(map(str, calls))
            if word == "dropped":
                return " ".join(map(str, self.rules.dropped))
            if word == "drop":
                self.rules.drop[int(args[0])] = int(args[1])
            elif word == "delay":
                self.rules.delay[int(args[0])] = float(args[1])
            elif word == "clear":
                self.rules.drop.clear()
                self.rules.delay.clear()
            else:
                return f"unknown command {word!r}"
        return ""

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, cut every relayed connection, join the relay's threads."""
        self._closed = True
        _shut(self._listener)
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            _shut(sock)
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        for sock in socks:
            sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _send(sock: socket.socket, msg: bytes, lock: threading.Lock) -> None:
    with lock, contextlib.suppress(OSError):
        sock.sendall(msg)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class ProxyProcess:
    """The test's side of a relay process: start it, send it commands, stop it."""

    def __init__(self, daemon_path: str, path: str, ready_timeout: float = 30.0) -> None:
        root = Path(__file__).resolve().parent.parent
        self.path = path
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "integration.rpcproxy", daemon_path, path],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._ask("ready", ready_timeout)

    def _ask(self, line: str, timeout: float = 30.0) -> str:
        """Send one command; its answer (``ok TEXT``), within ``timeout`` s."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(self._proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not answer or not answer[0].startswith("ok"):
            raise RuntimeError(f"relay: no answer to {line!r} within {timeout:g} s: {answer}")
        return answer[0][2:].strip()

    def procs_of(self, action: Callable[[], object]) -> list[int]:
        """The remote procedures of the calls ``action()`` made through the relay."""
        self._ask("calls")
        action()
        return [int(p) for p in self._ask("calls").split()]

    def drop_next(self, proc: int, count: int = 1) -> None:
        self._ask(f"drop {proc} {count}")

    def delay(self, proc: int, seconds: float) -> None:
        self._ask(f"delay {proc} {seconds}")

    def clear(self) -> None:
        self._ask("clear")

    def dropped(self) -> list[int]:
        return [int(s) for s in self._ask("dropped").split()]

    def close(self, timeout: float = 10.0) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout)


def main(argv: list[str]) -> int:
    """Relay ``argv[0]`` (the daemon's socket) on ``argv[1]`` until stdin ends."""
    proxy = RpcProxy(argv[0], argv[1])
    try:
        for line in sys.stdin:
            answer = "" if line.strip() == "ready" else proxy.command(line)
            print(f"ok {answer}", flush=True)
    finally:
        proxy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
