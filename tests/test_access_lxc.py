"""The container exec path (hvlib.guest.container + the hvlib.guest._nsexec helper) without libvirt.

libvirt's ``lxcOpenNamespace`` is replaced by descriptors of this process's own namespaces
(user, ipc, uts, net, pid, mnt, in libvirt's order): the helper really runs, really calls
setns on each (the user namespace refuses with EINVAL and is skipped, as for a container
without an id map), forks into the PID namespace and execs. Needs root (setns).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvlib.errors import CommandTimeout, ConnectionLost, GuestAccessError, InvalidState
from hvlib.guest import container as lxcexec
from hvlib.guest.io import OutputSink

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="setns needs root"),
    pytest.mark.timeout(60),
]
NAMESPACES = ("user", "ipc", "uts", "net", "pid", "mnt")


@pytest.fixture(autouse=True)
def own_namespaces(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Make the namespace opener hand out fds of our own namespaces; check none leak."""
    opened: list[int] = []

    def fake_open(handle: Any, name: str | None = None) -> list[int]:
        fds = [os.open(f"/proc/self/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES]
        opened.extend(fds)
        return fds

    monkeypatch.setattr(THIS, "open_ns", fake_open)
    before = set(os.listdir("/proc/self/fd"))
    yield opened
    leaked = set(os.listdir("/proc/self/fd")) - before
    assert not leaked, f"descriptors left open: {leaked}"


def open_ns(handle: Any, name: str | None = None) -> list[int]:
    """What the container's Domain answers (replaced by each test)."""
    raise AssertionError("no namespaces")


THIS = sys.modules[__name__]


def run(command: str | tuple[str, ...], **kw: Any) -> Any:
    return lxcexec.run(lambda: THIS.open_ns(None, "ct"), command, name="ct", **kw)


def test_exit_status_and_output() -> None:
    result = run("echo out; echo err >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")


def test_argv_without_shell_and_binary_input() -> None:
    data = bytes(range(256)) * 1000
    assert run(("cat",), input=data).stdout == data
    args = ("a b", "$HOME", "'", "*")
    assert run(("printf", "%s|", *args)).text == "a b|$HOME|'|*|"


def test_clean_environment_and_cwd() -> None:
    result = run(("sh", "-c", "pwd; env | sort"))
    lines = result.text.splitlines()
    assert lines[0] == "/root"
    assert "HOME=/root" in lines
    assert not [line for line in lines if line.startswith(("VIRTUAL_ENV=", "PYTEST"))]


def test_command_is_in_a_new_session_inside_the_pid_namespace() -> None:
    probe = "import os; print(os.getpid() == os.getpgrp() == os.getsid(0))"
    assert run((sys.executable, "-c", probe)).text == "True\n"


def test_missing_program_is_127_like_a_shell() -> None:
    result = run(("no-such-program-hvlib",))
    assert result.exit_status == 127
    assert b"cannot execute 'no-such-program-hvlib'" in result.stderr


def test_killed_by_signal_is_128_plus_n() -> None:
    assert run("kill -TERM $$").exit_status == 128 + 15


def test_sigpipe_is_not_ignored_in_the_command() -> None:
    # Python ignores SIGPIPE and an ignored signal survives exec: the helper must reset it
    line = run(("grep", "SigIgn", "/proc/self/status")).text
    ignored = int(line.split()[1], 16)
    assert not ignored & (1 << (13 - 1))


def test_streaming_callbacks() -> None:
    pieces: list[bytes] = []
    result = run("echo a; echo b >&2", sink=OutputSink(on_stdout=pieces.append))
    assert b"".join(pieces) == b"a\n"
    assert result.stdout == b"" and result.stderr == b"b\n"


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


def test_timeout_kills_the_process_group() -> None:
    marker = f"hvlib-lxc-test-{time.monotonic_ns()}"
    sleeper = f"{sys.executable} -c 'import time; time.sleep(60)' {marker}"
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        run(f"echo started; {sleeper} & {sleeper}; wait", timeout=1.0)
    assert time.monotonic() - started < 3.5
    assert info.value.killed and info.value.stdout == b"started\n"
    deadline = time.monotonic() + 3
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


def test_background_process_holding_output_does_not_hang() -> None:
    marker = f"hvlib-lxc-bg-{time.monotonic_ns()}"
    started = time.monotonic()
    result = run(f"{sys.executable} -c 'import time; time.sleep(30)' {marker} & echo done")
    assert result.text == "done\n"
    assert time.monotonic() - started < 3
    for pid in processes_with(marker):
        os.kill(pid, 9)


def test_setns_failure_is_an_access_error(
    monkeypatch: pytest.MonkeyPatch, own_namespaces: list[int]
) -> None:
    def not_a_namespace(handle: Any, name: str | None = None) -> list[int]:
        fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        own_namespaces.append(fd)
        return [fd]

    monkeypatch.setattr(THIS, "open_ns", not_a_namespace)
    with pytest.raises(GuestAccessError, match="cannot enter the container"):
        run(("true",))


def test_init_not_started_yet_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    real = open_ns
    calls: list[int] = []

    def late(handle: Any, name: str | None = None) -> list[int]:
        calls.append(1)
        if len(calls) < 3:
            raise InvalidState("Init pid is not yet available")
        return real(handle, name)

    monkeypatch.setattr(THIS, "open_ns", late)
    assert run(("true",)).ok
    monkeypatch.setattr(lxcexec, "INIT_WAIT", 0.1)
    calls.clear()
    monkeypatch.setattr(THIS, "open_ns", lambda h, n=None: (_ for _ in ()).throw(InvalidState("x")))
    with pytest.raises(GuestAccessError, match="cannot enter"):
        run(("true",))


def test_command_that_ignores_its_input_does_not_hang() -> None:
    started = time.monotonic()
    result = run(("head", "-c", "5"), input=b"x" * (20 * 1024 * 1024), timeout=20)
    assert result.stdout == b"xxxxx"
    assert time.monotonic() - started < 10


def test_helper_killed_is_connection_lost() -> None:
    import threading

    def kill_helper() -> None:
        time.sleep(0.5)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                    if b"_nsexec.py" in cmd and b"hvlib-helper-victim" in cmd:
                        os.kill(int(entry), 9)

    threading.Thread(target=kill_helper).start()
    with pytest.raises(ConnectionLost, match="outcome is unknown"):
        run(("sh", "-c", "echo hi; sleep 5", "hvlib-helper-victim"), timeout=20)
