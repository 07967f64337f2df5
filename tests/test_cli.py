"""The command line, driven as a user would: ``python -m hvlib ...`` in a subprocess, on
libvirt's in-process test driver. Its state lives and dies with each process (it starts with
one running domain, ``test``), so each test checks one invocation's output and exit status.
What needs several invocations on one state (a second ``up``, ``rm --volumes`` of what ``up``
made) runs in-process through click's runner, where every connection to test:///default
sees the same state, and is checked through the library; so do the few paths the test driver
cannot reach (a command's exit status). Addresses are from the documentation range
192.0.2.0/24 and exist only inside the test driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hvlib import State, cli, connect
from hvlib.cli import _guests
from hvlib.guest.config import CommandResult
from hvlib.model.volplan import MIB
from hvlib.virt.host import Host

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
        (
            ["up"],
            ["--check", "--state", "--allow-restart", "--allow-recreate", "--uri", "network or"],
        ),
        (["down"], ["--timeout", "--force"]),
        (["rm"], ["--volumes", "--force", "plain files are kept"]),
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
        (  # read in its volume's own format, which must exist (or be declared): issue 17
            "name: v\nvirt: qemu\nkernel: /k\ndisks:\n"
            "  - volume: {pool: default-pool, name: nowhere.img}\n",
            "f.yaml:5: disks[0].volume: does not exist in pool default-pool (a volume disk "
            "without a format is read in the volume's own: create the volume first, or give "
            "the disk a format) (got 'nowhere.img')",
        ),
        ("kind: network\nname: n\n", "f.yaml:1: ipv4: is required"),
        (
            "kind: network\nname: n\nipv4: 192.0.2.0/24\nhosts:\n"
            "  - mac: 52:54:00:00:00:01\n    ip: 198.51.100.7\n",
            "f.yaml:6: hosts[0].ip: must be a host address inside 192.0.2.0/24",
        ),
        (
            "kind: volume\npool: default-pool\nname: v.img\nsize_mib: 0\n",
            "f.yaml:4: size_mib: must be between 1 and",
        ),
        (
            "kind: volume\npool: default-pool\nname: v.img\nsize_mib: 1\nformt: raw\n",
            "f.yaml:5: formt: unknown key (did you mean 'format'?)",
        ),
        (
            "kind: volume\npool: nopool\nname: v.img\nsize_mib: 1\n",
            "f.yaml:2: pool: does not exist on this host",
        ),
        (
            "kind: volume\npool: default-pool\nname: v.qcow2\n"
            "backing: {pool: default-pool, name: nobase.img}\n",
            "f.yaml:4: backing: does not exist on this host (got 'default-pool/nobase.img')",
        ),
        ("name: v\n  bad: [\n", "f.yaml:2:6: yaml: "),
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


def test_up_routes_a_network_to_the_host_of_the_domain_that_uses_it(tmp_path: Path) -> None:
    net = "kind: network\nname: lan\nipv4: 192.0.2.0/24\n"
    bad = "qemu+unix:///system?socket=/nonexistent/sock"
    # used by no domain: the first qemu:// (or test://) URI, here the unreachable one
    alone = hvlib("up", "--uri", bad, "--uri", URI, str(write(tmp_path, net)))
    assert alone.returncode == 1, alone.stdout
    assert f"hvlib: error: cannot connect to {bad}" in alone.stderr
    # used by a container, which only test:// can take: the network goes there too
    used = write(tmp_path, net + "---\n" + CT_YAML + "nics: [{network: lan}]\n", "ct.yaml")
    res = hvlib("up", "--uri", bad, "--uri", URI, str(used))
    assert res.returncode == 0, res.stderr
    assert "network lan: 3 change(s) applied" in res.stdout and bad not in res.stdout


def test_up_a_host_that_cannot_be_reached_is_a_failure(specs: Path) -> None:
    res = hvlib("up", "--uri", "qemu+unix:///system?socket=/nonexistent/sock", str(specs))
    assert res.returncode == 1
    assert "hvlib: error: cannot connect to qemu+unix:///system" in res.stderr


def test_ls_table() -> None:
    res = hvlib("ls", "--uri", URI)
    assert res.returncode == 0, res.stderr
    head, row = res.stdout.splitlines()
    assert head.split() == ["NAME", "TYPE", "STATE", "VCPUS", "MEMORY", "ADDRESSES", "HOST"]
    # the test driver's own domain is <domain type='test'>: shown as that, not as qemu
    assert row.split() == ["test", "test", "running", "2", "2048", "MiB", "192.168.122.3", URI]


def test_ls_shows_hvlib_s_type_for_the_domains_it_models(
    tdhost: Host, unique: str, tmp_path: Path
) -> None:
    spec = write(tmp_path, f"name: {unique}-kvm\nvirt: kvm\nmemory_mib: 64\nkernel: /k\n")
    assert run("up", "--uri", URI, "--state", "shut-off", str(spec)).exit_code == 0
    rows = {r["name"]: r["type"] for r in json.loads(run("ls", "--uri", URI, "--json").stdout)}
    assert (rows["test"], rows[f"{unique}-kvm"]) == ("test", "kvm")
    assert tdhost.domains.get("test").virt.value == "qemu", "driven with the QEMU profile"


def test_ls_json_over_several_hosts_reports_the_unreachable_one() -> None:
    bad = "qemu+unix:///system?socket=/nonexistent/sock"
    res = hvlib("ls", "--json", "--uri", URI, "--uri", bad)
    assert res.returncode == 1
    assert f"hvlib: error: cannot connect to {bad}" in res.stderr
    (row,) = json.loads(res.stdout)
    assert {k: v for k, v in row.items() if k != "uuid"} == {
        "name": "test",
        "type": "test",
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
    assert res.stdout.startswith(
        "test: FORCED: powered off at the deadline (not shut down within 0 s), after "
    )


def test_down_json_says_forced_and_graceful() -> None:
    res = hvlib("down", "--uri", URI, "--timeout", "0", "--force", "--json", "test", "gone")
    assert res.returncode == 0, res.stderr
    forced, gone = json.loads(res.stdout)
    assert (forced["name"], forced["outcome"], forced["forced"]) == ("test", "forced", True)
    assert (gone["outcome"], gone["forced"], gone["host"]) == ("not-found", False, None)
    res = hvlib("down", "--uri", URI, "--json", "test")
    assert res.returncode == 0, res.stderr
    [graceful] = json.loads(res.stdout)
    assert (graceful["outcome"], graceful["forced"], graceful["host"]) == ("graceful", False, URI)
    res = hvlib("down", "--uri", URI, "--timeout", "0", "--json", "test")
    assert res.returncode == 1
    assert json.loads(res.stdout)[0]["outcome"] == "timed-out"
    assert res.stderr.count("\n") == 1 and "is still running (pass --force" in res.stderr


def test_rm_refuses_a_running_domain_unless_forced() -> None:
    res = hvlib("rm", "--uri", URI, "test")
    assert res.returncode == 1
    assert "test is running on test:///default: run hvlib down first" in res.stderr
    res = hvlib("rm", "--uri", URI, "--force", "test", "absent-one")
    assert res.returncode == 0, res.stderr
    assert "test: removed (test:///default)" in res.stdout
    assert "absent-one: not found" in res.stdout


def test_rm_volumes_keeps_a_disk_that_is_no_volume() -> None:
    # `test`'s one disk, /guest/diskimage1, is a plain file: no pool of the test driver has it
    res = hvlib("rm", "--uri", URI, "--force", "--volumes", "test")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "test: removed (test:///default)",
        "test: kept /guest/diskimage1: not a libvirt volume",
    ]


STACK_YAML = """\
kind: network
name: lan
ipv4: 192.0.2.0/24
dhcp_range: [192.0.2.100, 192.0.2.199]
hosts:
  - {mac: 52:54:00:00:00:01, ip: 192.0.2.10, name: web-1}
---
kind: volume
pool: {name: images, dir: /srv/hvlib-test/images}
name: base.img
size_mib: 64
---
kind: volume
pool: images
name: web-1.qcow2
backing: {pool: images, name: base.img}
---
name: web-1
virt: qemu
memory_mib: 256
kernel: /srv/vmlinuz
disks:
  - volume: {pool: images, name: web-1.qcow2}
    format: qcow2
nics:
  - network: lan
    mac: 52:54:00:00:00:01
"""


def test_up_makes_networks_pools_and_volumes_before_the_domain_that_uses_them(
    tmp_path: Path,
) -> None:
    res = hvlib("up", "--uri", URI, str(write(tmp_path, STACK_YAML)))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:3] == [
        "network lan: + network: defined  [state]",
        "network lan: ~ state: inactive -> active  [state]",
        "network lan: ~ autostart: False -> True  [next-boot]",
    ]
    assert lines[3].startswith("network lan: 3 change(s) applied (")
    assert lines[4:7] == [
        "pool images: + pool: directory /srv/hvlib-test/images  [state]",
        "pool images: ~ state: inactive -> active  [state]",
        "pool images: ~ autostart: False -> True  [next-boot]",
    ]
    assert lines[8] == "volume images/base.img: + volume: raw, 64 MiB  [state]"
    assert lines[10] == (
        "volume images/web-1.qcow2: + volume: qcow2, overlay on images/base.img  [state]"
    )
    assert lines[12:14] == [
        "web-1: + domain: defined  [state]",
        "web-1: ~ state: shut-off -> running  [state]",
    ]
    assert lines[14].startswith("web-1: 2 change(s) applied (") and len(lines) == 15


def test_up_check_of_new_networks_and_volumes_exits_3(tmp_path: Path) -> None:
    res = hvlib("up", "--check", "--uri", URI, str(write(tmp_path, STACK_YAML)))
    assert res.returncode == 3, res.stderr
    assert "network lan: + network: defined  [state]" in res.stdout
    assert '+      <host mac="52:54:00:00:00:01" name="web-1" ip="192.0.2.10"/>' in res.stdout
    assert "volume images/base.img: 1 change(s) would be applied (--check: nothing changed;" in (
        res.stdout
    )
    # the domain's network and pool are not there yet: ensure(check=True) could not run
    assert (
        "web-1: not checked: up creates network lan, pool images first "
        "(--check: nothing changed; test:///default)"
    ) in res.stdout


# -- in-process: several invocations on one test driver state ------------------------------


def run(*args: str) -> Result:
    """``hvlib ARGS`` in this process (test:///default's state is this process's)."""
    res = CliRunner().invoke(cli.cli, list(args))
    print(f"$ hvlib {' '.join(args)}  -> exit {res.exit_code}\n{res.stdout}{res.stderr}")
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


@pytest.fixture
def tdhost(unique: str) -> Iterator[Host]:
    """test:///default; what the test made there under names starting ``UNIQUE-`` is removed
    after it (domains, then pools with their volumes, then networks), pass or fail."""
    with connect(URI, poll_interval=None) as host:
        yield host
        mine = f"{unique}-"
        for dom in host.domains.list():
            if dom.name.startswith(mine):
                dom.destroy()
                dom.undefine()
        for pool in host.pools.list():
            if pool.name.startswith(mine):
                for vol in sorted(pool.volumes(), key=lambda v: v.backing is None):
                    vol.delete()
                pool.delete()
        for net in host.networks.list():
            if net.name.startswith(mine):
                net.delete()


def stack(unique: str, *, reserved: int = 1, size_mib: int = 8, extra: bool = False) -> str:
    """A network with ``reserved`` reservations, a pool with a base and an overlay volume
    (and ``extra``, a third volume), all named after ``unique``."""
    hosts = "".join(
        f"  - {{mac: 52:54:00:00:01:{i:02x}, ip: 192.0.2.{10 + i}}}\n" for i in range(reserved)
    )
    text = (
        f"kind: network\nname: {unique}-net\nipv4: 192.0.2.0/24\n"
        f"dhcp_range: [192.0.2.100, 192.0.2.199]\nhosts:\n{hosts}---\n"
        f"kind: volume\npool: {{name: {unique}-pool, dir: /srv/hvlib-test/{unique}}}\n"
        f"name: base.img\nsize_mib: {size_mib}\n---\n"
        f"kind: volume\npool: {unique}-pool\nname: over.qcow2\n"
        f"backing: {{pool: {unique}-pool, name: base.img}}\n"
    )
    if extra:
        text += f"---\nkind: volume\npool: {unique}-pool\nname: extra.img\nsize_mib: 2\n"
    return text


def test_up_of_networks_and_volumes_twice_changes_nothing_the_second_time(
    tdhost: Host, unique: str, tmp_path: Path
) -> None:
    spec = write(tmp_path, stack(unique))
    first = run("up", "--uri", URI, str(spec))
    assert first.exit_code == 0, first.stderr
    assert f"network {unique}-net: + network: defined  [state]" in first.stdout
    assert f"volume {unique}-pool/over.qcow2: 1 change(s) applied (" in first.stdout
    net = tdhost.networks.get(f"{unique}-net")
    assert net.active and [h.ip for h in net.hosts] == ["192.0.2.10"]
    over = tdhost.volumes.get(f"{unique}-pool", "over.qcow2")
    assert over.format == "qcow2" and over.backing == f"/srv/hvlib-test/{unique}/base.img"

    again = run("up", "--uri", URI, str(spec))
    assert again.exit_code == 0, again.stderr
    lines = again.stdout.splitlines()
    assert [ln.split(": no changes (")[0] for ln in lines] == [
        f"network {unique}-net",
        f"pool {unique}-pool",
        f"volume {unique}-pool/base.img",
        f"volume {unique}-pool/over.qcow2",
    ]
    assert all(ln.endswith(f" s; {URI})") for ln in lines), lines


def test_up_check_after_a_change_exits_3_and_changes_nothing(
    tdhost: Host, unique: str, tmp_path: Path
) -> None:
    spec = write(tmp_path, stack(unique))
    assert run("up", "--uri", URI, str(spec)).exit_code == 0
    spec.write_text(stack(unique, reserved=2, size_mib=16, extra=True))
    drift = run("up", "--check", "--uri", URI, str(spec))
    assert drift.exit_code == 3, drift.stderr
    lines = drift.stdout.splitlines()
    assert f"network {unique}-net: + hosts[52:54:00:00:01:01]: 192.0.2.11  [live]" in lines
    assert '+      <host mac="52:54:00:00:01:01" ip="192.0.2.11"/>' in lines
    assert f"volume {unique}-pool/base.img: ~ size_mib: 8 -> 16  [live]" in lines
    assert f"volume {unique}-pool/extra.img: + volume: raw, 2 MiB  [state]" in lines
    assert f"volume {unique}-pool/over.qcow2: no changes (--check: nothing changed; {URI})" in (
        lines
    )
    # nothing changed
    assert [h.ip for h in tdhost.networks.get(f"{unique}-net").hosts] == ["192.0.2.10"]
    assert tdhost.volumes.get(f"{unique}-pool", "base.img").capacity == 8 * MIB
    assert tdhost.volumes.find(f"{unique}-pool", "extra.img") is None
    # and up applies what --check showed (but growing: the test driver cannot resize)
    spec.write_text(stack(unique, reserved=2, extra=True))
    applied = run("up", "--uri", URI, str(spec))
    assert applied.exit_code == 0, applied.stderr
    assert [h.ip for h in tdhost.networks.get(f"{unique}-net").hosts] == [
        "192.0.2.10",
        "192.0.2.11",
    ]
    assert tdhost.volumes.find(f"{unique}-pool", "extra.img") is not None


def test_up_refuses_a_volume_of_another_format_with_and_without_check(
    tdhost: Host, unique: str, tmp_path: Path
) -> None:
    spec = write(tmp_path, stack(unique))
    assert run("up", "--uri", URI, str(spec)).exit_code == 0
    spec.write_text(stack(unique).replace("size_mib: 8\n", "size_mib: 8\nformat: qcow2\n"))
    for check in (["--check"], []):
        res = run("up", *check, "--uri", URI, str(spec))
        assert res.exit_code == 1, res.stdout
        assert (
            f"hvlib: error: volume {unique}-pool/base.img ({spec}:8): volume "
            f"{unique}-pool/base.img is raw, not qcow2: delete it first"
        ) in res.stderr
    assert tdhost.volumes.get(f"{unique}-pool", "base.img").format == "raw"


def vm(name: str, *disks: str) -> str:
    return f"name: {name}\nvirt: qemu\nkernel: /srv/vmlinuz\ndisks:\n" + "".join(
        f"  - {d}\n" for d in disks
    )


def test_rm_volumes_deletes_the_volumes_of_volume_and_file_disks(
    tdhost: Host, unique: str, tmp_path: Path
) -> None:
    pool = f"{unique}-pool"
    spec = write(
        tmp_path,
        f"kind: volume\npool: {{name: {pool}, dir: /srv/hvlib-test/{unique}}}\nname: a.img\n"
        f"size_mib: 1\n---\nkind: volume\npool: {pool}\nname: b.img\nsize_mib: 1\n---\n"
        + vm(
            f"{unique}-vm",
            f"volume: {{pool: {pool}, name: a.img}}",
            f"file: /srv/hvlib-test/{unique}/./b.img",
        ),
    )
    assert run("up", "--uri", URI, str(spec)).exit_code == 0
    res = run("rm", "--uri", URI, "--volumes", "--force", f"{unique}-vm")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"{unique}-vm: removed ({URI})",
        f"{unique}-vm: deleted volume {pool}/a.img ({URI})",
        f"{unique}-vm: deleted volume {pool}/b.img ({URI})",
    ]
    assert tdhost.domains.find(f"{unique}-vm") is None
    assert [v.name for v in tdhost.pools.get(pool).volumes()] == []


def test_rm_volumes_refuses_a_volume_another_domain_uses(
    tdhost: Host, unique: str, tmp_path: Path
) -> None:
    pool = f"{unique}-pool"
    spec = write(
        tmp_path,
        f"kind: volume\npool: {{name: {pool}, dir: /srv/hvlib-test/{unique}}}\nname: own.img\n"
        f"size_mib: 1\n---\nkind: volume\npool: {pool}\nname: shared.img\nsize_mib: 1\n"
        "---\n"
        + vm(
            f"{unique}-a",
            f"volume: {{pool: {pool}, name: own.img}}",
            f"volume: {{pool: {pool}, name: shared.img}}",
        )
        + "---\n"
        + vm(f"{unique}-b", f"file: /srv/hvlib-test/{unique}/shared.img"),
    )
    assert run("up", "--uri", URI, "--state", "shut-off", str(spec)).exit_code == 0
    res = run("rm", "--uri", URI, "--volumes", f"{unique}-a")
    assert res.exit_code == 1 and res.stdout == ""
    assert (
        f"hvlib: error: {unique}-a not removed ({URI}): volume {pool}/shared.img is also used "
        f"by {unique}-b; nothing of {unique}-a was deleted"
    ) in res.stderr
    assert tdhost.domains.find(f"{unique}-a") is not None
    assert sorted(v.name for v in tdhost.pools.get(pool).volumes()) == ["own.img", "shared.img"]
    # once the other domain is gone, the volume goes with the last one that used it
    assert run("rm", "--uri", URI, f"{unique}-b").exit_code == 0
    res = run("rm", "--uri", URI, "--volumes", f"{unique}-a")
    assert res.exit_code == 0, res.stderr
    assert f"{unique}-a: deleted volume {pool}/shared.img ({URI})" in res.stdout
    assert [v.name for v in tdhost.pools.get(pool).volumes()] == []


def test_rm_volumes_leaves_a_file_that_is_no_volume_alone(
    tdhost: Host, unique: str, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"keep me")
    spec = write(tmp_path, vm(f"{unique}-vm", f"file: {plain}"))
    assert run("up", "--uri", URI, "--state", "shut-off", str(spec)).exit_code == 0
    res = run("rm", "--uri", URI, "--volumes", f"{unique}-vm")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"{unique}-vm: removed ({URI})",
        f"{unique}-vm: kept {plain}: not a libvirt volume",
    ]
    assert plain.read_bytes() == b"keep me"


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
    assert _guests._exit_status(status) == expected


def test_exec_passes_output_and_exit_status_through(monkeypatch: pytest.MonkeyPatch) -> None:
    from hvlib.virt.domain import Domain

    seen: dict[str, object] = {}

    def fake_exec(self: Domain, command: list[str], **kw: object) -> CommandResult:
        seen.update(command=command, **kw)
        on_stdout = kw["on_stdout"]
        assert callable(on_stdout)
        on_stdout(b"out\n")
        return CommandResult(exit_status=7, stdout=b"", stderr=b"", elapsed=0.0)

    monkeypatch.setattr(Domain, "exec", fake_exec)
    monkeypatch.setattr(_guests, "_require_credentials", lambda dom, config: None)
    res = CliRunner().invoke(
        cli.cli, ["exec", "--uri", URI, "--timeout", "5", "test", "--", "ls", "-l"]
    )
    assert (res.exit_code, res.output) == (7, "out\n")
    assert seen["command"] == ["ls", "-l"] and seen["timeout"] == 5.0
    assert seen["input"] is None and seen["ssh"] is None


# -- up and down: one rule for a guest still running at the deadline (item 16) --------------
# The test driver shuts a guest down the instant it is asked, so only --timeout 0 reaches the
# deadline there: the request is never sent, and the guest is still running when time is up.


def guest(tmp_path: Path, name: str, memory: int = 64) -> Path:
    return write(tmp_path, f"name: {name}\nvirt: qemu\nmemory_mib: {memory}\nkernel: /k\n")


def test_up_without_force_leaves_a_guest_running_at_the_deadline_and_exits_1(
    tdhost: Host, unique: str, tmp_path: Path
) -> None:
    spec = guest(tmp_path, f"{unique}-vm")
    assert run("up", "--uri", URI, str(spec)).exit_code == 0
    res = run("up", "--uri", URI, "--state", "shut-off", "--timeout", "0", str(spec))
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [
        f"hvlib: error: {unique}-vm ({spec}:1): {unique}-vm did not shut down within 0 s and "
        "is still running (pass --force to power it off at the deadline)"
    ]
    assert tdhost.domains.get(f"{unique}-vm").state is State.RUNNING


def test_up_with_force_powers_off_at_the_deadline_and_says_so(
    tdhost: Host, unique: str, tmp_path: Path
) -> None:
    spec = guest(tmp_path, f"{unique}-vm")
    assert run("up", "--uri", URI, str(spec)).exit_code == 0
    args = ("up", "--uri", URI, "--state", "shut-off", "--timeout", "0", "--force")
    res = run(*args, str(spec))
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert f"{unique}-vm: FORCED: powered off at the deadline (not shut down within 0 s)" in lines
    assert "FORCED off at the deadline" in lines[-1]
    assert tdhost.domains.get(f"{unique}-vm").state is State.SHUT_OFF
    run("up", "--uri", URI, str(spec))
    [record] = json.loads(run(*args, "--json", str(spec)).stdout)
    assert (record["kind"], record["outcome"], record["forced"]) == ("domain", "ok", True)
    assert {"field": "state", "before": "running", "after": "shut-off", "how": "state"} in (
        record["changes"]
    )


def test_up_graceful_stop_is_not_forced(tdhost: Host, unique: str, tmp_path: Path) -> None:
    spec = guest(tmp_path, f"{unique}-vm")
    assert run("up", "--uri", URI, str(spec)).exit_code == 0
    res = run("up", "--uri", URI, "--state", "shut-off", "--json", "--force", str(spec))
    assert res.exit_code == 0, res.stderr
    [record] = json.loads(res.stdout)
    assert record["forced"] is False and record["changed"] is True
    assert "FORCED" not in run("up", "--uri", URI, "--state", "shut-off", str(spec)).stdout


def test_a_restart_follows_the_same_rule(tdhost: Host, unique: str, tmp_path: Path) -> None:
    spec = guest(tmp_path, f"{unique}-vm")
    assert run("up", "--uri", URI, str(spec)).exit_code == 0
    bigger = guest(tmp_path, f"{unique}-vm", memory=128)  # above the running maximum: restart
    args = ("up", "--uri", URI, "--allow-restart", "--timeout", "0", str(bigger))
    res = run(*args)
    assert res.exit_code == 1
    assert res.stderr.splitlines()[-1].endswith(
        "did not shut down within 0 s and is still running (pass --force to power it off at "
        "the deadline)"
    )
    res = run(*args, "--force")
    assert res.exit_code == 0, res.stderr
    assert f"{unique}-vm: FORCED: powered off at the deadline" in res.stdout
    assert tdhost.domains.get(f"{unique}-vm").state is State.RUNNING


def test_up_json_lists_every_document_it_ensured(tdhost: Host, unique: str, tmp_path: Path) -> None:
    spec = write(tmp_path, stack(unique))
    res = run("up", "--uri", URI, "--check", "--json", str(spec))
    assert res.exit_code == 3, res.stderr
    checked = json.loads(res.stdout)
    assert [(r["kind"], r["outcome"]) for r in checked] == [
        ("network", "ok"),
        ("pool", "ok"),
        ("volume", "ok"),
        ("volume", "ok"),
    ]
    assert all(r["changed"] and not r["forced"] and r["host"] == URI for r in checked)
    first = json.loads(run("up", "--uri", URI, "--json", str(spec)).stdout)
    assert [r["changes"] for r in first] == [r["changes"] for r in checked]
    again = json.loads(run("up", "--uri", URI, "--json", str(spec)).stdout)
    assert [(r["name"], r["changed"], r["changes"]) for r in again] == [
        (f"{unique}-net", False, []),
        (f"{unique}-pool", False, []),
        (f"{unique}-pool/base.img", False, []),
        (f"{unique}-pool/over.qcow2", False, []),
    ]
