"""``hvlib exec --ready WORD`` and ``hvlib up --ready WORD`` on the test driver.

The test driver runs no command in a guest, so ``Domain.wait_ready`` is replaced here by a
recorder that answers as a ready guest would (the narrow fault: nothing real on test:///
can be ready); what is checked is which probe the CLI picked, the timeout it gave, and what
it printed. The probes themselves run for real in tests/test_ready_tools.py and on real
guests in integration/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hvlib import cli
from hvlib.cli import _guests
from hvlib.errors import ReadyError
from hvlib.guest.config import CommandResult
from hvlib.guest.probe import Reading, ReadyResult
from hvlib.guest.ready import Ready
from hvlib.virt.domain import Domain

URI = "test:///default"


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def fake_wait(self: Domain, timeout: float = 120.0, probe: Any = Ready.SSH, **kw: Any) -> Any:
        seen.append({"name": self.name, "timeout": timeout, "probe": probe, **kw})
        if probe is Ready.CLOUD_INIT and self.name.endswith("-broken"):
            raise ReadyError("x: cloud-init finished with status 'error'", status="error")
        units = ("a.mount",) if probe is Ready.SYSTEMD else ()
        status = {"CLOUD_INIT": "done", "SYSTEMD": "degraded"}.get(probe.name)
        return ReadyResult(1.5, probe.name, "x", Reading(status=status, failed_units=units))

    def fake_exec(self: Domain, command: list[str], **kw: object) -> CommandResult:
        return CommandResult(exit_status=0, stdout=b"", stderr=b"", elapsed=0.0)

    monkeypatch.setattr(Domain, "wait_ready", fake_wait)
    monkeypatch.setattr(Domain, "exec", fake_exec)
    monkeypatch.setattr(_guests, "_require_credentials", lambda dom, config: None)
    return seen


@pytest.mark.parametrize(
    ("word", "probe"),
    [("cloud-init", Ready.CLOUD_INIT), ("systemd", Ready.SYSTEMD), ("ssh", Ready.SSH)],
)
def test_exec_ready_names_the_probe(waits: list[dict[str, Any]], word: str, probe: Any) -> None:
    res = CliRunner().invoke(cli.cli, ["exec", "--uri", URI, "--ready", word, "test", "--", "true"])
    assert res.exit_code == 0, res.output
    assert [(w["probe"], w["timeout"]) for w in waits] == [(probe, _guests.READY_WAIT)]
    waits.clear()
    args = ["exec", "--uri", URI, "--ready", word, "--wait", "7", "test", "--", "true"]
    assert CliRunner().invoke(cli.cli, args).exit_code == 0
    assert [(w["probe"], w["timeout"]) for w in waits] == [(probe, 7.0)]


def test_exec_ready_takes_only_the_known_words(waits: list[dict[str, Any]]) -> None:
    res = CliRunner().invoke(cli.cli, ["exec", "--uri", URI, "--ready", "boot", "test", "--", "x"])
    assert res.exit_code == 2 and "'boot' is not one of" in res.output
    assert waits == []


def test_up_ready_waits_for_each_running_domain(
    waits: list[dict[str, Any]], tmp_path: Path, unique: str
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: {unique}-vm\nvirt: qemu\nmemory_mib: 64\nkernel: /k\n")
    args = ["up", "--uri", URI, "--ready", "systemd", "--ready-timeout", "9", str(spec)]
    res = CliRunner().invoke(cli.cli, args)
    assert res.exit_code == 0, res.output
    assert [(w["name"], w["probe"], w["timeout"]) for w in waits] == [
        (f"{unique}-vm", Ready.SYSTEMD, 9.0)
    ]
    assert f"{unique}-vm: ready (systemd: degraded) after" in res.output
    assert "(failed units: a.mount)" in res.output
    waits.clear()
    again = CliRunner().invoke(cli.cli, [*args, "--json"])
    assert again.exit_code == 0 and len(waits) == 1
    assert json.loads(again.output)[0]["ready"] == "degraded"
    waits.clear()
    check = CliRunner().invoke(
        cli.cli, ["up", "--uri", URI, "--ready", "ssh", "--check", str(spec)]
    )
    assert check.exit_code in (0, 3) and waits == []  # --check waits for nothing


def test_up_ready_failure_is_an_error_exit_1(
    waits: list[dict[str, Any]], tmp_path: Path, unique: str
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: {unique}-broken\nvirt: qemu\nmemory_mib: 64\nkernel: /k\n")
    res = CliRunner().invoke(cli.cli, ["up", "--uri", URI, "--ready", "cloud-init", str(spec)])
    assert res.exit_code == 1
    assert f"{unique}-broken (" in res.output and "not ready: x: cloud-init finished" in res.output
