"""The command line, driven as a user would: ``python -m hvlib ...`` in a subprocess, on
libvirt's in-process test driver. Its state lives and dies with each process (it starts with
one running domain, ``test``), so each test checks one invocation's output and exit status.
A few paths the test driver cannot reach (a command's exit status) run in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hvlib import cli
from hvlib.access import CommandResult

URI = "test:///default"
REPO = Path(__file__).resolve().parent.parent
VM_YAML = """\
name: web-1
virt: qemu
vcpus: 2
memory_mib: 512
kernel: /srv/vmlinuz
cmdline: console=ttyS0
nics:
  - network: default
"""
CT_YAML = """\
name: ct-1
virt: lxc
memory_mib: 64
init: [/sbin/init]
filesystems:
  - source: /srv/ct-1
"""


def hvlib(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hvlib ARGS`` with no HVLIB_* variables but those in ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HVLIB_")}
    return subprocess.run(
        [sys.executable, "-m", "hvlib", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    path = tmp_path / "stack.yaml"
    path.write_text(VM_YAML + "---\n" + CT_YAML)
    return path


def write(tmp_path: Path, text: str, name: str = "f.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ([], ["up", "down", "rm", "ls", "exec", "console", "render", "demo", "Exit status"]),
        (["up"], ["--check", "--state", "--allow-restart", "--allow-recreate", "--uri"]),
        (["down"], ["--timeout", "--force"]),
        (["rm"], ["--volumes", "--force"]),
        (["ls"], ["--json", "--uri"]),
        (["exec"], ["--timeout", "--ssh-key", "--host-key", "124", "125"]),
        (["console"], ["read-only", "--timeout"]),
        (["render"], ["--name"]),
        (["demo"], ["--uri"]),
    ],
)
def test_help_everywhere(command: list[str], words: list[str]) -> None:
    res = hvlib(*command, "--help")
    assert res.returncode == 0, res.stderr
    for word in words:
        assert word in res.stdout


def test_up_creates_and_starts_and_prints_each_change(specs: Path) -> None:
    res = hvlib("up", "--uri", URI, str(specs))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    for name in ("web-1", "ct-1"):
        assert f"{name}: + domain: defined  [state]" in lines
        assert f"{name}: ~ state: shut-off -> running  [state]" in lines
        assert any(ln.startswith(f"{name}: 2 change(s) applied (") for ln in lines), lines


def test_up_state_shut_off_defines_only(specs: Path) -> None:
    res = hvlib("up", "--uri", URI, "--state", "shut-off", str(specs))
    assert res.returncode == 0, res.stderr
    assert "state:" not in res.stdout
    assert "web-1: 1 change(s) applied" in res.stdout


def test_up_check_shows_the_diff_changes_nothing_and_exits_3(specs: Path) -> None:
    res = hvlib("up", "--check", "--uri", URI, str(specs))
    assert res.returncode == 3, res.stderr
    assert "+++ after" in res.stdout
    assert "+  <name>web-1</name>" in res.stdout
    assert '+  <memory unit="KiB">524288</memory>' in res.stdout
    assert (
        "web-1: 2 change(s) would be applied (--check: nothing changed; test:///default)"
        in res.stdout
    )


def test_up_check_of_an_existing_domain_diffs_before_and_after(tmp_path: Path) -> None:
    # `test` exists on the test driver, running, with 2 vcpus and 2 GiB
    spec = write(tmp_path, "name: test\nvirt: qemu\nvcpus: 2\nmemory_mib: 1024\nkernel: /k\n")
    res = hvlib("up", "--check", "--uri", URI, str(spec))
    assert res.returncode == 3, res.stderr
    assert "test: ~ memory_mib: 2048 -> 1024  [live]" in res.stdout
    assert '-  <currentMemory unit="KiB">2097152</currentMemory>' in res.stdout
    assert '+  <currentMemory unit="KiB">1048576</currentMemory>' in res.stdout


def test_up_reports_changes_that_wait_for_a_restart_and_exits_3(tmp_path: Path) -> None:
    # the test driver's own domain `test`, with a kernel added (a change that needs a restart)
    spec = write(
        tmp_path,
        "name: test\nvirt: qemu\nvcpus: 2\nmemory_mib: 2048\nmax_memory_mib: 8192\n"
        "kernel: /k\ndisks: [{file: /guest/diskimage1}]\n",
    )
    res = hvlib("up", "--uri", URI, str(spec))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "test: + kernel: /k  [next-boot]" in res.stdout
    assert "test: ! kernel: /k  [pending: needs --allow-restart]" in res.stdout
    assert "pending (need --allow-restart) (" in res.stdout
    allowed = hvlib("up", "--allow-restart", "--uri", URI, str(spec))
    assert "test: + kernel: /k  [restart]" in allowed.stdout, allowed.stdout + allowed.stderr
    assert "! kernel" not in allowed.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: v\nvirt: qemu\nkernel: /k\nvcpu: 2\n", "f.yaml:4: vcpu: unknown key (did you mean"),
        ("name: v\nvirt: qemu\nkernel: /k\ndisks:\n  - file: x.img\n", "f.yaml:5: disks[0].file:"),
        ("name: v\nvirt: lxc\ninit: [/i]\n", "f.yaml:1: filesystems: a container needs"),
        (
            "name: v\nvirt: qemu\nkernel: /k\nnics:\n  - network: nowhere\n",
            "f.yaml:5: nics[0].network: does not exist on this host (got 'nowhere')",
        ),
        ("kind: network\nname: n\n", "f.yaml:1: kind: network: not supported yet"),
        ("kind: volume\nname: n\n", "f.yaml:1: kind: volume: not supported yet"),
        ("name: v\n  bad: [\n", "f.yaml:2: yaml: "),
    ],
)
def test_up_bad_input_exits_2_with_file_line_field_and_changes_nothing(
    tmp_path: Path, specs: Path, text: str, message: str
) -> None:
    bad = write(tmp_path, text)
    # the valid file comes first: it must not be applied either
    res = hvlib("up", "--uri", URI, str(specs), str(bad))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"hvlib: {bad.parent}/{message}" in res.stderr, res.stderr
    assert res.stdout == ""


def test_up_refuses_a_name_declared_twice(tmp_path: Path, specs: Path) -> None:
    again = write(tmp_path, VM_YAML, "again.yaml")
    res = hvlib("up", "--uri", URI, str(specs), str(again))
    assert res.returncode == 2
    assert f"{again}:1: name: is already declared at {specs}:1" in res.stderr


def test_up_without_a_host_is_bad_input(specs: Path) -> None:
    res = hvlib("up", str(specs))
    assert (res.returncode, res.stderr.strip()) == (
        2,
        "hvlib: no host: pass --uri URI or set HVLIB_URI",
    )
    assert hvlib("up", "--check", str(specs), env={"HVLIB_URI": URI}).returncode == 3


def test_up_routes_each_type_to_the_host_whose_driver_fits(specs: Path) -> None:
    # routing is decided before any connection is opened
    res = hvlib("up", "--uri", "qemu:///nowhere", "--uri", "xen:///nowhere", str(specs))
    assert res.returncode == 2
    assert f"{specs}:11: virt: no --uri can take a lxc domain" in res.stderr
    res = hvlib("up", "--uri", URI, "--uri", "lxc:///nowhere", str(specs))
    assert res.returncode == 2
    assert "several --uri (test:///default, lxc:///nowhere) can take a lxc domain" in res.stderr


def test_up_a_host_that_cannot_be_reached_is_a_failure(specs: Path) -> None:
    res = hvlib("up", "--uri", "qemu+unix:///system?socket=/nonexistent/sock", str(specs))
    assert res.returncode == 1
    assert "hvlib: error: cannot connect to qemu+unix:///system" in res.stderr


def test_ls_table() -> None:
    res = hvlib("ls", "--uri", URI)
    assert res.returncode == 0, res.stderr
    head, row = res.stdout.splitlines()
    assert head.split() == ["NAME", "TYPE", "STATE", "VCPUS", "MEMORY", "ADDRESSES", "HOST"]
    assert row.split() == ["test", "qemu", "running", "2", "2048", "MiB", "192.168.122.3", URI]


def test_ls_json_over_several_hosts_reports_the_unreachable_one() -> None:
    bad = "qemu+unix:///system?socket=/nonexistent/sock"
    res = hvlib("ls", "--json", "--uri", URI, "--uri", bad)
    assert res.returncode == 1
    assert f"hvlib: error: cannot connect to {bad}" in res.stderr
    (row,) = json.loads(res.stdout)
    assert {k: v for k, v in row.items() if k != "uuid"} == {
        "name": "test",
        "type": "qemu",
        "state": "running",
        "vcpus": 2,
        "memory_mib": 2048,
        "addresses": {"aa:bb:cc:dd:ee:ff": ["192.168.122.3/24"]},
        "host": URI,
    }


def test_ls_takes_several_hosts_from_the_environment() -> None:
    bad = "qemu+unix:///system?socket=/nonexistent/sock"
    res = hvlib("ls", "--json", env={"HVLIB_URI": f"{URI} {bad} {URI}"})
    assert res.returncode == 1
    assert [r["host"] for r in json.loads(res.stdout)] == [URI]  # each host once
    assert res.stderr.count("cannot connect") == 1


def test_down_is_graceful_and_idempotent() -> None:
    res = hvlib("down", "--uri", URI, "test", "absent-one")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("test: shut down gracefully in ")
    assert "absent-one: not found on test:///default (nothing to do)" in res.stdout


def test_down_at_the_deadline_fails_unless_forced() -> None:
    res = hvlib("down", "--uri", URI, "--timeout", "0", "test")
    assert res.returncode == 1
    assert "test did not shut down within 0 s and is still running" in res.stderr
    res = hvlib("down", "--uri", URI, "--timeout", "0", "--force", "test")
    assert res.returncode == 0, res.stderr
    assert "test: powered off (forced at the deadline)" in res.stdout


def test_rm_refuses_a_running_domain_unless_forced() -> None:
    res = hvlib("rm", "--uri", URI, "test")
    assert res.returncode == 1
    assert "test is running on test:///default: run hvlib down first" in res.stderr
    res = hvlib("rm", "--uri", URI, "--force", "test", "absent-one")
    assert res.returncode == 0, res.stderr
    assert "test: removed (test:///default)" in res.stdout
    assert "absent-one: not found" in res.stdout


def test_rm_volumes_is_not_supported_yet_and_removes_nothing() -> None:
    res = hvlib("rm", "--uri", URI, "--force", "--volumes", "test")
    assert res.returncode == 2
    assert "not supported yet" in res.stderr and res.stdout == ""


def test_exec_cannot_run_exits_125() -> None:
    res = hvlib("exec", "--uri", URI, "test", "--", "true")
    assert res.returncode == 125
    assert "test is a qemu VM, reached over SSH: pass --ssh-key and --host-key" in res.stderr
    res = hvlib("exec", "--uri", URI, "nope", "--", "true")
    assert res.returncode == 125
    assert "hvlib: nope: no such domain on test:///default" in res.stderr
    res = hvlib("exec", "--uri", URI, "--host-key", "not a key", "test", "--", "true")
    assert res.returncode == 2
    assert "ssh.host_key" in res.stderr


def test_console_without_a_console_stream_fails() -> None:
    res = hvlib("console", "--uri", URI, "test")
    assert res.returncode == 1
    assert "hvlib: error: test: cannot open its console" in res.stderr


def test_render_prints_the_xml(specs: Path) -> None:
    res = hvlib("render", "--name", "ct-1", str(specs))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith('<domain type="lxc">')
    both = hvlib("render", str(specs))
    assert f"<!-- {specs}:1: web-1 -->" in both.stdout
    assert f"<!-- {specs}:10: ct-1 -->" in both.stdout
    assert hvlib("render", "--name", "zz", str(specs)).returncode == 2


def test_render_of_a_bad_file_exits_2(tmp_path: Path) -> None:
    bad = write(tmp_path, "name: v\nvirt: xen-pv\ndisks: [{file: /a}]\n")
    res = hvlib("render", str(bad))
    assert res.returncode == 2
    assert f"{bad}:2: virt: xen-pv guests need a kernel" in res.stderr


def test_demo_still_runs_on_the_test_driver() -> None:
    res = hvlib("demo", "--uri", URI)
    assert res.returncode == 0, res.stderr
    assert "demo-vm" in res.stdout and "graceful" in res.stdout


def test_usage_errors_exit_2() -> None:
    assert hvlib("up").returncode == 2  # no FILES
    assert hvlib("ls", "--bogus").returncode == 2
    assert hvlib("nosuchcommand").returncode == 2


def test_verbose_logs_debug_lines(specs: Path) -> None:
    res = hvlib("-v", "render", str(specs))
    assert res.returncode == 0


# -- in-process: what the test driver cannot do --------------------------------------------


@pytest.mark.parametrize(("status", "expected"), [(0, 0), (7, 7), (300, 255), (-9, 137)])
def test_exit_status_of_a_command(status: int, expected: int) -> None:
    assert cli._exit_status(status) == expected


def test_exec_passes_output_and_exit_status_through(monkeypatch: pytest.MonkeyPatch) -> None:
    from hvlib.domain import Domain

    seen: dict[str, object] = {}

    def fake_exec(self: Domain, command: list[str], **kw: object) -> CommandResult:
        seen.update(command=command, **kw)
        on_stdout = kw["on_stdout"]
        assert callable(on_stdout)
        on_stdout(b"out\n")
        return CommandResult(exit_status=7, stdout=b"", stderr=b"", elapsed=0.0)

    monkeypatch.setattr(Domain, "exec", fake_exec)
    monkeypatch.setattr(cli, "_require_credentials", lambda dom, config: None)
    res = CliRunner().invoke(
        cli.cli, ["exec", "--uri", URI, "--timeout", "5", "test", "--", "ls", "-l"]
    )
    assert (res.exit_code, res.output) == (7, "out\n")
    assert seen["command"] == ["ls", "-l"] and seen["timeout"] == 5.0
    assert seen["input"] is None and seen["ssh"] is None
