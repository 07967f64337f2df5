"""Guest access over real SSH, against a paramiko SSH server on 127.0.0.1 in this process.

The server behaves like dropbear/OpenSSH for what hvlib relies on: public-key login, an exec
request runs ``/bin/sh -c COMMAND`` in a new session on this machine, stdin/stdout/stderr are
relayed, the exit status is sent, and closing the channel does *not* stop the command. A
``FakeDomain`` (a plain GuestAccess with the attributes Domain has) points at it through
``SshConfig(address="127.0.0.1", port=...)``. Only loopback is used.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hvlib.enums import State, VirtType
from hvlib.errors import (
    CommandTimeout,
    ConnectionLost,
    GuestAccessError,
    HostKeyError,
    InvalidState,
    RemoteCommandError,
    TransferError,
    WaitTimeout,
)
from hvlib.guest.access import GuestAccess
from hvlib.guest.config import SshConfig
from hvlib.guest.ready import Ready
from hvlib.guest.sshtransport import PROBE_CONNECT_TIMEOUTS
from hvlib.virt.console import ConsoleCapture

pytestmark = pytest.mark.timeout(120)


def write_key(path: Path) -> tuple[paramiko.PKey, str]:
    """A new ed25519 private key file (OpenSSH format); (paramiko key, public line)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    key = paramiko.Ed25519Key.from_private_key_file(str(path))
    return key, f"{key.get_name()} {key.get_base64()}"


# -- the server ---------------------------------------------------------------------------


class _Handler(paramiko.ServerInterface):
    def __init__(self, server: LoopbackSshd) -> None:
        self.server = server

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "root" and key.asbytes() == self.server.client_key.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if self.server.refuse_exec:
            return False
        self.server.commands.append(command.decode())
        threading.Thread(target=_serve_exec, args=(channel, command), daemon=True).start()
        return True


def _serve_exec(channel: paramiko.Channel, command: bytes) -> None:
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # like sshd/dropbear
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_relay_in, args=(channel, proc.stdin), daemon=True),
        threading.Thread(target=_relay_out, args=(proc.stdout, channel.sendall), daemon=True),
        threading.Thread(
            target=_relay_out, args=(proc.stderr, channel.sendall_stderr), daemon=True
        ),
    ]
    for pump in pumps:
        pump.start()
    code = proc.wait()
    for pump in pumps[1:]:
        pump.join()
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        channel.send_exit_status(code)
        channel.shutdown_write()
        channel.close()


def _relay_in(channel: paramiko.Channel, stdin: Any) -> None:
    with contextlib.suppress(OSError, EOFError):
        while data := channel.recv(65536):
            stdin.write(data)
            stdin.flush()
    with contextlib.suppress(OSError):
        stdin.close()


def _relay_out(stream: Any, send: Callable[[bytes], None]) -> None:
    fd = stream.fileno()
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        while data := os.read(fd, 65536):
            send(data)


class LoopbackSshd:
    """An SSH server on 127.0.0.1 (a thread per connection)."""

    def __init__(self, host_key: paramiko.PKey, client_key: paramiko.PKey, port: int = 0):
        self.host_key = host_key
        self.client_key = client_key
        self.refuse_exec = False
        self.commands: list[str] = []
        self.transports: list[paramiko.Transport] = []
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                transport.start_server(server=_Handler(self))

    def drop(self) -> None:
        """Close every connection (as a vanished guest would)."""
        for transport in self.transports:
            transport.close()

    def close(self) -> None:
        self.listener.close()
        self.drop()


# -- the fake domain ----------------------------------------------------------------------


class FakeHost:
    netns: str | None = None
    ssh: SshConfig | None = None


class FakeDomain(GuestAccess):
    """The attributes hvlib.Domain has, without libvirt."""

    def __init__(self, config: SshConfig | None = None, virt: VirtType = VirtType.QEMU) -> None:
        self.host = FakeHost()  # type: ignore[assignment]
        self.name = "fake"
        self.uuid = "00000000-0000-0000-0000-000000000001"
        self.ssh = config
        self.current_state = State.RUNNING
        self.found: dict[str, list[Any]] = {"52:54:00:00:00:01": []}
        self.capture: ConsoleCapture | None = None
        self._virt = virt

    @property
    def virt(self) -> VirtType:
        return self._virt

    @property
    def handle(self) -> Any:
        return None

    @property
    def state(self) -> State:
        return self.current_state

    @property
    def console(self) -> ConsoleCapture | None:
        return self.capture

    def addresses(self, *args: Any, **kwargs: Any) -> dict[str, list[Any]]:
        return self.found

    def wait_for_address(self, *args: Any, **kwargs: Any) -> Any:
        return self.found


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("keys")
    client, _ = write_key(d / "client")
    host, host_line = write_key(d / "host")
    other, other_line = write_key(d / "other")
    return {
        "client": client,
        "client_path": d / "client",
        "host": host,
        "host_line": host_line,
        "other": other,
        "other_line": other_line,
        "dir": d,
    }


@pytest.fixture
def sshd(keys: dict[str, Any]) -> Iterator[LoopbackSshd]:
    server = LoopbackSshd(keys["host"], keys["client"])
    try:
        yield server
    finally:
        server.close()


def config_for(keys: dict[str, Any], port: int, **kw: Any) -> SshConfig:
    base: dict[str, Any] = {
        "key": keys["client_path"],
        "host_key": keys["host_line"],
        "port": port,
        "address": "127.0.0.1",
    }
    return SshConfig(**{**base, **kw})


@pytest.fixture
def dom(keys: dict[str, Any], sshd: LoopbackSshd) -> Iterator[FakeDomain]:
    d = FakeDomain(config_for(keys, sshd.port))
    try:
        yield d
    finally:
        d.close_access()


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                if marker.encode() in cmdline and int(entry) != os.getpid():
                    found.append(int(entry))
    return found


# -- exec ---------------------------------------------------------------------------------


def test_exit_status_stdout_stderr(dom: FakeDomain) -> None:
    result = dom.exec("echo out; echo err >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert result.elapsed > 0
    assert dom.exec(["true"]).ok


def test_argv_is_passed_exactly(dom: FakeDomain) -> None:
    args = ["a b", "$HOME", "'", '"', "*", "; rm -rf /", "\n", "ünï"]
    result = dom.exec(["printf", "%s|", *args])
    assert result.text == "|".join(args) + "|"


def test_binary_output_and_input_round_trip(dom: FakeDomain) -> None:
    data = bytes(range(256)) * 4096 + b"\r\n\0"
    result = dom.exec(["cat"], input=data)
    assert result.stdout == data
    assert dom.exec("head -c 3 /dev/zero").stdout == b"\0\0\0"


def test_check_raises_remote_command_error(dom: FakeDomain) -> None:
    with pytest.raises(RemoteCommandError) as info:
        dom.exec(["sh", "-c", "echo nope >&2; exit 4"], check=True)
    assert info.value.exit_status == 4
    assert info.value.stderr == b"nope\n"


def test_output_is_streamed_to_callbacks(dom: FakeDomain) -> None:
    started = time.monotonic()
    arrivals: list[tuple[float, bytes]] = []
    result = dom.exec(
        "echo first; sleep 1; echo second",
        on_stdout=lambda b: arrivals.append((time.monotonic() - started, b)),
    )
    assert result.stdout == b""  # handed to the callback, not kept
    assert b"".join(b for _, b in arrivals) == b"first\nsecond\n"
    assert arrivals[0][0] < 0.9 <= result.elapsed


def test_session_is_kept_between_commands(dom: FakeDomain, sshd: LoopbackSshd) -> None:
    for _ in range(5):
        dom.exec(["true"])
    assert len(sshd.transports) == 1


def test_dead_kept_session_is_replaced(dom: FakeDomain, sshd: LoopbackSshd) -> None:
    dom.exec(["true"])
    sshd.drop()
    time.sleep(0.2)
    assert dom.exec(["echo", "again"]).text == "again\n"
    assert len(sshd.transports) == 2


def test_timeout_kills_the_whole_process_group(dom: FakeDomain) -> None:
    marker = f"hvlib-test-{os.getpid()}-{time.monotonic_ns()}"
    sleeper = f"{sys.executable} -c 'import time; time.sleep(60)' {marker}"
    command = f"echo started; {sleeper} & {sleeper}; wait"
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        dom.exec(["sh", "-c", command, "x"], timeout=1.5)
    assert time.monotonic() - started < 3.5
    assert info.value.killed
    assert info.value.stdout == b"started\n"
    deadline = time.monotonic() + 3
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


def test_dropped_connection_is_never_success(dom: FakeDomain, sshd: LoopbackSshd) -> None:
    threading.Timer(0.7, sshd.drop).start()
    with pytest.raises(ConnectionLost) as info:
        dom.exec("echo partial; sleep 5; echo never", timeout=10)
    assert info.value.stdout == b"partial\n"
    assert "outcome is unknown" in str(info.value)


def test_put_get_round_trip_10_mib(dom: FakeDomain, tmp_path: Path) -> None:
    data = os.urandom(10 * 1024 * 1024)
    (tmp_path / "src").write_bytes(data)
    remote = tmp_path / "remote" / "copy"
    remote.parent.mkdir()
    assert dom.put(tmp_path / "src", str(remote)) == len(data)
    assert remote.read_bytes() == data
    assert dom.get(str(remote), tmp_path / "back") == len(data)
    assert (tmp_path / "back").read_bytes() == data
    assert sorted(p.name for p in remote.parent.iterdir()) == ["copy"]  # no temp left


def test_put_into_missing_directory_fails_cleanly(dom: FakeDomain, tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"x")
    with pytest.raises(RemoteCommandError, match="hvlib-put"):
        dom.put(tmp_path / "src", str(tmp_path / "no" / "such" / "dir"))


def test_get_of_missing_file_fails_and_writes_nothing(dom: FakeDomain, tmp_path: Path) -> None:
    with pytest.raises(RemoteCommandError):
        dom.get(str(tmp_path / "missing"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_short_transfer_is_detected(dom: FakeDomain, tmp_path: Path) -> None:
    # a "remote" file that grows between the size probe and the read
    growing = tmp_path / "growing"
    growing.write_bytes(b"12345")
    real_exec = dom.exec

    def exec_then_grow(command: Any, **kw: Any) -> Any:
        result = real_exec(command, **kw)
        if list(command)[:2] == ["wc", "-c"]:
            growing.write_bytes(b"1234567890")
        return result

    dom.exec = exec_then_grow  # type: ignore[method-assign]
    with pytest.raises(TransferError, match="received 10 bytes, the file had 5"):
        dom.get(str(growing), tmp_path / "out")


# -- host keys and login ------------------------------------------------------------------


def test_changed_host_key_is_refused(keys: dict[str, Any], sshd: LoopbackSshd) -> None:
    dom = FakeDomain(config_for(keys, sshd.port, host_key=keys["other_line"]))
    with pytest.raises(HostKeyError) as info:
        dom.exec(["true"])
    assert info.value.offered == keys["host_line"]
    assert info.value.expected == (keys["other_line"],)
    assert sshd.commands == []


def test_unknown_host_key_needs_the_opt_in(keys: dict[str, Any], sshd: LoopbackSshd) -> None:
    with pytest.raises(HostKeyError, match="unknown"):
        FakeDomain(config_for(keys, sshd.port, host_key=None)).exec(["true"])
    opted = FakeDomain(config_for(keys, sshd.port, host_key=None, accept_unknown_host_key=True))
    assert opted.exec(["true"]).ok
    opted.close_access()


def test_known_hosts_file(keys: dict[str, Any], sshd: LoopbackSshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {keys['host_line']}\n")
    dom = FakeDomain(config_for(keys, sshd.port, host_key=None, known_hosts=known))
    assert dom.exec(["true"]).ok
    dom.close_access()
    known.write_text(f"[127.0.0.1]:{sshd.port} {keys['other_line']}\n")
    with pytest.raises(HostKeyError, match="CHANGED"):
        FakeDomain(config_for(keys, sshd.port, host_key=None, known_hosts=known)).exec(["true"])


def test_wrong_client_key_is_an_access_error(keys: dict[str, Any], sshd: LoopbackSshd) -> None:
    bad = keys["dir"] / "bad-client"
    write_key(bad)
    with pytest.raises(GuestAccessError, match="login as root"):
        FakeDomain(config_for(keys, sshd.port, key=bad)).exec(["true"])


def test_config_precedence(keys: dict[str, Any], sshd: LoopbackSshd) -> None:
    good = config_for(keys, sshd.port)
    bad = config_for(keys, sshd.port, host_key=keys["other_line"])
    dom = FakeDomain(None)
    with pytest.raises(GuestAccessError, match="no SSH credentials"):
        dom.exec(["true"])
    dom.host.ssh = good
    assert dom.exec(["true"]).ok  # the host's default
    dom.ssh = bad
    with pytest.raises(HostKeyError):
        dom.exec(["true"])  # the domain's overrides the host's
    assert dom.exec(["true"], ssh=good).ok  # the call's overrides both
    dom.close_access()


def test_no_address_and_not_running(keys: dict[str, Any]) -> None:
    dom = FakeDomain(config_for(keys, 22, address=None))
    with pytest.raises(GuestAccessError, match="no usable address"):
        dom.exec(["true"])
    dom.current_state = State.SHUT_OFF
    with pytest.raises(InvalidState):
        dom.exec(["true"])


# -- readiness ----------------------------------------------------------------------------


def test_ready_when_nothing_listens_reports_tcp(keys: dict[str, Any]) -> None:
    dom = FakeDomain(config_for(keys, free_port()))
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        dom.wait_ready(timeout=1.0)
    assert 1.0 <= time.monotonic() - started < 2.0
    assert info.value.last == "tcp"
    assert "reached stage 'tcp'" in str(info.value) and "refused" in str(info.value)


def test_ready_connects_briefly_first_then_longer(
    keys: dict[str, Any], sshd: LoopbackSshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SYN sent before the guest configured the address its lease names is dropped, and the
    kernel sends it again only a second later: the probe's first connects are short."""
    from hvlib.guest import ssh as sshmod

    real = sshmod.open_socket
    asked: list[float] = []

    def dropped(address: str, port: int, netns: str | None, timeout: float) -> Any:
        asked.append(timeout)
        if len(asked) <= len(PROBE_CONNECT_TIMEOUTS):
            raise GuestAccessError("cannot connect: timed out")
        return real(address, port, netns, timeout)

    monkeypatch.setattr(sshmod, "open_socket", dropped)
    dom = FakeDomain(config_for(keys, sshd.port))
    try:
        dom.wait_ready(timeout=10, interval=0.01)
    finally:
        dom.close_access()
    assert asked == [*PROBE_CONNECT_TIMEOUTS, PROBE_CONNECT_TIMEOUTS[-1]]
    assert PROBE_CONNECT_TIMEOUTS[0] <= 0.1 and PROBE_CONNECT_TIMEOUTS[-1] == 1.0


def test_ready_without_address_reports_address(keys: dict[str, Any]) -> None:
    dom = FakeDomain(config_for(keys, 22, address=None))
    with pytest.raises(WaitTimeout) as info:
        dom.wait_ready(timeout=0.5)
    assert info.value.last == "address"


def test_ready_with_a_silent_server_reports_banner(keys: dict[str, Any]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.listen(16)
        dom = FakeDomain(config_for(keys, silent.getsockname()[1]))
        with pytest.raises(WaitTimeout) as info:
            dom.wait_ready(timeout=1.0)
    assert info.value.last == "banner"


def test_ready_when_login_fails_reports_login(keys: dict[str, Any], sshd: LoopbackSshd) -> None:
    bad = keys["dir"] / "bad-client2"
    write_key(bad)
    with pytest.raises(WaitTimeout) as info:
        FakeDomain(config_for(keys, sshd.port, key=bad)).wait_ready(timeout=1.0)
    assert info.value.last == "login"


def test_ready_when_commands_fail_reports_command(keys: dict[str, Any], sshd: LoopbackSshd) -> None:
    sshd.refuse_exec = True
    with pytest.raises(WaitTimeout) as info:
        FakeDomain(config_for(keys, sshd.port)).wait_ready(timeout=1.0)
    assert info.value.last == "command"


def test_ready_host_key_error_is_not_retried(keys: dict[str, Any], sshd: LoopbackSshd) -> None:
    dom = FakeDomain(config_for(keys, sshd.port, host_key=keys["other_line"]))
    started = time.monotonic()
    with pytest.raises(HostKeyError):
        dom.wait_ready(timeout=30)
    assert time.monotonic() - started < 5


def test_ready_within_half_a_second_of_the_server(keys: dict[str, Any]) -> None:
    port = free_port()
    dom = FakeDomain(config_for(keys, port))
    servers: list[tuple[float, LoopbackSshd]] = []

    def start() -> None:
        servers.append((time.monotonic(), LoopbackSshd(keys["host"], keys["client"], port)))

    threading.Timer(1.5, start).start()
    try:
        waited = dom.wait_ready(timeout=20)
        done = time.monotonic()
        assert servers, "wait_ready returned before the server existed"
        up_at, server = servers[0]
        lag = done - up_at
        print(f"wait_ready returned {lag * 1000:.0f} ms after the server started")
        assert lag < 0.5
        assert waited >= 1.5
        assert len(server.transports) == 1
        dom.exec(["true"])  # the readiness session is kept for exec
        assert len(server.transports) == 1
    finally:
        dom.close_access()
        for _, server in servers:
            server.close()


def test_ready_console_probe() -> None:
    dom = FakeDomain(None)
    dom.capture = ConsoleCapture("fake")
    threading.Timer(0.3, lambda: dom.capture._append(b"boot\nlogin: ready\n")).start()  # type: ignore[union-attr]
    assert dom.wait_ready(timeout=5, probe=Ready.CONSOLE(r"login: \w+")) < 5
    with pytest.raises(WaitTimeout) as info:
        dom.wait_ready(timeout=0.3, probe=Ready.CONSOLE("never"))
    assert info.value.last == "console"
    dom.capture = None
    with pytest.raises(InvalidState, match="no console capture"):
        dom.wait_ready(timeout=1, probe=Ready.CONSOLE("x"))


def test_ready_address_probe() -> None:
    dom = FakeDomain(None, virt=VirtType.LXC)
    threading.Timer(
        0.3, lambda: dom.found.update(m=[ipaddress.ip_interface("192.0.2.5/24")])
    ).start()
    assert dom.wait_ready(timeout=5, probe=Ready.ADDRESS) < 5


def test_ready_callable_probe_and_not_running() -> None:
    dom = FakeDomain(None)
    calls = []

    def third_time(d: Any) -> bool:
        calls.append(d)
        if len(calls) == 1:
            raise ConnectionRefusedError("not yet")
        return len(calls) >= 3

    assert dom.wait_ready(timeout=5, probe=third_time, interval=0.05) < 1
    assert calls == [dom, dom, dom]
    with pytest.raises(WaitTimeout, match="returned False"):
        dom.wait_ready(timeout=0.3, probe=lambda d: False)
    dom.current_state = State.SHUT_OFF
    with pytest.raises(InvalidState):
        dom.wait_ready(timeout=1)


def test_command_that_ignores_its_input_does_not_hang(dom: FakeDomain) -> None:
    started = time.monotonic()
    result = dom.exec(["head", "-c", "5"], input=b"x" * (20 * 1024 * 1024), timeout=20)
    assert result.stdout == b"xxxxx"
    assert time.monotonic() - started < 10


def test_unreadable_input_is_raised(dom: FakeDomain) -> None:
    class Broken:
        def read(self, size: int = -1) -> bytes:
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        dom.exec(["cat"], input=Broken())  # type: ignore[arg-type]
