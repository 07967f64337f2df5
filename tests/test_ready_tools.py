"""Ready.CLOUD_INIT and Ready.SYSTEMD over real SSH (the loopback server of test_access_ssh).

The "guest" is this machine behind the loopback SSH server, so the guest's own tools are
scripts put first on PATH: each answers what a real ``cloud-init status`` or ``systemctl
is-system-running`` prints at that point of a boot (the lines as cloud-init 22.4 and
systemd 252 print them), switching answers after a number of calls. The transport, the
retries and the result are hvlib's own, over a real SSH connection. The same probes on real
Debian guests: integration/test_debian_ready.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hvlib
from hvlib.errors import ReadyError, SpecError, WaitTimeout
from hvlib.guest.ready import Ready, ReadyResult
from hvlib.guest.toolprobes import cloud_init_status, failed_units
from tests.test_access_ssh import (  # noqa: F401  (fixtures)
    FakeDomain,
    LoopbackSshd,
    config_for,
    keys,
    sshd,
)

pytestmark = pytest.mark.timeout(60)

LONG_ERROR = """status: error
time: Mon, 07 Dec 2026 10:00:00 +0000
detail:
('locale', ProcessExecutionError("Unexpected error while running command.\\nCommand: \
['update-locale', 'LANG=en_US.UTF-8']\\nExit code: 255"))
"""


def tool(bin_dir: Path, name: str, answers: list[tuple[str, int]], *, long: str = "") -> None:
    """A script ``name`` that prints ``answers[i]`` (text, exit status) on its i-th call (the
    last one from then on); with ``--long`` it prints ``long``."""
    count = bin_dir / f"{name}.count"
    count.write_text("0")
    cases = "\n".join(
        f"  {i}) printf '%s\\n' '{text}'; exit {status};;"
        for i, (text, status) in enumerate(answers)
    )
    last_text, last_status = answers[-1]
    script = bin_dir / name
    script.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *--long*) cat <<"EOF"\n{long}EOF\nexit 1;; esac\n'
        f"n=$(cat {count}); echo $((n + 1)) > {count}\n"
        f'case "$n" in\n{cases}\n'
        f"  *) printf '%s\\n' '{last_text}'; exit {last_status};;\nesac\n"
    )
    script.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The guest's PATH: only this directory, holding the few programs the scripts use (so
    the machine's own systemctl, if any, is not the guest's)."""
    d = tmp_path / "bin"
    d.mkdir()
    for program in ("true", "cat"):
        (d / program).symlink_to(shutil.which(program) or f"/bin/{program}")
    monkeypatch.setenv("PATH", str(d))
    return d


@pytest.fixture
def guest(keys: dict[str, Any], sshd: LoopbackSshd, bin_dir: Path) -> Iterator[FakeDomain]:  # noqa: F811
    d = FakeDomain(config_for(keys, sshd.port))
    try:
        yield d
    finally:
        d.close_access()


def test_cloud_init_waits_for_done(guest: FakeDomain, bin_dir: Path) -> None:
    tool(
        bin_dir, "cloud-init", [("status: not run", 0), ("status: running", 0), ("status: done", 0)]
    )
    result = guest.wait_ready(timeout=30, probe=Ready.CLOUD_INIT, interval=0.01)
    assert isinstance(result, ReadyResult) and isinstance(result, float)
    assert (result.probe, result.stage, result.status) == ("CLOUD_INIT", "cloud-init", "done")
    assert (bin_dir / "cloud-init.count").read_text().strip() == "3"


def test_cloud_init_error_raises_with_the_detail(guest: FakeDomain, bin_dir: Path) -> None:
    tool(bin_dir, "cloud-init", [("status: running", 0), ("status: error", 1)], long=LONG_ERROR)
    with pytest.raises(ReadyError, match="update-locale") as info:
        guest.wait_ready(timeout=30, probe=Ready.CLOUD_INIT, interval=0.01)
    assert info.value.status == "error" and info.value.probe == "CLOUD_INIT"
    assert "Exit code: 255" in info.value.detail
    assert isinstance(info.value, hvlib.HvlibError)


def test_cloud_init_still_running_times_out_saying_so(guest: FakeDomain, bin_dir: Path) -> None:
    tool(bin_dir, "cloud-init", [("status: running", 0)])
    with pytest.raises(WaitTimeout, match=r"stage 'cloud-init'; last: cloud-init status: running"):
        guest.wait_ready(timeout=1.0, probe=Ready.CLOUD_INIT, interval=0.05)


def test_a_guest_without_the_tool_is_an_error_at_once(guest: FakeDomain) -> None:
    with pytest.raises(ReadyError, match="has no 'cloud-init'") as info:
        guest.wait_ready(timeout=30, probe=Ready.CLOUD_INIT)
    assert info.value.status == "not installed"
    with pytest.raises(ReadyError, match="has no 'systemctl'"):
        guest.wait_ready(timeout=30, probe=Ready.SYSTEMD)


def test_systemd_running(guest: FakeDomain, bin_dir: Path) -> None:
    tool(bin_dir, "systemctl", [("offline", 1), ("starting", 1), ("running", 0)])
    result = guest.wait_ready(timeout=30, probe=Ready.SYSTEMD, interval=0.01)
    assert (result.probe, result.stage, result.status, result.failed_units) == (
        "SYSTEMD",
        "systemd",
        "running",
        (),
    )


def degraded_systemctl(bin_dir: Path) -> None:
    """is-system-running says degraded; list-units --failed lists two units."""
    script = bin_dir / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  is-system-running) echo degraded; exit 1;;\n"
        "  list-units) echo 'sys-kernel-debug.mount loaded failed failed Kernel Debug File "
        "System'; echo 'systemd-remount-fs.service loaded failed failed Remount'; exit 0;;\n"
        "esac\nexit 2\n"
    )
    script.chmod(0o755)


def test_systemd_degraded_is_ready_with_the_failed_units(guest: FakeDomain, bin_dir: Path) -> None:
    degraded_systemctl(bin_dir)
    result = guest.wait_ready(timeout=30, probe=Ready.SYSTEMD)
    assert result.status == "degraded"
    assert result.failed_units == ("sys-kernel-debug.mount", "systemd-remount-fs.service")


def test_systemd_not_degraded_demands_running(guest: FakeDomain, bin_dir: Path) -> None:
    degraded_systemctl(bin_dir)
    strict = Ready.SYSTEMD(allow_degraded=False)
    assert repr(strict) == "Ready.SYSTEMD(allow_degraded=False)"
    with pytest.raises(WaitTimeout, match=r"degraded: failed units: sys-kernel-debug\.mount"):
        guest.wait_ready(timeout=1.0, probe=strict, interval=0.1)


def test_systemd_maintenance_is_an_error(guest: FakeDomain, bin_dir: Path) -> None:
    tool(bin_dir, "systemctl", [("starting", 1), ("maintenance", 1)])
    with pytest.raises(ReadyError, match="'maintenance'"):
        guest.wait_ready(timeout=30, probe=Ready.SYSTEMD, interval=0.01)


def test_probe_arguments_and_words() -> None:
    with pytest.raises(SpecError, match="allow_degraded"):
        Ready.SYSTEMD(allow_degraded="no")  # type: ignore[arg-type]
    assert Ready.by_word("cloud-init") is Ready.CLOUD_INIT
    assert Ready.by_word("systemd") is Ready.SYSTEMD
    assert Ready.by_word("ssh") is Ready.SSH
    with pytest.raises(SpecError, match="ready: must be one of ssh, address, cloud-init"):
        Ready.by_word("boot")


def test_parsers() -> None:
    assert cloud_init_status("\nstatus: done\n") == "done"
    assert cloud_init_status("status: not run") == "not run"
    assert cloud_init_status("Failed to connect") is None
    assert failed_units("a.service loaded failed failed A\n\nb.mount loaded failed x B\n") == (
        "a.service",
        "b.mount",
    )


def test_ssh_probe_result_is_still_a_float(guest: FakeDomain) -> None:
    result = guest.wait_ready(timeout=30)
    assert 0 <= result < 30 and result.seconds == float(result)
    assert (result.probe, result.stage, result.status) == ("SSH", "command", None)
