"""The acceleration report without booting anything: local device and module checks on fake
files, the report's verdicts and wording, its cache, the probe-guest hook, the opt-in."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

import hvlib
from hvlib.errors import LibvirtError
from hvlib.virt import accel
from hvlib.virt.accel import Acceleration, Finding, ProbeGuest
from tests.hostfakes import CapturedHost


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    accel.forget()
    accel.set_probe_guest(None)
    yield
    accel.forget()
    accel.set_probe_guest(None)


def _module(root: Path, name: str, nested: str | None = None) -> None:
    params = root / name / "parameters"
    params.mkdir(parents=True)
    if nested is not None:
        (params / "nested").write_text(nested + "\n")


def test_nested_module_parameter(tmp_path: Path) -> None:
    _module(tmp_path / "a", "kvm_intel", "Y")
    assert accel.nested_module(str(tmp_path / "a")) == Finding(
        True, f"{tmp_path}/a/kvm_intel/parameters/nested is Y"
    )
    _module(tmp_path / "b", "kvm_amd", "0")
    assert accel.nested_module(str(tmp_path / "b")).ok is False
    _module(tmp_path / "c", "kvm")
    _module(tmp_path / "c", "kvm_pvm")
    found = accel.nested_module(str(tmp_path / "c"))
    assert found == Finding(
        False, "neither kvm_intel nor kvm_amd is loaded (KVM modules here: kvm, kvm_pvm)"
    )


def test_kvm_device(tmp_path: Path) -> None:
    assert accel.kvm_device(str(tmp_path / "kvm")).ok is False
    (tmp_path / "file").write_text("")
    assert "not a character device" in accel.kvm_device(str(tmp_path / "file")).detail
    null = accel.kvm_device("/dev/null")
    assert null.ok is True and "crw-rw-rw-" in null.detail


def test_device_mode_says_who_can_open_it() -> None:
    assert accel.device_mode_finding("/dev/null") == Finding(
        None, "/dev/null is crw-rw-rw- root:root; not probed"
    )


def test_probe_guest_from_hook_then_environment() -> None:
    env = {"HVLIB_PROBE_KERNEL": "/k", "HVLIB_PROBE_INITRD": "/i", "HVLIB_PROBE_READY": "up"}
    assert accel.probe_guest(env) == ProbeGuest("/k", "/i", ready="up")
    assert accel.probe_guest({}) is None
    accel.set_probe_guest(lambda: None)
    assert accel.probe_guest(env) == ProbeGuest("/k", "/i", ready="up"), "hook had none"
    accel.set_probe_guest(ProbeGuest("/hook"))
    assert accel.probe_guest(env) == ProbeGuest("/hook")


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("0", False)])
def test_allow_emulation_from_the_environment(value: str, expected: bool) -> None:
    assert accel.allow_emulation_default(None, {"HVLIB_ALLOW_EMULATION": value}) is expected
    assert accel.allow_emulation_default(False, {"HVLIB_ALLOW_EMULATION": "1"}) is False


def test_connect_takes_the_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    with hvlib.connect("test:///default", allow_emulation=True) as host:
        assert host.allow_emulation is True
    monkeypatch.setenv("HVLIB_ALLOW_EMULATION", "1")
    with hvlib.connect("test:///default") as host:
        assert host.allow_emulation is True
    monkeypatch.delenv("HVLIB_ALLOW_EMULATION")
    with hvlib.connect("test:///default") as host:
        assert host.allow_emulation is False


def test_the_test_driver_is_not_probed() -> None:
    with hvlib.connect("test:///default") as host:
        report = host.acceleration(probe_kernel="/k")
    assert not report.probed and report.works is None
    assert report.summary.startswith("not probed")
    assert "not probed" in str(report)


def _report(present: bool, openable: bool | None, runs: bool | None) -> Acceleration:
    return Acceleration(
        "qemu:///system",
        Finding(present, "/dev/kvm exists" if present else "there is no /dev/kvm"),
        Finding(openable, "open failed: Permission denied" if openable is False else "opened"),
        Finding(runs, "printed nothing in 20 s" if runs is False else "ready in 1.0 s"),
        Finding(False, "neither kvm_intel nor kvm_amd is loaded"),
        probe_seconds=20.0 if runs is not None else None,
    )


@pytest.mark.parametrize(
    ("report", "works", "summary"),
    [
        (_report(False, None, None), False, "KVM is not available: there is no /dev/kvm"),
        (
            _report(True, False, False),
            False,
            "KVM is present but the hypervisor cannot open it: open failed: Permission denied",
        ),
        (
            _report(True, True, False),
            False,
            "KVM is present but does not run stock guest kernels: printed nothing in 20 s",
        ),
        (_report(True, True, True), True, "KVM works: ready in 1.0 s"),
        (_report(True, None, None), None, "KVM is present; whether it runs guests is unknown"),
    ],
)
def test_verdicts(report: Acceleration, works: bool | None, summary: str) -> None:
    assert report.works is works
    assert report.summary.startswith(summary)
    lines = str(report).splitlines()
    assert lines[0] == f"acceleration on qemu:///system: {report.summary}"
    assert lines[-1] == "  nested (host KVM): no: neither kvm_intel nor kvm_amd is loaded"


def test_a_remote_host_is_reported_from_libvirt_alone_and_cached_per_uri() -> None:
    host = CapturedHost()
    report = accel.acceleration(host)  # type: ignore[arg-type]
    assert report.kvm_present == Finding(
        True, "libvirt's domain capabilities list <domain>kvm</domain>"
    )
    assert report.nested == Finding(None, "not checked: the host is remote")
    assert report.works is None and not report.probed
    assert accel.acceleration(host) is report  # type: ignore[arg-type]
    assert accel.cached(host.uri) is report
    assert accel.acceleration(host, refresh=True) is not report  # type: ignore[arg-type]


def test_a_start_refused_for_kvm_means_not_openable() -> None:
    refused = LibvirtError(
        "internal error: process exited while connecting to monitor: Could not access KVM "
        "kernel module: Permission denied",
        code=libvirt.VIR_ERR_INTERNAL_ERROR,
    )
    openable, runs = accel._start_failed(refused)
    assert openable.ok is False and "Permission denied" in openable.detail
    assert runs.ok is False
    other = accel._start_failed(LibvirtError("Cannot access storage file '/k'"))
    assert other[0].ok is None and other[1].ok is None


def test_states_in_words() -> None:
    assert accel.describe_state(libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED) == (
        "running (booted)"
    )
    assert (
        accel.describe_state(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_CRASHED)
        == "paused (crashed)"
    )


def test_is_local() -> None:
    assert accel.is_local("qemu:///system")
    assert accel.is_local("qemu+unix:///system?socket=/run/x/libvirt-sock")
    assert not accel.is_local("qemu+ssh://root@h/system")
    assert os.path.isabs(accel.KVM_DEVICE)
