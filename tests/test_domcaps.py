"""Host checks against REAL capabilities captured from the sandboxed host (Debian 12, libvirt
9.0, QEMU 7.2, scripts/capture-domcaps.py): CPU models, features, nested virtualization,
machines, firmware, vcpu counts, and the kvm-to-qemu fallback."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

import hvlib
from hvlib import DomainSpec, SpecError, State, Unsupported, VirtType
from hvlib.model.cpuspec import Cpu
from hvlib.model.domcaps import (
    DomainCapabilities,
    HostCpu,
    blockers_in,
    check_platform,
    unknown_name_in,
)
from hvlib.virt import accel, hostfit
from hvlib.virt.accel import Acceleration, Finding
from tests.cpu_specs import CPU_SPECS
from tests.hostfakes import FIXTURES, CapturedHost, compare_verdicts

BROKEN = Acceleration(
    "qemu+ssh://captured.invalid/system",
    Finding(True, "/dev/kvm exists"),
    Finding(True, "QEMU opened it"),
    Finding(False, "the kernel printed nothing within 20 s"),
    Finding(False, "neither kvm_intel nor kvm_amd is loaded"),
    probe_seconds=20.0,
)


def caps(name: str) -> DomainCapabilities:
    return DomainCapabilities.from_xml((FIXTURES / f"{name}.xml").read_text())


def vm(**kw: Any) -> DomainSpec:
    base: dict[str, Any] = {"name": "v", "virt": VirtType.QEMU, "kernel": "/k"}
    base.update(kw)
    return DomainSpec(**base)


@pytest.fixture(autouse=True)
def _no_cached_reports() -> Any:
    accel.forget()
    yield
    accel.forget()


# -- parsing what the host said -----------------------------------------------------------------


def test_software_emulation_capabilities() -> None:
    pc = caps("qemu-pc")
    assert (pc.domain_type, pc.machine, pc.arch) == ("qemu", "pc-i440fx-7.2", "x86_64")
    assert pc.cpu_modes["host-passthrough"] is False and pc.cpu_modes["host-model"] is True
    assert pc.host_model == "EPYC"
    assert pc.models["Nehalem"].usable is True
    assert pc.models["EPYC"].usable is False and pc.models["EPYC"].vendor == "AMD"
    assert pc.firmware == ("efi",) and pc.secure_boot == (False,)
    assert caps("qemu-q35").secure_boot == (True, False)
    assert caps("qemu-microvm").firmware == ()


def test_kvm_capabilities_offer_host_passthrough() -> None:
    kvm = caps("kvm-pc")
    assert kvm.domain_type == "kvm" and kvm.cpu_modes["host-passthrough"] is True
    assert kvm.models["Nehalem"].usable is False, "this host's KVM lacks SSE3 and more"


def test_host_cpu_from_capabilities() -> None:
    cpu = HostCpu.from_capabilities((FIXTURES / "capabilities.xml").read_text())
    assert cpu.vendor == "Intel" and cpu.model
    assert "vmx" not in cpu.features and "svm" not in cpu.features


def test_not_domain_capabilities() -> None:
    with pytest.raises(ValueError, match="domainCapabilities"):
        DomainCapabilities.from_xml("<capabilities/>")


def test_libvirt_messages_are_read_as_captured() -> None:
    epyc = compare_verdicts()["qemu-epyc"]["message"]
    assert {"vme", "rdseed", "sha-ni"} <= (blockers_in(epyc) or set())
    bogus = compare_verdicts()["qemu-nehalem-bogus-feature"]["message"]
    assert unknown_name_in(bogus) == ("feature", "bogus")
    assert blockers_in("something else") is None


# -- CPU checks ---------------------------------------------------------------------------------


def fit(name_or_spec: str | DomainSpec, **kw: Any) -> hostfit.Fit:
    spec = CPU_SPECS[name_or_spec] if isinstance(name_or_spec, str) else name_or_spec
    return hostfit.fit(CapturedHost(**kw), spec)  # type: ignore[arg-type]


def test_a_usable_model_with_features_passes_silently() -> None:
    assert fit("qemu-nehalem-aes-nopopcnt").notes == ()
    assert fit("qemu-nested-default").notes == ()
    assert fit("qemu-host-model-topology").notes == ()


def test_a_feature_the_host_cannot_provide_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as info:
        fit("qemu-nehalem-avx512f")
    assert info.value.field == "cpu.require" and info.value.value == ["avx512f"]
    with pytest.raises(SpecError, match="avx512f"):
        fit("qemu-host-model-avx512f")


def test_with_fallback_a_missing_feature_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "hvlib"):
        notes = fit("qemu-nehalem-avx512f-fallback").notes
    assert len(notes) == 1 and "avx512f" in notes[0] and "fallback" in notes[0]
    assert "avx512f" in caplog.text


def test_a_model_not_fully_usable_is_allowed_with_a_warning_naming_what_it_lacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "hvlib"):
        notes = fit("qemu-epyc").notes
    assert len(notes) == 1
    assert "CPU model EPYC is not fully usable" in notes[0]
    for feature in ("vme", "rdseed", "sha-ni", "xsavec"):
        assert feature in notes[0]
    assert "EPYC is not fully usable" in caplog.text


def test_the_nested_xen_dom0_cpu_passes_with_a_warning() -> None:
    notes = fit("qemu-epyc-xen-dom0").notes
    assert len(notes) == 1 and "it lacks" in notes[0]
    assert "svm" not in notes[0] and "npt" not in notes[0], "TCG provides both"


def test_unknown_names_are_spec_errors_naming_them() -> None:
    with pytest.raises(SpecError) as info:
        fit("qemu-nehalem-bogus-feature")
    assert info.value.field == "cpu.require" and "'bogus'" in str(info.value)
    with pytest.raises(SpecError) as model:
        fit(vm(cpu=Cpu.model("Pentium9")))
    assert model.value.field == "cpu.model" and model.value.value == "Pentium9"
    assert "Nehalem" in model.value.rule, "the models the host knows are listed"


@pytest.fixture
def working_kvm(monkeypatch: pytest.MonkeyPatch) -> None:
    works = replace(BROKEN, kvm_runs_guests=Finding(True, "the kernel printed its ready line"))
    monkeypatch.setattr(accel, "acceleration", lambda host, guest=None, refresh=False: works)


def test_a_kvm_spec_on_a_host_not_probed_says_so() -> None:
    result = fit(vm(virt=VirtType.KVM))
    assert result.spec.virt is VirtType.KVM
    assert result.notes[0].startswith("kvm: KVM is present; whether it runs guests is unknown")


@pytest.mark.usefixtures("working_kvm")
def test_kvm_cpu_checks() -> None:
    assert fit("kvm-host-passthrough").notes == ()
    assert fit("kvm-host-model").notes == ()
    with pytest.raises(SpecError, match="vmx"):
        fit("kvm-host-passthrough-vmx")
    notes = fit("kvm-nehalem").notes
    assert "Nehalem is not fully usable on this host's kvm" in notes[-1] and "pni" in notes[-1]


@pytest.mark.usefixtures("working_kvm")
def test_nested_kvm_is_unsupported_without_vmx_or_svm() -> None:
    with pytest.raises(Unsupported, match="has no vmx"):
        fit(vm(virt=VirtType.KVM, nested=True))


# -- machine, firmware, vcpus -------------------------------------------------------------------


def test_platform_checks() -> None:
    check_platform(vm(machine="q35", firmware="efi", secure_boot=True), caps("qemu-q35"))
    with pytest.raises(Unsupported, match="no secure-boot UEFI firmware for machine pc"):
        check_platform(vm(machine="q35", firmware="efi", secure_boot=True), caps("qemu-pc"))
    with pytest.raises(Unsupported, match="no UEFI firmware for machine microvm"):
        check_platform(vm(firmware="efi"), caps("qemu-microvm"))
    with pytest.raises(SpecError) as info:
        fit(vm(vcpus=300, machine="pc"))
    assert info.value.field == "vcpus" and "at most 255" in info.value.rule


def test_every_machine_type_is_offered_and_an_unknown_one_is_a_spec_error() -> None:
    for machine in ("pc", "q35", "microvm"):
        assert fit(vm(machine=machine)).notes == ()
    with pytest.raises(SpecError) as info:
        hostfit.domain_capabilities(CapturedHost(), "qemu", "isapc")  # type: ignore[arg-type]
    assert info.value.field == "machine" and "not supported by emulator" in info.value.rule


def test_efi_and_secure_boot_fit() -> None:
    assert fit(vm(machine="q35", firmware="efi", secure_boot=True)).notes == ()
    assert fit(vm(firmware="efi")).notes == ()


def test_a_plain_spec_asks_the_host_nothing() -> None:
    host = CapturedHost()
    hostfit.fit(host, vm())  # type: ignore[arg-type]
    assert host.conn.calls == []


def test_on_the_test_driver_nothing_is_checked_and_it_says_so() -> None:
    with hvlib.connect("test:///default") as host:
        result = hostfit.fit(host, vm(cpu=Cpu.model("Pentium9")))
        assert result.notes == (hostfit.NOT_CHECKED_TEST,)
        assert "not checked on the test driver" in result.notes[0]
        assert hostfit.fit(host, vm(virt=VirtType.KVM)).notes == ()


# -- kvm that does not work: refused, or run as qemu when allowed ----------------------------


@pytest.fixture
def broken_kvm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "acceleration", lambda host, guest=None, refresh=False: BROKEN)


@pytest.mark.usefixtures("broken_kvm")
def test_a_kvm_spec_where_kvm_does_not_work_is_refused_quoting_the_report() -> None:
    with pytest.raises(Unsupported) as info:
        fit(vm(virt=VirtType.KVM))
    message = str(info.value)
    assert "KVM is present but does not run stock guest kernels" in message
    assert "the kernel printed nothing within 20 s" in message
    assert "allow_emulation=True" in message and "HVLIB_ALLOW_EMULATION=1" in message


@pytest.mark.usefixtures("broken_kvm")
def test_allow_emulation_runs_a_kvm_spec_as_qemu() -> None:
    result = fit(vm(virt=VirtType.KVM, nested=True), allow_emulation=True)
    assert result.emulated and result.spec.virt is VirtType.QEMU
    assert "runs as qemu" in result.notes[0]
    cpu = hvlib.render(result.spec)
    assert "svm" in cpu and "npt" in cpu, "nested under emulation: the TCG way"
    with pytest.raises(Unsupported, match="runs as qemu here"):
        fit(vm(virt=VirtType.KVM, cpu=Cpu.host_passthrough()), allow_emulation=True)


@pytest.mark.usefixtures("broken_kvm")
def test_the_emulated_spec_is_in_sync_on_the_next_ensure() -> None:
    fitted = fit(vm(name="emu-kvm", virt=VirtType.KVM), allow_emulation=True).spec
    with hvlib.connect("test:///default", poll_interval=None) as host:
        first = host.domains.ensure(fitted)
        assert first.domain is not None and first.domain.virt is VirtType.QEMU
        assert host.domains.get("emu-kvm").virt is VirtType.QEMU
        again = fit(vm(name="emu-kvm", virt=VirtType.KVM), allow_emulation=True).spec
        second = host.domains.ensure(again)
        assert not second.changed and second.pending == []
        host.domains.ensure(again, state=State.ABSENT)
