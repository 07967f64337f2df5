"""The guest-agent transport's protocol handling, against a stand-in agent on this machine.

``LocalAgent.agent_command`` answers ``guest-exec``, ``guest-exec-status`` and ``guest-ping``
the way qemu-guest-agent 7.2 does (base64 ``input-data``/``out-data``/``err-data``, output
only once ``exited``, ``signal`` for a process a signal ended), running the command here with
subprocess. It stands in for the agent inside a VM, not for libvirt; the real agent answers
in integration/test_debian_ready.py.
"""

from __future__ import annotations

import base64
import subprocess
import time
from typing import Any

import pytest

from hvlib.enums import State, VirtType
from hvlib.errors import CommandTimeout, SpecError, Unsupported
from hvlib.guest.access import GuestAccess
from hvlib.guest.agenttransport import AgentTransport
from hvlib.guest.transport import Invocation

pytestmark = pytest.mark.timeout(60)


class LocalAgent(GuestAccess):
    def __init__(self, virt: VirtType = VirtType.QEMU) -> None:
        self.name = "agent-vm"
        self.ssh = None
        self._virt = virt
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.calls: list[str] = []

    @property
    def virt(self) -> VirtType:
        return self._virt

    @property
    def state(self) -> State:
        return State.RUNNING

    def agent_command(self, command: dict[str, Any], timeout: float) -> Any:
        self.calls.append(command["execute"])
        args = command.get("arguments", {})
        if command["execute"] == "guest-ping":
            return {}
        if command["execute"] == "guest-exec":
            proc = subprocess.Popen(
                [args["path"], *args.get("arg", [])],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self.procs[proc.pid] = proc
            data = base64.b64decode(args.get("input-data", ""))
            assert proc.stdin is not None
            proc.stdin.write(data)
            proc.stdin.close()
            return {"pid": proc.pid}
        proc = self.procs[args["pid"]]
        if proc.poll() is None:
            return {"exited": False}
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        status: dict[str, Any] = {"exited": True}
        if proc.returncode < 0:
            status["signal"] = -proc.returncode
        else:
            status["exitcode"] = proc.returncode
        if out:
            status["out-data"] = base64.b64encode(out).decode()
        if err:
            status["err-data"] = base64.b64encode(err).decode()
        return status


def test_exec_through_the_agent() -> None:
    dom = LocalAgent()
    result = dom.exec("echo out; echo err >&2; exit 3", transport="agent")
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert result.transport == "agent" and dom.calls[0] == "guest-exec"
    assert dom.exec(["cat"], input=b"\x00\xffdata", transport="agent").stdout == b"\x00\xffdata"
    streamed: list[bytes] = []
    kept = dom.exec(["printf", "abc"], transport="agent", on_stdout=streamed.append)
    assert streamed == [b"abc"] and kept.stdout == b""


def test_a_signal_is_128_plus_n() -> None:
    assert LocalAgent().exec("kill -9 $$", transport="agent").exit_status == 137


def test_timeout_sends_a_kill() -> None:
    dom = LocalAgent()
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        dom.exec(["sleep", "30"], timeout=0.5, transport="agent")
    assert time.monotonic() - started < 10
    assert info.value.killed
    sleeper = next(p for p in dom.procs.values() if p.args == ["sleep", "30"])
    assert sleeper.wait(5) == -9


def test_ready_through_the_agent() -> None:
    dom = LocalAgent()
    result = dom.wait_ready(timeout=10, transport="agent")
    assert result.stage == "command" and "guest-ping" in dom.calls


def test_the_transport_is_only_what_the_caller_names() -> None:
    with pytest.raises(SpecError, match="transport: must be one of ssh, container, agent"):
        LocalAgent().exec(["true"], transport="telnet")
    with pytest.raises(Unsupported, match="takes transport 'container', not 'agent'"):
        LocalAgent(VirtType.LXC).exec(["true"], transport="agent")
    with pytest.raises(SpecError, match="input"):
        AgentTransport().run(
            LocalAgent(), Invocation(("cat",), input=b"x" * (8 * 1024 * 1024 + 1), timeout=5)
        )
